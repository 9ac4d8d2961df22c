"""Issue 3: what a client of the OpenAI SDK sees through the gateway, in front of the fake vLLM."""
from __future__ import annotations

import json
import socket
import time

import openai
import pytest

from gateway import wait_until

pytestmark = pytest.mark.gateway

MODEL = "fake-model"


def config_for(*fakes, extra_models: str = "") -> str:
    ups = "\n".join(f"  up{i}: {{ url: {f.url}, health: /health }}" for i, f in enumerate(fakes))
    names = ", ".join(f"up{i}" for i in range(len(fakes)))
    return f"upstreams:\n{ups}\nmodels:\n  qwen:\n    upstreams: [{names}]\n    upstream_model: {MODEL}\n    aliases: [qwen-alias]\n{extra_models}"


def test_openai_sdk_through_the_gateway(gateway):
    client = gateway.openai_client()
    assert MODEL in [m.id for m in client.models.list().data]

    chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hello"}])
    assert chat.choices[0].message.content
    assert chat.choices[0].finish_reason in ("stop", "length")
    assert chat.usage.total_tokens > 0

    text, finish = "", None
    for chunk in client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hello"}], stream=True):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    assert text and finish in ("stop", "length")

    completion = client.completions.create(model=MODEL, prompt="Once upon")
    assert completion.choices[0].text

    emb = client.embeddings.create(model=MODEL, input=["a", "b"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])


def test_body_too_large_is_413(gateway_factory, fake_vllm):
    gw = gateway_factory(upstream=fake_vllm, env={"MAX_REQUEST_BODY_BYTES": "2048"})
    client = gw.openai_client()
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x" * 5000}])
    assert info.value.status_code == 413
    assert fake_vllm.requests_seen("/v1/chat/completions") == 0


def test_chunked_body_too_large_is_413_without_reading_it_all(gateway_factory, fake_vllm):
    gw = gateway_factory(upstream=fake_vllm, env={"MAX_REQUEST_BODY_BYTES": "4096"})
    s = socket.create_connection((gw.host, gw.port), timeout=5)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n")
    chunk = b"x" * 1024
    sent = 0
    try:
        for _ in range(64):  # 64 KiB offered, far past the limit
            s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
    except OSError:
        pass  # the gateway may close before we finish: that is the point
    s.settimeout(5)
    reply = s.recv(4096)
    s.close()
    assert reply.startswith(b"HTTP/1.1 413"), reply[:100]


def test_model_is_rewritten_both_ways(gateway_factory, fake_vllm):
    gw = gateway_factory(config=config_for(fake_vllm), workers=1)
    client = gw.openai_client()
    chat = client.chat.completions.create(model="qwen-alias", messages=[{"role": "user", "content": "hi"}])
    assert fake_vllm.last_request("/v1/chat/completions")["body"]["model"] == MODEL
    assert chat.model == "qwen-alias"
    models = [c.model for c in client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "hi"}], stream=True)]
    assert models and set(models) == {"qwen"}


def test_stream_events_are_passed_through_without_batching(gateway, fake_vllm):
    fake_vllm.set_stream(events=8, delay=0.1)
    received = [t for t, data in gateway.stream("/v1/chat/completions", {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]}) if data != "[DONE]"]
    sent = fake_vllm.last_stream()["event_times"]
    assert len(received) >= 8
    # each event reaches the client within a few ms of the fake sending it
    lags = [r - s for r, s in zip(received, sent)]
    print(f"\nper-event lag ms: {[round(l * 1000, 1) for l in lags]}")
    assert max(lags) < 0.05, lags
    gaps = [b - a for a, b in zip(received, received[1:])]
    assert min(gaps[1:7]) > 0.05, gaps  # not coalesced


def test_client_disconnect_cancels_the_upstream_stream(gateway, fake_vllm):
    fake_vllm.set_stream(events=50, delay=0.2)
    events = gateway.stream("/v1/chat/completions", {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    next(events)
    next(events)
    dropped = time.time()
    events.close()
    cancel = fake_vllm.wait_for_cancellation(1, timeout=3)
    at = cancel[0]["time"] if isinstance(cancel, list) else cancel["time"]
    print(f"\nupstream cancelled {1000 * (at - dropped):.0f} ms after the client hung up")
    assert at - dropped < 1.0


def test_client_disconnect_cancels_a_non_streamed_request(gateway, fake_vllm):
    fake_vllm.delay_headers(seconds=5, count=1)
    s = socket.create_connection((gateway.host, gateway.port), timeout=5)
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    wait_until(lambda: fake_vllm.requests_seen("/v1/chat/completions") >= 1, 5)
    dropped = time.time()
    s.close()
    cancel = fake_vllm.wait_for_cancellation(1, timeout=3)
    at = cancel[0]["time"] if isinstance(cancel, list) else cancel["time"]
    assert at - dropped < 1.0


def test_fallback_to_second_upstream_when_first_refuses(gateway_factory, fake_vllm_factory):
    a, b = fake_vllm_factory(), fake_vllm_factory()
    a.stop_listener()
    gw = gateway_factory(config=config_for(a, b), workers=1)
    client = gw.openai_client()
    for _ in range(3):
        assert client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "hi"}]).choices
    assert b.requests_seen("/v1/chat/completions") == 3
    # a's address is an IP literal, connected to without name resolution: the refusal is still named
    assert "connection refused" in gw.log_text()


def test_mid_stream_failure_ends_with_error_event_not_fallback(gateway_factory, fake_vllm_factory):
    a, b = fake_vllm_factory(), fake_vllm_factory()
    gw = gateway_factory(config=config_for(a, b), workers=1)
    # make sure the first attempt goes to a: b is marked down by its health check
    b.set_health(status=503)
    wait_until(lambda: "down" in gw.log_text(), 10, what="b marked down")
    a.fail_stream(count=1, after_events=2, mode="close")
    events = [d for _, d in gw.stream("/v1/chat/completions", {"model": "qwen", "stream": True, "messages": [{"role": "user", "content": "hi"}]})]
    assert events[-1] == "[DONE]"
    assert "error" in json.loads(events[-2])
    assert b.requests_seen("/v1/chat/completions") == 0


def test_upstream_errors_pass_through_in_both_shapes(gateway, fake_vllm):
    for style in ("new", "flat"):
        fake_vllm.fail_next(count=1, status=400, style=style, message=f"bad thing {style}", routes=["/v1/chat/completions"])
        r = gateway.post("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
        assert r.status == 400
        assert f"bad thing {style}" in r.text


def test_ready_follows_upstream_health(gateway_factory, fake_vllm):
    gw = gateway_factory(upstream=fake_vllm, env={"UPSTREAM_HEALTH_INTERVAL": "0.5"})
    gw.wait_ready(10)
    fake_vllm.set_health(status=503)
    wait_until(lambda: gw.get("/ready").status == 503, 2, what="ready 503")
    body = gw.get("/ready").json()
    assert "down" in body["reason"]
    fake_vllm.set_health(status=200)
    wait_until(lambda: gw.get("/ready").status == 200, 2, what="ready 200")


def test_errors_are_openai_shaped(gateway):
    for method, path, body, status in [
        ("POST", "/v1/chat/completions", b"{not json", 400),
        ("POST", "/v1/chat/completions", b'{"model": 3}', 400),
        ("POST", "/v1/chat/completions", b"\xff\xfe", 400),
        ("POST", "/v1/chat/completions", b"[" * 1000 + b"]" * 1000, 400),
        ("GET", "/v1/chat/completions", None, 405),
        ("GET", "/nope", None, 404),
    ]:
        r = gateway.request(method, path, body)
        assert r.status == status, (path, body[:20] if body else None, r)
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"}


def test_demo_upstream(gateway_factory):
    gw = gateway_factory(upstream="demo", workers=1)
    client = gw.openai_client()
    assert [m.id for m in client.models.list().data] == ["demo"]
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "ping"}], stream=True) if c.choices)
    assert "demo model" in text
    assert gw.get("/ready").status == 200


def test_per_upstream_timeout_gives_504(gateway_factory, fake_vllm):
    config = f"upstreams:\n  slow: {{ url: {fake_vllm.url}, timeout: 0.5, connect_timeout: 1 }}\nmodels:\n  m: {{ upstreams: [slow], upstream_model: {MODEL} }}\n"
    gw = gateway_factory(config=config, workers=1)
    fake_vllm.delay_headers(seconds=3, count=1, routes=["/v1/chat/completions"])
    started = time.monotonic()
    r = gw.post("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert r.status == 504, r
    assert r.json()["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < 2


def test_head_gets_headers_only_and_keep_alive_survives(gateway):
    import http.client
    conn = http.client.HTTPConnection(gateway.host, gateway.port, timeout=5)
    conn.request("HEAD", "/health")
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("content-length") == "15"
    assert r.read() == b""
    conn.request("GET", "/health")  # same connection: the framing is intact
    assert conn.getresponse().read() == b'{"status":"ok"}'
