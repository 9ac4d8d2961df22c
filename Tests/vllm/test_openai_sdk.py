"""Chat completions, completions and tool calls with the official `openai` SDK, against vLLM
and through the gateway. The model has random weights, so its text is noise: the tests
assert shapes, usage, finish reasons and the model name, and only forced (grammar-guided)
output, such as a tool call under `tool_choice`, for content."""
from __future__ import annotations

import json

import pytest

VLLM_MODEL_NAME = "tiny"  # the gateway shows its alias, never the upstream's name

MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]
# strict: vLLM 0.32 constrains the arguments to the schema only for strict tools (or with
# --tool-strict-level parameter); without it the named tool call's arguments are free text.
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["paris", "tokyo"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
OTHER_TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer", "enum": [1, 2]}, "b": {"type": "integer", "enum": [3]}},
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    },
}


@pytest.mark.routes("/v1/models")
def test_models_lists_the_model(target):
    ids = [m.id for m in target.openai().models.list().data]
    # vLLM lists its one served name; the gateway its configured aliases (also the pooling one).
    assert target.model in ids and VLLM_MODEL_NAME not in (ids if target.name == "gateway" else ())


@pytest.mark.routes("/v1/chat/completions")
def test_chat(target):
    r = target.openai().chat.completions.create(model=target.model, messages=MESSAGES, max_tokens=4)
    assert r.object == "chat.completion"
    assert r.model == target.model
    assert r.id.startswith("chatcmpl-")
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("length", "stop")
    assert isinstance(r.choices[0].message.content, str)
    assert r.usage.completion_tokens <= 4 and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


@pytest.mark.routes("/v1/chat/completions")
def test_chat_stream(target):
    stream = target.openai().chat.completions.create(
        model=target.model, messages=MESSAGES, max_tokens=4, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks, "no chunks"
    assert {c.model for c in chunks} == {target.model}
    assert len({c.id for c in chunks}) == 1
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["length"], ["stop"])
    usage = [c.usage for c in chunks if c.usage]
    assert usage and usage[-1].completion_tokens <= 4


@pytest.mark.routes("/v1/completions")
def test_completions(target):
    client = target.openai()
    r = client.completions.create(model=target.model, prompt="The weather in Paris is", max_tokens=4)
    assert r.object == "text_completion" and r.model == target.model
    assert r.choices[0].finish_reason in ("length", "stop")
    assert r.usage.completion_tokens <= 4
    chunks = list(client.completions.create(model=target.model, prompt="Hello", max_tokens=3, stream=True))
    assert chunks and {c.model for c in chunks} == {target.model}
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")


def _check_weather_call(call):
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] in ("paris", "tokyo")
    assert call.id


@pytest.mark.routes("/v1/chat/completions")
def test_tool_choice_named_function(target):
    r = target.openai().chat.completions.create(
        model=target.model, messages=MESSAGES, max_tokens=120, tools=[OTHER_TOOL, WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    msg = r.choices[0].message
    assert msg.tool_calls and len(msg.tool_calls) == 1, msg
    _check_weather_call(msg.tool_calls[0])
    assert not msg.content
    # vLLM 0.32 says "stop" for a named tool_choice ("tool_calls" for "required").
    assert r.choices[0].finish_reason in ("stop", "tool_calls")


@pytest.mark.routes("/v1/chat/completions")
def test_tool_choice_named_function_stream(target):
    stream = target.openai().chat.completions.create(
        model=target.model, messages=MESSAGES, max_tokens=120, stream=True, tools=[OTHER_TOOL, WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    calls = {}
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        for tc in choice.delta.tool_calls or []:
            entry = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
            entry["id"] = entry["id"] or tc.id
            if tc.function and tc.function.name:
                entry["name"] += tc.function.name
            if tc.function and tc.function.arguments:
                entry["arguments"] += tc.function.arguments
        finish = choice.finish_reason or finish
    assert list(calls) == [0], calls
    assert calls[0]["name"] == "get_weather" and calls[0]["id"]
    assert json.loads(calls[0]["arguments"])["city"] in ("paris", "tokyo")
    assert finish in ("stop", "tool_calls")


@pytest.mark.routes("/v1/chat/completions")
def test_tool_choice_required(target):
    r = target.openai().chat.completions.create(
        model=target.model, messages=MESSAGES, max_tokens=120, tools=[WEATHER_TOOL], tool_choice="required",
        parallel_tool_calls=False)
    msg = r.choices[0].message
    assert msg.tool_calls and len(msg.tool_calls) == 1, msg
    _check_weather_call(msg.tool_calls[0])
    assert r.choices[0].finish_reason == "tool_calls"
