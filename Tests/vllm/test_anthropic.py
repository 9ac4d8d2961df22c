"""The Anthropic Messages API with the official `anthropic` SDK
(`anthropic.Anthropic(base_url=<root URL, no /v1>, api_key=key)`), against vLLM and through
the gateway.

vLLM 0.32 facts: message ids are `chatcmpl-<16 hex>` (not `msg_…`), tool_use ids
`chatcmpl-tool-<16 hex>`; the stream has no `ping` event; `message_delta.usage` carries
input_tokens too; a model it does not serve is a 404 in Anthropic's shape with
`error.type` "NotFoundError" (Anthropic says "not_found_error"), but a request that fails
validation (e.g. no max_tokens) is a 400 in OpenAI's shape.
"""
from __future__ import annotations

import anthropic
import pytest

MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "strict": True,
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["paris", "tokyo"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


def _check_message(m, target, max_tokens):
    assert m.type == "message" and m.role == "assistant"
    assert m.model == target.model
    assert m.id
    assert m.stop_reason in ("max_tokens", "end_turn")
    assert m.usage.output_tokens <= max_tokens and m.usage.input_tokens > 0
    assert m.content and m.content[0].type == "text"


@pytest.mark.routes("/v1/messages")
@pytest.mark.parametrize("auth", ["x-api-key", "bearer"])
def test_messages_create(target, auth):
    m = target.anthropic(auth=auth).messages.create(
        model=target.model, max_tokens=4, messages=MESSAGES, system="You are terse.")
    _check_message(m, target, 4)


@pytest.mark.routes("/v1/messages")
def test_messages_stream(target):
    client = target.anthropic()
    with client.messages.stream(model=target.model, max_tokens=4, messages=MESSAGES) as stream:
        events = list(stream)
        final = stream.get_final_message()
    types = [e.type for e in events]
    assert types[0] == "message_start" and types[-1] == "message_stop"
    assert "content_block_delta" in types and "message_delta" in types
    _check_message(final, target, 4)
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta")
    assert text == final.content[0].text


@pytest.mark.routes("/v1/messages")
def test_messages_create_stream_raw_events(target):
    """stream=True on create(): the raw SSE events, one per `event:`/`data:` pair."""
    events = list(target.anthropic().messages.create(model=target.model, max_tokens=3, messages=MESSAGES,
                                                     stream=True))
    types = [e.type for e in events]
    assert types[0] == "message_start" and types[-1] == "message_stop", types
    assert events[0].message.model == target.model
    delta = [e for e in events if e.type == "message_delta"]
    assert len(delta) == 1 and delta[0].usage.output_tokens <= 3
    assert delta[0].delta.stop_reason in ("max_tokens", "end_turn")


@pytest.mark.routes("/v1/messages/count_tokens")
def test_messages_count_tokens(target):
    client = target.anthropic()
    short = client.messages.count_tokens(model=target.model, messages=[{"role": "user", "content": "hi"}])
    long = client.messages.count_tokens(model=target.model, messages=MESSAGES, system="You are terse.")
    assert 0 < short.input_tokens < long.input_tokens
    m = client.messages.create(model=target.model, max_tokens=1, messages=MESSAGES, system="You are terse.")
    assert m.usage.input_tokens == long.input_tokens


@pytest.mark.routes("/v1/messages")
def test_messages_forced_tool_use(target):
    m = target.anthropic().messages.create(
        model=target.model, max_tokens=120, messages=MESSAGES, tools=[WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"})
    uses = [b for b in m.content if b.type == "tool_use"]
    assert len(uses) == 1, m.content
    assert uses[0].name == "get_weather" and uses[0].id
    assert uses[0].input["city"] in ("paris", "tokyo")
    assert m.stop_reason == "tool_use"


@pytest.mark.routes("/v1/messages")
def test_messages_forced_tool_use_stream(target):
    with target.anthropic().messages.stream(
            model=target.model, max_tokens=120, messages=MESSAGES, tools=[WEATHER_TOOL],
            tool_choice={"type": "tool", "name": "get_weather"}) as stream:
        final = stream.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert len(uses) == 1, final.content
    assert uses[0].name == "get_weather" and uses[0].input["city"] in ("paris", "tokyo")


@pytest.mark.routes("/v1/messages")
def test_messages_unknown_model_error_shape(target):
    with pytest.raises(anthropic.NotFoundError) as e:
        target.anthropic().messages.create(model="no-such-model", max_tokens=2, messages=MESSAGES)
    body = e.value.body
    assert body["type"] == "error", body
    assert set(body["error"]) >= {"type", "message"}
    assert "no-such-model" in body["error"]["message"]


@pytest.mark.routes("/v1/messages", "/v1/messages/count_tokens")
def test_beta_messages_query_string(target):
    """Claude Code uses the beta client: POST /v1/messages?beta=true (and
    /v1/messages/count_tokens?beta=true) with an `anthropic-beta` header."""
    client = target.anthropic()
    m = client.beta.messages.create(model=target.model, max_tokens=3, messages=MESSAGES,
                                    betas=["interleaved-thinking-2025-05-14"])
    assert m.model == target.model and m.usage.output_tokens <= 3
    n = client.beta.messages.count_tokens(model=target.model, messages=MESSAGES,
                                          betas=["interleaved-thinking-2025-05-14"])
    assert n.input_tokens > 0


@pytest.mark.routes("/v1/messages")
def test_claude_code_shaped_request(target):
    """What Claude Code sends, roughly: the beta endpoint, streamed, system prompt as blocks
    with cache_control, metadata.user_id, tools with cache_control, and beta headers."""
    client = target.anthropic(default_headers={"anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
                                               "x-app": "cli", "anthropic-dangerous-direct-browser-access": "true"})
    tool = dict(WEATHER_TOOL, cache_control={"type": "ephemeral"})
    with client.beta.messages.stream(
            model=target.model, max_tokens=8, metadata={"user_id": "user_abc_account__session_123"},
            system=[{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
            messages=[{"role": "user", "content": [{"type": "text", "text": "hello",
                                                    "cache_control": {"type": "ephemeral"}}]}],
            tools=[tool]) as stream:
        final = stream.get_final_message()
    assert final.model == target.model and final.usage.output_tokens <= 8
