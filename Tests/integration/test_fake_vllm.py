"""Self-tests of the fake vLLM server, with the official openai SDK pointed straight at it.

They prove the fake (and its control API) before the gateway exists; the gateway tests
then rely on it.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import math
import socket
import time

import httpx
import openai
import pytest

from fake_vllm import (ANTHROPIC_STREAM, DEFAULT_STREAM_EVENTS, RESPONSES_STREAM, MultipartError, default_text,
                       default_tokens, form_summary, hermes_tool_text, multipart_body, multipart_boundary,
                       parse_multipart, tokenize)
from gateway import http_request, parse_sse, sse_events, sse_named_events

HOST = "127.0.0.1"


def client(fv, **kw) -> openai.OpenAI:
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 20.0)
    return openai.OpenAI(base_url=fv.base_url, api_key=kw.pop("api_key", "unused"), **kw)


def msgs(text="Hello there, fake"):
    return [{"role": "user", "content": text}]


def raw_post(fv, path, body, headers=None, timeout=10.0):
    return http_request(HOST, fv.port, "POST", path, body, headers, timeout)


def raw_sse_body(fv, path, body, timeout=10.0) -> bytes:
    conn = http.client.HTTPConnection(HOST, fv.port, timeout=timeout)
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 200
        assert r.getheader("Content-Type").startswith("text/event-stream")
        return r.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------------------
# vLLM's OpenAI surface
# --------------------------------------------------------------------------------------

def test_list_models(fake_vllm_factory):
    fv = fake_vllm_factory(models=["qwen-a", "qwen-b"], max_model_len=2048)
    ids = [m.id for m in client(fv).models.list()]
    assert ids == ["qwen-a", "qwen-b"]
    r = http_request(HOST, fv.port, "GET", "/v1/models")
    body = r.json()
    assert r.status == 200 and body["object"] == "list"
    card = body["data"][0]
    assert card["object"] == "model" and card["owned_by"] == "vllm" and card["root"] == "qwen-a"
    assert card["max_model_len"] == 2048 and isinstance(card["created"], int)


def test_chat_plain(fake_vllm):
    t0 = int(time.time())
    resp = client(fake_vllm).chat.completions.create(model="fake-model", messages=msgs("one two three"))
    assert resp.id.startswith("chatcmpl-") and resp.object == "chat.completion"
    assert t0 - 1 <= resp.created <= int(time.time()) + 1
    assert resp.model == "fake-model"
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == default_text(DEFAULT_STREAM_EVENTS)
    assert choice.finish_reason == "stop"
    # prompt = words of the messages; completion = tokens + EOS
    assert resp.usage.prompt_tokens == 3
    assert resp.usage.completion_tokens == DEFAULT_STREAM_EVENTS + 1
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_chat_stream(fake_vllm):
    stream = client(fake_vllm).chat.completions.create(model="fake-model", messages=msgs(), stream=True)
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == default_text(DEFAULT_STREAM_EVENTS)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert all(c.usage is None for c in chunks)
    # wire format: one "data: {...}\n\n" per event, compact JSON, closing [DONE]
    raw = raw_sse_body(fake_vllm, "/v1/chat/completions",
                       {"model": "fake-model", "messages": msgs(), "stream": True})
    assert raw.endswith(b"data: [DONE]\n\n")
    events = raw.split(b"\n\n")[:-1]
    assert all(e.startswith(b"data: ") for e in events)
    assert len(events) == 1 + DEFAULT_STREAM_EVENTS + 1 + 1  # role, tokens, EOS, [DONE]
    assert b'"object":"chat.completion.chunk"' in events[0]


def test_stream_include_usage(fake_vllm):
    fake_vllm.set_stream(events=5)
    chunks = list(client(fake_vllm).chat.completions.create(
        model="fake-model", messages=msgs("a b c d"), stream=True, stream_options={"include_usage": True}))
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.prompt_tokens == 4 and last.usage.completion_tokens == 6
    assert last.usage.total_tokens == 10
    assert all(c.usage is None for c in chunks[:-1])


def test_max_tokens_gives_length(fake_vllm):
    resp = client(fake_vllm).chat.completions.create(model="fake-model", messages=msgs(), max_tokens=3)
    assert resp.choices[0].finish_reason == "length"
    assert resp.choices[0].message.content == "The quick brown"
    assert resp.usage.completion_tokens == 3
    chunks = list(client(fake_vllm).chat.completions.create(
        model="fake-model", messages=msgs(), max_tokens=3, stream=True))
    assert chunks[-1].choices[0].finish_reason == "length"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "The quick brown"


def test_context_length_error_is_400(fake_vllm_factory):
    fv = fake_vllm_factory(max_model_len=100)
    with pytest.raises(openai.BadRequestError) as ei:
        client(fv).chat.completions.create(model="fake-model", messages=msgs(), max_tokens=500)
    assert "maximum context length is 100 tokens" in str(ei.value)


def test_completions_plain_and_stream(fake_vllm):
    c = client(fake_vllm)
    resp = c.completions.create(model="fake-model", prompt="Say something")
    assert resp.id.startswith("cmpl-") and resp.object == "text_completion"
    assert resp.choices[0].text == default_text(DEFAULT_STREAM_EVENTS)
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.prompt_tokens == 2
    chunks = list(c.completions.create(model="fake-model", prompt="Say something", stream=True,
                                       stream_options={"include_usage": True}))
    assert all(ch.object == "text_completion" and ch.id.startswith("cmpl-") for ch in chunks)
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == default_text(DEFAULT_STREAM_EVENTS)
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == DEFAULT_STREAM_EVENTS + 1
    # batch of prompts -> one choice per prompt
    resp = c.completions.create(model="fake-model", prompt=["a", "b c"], max_tokens=2)
    assert [ch.index for ch in resp.choices] == [0, 1]
    assert resp.usage.prompt_tokens == 3


def test_embeddings(fake_vllm):
    c = client(fake_vllm)
    one = c.embeddings.create(model="fake-model", input="hello world")  # the SDK asks for base64
    assert one.object == "list" and len(one.data) == 1
    vec = one.data[0].embedding
    assert len(vec) == 32 and abs(math.sqrt(sum(v * v for v in vec)) - 1.0) < 1e-5
    many = c.embeddings.create(model="fake-model", input=["hello world", "other"], encoding_format="float")
    assert [d.index for d in many.data] == [0, 1]
    assert all(abs(a - b) < 1e-6 for a, b in zip(many.data[0].embedding, vec))  # deterministic
    assert many.data[1].embedding != many.data[0].embedding
    assert many.usage.prompt_tokens == 3 and many.usage.total_tokens == 3
    r = raw_post(fake_vllm, "/v1/embeddings", {"model": "fake-model", "input": "x", "dimensions": 8})
    assert r.status == 200 and len(r.json()["data"][0]["embedding"]) == 8
    assert r.json()["id"].startswith("embd-")


def test_unknown_model_is_404_in_vllm_shape(fake_vllm):
    c = client(fake_vllm)
    with pytest.raises(openai.NotFoundError) as ei:
        c.chat.completions.create(model="nope", messages=msgs())
    assert "The model `nope` does not exist." in str(ei.value)
    r = raw_post(fake_vllm, "/v1/completions", {"model": "nope", "prompt": "x"})
    assert r.status == 404
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "NotFoundError" and err["code"] == 404
    # older vLLM: flat ErrorResponse
    fake_vllm.config(error_style="flat")
    r = raw_post(fake_vllm, "/v1/embeddings", {"model": "nope", "input": "x"})
    body = r.json()
    assert r.status == 404 and body["object"] == "error" and body["type"] == "NotFoundError"
    with pytest.raises(openai.NotFoundError):
        c.embeddings.create(model="nope", input="x")


def test_bad_requests(fake_vllm):
    r = raw_post(fake_vllm, "/v1/chat/completions", b"{not json", {"Content-Type": "application/json"})
    assert r.status == 400 and r.json()["error"]["type"] == "BadRequestError"
    r = raw_post(fake_vllm, "/v1/chat/completions", {"model": "fake-model"})
    assert r.status == 400
    r = http_request(HOST, fake_vllm.port, "GET", "/v1/nothing")
    assert r.status == 404 and r.json() == {"detail": "Not Found"}
    r = http_request(HOST, fake_vllm.port, "GET", "/v1/chat/completions")
    assert r.status == 405


def test_api_key(fake_vllm_factory):
    fv = fake_vllm_factory(api_key="upstream-secret")
    with pytest.raises(openai.AuthenticationError):
        client(fv, api_key="wrong").models.list()
    assert [m.id for m in client(fv, api_key="upstream-secret").models.list()] == ["fake-model"]
    assert fv.last_request("/v1/models")["headers"]["authorization"] == "Bearer upstream-secret"


# --------------------------------------------------------------------------------------
# Tool calls
# --------------------------------------------------------------------------------------

def test_hermes_raw_mode(fake_vllm):
    fake_vllm.set_tool_mode("hermes_raw")
    expected = '<tool_call>{"name":"get_weather","arguments":{"city":"Paris"}}</tool_call>'
    assert hermes_tool_text([{"name": "get_weather", "arguments": {"city": "Paris"}}]) == expected
    c = client(fake_vllm)
    resp = c.chat.completions.create(model="fake-model", messages=msgs("weather in Paris?"))
    assert resp.choices[0].message.content == expected
    assert not resp.choices[0].message.tool_calls
    assert resp.choices[0].finish_reason == "stop"
    chunks = list(c.chat.completions.create(model="fake-model", messages=msgs(), stream=True))
    pieces = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert "".join(pieces) == expected
    assert pieces[0] == "<tool_call>" and pieces[-1] == "</tool_call>" and len(pieces) > 5
    # tag split across events, as a tokenizer without special tokens would do it
    fake_vllm.config(chunk_chars=4)
    chunks = list(c.chat.completions.create(model="fake-model", messages=msgs(), stream=True))
    pieces = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert "".join(pieces) == expected and pieces[0] == "<too"


def test_structured_tool_calls(fake_vllm):
    fake_vllm.set_tool_mode("structured")
    c = client(fake_vllm)
    resp = c.chat.completions.create(model="fake-model", messages=msgs())
    msg = resp.choices[0].message
    assert resp.choices[0].finish_reason == "tool_calls" and msg.content is None
    call = msg.tool_calls[0]
    assert call.id.startswith("chatcmpl-tool-") and call.type == "function"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    chunks = list(c.chat.completions.create(model="fake-model", messages=msgs(), stream=True))
    args = "".join(tc.function.arguments or "" for ch in chunks if ch.choices
                   for tc in (ch.choices[0].delta.tool_calls or []))
    assert json.loads(args) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_reply_text_and_echo(fake_vllm):
    fake_vllm.config(reply_text="Bonjour, monde!")
    resp = client(fake_vllm).chat.completions.create(model="fake-model", messages=msgs())
    assert resp.choices[0].message.content == "Bonjour, monde!"
    assert tokenize("Bonjour, monde!") == ["Bonjour", ",", " monde", "!"]
    fake_vllm.config(reply_text=None, reply_mode="echo")
    resp = client(fake_vllm).chat.completions.create(model="fake-model", messages=msgs("echo me back"))
    assert resp.choices[0].message.content == "echo me back"


# --------------------------------------------------------------------------------------
# Timing, disconnects, control API
# --------------------------------------------------------------------------------------

def test_stream_event_timing(fake_vllm):
    fake_vllm.set_stream(events=5, delay=0.1)
    body = {"model": "fake-model", "messages": msgs(), "stream": True}
    received = list(sse_events(HOST, fake_vllm.port, "/v1/chat/completions", body, timeout=10))
    assert received[-1][1] == "[DONE]" and len(received) == 1 + 5 + 1 + 1
    st = fake_vllm.last_stream()
    assert st["completed"] and not st["cancelled"]
    sent = st["event_times"]
    assert len(sent) == len(received)
    for (t_recv, _), t_sent in zip(received, sent):
        assert -0.005 <= t_recv - t_sent < 0.1  # flushed per event
    gaps = [b - a for a, b in zip(sent[1:6], sent[2:7])]
    assert all(g >= 0.09 for g in gaps), gaps
    assert [e["kind"] for e in st["events"]] == ["role"] + ["content"] * 5 + ["finish", "done"]


def test_disconnect_mid_stream_is_recorded(fake_vllm):
    fake_vllm.set_stream(events=50, delay=0.1)
    body = {"model": "fake-model", "messages": msgs(), "stream": True}
    it = sse_events(HOST, fake_vllm.port, "/v1/chat/completions", body, timeout=10)
    got = [next(it) for _ in range(3)]
    t_close = time.time()
    it.close()  # closes the connection
    cancels = fake_vllm.wait_for_cancellation(timeout=3)
    c = cancels[0]
    assert c["path"] == "/v1/chat/completions" and c["phase"] == "streaming"
    assert 3 <= c["events_sent"] < 10 and c["time"] - t_close < 0.5
    assert c["request_id"] and json.loads(got[0][1])["id"] == c["request_id"]
    st = fake_vllm.last_stream()
    assert st["cancelled"] and not st["completed"]
    counters = fake_vllm.counters()
    assert counters["cancelled"] == {"/v1/chat/completions": 1} and counters["inflight"] == 0


def test_disconnect_while_headers_delayed_is_recorded(fake_vllm):
    fake_vllm.delay_headers(5.0, count=1)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(fake_vllm.base_url + "/chat/completions", timeout=0.5,
                   json={"model": "fake-model", "messages": msgs()})
    c = fake_vllm.wait_for_cancellation(timeout=3)[0]
    assert c["phase"] == "header_delay" and c["time"] - c["started"] < 2.0
    # the delay rule was for one request only
    r = raw_post(fake_vllm, "/v1/chat/completions", {"model": "fake-model", "messages": msgs()})
    assert r.status == 200 and r.elapsed < 1.0


def test_disconnect_during_non_stream_generation_is_recorded(fake_vllm):
    fake_vllm.set_stream(events=10, delay=0.5)  # a non-stream reply takes 10 x 0.5 s
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(fake_vllm.base_url + "/completions", timeout=0.5,
                   json={"model": "fake-model", "prompt": "x", "max_tokens": 50})
    c = fake_vllm.wait_for_cancellation(timeout=3)[0]
    assert c["path"] == "/v1/completions" and c["phase"] == "generating"


def test_health_control_and_listener(fake_vllm):
    r = http_request(HOST, fake_vllm.port, "GET", "/health")
    assert r.status == 200 and r.body == b""
    fake_vllm.set_health(status=503)
    assert http_request(HOST, fake_vllm.port, "GET", "/health").status == 503
    fake_vllm.set_health(status=200, mode="hang")
    with pytest.raises(socket.timeout):
        http_request(HOST, fake_vllm.port, "GET", "/health", timeout=0.5)
    fake_vllm.set_health(mode="ok")
    assert http_request(HOST, fake_vllm.port, "GET", "/health").status == 200
    # connection refused while the listener is stopped; open connections are dropped too
    keep = http.client.HTTPConnection(HOST, fake_vllm.port, timeout=5)
    keep.request("GET", "/health")
    assert keep.getresponse().read() == b""
    assert fake_vllm.stop_listener()["enabled"] is False
    with pytest.raises(ConnectionRefusedError):
        http_request(HOST, fake_vllm.port, "GET", "/health", timeout=2)
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        keep.request("GET", "/health")
        keep.getresponse()
    keep.close()
    fake_vllm.start_listener()
    assert http_request(HOST, fake_vllm.port, "GET", "/health").status == 200
    assert fake_vllm.counters()["requests"]["/health"] >= 4


def test_fail_next_before_any_byte(fake_vllm):
    fake_vllm.fail_next(2, status=503, retry_after=1, routes=["/v1/chat/completions"])
    c = client(fake_vllm)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as ei:
            c.chat.completions.create(model="fake-model", messages=msgs())
        assert ei.value.status_code == 503
        assert ei.value.response.headers["Retry-After"] == "1"
        assert set(ei.value.body) >= {"message", "type", "param", "code"}
    assert c.models.list().data  # other routes unaffected
    assert c.chat.completions.create(model="fake-model", messages=msgs()).choices
    fake_vllm.fail_next(1, mode="close")
    with pytest.raises(openai.APIConnectionError):
        c.chat.completions.create(model="fake-model", messages=msgs())
    fake_vllm.fail_next(1, status=500, style="flat")
    r = raw_post(fake_vllm, "/v1/completions", {"model": "fake-model", "prompt": "x"})
    assert r.status == 500 and r.json()["object"] == "error"
    counters = fake_vllm.counters()
    assert [i["mode"] for i in counters["injected"]] == ["status", "status", "close", "status"]
    assert counters["cancelled"] == {}  # injected closes are not client cancellations


def test_fail_stream_close_and_error_event(fake_vllm):
    body = {"model": "fake-model", "messages": msgs(), "stream": True}
    fake_vllm.fail_stream(1, after_events=3, mode="close")
    got = []
    with pytest.raises(http.client.HTTPException):  # IncompleteRead: no terminating chunk
        for ev in sse_events(HOST, fake_vllm.port, "/v1/chat/completions", body):
            got.append(ev)
    assert len(got) == 3
    assert fake_vllm.last_stream()["failure"] == "close"
    fake_vllm.fail_stream(1, after_events=2, mode="error_event", message="engine died")
    events = [d for _, d in sse_events(HOST, fake_vllm.port, "/v1/chat/completions", body)]
    assert len(events) == 4 and events[-1] == "[DONE]"
    assert json.loads(events[2])["error"]["message"] == "engine died"
    fake_vllm.fail_stream(1, after_events=2, mode="error_event")
    with pytest.raises(openai.APIError):
        list(client(fake_vllm).chat.completions.create(model="fake-model", messages=msgs(), stream=True))
    assert fake_vllm.counters()["cancelled"] == {}


def test_last_request_and_counters(fake_vllm):
    c = client(fake_vllm)
    c.chat.completions.create(model="fake-model", messages=msgs(), stream=True,
                              stream_options={"include_usage": True}, extra_headers={"X-Test": "1"}).close()
    c.embeddings.create(model="fake-model", input="x")
    last = fake_vllm.last_request("/v1/chat/completions")
    assert last["body"]["model"] == "fake-model"
    assert last["body"]["stream_options"] == {"include_usage": True}
    assert last["headers"]["x-test"] == "1"
    assert fake_vllm.last_request()["path"] == "/v1/embeddings"
    counters = fake_vllm.counters()
    assert counters["requests"]["/v1/chat/completions"] == 1
    assert counters["requests"]["/v1/embeddings"] == 1
    assert counters["requests_by_method"]["POST /v1/embeddings"] == 1
    assert [e["path"] for e in fake_vllm.request_log()] == ["/v1/chat/completions", "/v1/embeddings"]
    fake_vllm.reset()
    counters = fake_vllm.counters()
    assert counters["requests"] == {} and counters["total"] == 0
    assert fake_vllm.last_request() is None


def test_keepalive_connections_counted(fake_vllm):
    conn = http.client.HTTPConnection(HOST, fake_vllm.port, timeout=5)
    try:
        for _ in range(3):
            conn.request("POST", "/v1/completions", body=json.dumps({"model": "fake-model", "prompt": "x"}),
                         headers={"Content-Type": "application/json"})
            assert conn.getresponse().read()
    finally:
        conn.close()
    c = fake_vllm.counters()
    assert c["connections_seen"] == 1 and c["requests"]["/v1/completions"] == 3


def test_models_control_and_restart(fake_vllm):
    fake_vllm.set_models(["m1", "m2"])
    assert [m.id for m in client(fake_vllm).models.list()] == ["m1", "m2"]
    port, old_pid = fake_vllm.port, fake_vllm.pid
    fake_vllm.restart()
    assert fake_vllm.pid != old_pid and fake_vllm.port == port
    assert [m.id for m in client(fake_vllm).models.list()] == ["fake-model"]


def test_command_line_listening_line(fake_vllm_factory):
    fv = fake_vllm_factory(models=["a", "b"], stream_events=3)
    line = fv.log_text().splitlines()[0]
    assert line.startswith(f"fake_vllm listening on http://127.0.0.1:{fv.port} ")
    assert client(fv).chat.completions.create(model="b", messages=msgs()).choices[0].message.content \
        == default_text(3)


# --------------------------------------------------------------------------------------
# The other APIs vLLM serves: Responses, Anthropic Messages, rerank/score, tokenize,
# pooling, classify (issue 23)
# --------------------------------------------------------------------------------------



def raw_named_sse(fv, path, body, timeout=10.0):
    conn = http.client.HTTPConnection(HOST, fv.port, timeout=timeout)
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 200, r.read()[:300]
        assert r.getheader("Content-Type").startswith("text/event-stream")
        return parse_sse(r.read())
    finally:
        conn.close()


def test_responses_plain_with_the_sdk(fake_vllm):
    resp = client(fake_vllm).responses.create(model="fake-model", input="one two three", instructions="be brief")
    assert resp.id.startswith("resp_") and resp.object == "response" and resp.status == "completed"
    assert resp.model == "fake-model"
    assert resp.output_text == default_text(DEFAULT_STREAM_EVENTS)
    item = resp.output[0]
    assert item.type == "message" and item.role == "assistant" and item.id.startswith("msg_")
    assert item.content[0].type == "output_text" and item.content[0].annotations == []
    # input = words of instructions + input; output = tokens + EOS
    assert resp.usage.input_tokens == 5 and resp.usage.output_tokens == DEFAULT_STREAM_EVENTS + 1
    assert resp.usage.total_tokens == 5 + DEFAULT_STREAM_EVENTS + 1
    assert resp.usage.input_tokens_details.cached_tokens == 0
    assert resp.usage.output_tokens_details.reasoning_tokens == 0
    short = client(fake_vllm).responses.create(model="fake-model", input="x", max_output_tokens=3)
    assert short.status == "incomplete" and short.incomplete_details.reason == "max_output_tokens"
    assert short.output_text == default_text(3) and short.usage.output_tokens == 3


def test_responses_stream_event_sequence(fake_vllm):
    events = raw_named_sse(fake_vllm, "/v1/responses", {"model": "fake-model", "input": "hi there", "stream": True})
    assert [e for e, _ in events] == RESPONSES_STREAM
    datas = [json.loads(d) for _, d in events]
    assert [d["type"] for d in datas] == RESPONSES_STREAM
    assert [d["sequence_number"] for d in datas] == list(range(len(datas)))
    created, completed = datas[0]["response"], datas[-1]["response"]
    assert created["status"] == "in_progress" and created["usage"] is None and created["output"] == []
    assert completed["id"] == created["id"] and completed["status"] == "completed"
    assert completed["usage"]["input_tokens"] == 2
    assert completed["usage"]["output_tokens"] == DEFAULT_STREAM_EVENTS + 1
    deltas = "".join(d["delta"] for d in datas if d["type"] == "response.output_text.delta")
    assert deltas == default_text(DEFAULT_STREAM_EVENTS) == datas[-4]["text"]
    assert completed["output"][0]["content"][0]["text"] == deltas
    # the SDK reads it too
    with client(fake_vllm).responses.stream(model="fake-model", input="hi") as stream:
        final = stream.get_final_response()
    assert final.output_text == default_text(DEFAULT_STREAM_EVENTS) and final.usage.input_tokens == 1
    rec = fake_vllm.last_stream()
    assert [e["event"] for e in rec["events"]] == RESPONSES_STREAM
    assert [e["kind"] for e in rec["events"]].count("content") == DEFAULT_STREAM_EVENTS


def test_responses_store_follow_up_get_and_cancel(fake_vllm_factory):
    a, b = fake_vllm_factory(), fake_vllm_factory()
    first = raw_post(a, "/v1/responses", {"model": "fake-model", "input": "alpha beta"}).json()
    rid = first["id"]
    assert a.stored_responses() == {rid: "completed"} and b.stored_responses() == {}
    # GET: the stored object, on this instance only (vLLM keeps it in one server's memory)
    got = http_request(HOST, a.port, "GET", f"/v1/responses/{rid}")
    assert got.status == 200 and got.json() == first
    miss = http_request(HOST, b.port, "GET", f"/v1/responses/{rid}")
    assert miss.status == 404
    assert miss.json() == {"error": {"message": f"Response with id '{rid}' not found.",
                                     "type": "invalid_request_error", "param": "response_id", "code": 404}}
    # a follow-up carries the conversation: 2 words before + 9 reply words + 1 new
    follow = raw_post(a, "/v1/responses", {"model": "fake-model", "input": "gamma", "previous_response_id": rid})
    assert follow.status == 200
    assert follow.json()["previous_response_id"] == rid
    assert follow.json()["usage"]["input_tokens"] == 2 + len(default_text().split()) + 1
    refused = raw_post(b, "/v1/responses", {"model": "fake-model", "input": "gamma", "previous_response_id": rid})
    assert refused.status == 404 and refused.json()["error"]["param"] == "response_id"
    assert raw_post(a, "/v1/responses", {"input": "x", "previous_response_id": 7}).status == 400
    # cancel: only background responses; a finished one is a 400
    done = raw_post(a, f"/v1/responses/{rid}/cancel", None)
    assert done.status == 400
    assert done.json()["error"] == {"message": "Cannot cancel a synchronous response.",
                                    "type": "invalid_request_error", "param": "response_id", "code": 400}
    assert raw_post(b, f"/v1/responses/{rid}/cancel", None).status == 404
    # store: false is not kept
    unstored = raw_post(a, "/v1/responses", {"input": "x", "store": False}).json()
    assert http_request(HOST, a.port, "GET", f"/v1/responses/{unstored['id']}").status == 404
    # background: queued at once, cancellable while it runs, completed later
    a.set_stream(delay=0.2)
    bg = raw_post(a, "/v1/responses", {"input": "x", "background": True}).json()
    assert bg["status"] == "queued" and bg["output"] == [] and bg["background"] is True
    cancelled = raw_post(a, f"/v1/responses/{bg['id']}/cancel", None)
    assert cancelled.status == 200 and cancelled.json()["status"] == "cancelled"
    a.set_stream(delay=0.0)
    bg2 = raw_post(a, "/v1/responses", {"input": "x", "background": True}).json()
    deadline = time.monotonic() + 5
    while a.stored_responses()[bg2["id"]] != "completed" and time.monotonic() < deadline:
        time.sleep(0.05)
    final = http_request(HOST, a.port, "GET", f"/v1/responses/{bg2['id']}").json()
    assert final["status"] == "completed" and final["usage"]["output_tokens"] == DEFAULT_STREAM_EVENTS + 1
    assert raw_post(a, "/v1/responses", {"input": "x", "background": True, "store": False}).status == 400
    # vLLM's default (VLLM_ENABLE_RESPONSES_API_STORE unset): nothing is stored
    a.config(responses_store=False)
    off = raw_post(a, "/v1/responses", {"input": "x"}).json()
    assert http_request(HOST, a.port, "GET", f"/v1/responses/{off['id']}").status == 404
    assert raw_post(a, "/v1/responses", {"input": "x", "background": True}).json()["error"]["param"] == "background"


def test_responses_rules_and_failures(fake_vllm):
    fake_vllm.fail_next(count=1, status=503, routes=["/v1/responses"])
    r = raw_post(fake_vllm, "/v1/responses", {"input": "x"})
    assert r.status == 503 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert raw_post(fake_vllm, "/v1/responses", {"model": "nope", "input": "x"}).json()["error"]["code"] == 404
    assert raw_post(fake_vllm, "/v1/responses", {"model": 3, "input": "x"}).status == 400
    assert raw_post(fake_vllm, "/v1/responses", {"model": "fake-model"}).status == 400
    # mid-stream: cut after 3 events, or an `error` event in vLLM's ErrorResponse shape
    fake_vllm.fail_stream(count=1, after_events=3, mode="close", routes=["/v1/responses"])
    with pytest.raises(http.client.IncompleteRead):
        list(sse_named_events(HOST, fake_vllm.port, "/v1/responses", {"input": "x", "stream": True}))
    fake_vllm.fail_stream(count=1, after_events=5, mode="error_event", routes=["/v1/responses"], message="engine died")
    events = raw_named_sse(fake_vllm, "/v1/responses", {"input": "x", "stream": True})
    assert [e for e, _ in events] == RESPONSES_STREAM[:5] + ["error"]
    assert json.loads(events[-1][1])["error"]["message"] == "engine died"
    state = fake_vllm.counters()
    assert state["requests"]["/v1/responses"] == 6


def test_responses_stream_disconnect_is_recorded(fake_vllm):
    fake_vllm.set_stream(events=40, delay=0.1)
    it = sse_named_events(HOST, fake_vllm.port, "/v1/responses", {"input": "x", "stream": True})
    for _ in range(5):
        next(it)
    it.close()
    c = fake_vllm.wait_for_cancellation(1, timeout=5)[0]
    assert c["path"] == "/v1/responses" and c["phase"] == "streaming" and c["request_id"].startswith("resp_")


def test_anthropic_messages_with_the_sdk(fake_vllm):
    import anthropic  # Tests/integration/requirements.txt: never skipped
    ac = anthropic.Anthropic(base_url=fake_vllm.url, api_key="unused", max_retries=0, timeout=20.0)
    msg = ac.messages.create(model="fake-model", max_tokens=64, system="be brief",
                             messages=[{"role": "user", "content": "one two three"}])
    assert msg.type == "message" and msg.role == "assistant" and msg.model == "fake-model"
    assert msg.id.startswith("chatcmpl-")  # vLLM reuses the chat completion's id
    assert msg.content[0].type == "text" and msg.content[0].text == default_text(DEFAULT_STREAM_EVENTS)
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    assert msg.usage.input_tokens == 5 and msg.usage.output_tokens == DEFAULT_STREAM_EVENTS + 1
    assert ac.messages.create(model="fake-model", max_tokens=3,
                              messages=[{"role": "user", "content": "x"}]).stop_reason == "max_tokens"
    with ac.messages.stream(model="fake-model", max_tokens=64, messages=[{"role": "user", "content": "hi"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == default_text(DEFAULT_STREAM_EVENTS)
    assert final.usage.input_tokens == 1 and final.usage.output_tokens == DEFAULT_STREAM_EVENTS + 1
    assert ac.messages.count_tokens(model="fake-model", messages=[{"role": "user", "content": "a b c"}]).input_tokens == 3
    with pytest.raises(anthropic.NotFoundError):
        ac.messages.create(model="nope", max_tokens=8, messages=[{"role": "user", "content": "x"}])


def test_anthropic_stream_event_sequence(fake_vllm):
    body = {"model": "fake-model", "max_tokens": 64, "stream": True, "messages": [{"role": "user", "content": "a b"}]}
    events = raw_named_sse(fake_vllm, "/v1/messages", body)
    assert [e for e, _ in events] == ANTHROPIC_STREAM
    datas = [json.loads(d) for _, d in events]
    assert [d["type"] for d in datas] == ANTHROPIC_STREAM
    start = datas[0]["message"]
    assert start["usage"] == {"input_tokens": 2, "output_tokens": 0}
    assert start["type"] == "message" and start["role"] == "assistant" and start["content"] == []
    assert datas[1] == {"type": "content_block_start", "content_block": {"type": "text", "text": ""}, "index": 0}
    assert "".join(d["delta"]["text"] for d in datas[2:-3]) == default_text(DEFAULT_STREAM_EVENTS)
    # message_delta repeats input_tokens; output_tokens is the total so far
    assert datas[-2] == {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                         "usage": {"input_tokens": 2, "output_tokens": DEFAULT_STREAM_EVENTS + 1}}
    assert datas[-1] == {"type": "message_stop"}
    fake_vllm.config(anthropic_ping=True, anthropic_done=True)
    events = raw_named_sse(fake_vllm, "/v1/messages", body)
    assert [e for e, _ in events] == ANTHROPIC_STREAM[:1] + ["ping"] + ANTHROPIC_STREAM[1:] + [None]
    assert events[-1][1] == "[DONE]"


def test_anthropic_errors(fake_vllm):
    body = {"model": "fake-model", "max_tokens": 16, "messages": [{"role": "user", "content": "x"}]}
    r = raw_post(fake_vllm, "/v1/messages", dict(body, model="nope"))
    assert r.status == 404
    assert r.json() == {"type": "error", "error": {"type": "NotFoundError", "message": "The model `nope` does not exist."}}
    # a body pydantic rejects gets vLLM's generic (OpenAI-shaped) 400, even here
    for bad in ({"model": "fake-model", "messages": []}, dict(body, model=5), dict(body, max_tokens=0)):
        r = raw_post(fake_vllm, "/v1/messages", bad)
        assert r.status == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}, r
    r = raw_post(fake_vllm, "/v1/messages", dict(body, messages=[]))
    assert r.status == 400 and r.json()["type"] == "error"
    fake_vllm.fail_next(count=1, status=500, routes=["/v1/messages"], message="boom")
    r = raw_post(fake_vllm, "/v1/messages", body)
    assert r.status == 500
    assert r.json() == {"type": "error", "error": {"type": "InternalServerError", "message": "boom"}}
    fake_vllm.fail_next(count=1, status=429, routes=["/v1/messages/count_tokens"], retry_after=3)
    r = raw_post(fake_vllm, "/v1/messages/count_tokens", {"model": "fake-model", "messages": body["messages"]})
    assert r.status == 429 and r.headers["retry-after"] == "3" and r.json()["error"]["type"] == "RateLimitError"
    fake_vllm.fail_stream(count=1, after_events=4, mode="error_event", routes=["/v1/messages"], message="gone")
    events = raw_named_sse(fake_vllm, "/v1/messages", dict(body, stream=True))
    assert [e for e, _ in events] == ANTHROPIC_STREAM[:4] + ["error"]
    assert json.loads(events[-1][1]) == {"type": "error", "error": {"type": "internal_error", "message": "gone"}}
    r = raw_post(fake_vllm, "/v1/messages/count_tokens", {"model": "fake-model", "system": "s t",
                                                           "messages": [{"role": "user", "content": "a b c"}]})
    assert r.json() == {"input_tokens": 5, "context_management": {"original_input_tokens": 5}}


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank", "/v2/rerank"])
def test_rerank(fake_vllm, path):
    r = raw_post(fake_vllm, path, {"model": "fake-model", "query": "red fox", "documents": ["a fox", "the sea", "x"],
                                   "top_n": 2})
    assert r.status == 200, r
    body = r.json()
    assert body["id"].startswith("score-") and body["model"] == "fake-model"
    assert body["usage"] == {"prompt_tokens": 4 + 4 + 3, "total_tokens": 11}
    assert len(body["results"]) == 2
    scores = [x["relevance_score"] for x in body["results"]]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    for res in body["results"]:
        assert res["document"]["text"] == ["a fox", "the sea", "x"][res["index"]]
    assert raw_post(fake_vllm, path, {"model": "nope", "query": "q", "documents": ["d"]}).status == 404
    assert raw_post(fake_vllm, path, {"query": "q"}).status == 400
    assert fake_vllm.requests_seen(path) == 3


def test_score_tokenize_pooling_classify(fake_vllm):
    for path in ("/v1/score", "/score"):
        r = raw_post(fake_vllm, path, {"model": "fake-model", "text_1": "what is it", "text_2": ["a b", "c"]})
        body = r.json()
        assert r.status == 200 and body["object"] == "list" and body["id"].startswith("score-")
        assert [(d["index"], d["object"]) for d in body["data"]] == [(0, "score"), (1, "score")]
        assert body["usage"]["prompt_tokens"] == 5 + 4 and body["usage"]["total_tokens"] == 9
    tok = raw_post(fake_vllm, "/tokenize", {"model": "fake-model", "prompt": "a b a", "return_token_strs": True}).json()
    assert tok["count"] == 3 and tok["max_model_len"] == 4096 and tok["tokens"][0] == tok["tokens"][2]
    assert tok["token_strs"] == ["a", "b", "a"]
    chat_tok = raw_post(fake_vllm, "/tokenize", {"messages": [{"role": "user", "content": "a c"}]}).json()
    assert chat_tok["count"] == 2 and chat_tok["token_strs"] is None
    assert raw_post(fake_vllm, "/detokenize", {"tokens": tok["tokens"]}).json() == {"prompt": "a b a"}
    assert raw_post(fake_vllm, "/detokenize", {"tokens": [5]}).status == 400
    pool = raw_post(fake_vllm, "/pooling", {"model": "fake-model", "input": ["a b", "c"]}).json()
    assert pool["id"].startswith("pool-") and pool["object"] == "list"
    assert [d["object"] for d in pool["data"]] == ["pooling", "pooling"] and len(pool["data"][0]["data"]) == 32
    assert pool["usage"]["prompt_tokens"] == 3
    cls = raw_post(fake_vllm, "/classify", {"model": "fake-model", "input": "good stuff"}).json()
    assert cls["id"].startswith("classify-")
    d = cls["data"][0]
    assert d["num_classes"] == 2 and d["label"] in ("negative", "positive") and math.isclose(sum(d["probs"]), 1.0)
    assert cls["usage"]["prompt_tokens"] == 2
    for path, body in [("/v1/score", {"text_1": "a", "text_2": "b"}), ("/tokenize", {"prompt": "a"}),
                       ("/detokenize", {"tokens": []}), ("/pooling", {"input": "a"}), ("/classify", {"input": "a"})]:
        r = raw_post(fake_vllm, path, dict(body, model="nope"))
        assert r.status == 404 and r.json()["error"]["message"] == "The model `nope` does not exist.", path
        fake_vllm.fail_next(count=1, status=502, routes=[path])
        assert raw_post(fake_vllm, path, body).status == 502


# --------------------------------------------------------------------------------------
# /v1/audio/transcriptions and /v1/audio/translations (multipart/form-data)
# --------------------------------------------------------------------------------------

# A tiny WAV whose bytes hold what a multipart reader must not take for a boundary.
AUDIO = b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00" + b"\r\n--\r\n--x\r\n" + bytes(range(256)) * 8


def post_form(fv, path, parts, boundary=None, content_type=None, timeout=10.0):
    body, ctype = multipart_body(parts, boundary)
    return raw_post(fv, path, body, {"Content-Type": content_type or ctype}, timeout), body


def test_multipart_reading_as_starlette_does():
    body, ctype = multipart_body([("model", "a"), ("file", ("a.wav", AUDIO, "audio/wav")), ("model", "b")], "bnd")
    assert multipart_boundary(ctype) == "bnd"
    assert multipart_boundary('multipart/form-data; BOUNDARY="q b"; charset=utf-8') == "q b"
    assert multipart_boundary("application/json") is None
    with pytest.raises(MultipartError, match="^Missing boundary in multipart.$"):
        multipart_boundary("multipart/form-data")
    parts = parse_multipart(body, "bnd")
    assert [(p["name"], p["filename"]) for p in parts] == [("model", None), ("file", "a.wav"), ("model", None)]
    assert parts[1]["data"] == AUDIO and parts[1]["content_type"] == "audio/wav"
    summary = form_summary(parts)
    assert summary["order"] == ["model", "file", "model"] and summary["fields"]["model"] == "b"  # the last wins
    assert summary["fields"]["file"]["sha256"] == hashlib.sha256(AUDIO).hexdigest()
    # leading line ends, padding after a boundary, "--bndX" inside data, a part without its
    # closing delimiter (dropped), name* ignored
    odd = (b"\r\n\r\n--bnd  \r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n--bndX\r\n--bnd\r\n"
           b"Content-Disposition: form-data; name=y; name*=utf-8''z\r\n\r\n2\r\n--bnd\r\n"
           b"Content-Disposition: form-data; name=cut\r\n\r\nno end")
    assert [(p["name"], p["data"]) for p in parse_multipart(odd, "bnd")] == [("x", b"1\r\n--bndX"), ("y", b"2")]
    for bad in (b"preamble\r\n--bnd--", b"--bnd\r\nno colon\r\n\r\nx\r\n--bnd--", b"--bndx\r\n"):
        with pytest.raises(MultipartError, match="^Invalid multipart data.$"):
            parse_multipart(bad, "bnd")
    with pytest.raises(MultipartError, match="must be provided"):
        parse_multipart(b"--bnd\r\nContent-Type: text/plain\r\n\r\nx\r\n--bnd--", "bnd")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK marks translations deprecated
def test_audio_transcription_with_the_sdk(fake_vllm):
    c = client(fake_vllm)
    result = c.audio.transcriptions.create(model="fake-model", file=("speech.wav", AUDIO, "audio/wav"), language="en")
    assert result.text == default_text(DEFAULT_STREAM_EVENTS)
    last = fake_vllm.last_request("/v1/audio/transcriptions")
    assert last["body"]["model"] == "fake-model" and last["body"]["language"] == "en"
    assert last["file"] == {"filename": "speech.wav", "content_type": "audio/wav", "size": len(AUDIO),
                            "sha256": hashlib.sha256(AUDIO).hexdigest()}
    assert last["headers"]["content-type"].startswith("multipart/form-data; boundary=")
    assert last["body_size"] == int(last["headers"]["content-length"])
    assert fake_vllm.request_log()[-1]["model"] == "fake-model"
    translated = c.audio.translations.create(model="fake-model", file=("speech.wav", AUDIO, "audio/wav"))
    assert translated.text == default_text(DEFAULT_STREAM_EVENTS)
    assert fake_vllm.last_request("/v1/audio/translations")["file"]["size"] == len(AUDIO)


def test_audio_answers_as_vllm(fake_vllm):
    file = ("file", ("a.wav", AUDIO, "audio/wav"))
    r, _ = post_form(fake_vllm, "/v1/audio/transcriptions", [file, ("model", "fake-model")])
    assert r.status == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json() == {"text": default_text(DEFAULT_STREAM_EVENTS), "usage": {"type": "duration", "seconds": 1}}
    r, _ = post_form(fake_vllm, "/v1/audio/transcriptions", [("response_format", "text"), file])  # no model: served one
    assert r.json()["text"] == default_text(DEFAULT_STREAM_EVENTS)  # vLLM answers text in JSON too
    r, _ = post_form(fake_vllm, "/v1/audio/translations", [file, ("response_format", "json")])
    assert r.json() == {"text": default_text(DEFAULT_STREAM_EVENTS)}  # no usage in a translation
    r, _ = post_form(fake_vllm, "/v1/audio/transcriptions", [file, ("response_format", "verbose_json"),
                                                                ("language", "fr"), ("max_completion_tokens", "3")])
    body = r.json()
    assert set(body) == {"duration", "language", "text", "segments", "words"} and body["language"] == "fr"
    assert body["text"] == default_text(3) and body["segments"][0]["text"] == default_text(3)
    # model after the file, repeated: the last one wins, as in vLLM
    r, _ = post_form(fake_vllm, "/v1/audio/transcriptions", [("model", "nope"), file, ("model", "fake-model")])
    assert r.status == 200
    assert fake_vllm.last_request()["form"]["order"] == ["model", "file", "model"]
    assert fake_vllm.last_request()["body"]["model"] == "fake-model"


@pytest.mark.parametrize("path,obj,prefix", [("/v1/audio/transcriptions", "transcription.chunk", "transcribe-"),
                                             ("/v1/audio/translations", "translation.chunk", "translate-")])
@pytest.mark.parametrize("include_usage", [False, True])
def test_audio_stream_chunks(fake_vllm, path, obj, prefix, include_usage):
    parts = [("model", "fake-model"), ("file", ("a.wav", AUDIO, "audio/wav")), ("stream", "true"),
             ("max_completion_tokens", "3")]
    if include_usage:
        parts.append(("stream_include_usage", "true"))
    r, _ = post_form(fake_vllm, path, parts)
    assert r.status == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [data for _, data in parse_sse(r.body)]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == obj and c["id"].startswith(prefix) and c["model"] == "fake-model" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert [c["choices"][0]["delta"]["content"] for c in chunks[:3]] == default_tokens(3)
    assert chunks[0]["choices"][0] == {"delta": {"content": "The"}}
    assert chunks[2]["choices"][0] == {"delta": {"content": " brown"}, "finish_reason": "length", "stop_reason": None}
    if include_usage:
        assert len(chunks) == 4 and chunks[3]["choices"] == []
        assert chunks[3]["usage"] == {"prompt_tokens": math.ceil(len(AUDIO) / 1024), "total_tokens":
                                      math.ceil(len(AUDIO) / 1024) + 3, "completion_tokens": 3}
    else:
        assert len(chunks) == 3 and all("usage" not in c for c in chunks)
    # without max_completion_tokens: every token, then an empty chunk with "stop"
    r, _ = post_form(fake_vllm, path, parts[:3])
    chunks = [json.loads(data) for _, data in parse_sse(r.body)[:-1]]
    assert len(chunks) == DEFAULT_STREAM_EVENTS + 1
    assert chunks[-1]["choices"][0] == {"delta": {"content": ""}, "finish_reason": "stop", "stop_reason": None}


def test_audio_errors(fake_vllm):
    file = ("file", ("a.wav", AUDIO, "audio/wav"))
    path = "/v1/audio/transcriptions"
    r, _ = post_form(fake_vllm, path, [file], content_type="multipart/form-data")
    assert r.status == 400 and r.json() == {"detail": "Missing boundary in multipart."}
    r = raw_post(fake_vllm, path, b"--b\r\nno colon\r\n\r\nx\r\n--b--",
                 {"Content-Type": "multipart/form-data; boundary=b"})
    assert r.status == 400 and r.json() == {"detail": "Invalid multipart data."}
    r = raw_post(fake_vllm, path, {"model": "fake-model"})  # JSON: no form, no file
    assert r.status == 400 and r.json()["error"]["param"] == "body.file"
    r, _ = post_form(fake_vllm, path, [("file", "not a file")])
    assert r.status == 400 and r.json()["error"]["param"] == "body.file"
    r, _ = post_form(fake_vllm, path, [file, ("model", "nope")])
    assert r.status == 404 and r.json()["error"]["message"] == "The model `nope` does not exist."
    r, _ = post_form(fake_vllm, path, [file, ("stream", "maybe")])
    assert r.status == 400 and r.json()["error"]["param"] == "body.stream"
    r, _ = post_form(fake_vllm, path, [file, ("stream", "true"), ("response_format", "verbose_json")])
    assert r.status == 400 and "doesn't support streaming" in r.json()["error"]["message"]
    r, _ = post_form(fake_vllm, path, [file, ("response_format", "srt")])
    assert r.status == 400 and "only support response_format" in r.json()["error"]["message"]
    fake_vllm.config(audio_max_filesize_mb=0.001)
    r, _ = post_form(fake_vllm, path, [file, ("model", "fake-model")])
    err = r.json()["error"]
    assert r.status == 400 and err["param"] == "audio_filesize_mb" and err["type"] == "BadRequestError"
    assert err["message"].startswith("Maximum file size exceeded")
    fake_vllm.fail_next(count=1, status=503, routes=[path])
    r, _ = post_form(fake_vllm, path, [file])
    assert r.status == 503
    fake_vllm.fail_stream(count=1, after_events=2, mode="error_event", routes=[path], message="gone")
    fake_vllm.config(audio_max_filesize_mb=25)
    r, _ = post_form(fake_vllm, path, [file, ("stream", "1")])
    events = [data for _, data in parse_sse(r.body)]
    assert len(events) == 4 and events[-1] == "[DONE]" and json.loads(events[2])["error"]["message"] == "gone"
