"""Tool calling through the gateway: a model configured with ``tool_parser: hermes`` whose
upstream (the fake vLLM in ``hermes_raw`` mode) answers with raw ``<tool_call>`` text, as
vLLM does when it runs without a tool parser. The official ``openai`` SDK must receive
parsed ``tool_calls``, streamed and not; bad tool definitions are refused with a 400 that
names the parameter, before anything reaches the upstream."""
from __future__ import annotations

import json

import openai
import pytest

pytestmark = pytest.mark.gateway

UPSTREAM_MODEL = "fake-model"
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}]
TWO_CALLS = [
    {"name": "get_weather", "arguments": {"city": "Paris"}},
    {"name": "get_weather", "arguments": {"city": "Zürich / ZH", "days": 2}},
]


def tool_config(fake) -> str:
    """`qwen` parses Hermes tool calls; `plain` has no tool parser."""
    return (
        "upstreams:\n"
        f"  up0: {{ url: {fake.url}, health: /health }}\n"
        "models:\n"
        "  qwen:\n"
        "    upstreams: [up0]\n"
        f"    upstream_model: {UPSTREAM_MODEL}\n"
        "    tool_parser: hermes\n"
        "  plain:\n"
        "    upstreams: [up0]\n"
        f"    upstream_model: {UPSTREAM_MODEL}\n"
        "    tool_parser: none\n"
    )


@pytest.fixture
def tool_gateway(gateway_factory, fake_vllm):
    gw = gateway_factory(config=tool_config(fake_vllm), workers=1)
    gw.wait_ready()
    return gw


def streamed(client, **kw):
    """Rebuilds choice 0 of a streamed chat completion as an OpenAI client does:
    (content or None, [(id, name, arguments)], finish_reason, chunks)."""
    content, calls, finish, chunks = "", {}, None, []
    for chunk in client.chat.completions.create(stream=True, **kw):
        chunks.append(chunk)
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        content += choice.delta.content or ""
        for tc in choice.delta.tool_calls or []:
            entry = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
            if tc.id:
                entry["id"] = tc.id
            if tc.function and tc.function.name:
                entry["name"] = tc.function.name
            if tc.function and tc.function.arguments:
                entry["arguments"] += tc.function.arguments
        finish = choice.finish_reason or finish
    ordered = [(c["id"], c["name"], c["arguments"]) for _, c in sorted(calls.items())]
    return (content or None), ordered, finish, chunks


def test_raw_hermes_text_becomes_tool_calls(tool_gateway, fake_vllm):
    fake_vllm.set_tool_mode("hermes_raw", prefix_text="Let me check. ")
    client = tool_gateway.openai_client()
    chat = client.chat.completions.create(model="qwen", messages=MESSAGES, tools=TOOLS)
    choice = chat.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is not None and choice.message.content.strip() == "Let me check."
    assert "<tool_call>" not in choice.message.content
    calls = choice.message.tool_calls
    assert calls and len(calls) == 1
    assert calls[0].type == "function" and calls[0].id.startswith("call_")
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    # the rest of the answer is the upstream's
    assert chat.model == "qwen" and chat.id.startswith("chatcmpl-")
    assert chat.usage.total_tokens > 0
    sent = fake_vllm.last_request("/v1/chat/completions")["body"]
    assert sent["model"] == UPSTREAM_MODEL and sent["tools"] == TOOLS


def test_only_calls_give_null_content_and_several_calls_keep_their_order(tool_gateway, fake_vllm):
    fake_vllm.set_tool_mode("hermes_raw", tool_calls=TWO_CALLS)
    client = tool_gateway.openai_client()
    chat = client.chat.completions.create(model="qwen", messages=MESSAGES, tools=TOOLS)
    choice = chat.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert [json.loads(c.function.arguments) for c in choice.message.tool_calls] == [c["arguments"] for c in TWO_CALLS]
    assert len({c.id for c in choice.message.tool_calls}) == 2


def test_streamed_raw_hermes_text_becomes_tool_call_deltas(tool_gateway, fake_vllm):
    fake_vllm.set_tool_mode("hermes_raw", prefix_text="Let me check. ", tool_calls=TWO_CALLS)
    client = tool_gateway.openai_client()
    content, calls, finish, chunks = streamed(client, model="qwen", messages=MESSAGES, tools=TOOLS)
    assert finish == "tool_calls"
    assert content is not None and content.strip() == "Let me check."
    assert [name for _, name, _ in calls] == ["get_weather", "get_weather"]
    assert [json.loads(args) for _, _, args in calls] == [c["arguments"] for c in TWO_CALLS]
    assert all(call_id and call_id.startswith("call_") for call_id, _, _ in calls)
    assert {c.model for c in chunks} == {"qwen"}
    assert len({c.id for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" for c in chunks)

    # the same answer, not streamed, normalises to the same message (ids aside)
    whole = client.chat.completions.create(model="qwen", messages=MESSAGES, tools=TOOLS).choices[0]
    assert whole.message.content == content
    assert [(c.function.name, c.function.arguments) for c in whole.message.tool_calls] == [(n, a) for _, n, a in calls]


def test_streamed_tool_calls_with_the_sdk_stream_helper(tool_gateway, fake_vllm):
    fake_vllm.set_tool_mode("hermes_raw", prefix_text="Sure. ")
    fake_vllm.config(chunk_chars=3)  # cut the markup at arbitrary places
    client = tool_gateway.openai_client()
    with client.chat.completions.stream(model="qwen", messages=MESSAGES, tools=TOOLS,
                                        stream_options={"include_usage": True}) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content.strip() == "Sure."
    assert [c.function.name for c in choice.message.tool_calls] == ["get_weather"]
    assert json.loads(choice.message.tool_calls[0].function.arguments) == {"city": "Paris"}
    assert final.usage is not None and final.usage.total_tokens > 0


def test_structured_tool_calls_from_the_upstream_pass_through(tool_gateway, fake_vllm):
    fake_vllm.set_tool_mode("structured")
    client = tool_gateway.openai_client()
    chat = client.chat.completions.create(model="qwen", messages=MESSAGES, tools=TOOLS)
    assert chat.choices[0].finish_reason == "tool_calls"
    assert chat.choices[0].message.tool_calls[0].id.startswith("chatcmpl-tool-")
    _, calls, finish, _ = streamed(client, model="qwen", messages=MESSAGES, tools=TOOLS)
    assert finish == "tool_calls"
    assert calls[0][0].startswith("chatcmpl-tool-") and json.loads(calls[0][2]) == {"city": "Paris"}


def test_plain_answers_to_tool_requests_are_unchanged(tool_gateway, fake_vllm):
    fake_vllm.config(reply_text="No tool needed: 2 < 3 <b>ok</b>.")
    client = tool_gateway.openai_client()
    chat = client.chat.completions.create(model="qwen", messages=MESSAGES, tools=TOOLS)
    assert chat.choices[0].message.content == "No tool needed: 2 < 3 <b>ok</b>."
    assert chat.choices[0].finish_reason == "stop" and not chat.choices[0].message.tool_calls
    content, calls, finish, _ = streamed(client, model="qwen", messages=MESSAGES, tools=TOOLS)
    assert content == "No tool needed: 2 < 3 <b>ok</b>." and calls == [] and finish == "stop"


def test_requests_without_tools_are_not_parsed(tool_gateway, fake_vllm):
    fake_vllm.set_tool_mode("hermes_raw")
    client = tool_gateway.openai_client()
    chat = client.chat.completions.create(model="qwen", messages=MESSAGES)
    assert "<tool_call>" in chat.choices[0].message.content
    assert not chat.choices[0].message.tool_calls
    chat = client.chat.completions.create(model="qwen", messages=MESSAGES, tools=TOOLS, tool_choice="none")
    assert "<tool_call>" in chat.choices[0].message.content


@pytest.mark.parametrize("kwargs, param", [
    ({"tools": [{"type": "function", "function": {"name": "get weather!"}}]}, "tools[0].function.name"),
    ({"tools": TOOLS + [{"type": "function", "function": {"name": "x", "parameters": {"type": "array"}}}]},
     "tools[1].function.parameters.type"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_time"}}}, "tool_choice.function.name"),
    ({"tool_choice": "required"}, "tool_choice"),
])
def test_invalid_tool_requests_get_400_naming_the_param(tool_gateway, fake_vllm, kwargs, param):
    client = tool_gateway.openai_client()
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="qwen", messages=MESSAGES, stream=stream, **kwargs)
        err = info.value
        assert err.status_code == 400
        assert err.param == param, err.body
        assert err.body["type"] == "invalid_request_error"
    assert fake_vllm.requests_seen("/v1/chat/completions") == 0


def test_a_model_without_a_tool_parser_refuses_tools(tool_gateway, fake_vllm):
    r = tool_gateway.post("/v1/chat/completions", {"model": "plain", "messages": MESSAGES, "tools": TOOLS})
    assert r.status == 400, r
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == "tools" and error["type"] == "invalid_request_error"
    assert "no tool parser" in error["message"]
    assert fake_vllm.requests_seen("/v1/chat/completions") == 0
    # without tools the model works as usual
    assert tool_gateway.openai_client().chat.completions.create(model="plain", messages=MESSAGES).choices[0].message.content
