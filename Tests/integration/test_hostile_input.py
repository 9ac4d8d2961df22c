"""Issue 6: hostile input gets a well-formed error and nothing else; secrets never reach a log line."""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import random
import socket
import time

import pytest

from gateway import http_request

pytestmark = pytest.mark.gateway

MODEL = "fake-model"
ERROR_STATUSES = {400, 401, 404, 405, 413, 431}


def raw_exchange(host, port, payload: bytes, timeout=5.0) -> bytes:
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        s.sendall(payload)
        chunks = []
        while True:
            try:
                data = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)
    finally:
        s.close()


def post_raw(body: bytes, extra_headers: bytes = b"") -> bytes:
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + extra_headers + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def malformed_requests(rnd: random.Random):
    """Yields (kind, raw request bytes) forever."""
    valid = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode()
    while True:
        kind = rnd.randrange(10)
        if kind == 0:
            yield "random bytes", post_raw(bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 200))))
        elif kind == 1:
            cut = rnd.randrange(1, len(valid))
            yield "truncated JSON", post_raw(valid[:cut])
        elif kind == 2:
            yield "invalid UTF-8", post_raw(b'{"model":"' + bytes([0xff, 0xfe, rnd.randrange(0x80, 0xff)]) + b'","messages":[]}')
        elif kind == 3:
            depth = rnd.randrange(65, 5000)
            yield "deep nesting", post_raw(b'{"model":"m","x":' + b"[" * depth + b"]" * depth + b"}")
        elif kind == 4:
            yield "huge number", post_raw(b'{"model":"m","max_tokens":1' + b"0" * rnd.randrange(65, 5000) + b"}")
        elif kind == 5:
            yield "duplicate keys", post_raw(b'{"model":"a","model":"b","messages":[]}')
        elif kind == 6:
            yield "oversized", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n{"
        elif kind == 7:
            yield "garbage request line", bytes(rnd.randrange(33, 127) for _ in range(rnd.randrange(5, 60))) + b"\r\n\r\n"
        elif kind == 8:
            yield "oversized headers", b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * rnd.randrange(90_000, 200_000) + b"\r\n\r\n"
        else:
            method = rnd.choice([b"GET", b"PUT", b"DELETE", b"BREW"])
            yield "bad route or method", method + b" /v1/" + bytes(rnd.choice(b"abcdef/%") for _ in range(12)) + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def check_error_response(kind: str, reply: bytes):
    assert reply.startswith(b"HTTP/1.1 "), (kind, reply[:120])
    head, _, body = reply.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    assert status in ERROR_STATUSES, (kind, status, body[:200])
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}, (kind, err)


def test_ten_thousand_malformed_requests(gateway_factory, fake_vllm):
    gw = gateway_factory(upstream=fake_vllm, workers=2, env={"MAX_REQUEST_BODY_BYTES": "65536", "REQUEST_HEADER_TIMEOUT": "1", "LOG_LEVEL": "warning"})
    pids = gw.worker_pids()
    rss_before = sum(int(gw.status(p)["VmRSS"].split()[0]) for p in pids)
    # a few slowloris connections alongside, each dribbling a head that never ends
    slow = [socket.create_connection((gw.host, gw.port)) for _ in range(20)]
    for s in slow:
        s.sendall(b"GET /health HTTP/1.1\r\nX-Slow: ")
    rnd = random.Random(1234)
    requests = []
    generator = malformed_requests(rnd)
    for _ in range(10_000):
        requests.append(next(generator))

    def run(item):
        kind, payload = item
        check_error_response(kind, raw_exchange(gw.host, gw.port, payload))
        return kind

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        kinds = list(pool.map(run, requests))
    elapsed = time.monotonic() - started
    # slowloris connections were cut by the header timeout
    for s in slow:
        s.settimeout(3)
        assert s.recv(100) == b""
        s.close()
    assert gw.worker_pids() == pids, "a worker died"
    rss_after = sum(int(gw.status(p)["VmRSS"].split()[0]) for p in pids)
    print(f"\n10,000 malformed requests in {elapsed:.1f} s, RSS {rss_before} -> {rss_after} kB, kinds {sorted(set(kinds))}")
    assert rss_after - rss_before < 30_000
    assert gw.get("/health").status == 200
    r = gw.post("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "still fine"}]})
    assert r.status == 200


SMUGGLED = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
SMUGGLING_SHAPES = {
    "CL.TE": b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "TE.CL": b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "duplicate CL": b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 41\r\n\r\n" + SMUGGLED,
    "TE obfuscated": b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "TE folded": b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "space before colon": b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length : 41\r\n\r\n" + SMUGGLED,
    "bare LF": b"POST /v1/chat/completions HTTP/1.1\nHost: x\nContent-Length: 0\n\n" + SMUGGLED,
    "HTTP/1.0 chunked": b"POST /v1/chat/completions HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "chunk size overflow": b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000001\r\nx\r\n0\r\n\r\n" + SMUGGLED,
}


@pytest.mark.parametrize("shape", sorted(SMUGGLING_SHAPES))
def test_request_smuggling_shapes_get_400_and_the_rest_is_never_served(gateway_factory, fake_vllm, shape):
    """Framing two parsers could read differently is refused before anything reaches the
    upstream, and the bytes after it are never taken as a request: one 400, then close."""
    gw = gateway_factory(upstream=fake_vllm)
    before = fake_vllm.requests_seen("/v1/chat/completions")
    reply = raw_exchange(gw.host, gw.port, SMUGGLING_SHAPES[shape])
    assert reply.count(b"HTTP/1.1 ") == 1, (shape, reply[:300])
    check_error_response(shape, reply)
    assert reply.startswith(b"HTTP/1.1 400 "), (shape, reply[:100])
    assert json.loads(reply.partition(b"\r\n\r\n")[2])["error"]["code"] == "bad_http"
    assert fake_vllm.requests_seen("/v1/chat/completions") == before, "the refused request reached the upstream"


def test_truncated_bodies_do_not_hold_a_worker(gateway_factory, fake_vllm):
    gw = gateway_factory(upstream=fake_vllm, workers=1, env={"REQUEST_BODY_TIMEOUT": "1"})
    s = socket.create_connection((gw.host, gw.port), timeout=5)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"model\"")
    start = time.monotonic()
    assert s.recv(100) == b""  # closed by the body timeout
    assert time.monotonic() - start < 3
    s.close()
    assert gw.get("/health").status == 200


SECRETS = ["sk-live-SECRET1abc", "sk-alice-SECRET2def", "sk-cloud-SECRET3ghi", "sk-wrong-SECRET4jkl"]


def test_no_secret_in_any_log_line(gateway_factory, fake_vllm):
    digest = hashlib.sha256(SECRETS[1].encode()).hexdigest()
    config = f"""upstreams:
  local: {{ url: {fake_vllm.url} }}
  cloud: {{ url: {fake_vllm.url}, api_key_env: CLOUD_KEY }}
models:
  m: {{ upstreams: [local], upstream_model: {MODEL}, fallbacks: [c] }}
  c: {{ upstreams: [cloud], upstream_model: {MODEL} }}
keys:
  - {{ name: alice, sha256: {digest} }}
"""
    gw = gateway_factory(config=config, workers=2, env={"BEARER_TOKEN": SECRETS[0], "CLOUD_KEY": SECRETS[2], "LOG_LEVEL": "trace"})
    chat = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
    for key in SECRETS[:2]:
        assert gw.post("/v1/chat/completions", chat, headers={"Authorization": f"Bearer {key}"}).status == 200
        assert gw.post("/v1/chat/completions", dict(chat, model="c"), headers={"Authorization": f"Bearer {key}"}).status == 200
        list(gw.stream("/v1/chat/completions", dict(chat, stream=True), headers={"Authorization": f"Bearer {key}"}))
    for key in SECRETS:
        gw.post("/v1/chat/completions", chat, headers={"Authorization": f"Bearer {key}", "X-Api-Key": key, "Cookie": f"s={key}"})
        gw.get("/v1/models", headers={"Authorization": key})
    fake_vllm.fail_next(count=2, status=500, routes=["/v1/chat/completions"])  # errors and fallbacks get logged
    gw.post("/v1/chat/completions", chat, headers={"Authorization": f"Bearer {SECRETS[0]}"})
    assert fake_vllm.last_request("/v1/chat/completions")["headers"].get("authorization") == f"Bearer {SECRETS[2]}"
    gw.stop()
    log = gw.log_text()
    assert len(log.splitlines()) > 20
    for secret in SECRETS:
        assert secret not in log, f"{secret} appears in the log"
        assert secret[8:] not in log
