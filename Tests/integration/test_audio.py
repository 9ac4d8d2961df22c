"""Speech to text through the gateway: `POST /v1/audio/transcriptions` and
`/v1/audio/translations`, multipart/form-data uploads streamed to the upstream as they arrive.

The contract (README, "Speech to text"): `model` is a form field, before or after the file,
renamed to the config's `upstream_model` on the way up and back in stream chunks; a streamed
request without `stream_include_usage` gets `stream_include_usage=true` upstream and its
usage chunk is removed again (the tokens are counted in `llm_gateway_tokens_total`);
`MAX_REQUEST_BODY_BYTES` caps uploads (413, mid-upload for a chunked body, then the
connection closes); auth, scopes, limits, breaker and fallbacks as for every API route; an
upload goes on a new upstream connection and is sent again to the next upstream only while
it is at most 256 KiB; a client that hangs up mid-upload or mid-stream closes the upstream
connection; a form the gateway cannot read exactly as vLLM would is a 400 in OpenAI's shape
before the upstream sees a complete body.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import socket
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import openai
import pytest

from fake_vllm import DEFAULT_STREAM_EVENTS, default_text, multipart_body
from gateway import http_request, metric_value, parse_sse, wait_until

pytestmark = pytest.mark.gateway

TRANSCRIBE = "/v1/audio/transcriptions"
TRANSLATE = "/v1/audio/translations"
PATHS = [TRANSCRIBE, TRANSLATE]
UPSTREAM_MODEL = "fake-model"
REPLY = default_text(DEFAULT_STREAM_EVENTS)
COMPLETION = DEFAULT_STREAM_EVENTS + 1  # tokens + EOS
OK_RPM = "100000"
REPLAY_LIMIT = 256 << 10

# A small WAV whose bytes hold what a careless multipart reader would take for a boundary
# (CRLF "--", the form's own boundary prefix), every byte value, and a NUL.
BOUNDARY = "audio-test-boundary"
AUDIO = (b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00" + b"\r\n--\r\n--x\r\n--audio-test\r\n"
         + bytes(range(256)) * 24 + b"\x00")


def sha(data: Union[bytes, str]) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def big_audio(size: int) -> bytes:
    """size bytes of distinct-looking audio (a counter pattern: a dropped or repeated block
    changes the sha256)."""
    out = bytearray()
    i = 0
    while len(out) < size:
        out += i.to_bytes(4, "big") + b"\r\n--" + bytes((i * 7 + j) & 0xFF for j in range(26))
        i += 1
    return bytes(out[:size])


# --------------------------------------------------------------------------------------
# forms
# --------------------------------------------------------------------------------------

Part = Tuple[str, Union[str, bytes, Tuple[str, bytes, str]]]


def form(parts: List[Part], boundary: str = BOUNDARY, close: bool = True) -> Tuple[bytes, str]:
    """(body, content type) of a multipart/form-data body (fake_vllm's builder): each part
    (name, value) with a str or bytes value (a field), or (name, (filename, bytes, content
    type)) (a file), in order, repeats allowed; close=False leaves out the closing boundary."""
    return multipart_body(parts, boundary, close)


def audio_form(model: Optional[str] = "m-alias", data: bytes = AUDIO, model_first: bool = True,
               extra: Optional[List[Part]] = None, filename: str = "speech.wav") -> Tuple[bytes, str]:
    file_part: Part = ("file", (filename, data, "audio/wav"))
    parts: List[Part] = [file_part]
    if model is not None:
        parts = [("model", model), file_part] if model_first else [file_part, ("model", model)]
    return form(parts + list(extra or []))


# --------------------------------------------------------------------------------------
# config, requests, checks
# --------------------------------------------------------------------------------------

ALICE, BOB = "alice-key-audio", "bob-key-audio"
SCOPED_KEYS = (f"keys:\n  - {{ name: alice, sha256: {sha(ALICE)}, models: [m], rpm: 100000 }}\n"
               f"  - {{ name: bob, sha256: {sha(BOB)}, rpm: 100000 }}\n")


def config(*fakes, routing: str = "round_robin", keys: str = "") -> str:
    """Model `m` (alias `m-alias`) and `other` on every fake, both as `fake-model`."""
    ups = "".join(f"  up{i}: {{ url: {f.url}, health: /health }}\n" for i, f in enumerate(fakes))
    names = ", ".join(f"up{i}" for i in range(len(fakes)))
    return (f"upstreams:\n{ups}models:\n"
            f"  m: {{ upstreams: [{names}], upstream_model: {UPSTREAM_MODEL}, aliases: [m-alias], routing: {routing} }}\n"
            f"  other: {{ upstreams: [{names}], upstream_model: {UPSTREAM_MODEL} }}\n" + keys)


def fallback_config(a, b) -> str:
    """`m` on a only, falling back to the model `spare`, which b serves as `spare-model`."""
    return (f"upstreams:\n  a: {{ url: {a.url}, health: /health }}\n  b: {{ url: {b.url}, health: /health }}\n"
            f"models:\n  m: {{ upstreams: [a], upstream_model: {UPSTREAM_MODEL}, aliases: [m-alias], fallbacks: [spare] }}\n"
            f"  spare: {{ upstreams: [b], upstream_model: spare-model }}\n")


def auth(key: Optional[str], style: str = "bearer") -> Dict[str, str]:
    if key is None:
        return {}
    return {"Authorization": f"Bearer {key}"} if style == "bearer" else {"x-api-key": key}


def upload(gw, path: str, body: bytes, ctype: str, key: Optional[str] = None, style: str = "bearer",
           headers: Optional[Dict[str, str]] = None, timeout: float = 20.0):
    h = {"Content-Type": ctype}
    h.update(auth(key, style))
    h.update(headers or {})
    return http_request(gw.host, gw.port, "POST", path, body, h, timeout)


def openai_error(r, status: int, code: Optional[str] = None, param: Optional[str] = None) -> Dict[str, Any]:
    """The gateway's error: exactly OpenAI's shape, with the status (and code, param) asked."""
    assert r.status == status, f"expected {status}, got {r.status}: {r.body[:300]!r}"
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, body
    assert isinstance(err["message"], str) and err["message"], body
    if code is not None:
        assert err["code"] == code, body
    if param is not None:
        assert err["param"] == param, body
    return err


def stream_chunks(r) -> List[Dict[str, Any]]:
    """The JSON chunks of a streamed answer, checking it ends with exactly one [DONE]."""
    assert r.status == 200 and r.headers.get("content-type", "").startswith("text/event-stream"), r
    datas = [d for _, d in parse_sse(r.body)]
    assert datas and datas[-1] == "[DONE]" and datas.count("[DONE]") == 1, datas[-3:]
    return [json.loads(d) for d in datas[:-1]]


def streamed_text(chunks: List[Dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def token_totals(gw, model: str = "m") -> Tuple[float, float]:
    samples = gw.metrics()
    return (metric_value(samples, "llm_gateway_tokens_total", model=model, kind="prompt"),
            metric_value(samples, "llm_gateway_tokens_total", model=model, kind="completion"))


def wait_tokens(gw, before: Tuple[float, float], prompt: float, completion: float, model: str = "m") -> None:
    def grown():
        now = token_totals(gw, model)
        return (now[0] - before[0], now[1] - before[1])
    try:
        wait_until(lambda: grown() == (prompt, completion), 3, what="tokens counted")
    except AssertionError:
        raise AssertionError(f"llm_gateway_tokens_total{{model={model}}} grew by (prompt, completion) = "
                             f"{grown()}, expected ({prompt}, {completion})") from None


def requests_counted(gw, path: str, status: str) -> float:
    return metric_value(gw.metrics(), "llm_gateway_http_requests_total", route=path, method="POST", status=status)


def open_requests(gw) -> int:
    """API requests the gateway still counts as open (GET /idle, over every worker)."""
    return json.loads(gw.get("/idle").body)["open_streams"]


def wait_no_open_requests(gw, timeout: float = 3.0) -> None:
    wait_until(lambda: open_requests(gw) == 0, timeout, what="no API request left open (GET /idle open_streams)")


def received_file(fv, path: str) -> Dict[str, Any]:
    seen = fv.last_request(path)
    assert seen is not None, f"{path} never reached the upstream"
    return seen


def settled(fv, timeout: float = 5.0) -> Dict[str, Any]:
    """The fake's counters once no request is in flight on it."""
    return fv.wait_for(lambda c: c["inflight"] == 0, timeout, what="no request in flight")


# --------------------------------------------------------------------------------------
# raw HTTP on a socket (chunked bodies, two content-types, 100-continue, disconnects)
# --------------------------------------------------------------------------------------

class RawResponse:
    def __init__(self, status: int, headers: Dict[str, str], body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<RawResponse {self.status} {self.body[:200]!r}>"


class RawConnection:
    """A client socket with a buffered reader of HTTP/1.1 responses."""

    def __init__(self, gw, timeout: float = 10.0):
        self.sock = socket.create_connection((gw.host, gw.port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> bool:
        """False when the gateway had closed (or reset) the connection."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def _fill(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            return False
        self.buf += data
        return True

    def read_head(self) -> Tuple[int, Dict[str, str]]:
        while b"\r\n\r\n" not in self.buf:
            assert self._fill(), f"connection closed before a response head: {self.buf[:200]!r}"
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: Dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        return status, headers

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            assert self._fill(), "connection closed mid-body"
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            assert self._fill(), "connection closed mid-chunk"
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_response(self) -> RawResponse:
        """The next final response (1xx heads are not skipped: read them with read_head)."""
        status, headers = self.read_head()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line() != b"":
                        pass
                    break
                body += self._take(size)
                assert self._take(2) == b"\r\n"
        else:
            body = self._take(int(headers.get("content-length", "0")))
        return RawResponse(status, headers, body)

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True once the gateway closed the connection (EOF or reset) with nothing more sent."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1)
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        return data == b""

    def nothing_more(self, wait: float = 0.3) -> bool:
        """True when no byte follows the response read (EOF, a reset, or silence for `wait`)."""
        if self.buf:
            return False
        self.sock.settimeout(wait)
        try:
            return self.sock.recv(65536) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return True

    def close(self) -> None:
        self.sock.close()


def request_head(path: str, ctype: Optional[Union[str, List[str]]], length: Optional[int],
                 extra: Optional[Dict[str, str]] = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: gateway"]
    for c in ([ctype] if isinstance(ctype, str) else (ctype or [])):
        lines.append(f"Content-Type: {c}")
    lines.append("Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}")
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunked(pieces: List[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n"


def stream_upload(gw, path: str, body: bytes, ctype: str, timeout: float = 20.0) -> Iterator[str]:
    """POST an upload and yield each SSE data as it arrives; closing the generator disconnects."""
    conn = http.client.HTTPConnection(gw.host, gw.port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": ctype})
        r = conn.getresponse()
        assert r.status == 200, (r.status, r.read()[:300])
        while True:
            line = r.readline()
            if not line:
                return
            s = line.decode().rstrip("\r\n")
            if s.startswith("data:"):
                yield s[5:].strip()
    finally:
        conn.close()


# --------------------------------------------------------------------------------------
# 1. whole and streamed, through an alias
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", PATHS)
def test_whole_and_streamed_through_an_alias(gateway_factory, fake_vllm, path):
    fake_vllm.config(prompt_tokens=7)
    gw = gateway_factory(config=config(fake_vllm), workers=2, env={"RATE_LIMIT_RPM": OK_RPM})
    ok_before = requests_counted(gw, path, "200")
    obj = "transcription.chunk" if path == TRANSCRIBE else "translation.chunk"

    # whole: the upstream gets its own model name and the file byte for byte
    body, ctype = audio_form("m-alias", extra=[("language", "en")])
    r = upload(gw, path, body, ctype)
    assert r.status == 200, r
    answer = r.json()
    assert answer["text"] == REPLY
    if path == TRANSCRIBE:
        assert answer["usage"] == {"type": "duration", "seconds": 1}
    seen = received_file(fake_vllm, path)
    assert seen["body"]["model"] == UPSTREAM_MODEL and seen["body"]["language"] == "en"
    assert seen["file"] == {"filename": "speech.wav", "content_type": "audio/wav", "size": len(AUDIO),
                            "sha256": sha(AUDIO)}
    assert seen["form"]["order"] == ["model", "file", "language"]  # nothing added to a whole answer
    assert seen["headers"]["content-type"] == ctype
    assert "content-length" not in seen["headers"] and seen["headers"].get("transfer-encoding") == "chunked"

    # streamed, usage not asked: asked upstream, counted, removed
    before = token_totals(gw)
    body, ctype = audio_form("m-alias", model_first=False, extra=[("stream", "true")])
    chunks = stream_chunks(upload(gw, path, body, ctype))
    seen = received_file(fake_vllm, path)
    assert seen["body"]["model"] == UPSTREAM_MODEL
    assert seen["body"]["stream_include_usage"] == "true"
    assert seen["form"]["order"] == ["file", "model", "stream", "stream_include_usage"]
    assert seen["file"]["sha256"] == sha(AUDIO)
    assert all(c["model"] == "m-alias" and c["object"] == obj for c in chunks), chunks
    assert all(c["choices"] and "usage" not in c for c in chunks), "the usage chunk reached a client that did not ask"
    assert streamed_text(chunks) == REPLY and len(chunks) == DEFAULT_STREAM_EVENTS + 1
    wait_tokens(gw, before, 7, COMPLETION)

    # streamed, usage asked: passed on as asked, the usage chunk kept
    before = token_totals(gw)
    body, ctype = audio_form("m-alias", extra=[("stream", "true"), ("stream_include_usage", "true")])
    chunks = stream_chunks(upload(gw, path, body, ctype))
    seen = received_file(fake_vllm, path)
    assert seen["form"]["order"] == ["model", "file", "stream", "stream_include_usage"]  # not added twice
    assert chunks[-1]["choices"] == [] and chunks[-1]["model"] == "m-alias"
    assert chunks[-1]["usage"] == {"prompt_tokens": 7, "completion_tokens": COMPLETION, "total_tokens": 7 + COMPLETION}
    assert streamed_text(chunks) == REPLY
    wait_tokens(gw, before, 7, COMPLETION)

    # streamed, usage refused by the client: its word stands (nothing added, no usage chunk)
    body, ctype = audio_form("m-alias", extra=[("stream", "1"), ("stream_include_usage", "false")])
    chunks = stream_chunks(upload(gw, path, body, ctype))
    seen = received_file(fake_vllm, path)
    assert seen["body"]["stream_include_usage"] == "false"
    assert seen["form"]["order"] == ["model", "file", "stream", "stream_include_usage"]
    assert all(c["choices"] for c in chunks) and streamed_text(chunks) == REPLY

    # not streamed, stream=false said: nothing added
    body, ctype = audio_form("m", extra=[("stream", "false")])
    assert upload(gw, path, body, ctype).status == 200
    assert "stream_include_usage" not in received_file(fake_vllm, path)["body"]

    wait_until(lambda: requests_counted(gw, path, "200") - ok_before == 5, 3,
               what=f'llm_gateway_http_requests_total{{route="{path}",status="200"}} += 5')


# --------------------------------------------------------------------------------------
# 2. model after the file, a 3 MB file, chunked request bodies
# --------------------------------------------------------------------------------------

def test_model_after_a_3mb_file_and_chunked_bodies(gateway_factory, fake_vllm):
    gw = gateway_factory(config=config(fake_vllm), workers=1,
                         env={"RATE_LIMIT_RPM": OK_RPM, "MAX_REQUEST_BODY_BYTES": str(8 << 20)})
    data = big_audio(3 << 20)

    # content-length, model after 3 MB of file
    body, ctype = audio_form("m-alias", data=data, model_first=False)
    r = upload(gw, TRANSCRIBE, body, ctype, timeout=30)
    assert r.status == 200 and r.json()["text"] == REPLY, r
    seen = received_file(fake_vllm, TRANSCRIBE)
    assert seen["form"]["order"] == ["file", "model"] and seen["body"]["model"] == UPSTREAM_MODEL
    assert seen["file"]["size"] == len(data) and seen["file"]["sha256"] == sha(data)

    # chunked (no content-length), 64 KiB pieces from a generator, model after the file
    conn = http.client.HTTPConnection(gw.host, gw.port, timeout=30)
    try:
        pieces = (body[i:i + 65536] for i in range(0, len(body), 65536))
        conn.request("POST", TRANSLATE, body=pieces, headers={"Content-Type": ctype}, encode_chunked=True)
        r2 = conn.getresponse()
        answer = r2.read()
    finally:
        conn.close()
    assert r2.status == 200 and json.loads(answer) == {"text": REPLY}, (r2.status, answer[:300])
    seen = received_file(fake_vllm, TRANSLATE)
    assert seen["body"]["model"] == UPSTREAM_MODEL
    assert seen["file"]["size"] == len(data) and seen["file"]["sha256"] == sha(data)

    # chunked in odd small pieces, each written on its own: boundaries and the model's value
    # cut at every place a chunk edge can fall
    body, ctype = audio_form("m-alias", extra=[("stream", "true")])
    c = RawConnection(gw)
    try:
        c.send(request_head(TRANSCRIBE, ctype, None))
        sizes = [1, 2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37]
        i = k = 0
        while i < len(body):
            n = sizes[k % len(sizes)]
            c.send(b"%x\r\n%s\r\n" % (len(body[i:i + n]), body[i:i + n]))
            if k < 40:
                time.sleep(0.002)  # the head of the form in separate reads
            i, k = i + n, k + 1
        c.send(b"0\r\n\r\n")
        r3 = c.read_response()
    finally:
        c.close()
    assert r3.status == 200, r3
    datas = [d for _, d in parse_sse(r3.body)]
    assert datas[-1] == "[DONE]" and streamed_text([json.loads(d) for d in datas[:-1]]) == REPLY
    assert all(json.loads(d)["model"] == "m-alias" for d in datas[:-1])
    seen = received_file(fake_vllm, TRANSCRIBE)
    assert seen["body"]["model"] == UPSTREAM_MODEL and seen["file"]["sha256"] == sha(AUDIO)
    assert seen["form"]["order"] == ["model", "file", "stream", "stream_include_usage"]


# --------------------------------------------------------------------------------------
# 3. the official openai SDK
# --------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK marks translations deprecated
def test_openai_sdk(gateway_factory, fake_vllm):
    gw = gateway_factory(config=config(fake_vllm), workers=1, env={"RATE_LIMIT_RPM": OK_RPM})
    client = gw.openai_client()
    result = client.audio.transcriptions.create(model="m-alias", file=("speech.wav", AUDIO, "audio/wav"), language="en")
    assert result.text == REPLY
    seen = received_file(fake_vllm, TRANSCRIBE)
    assert seen["body"]["model"] == UPSTREAM_MODEL and seen["file"]["sha256"] == sha(AUDIO)
    assert client.audio.translations.create(model="m", file=("speech.wav", AUDIO, "audio/wav")).text == REPLY

    events = list(client.audio.transcriptions.create(model="m-alias", file=("speech.wav", AUDIO, "audio/wav"),
                                                     stream=True))
    # vLLM's chunks are not OpenAI's transcript.text.* events: the SDK hands them over as they are
    chunks = [e.model_dump() for e in events]
    assert all(c["model"] == "m-alias" and c["object"] == "transcription.chunk" for c in chunks), chunks
    assert all(c["choices"] for c in chunks), "the usage chunk reached a client that did not ask"
    assert streamed_text(chunks) == REPLY
    assert received_file(fake_vllm, TRANSCRIBE)["body"]["stream_include_usage"] == "true"

    with pytest.raises(openai.NotFoundError) as info:
        client.audio.transcriptions.create(model="no-such-model", file=("speech.wav", AUDIO, "audio/wav"))
    assert info.value.body["code"] == "model_not_found"


# --------------------------------------------------------------------------------------
# 4. auth, scopes, limits, body cap, unknown model, method
# --------------------------------------------------------------------------------------

def test_keys_in_either_header_and_scopes(gateway_factory, fake_vllm):
    gw = gateway_factory(config=config(fake_vllm, keys=SCOPED_KEYS), workers=1)
    body, ctype = audio_form("m")
    for key, style in [(None, "bearer"), ("wrong-key", "bearer"), ("wrong-key", "x-api-key")]:
        r = upload(gw, TRANSCRIBE, body, ctype, key=key, style=style)
        openai_error(r, 401, code="invalid_api_key")
    assert fake_vllm.requests_seen(TRANSCRIBE) == 0, "an upload without a valid key reached the upstream"
    assert upload(gw, TRANSCRIBE, body, ctype, key=ALICE, style="bearer").status == 200
    assert upload(gw, TRANSLATE, body, ctype, key=ALICE, style="x-api-key").status == 200
    assert fake_vllm.requests_seen(TRANSCRIBE) == fake_vllm.requests_seen(TRANSLATE) == 1

    # alice may use m only; the model comes after the file here
    other, octype = audio_form("other", model_first=False)
    openai_error(upload(gw, TRANSCRIBE, other, octype, key=ALICE), 403, code="model_not_allowed", param="model")
    assert fake_vllm.requests_seen(TRANSCRIBE) == 1
    assert upload(gw, TRANSCRIBE, other, octype, key=BOB, style="x-api-key").status == 200


def test_request_limit_is_429(gateway_factory, fake_vllm):
    gw = gateway_factory(config=config(fake_vllm), workers=2, env={"BEARER_TOKEN": "k1", "RATE_LIMIT_RPM": "2"})
    body, ctype = audio_form("m")
    assert [upload(gw, TRANSCRIBE, body, ctype, key="k1").status for _ in range(2)] == [200, 200]
    r = upload(gw, TRANSLATE, body, ctype, key="k1", style="x-api-key")
    openai_error(r, 429, code="rate_limit_exceeded")
    assert int(r.headers["retry-after"]) >= 1
    assert fake_vllm.requests_seen(TRANSCRIBE) == 2 and fake_vllm.requests_seen(TRANSLATE) == 0
    # refused once the model is read, while a large body still arrives: answered, then closed
    body, ctype = audio_form("m", data=big_audio(900_000))
    c = RawConnection(gw)
    try:
        c.send(request_head(TRANSCRIBE, ctype, len(body), auth("k1")) + body)
        openai_error(c.read_response(), 429, code="rate_limit_exceeded")
        assert c.closed_by_peer(), "the connection stayed open over an unread body"
    finally:
        c.close()
    assert fake_vllm.requests_seen(TRANSCRIBE) == 2
    wait_no_open_requests(gw)


def test_body_over_the_cap_is_413(gateway_factory, fake_vllm):
    cap = 65536
    gw = gateway_factory(config=config(fake_vllm), workers=1, env={"MAX_REQUEST_BODY_BYTES": str(cap)})
    body, ctype = audio_form("m", data=big_audio(4 * cap))

    # content-length over the cap: answered from the head, before any byte of the body
    c = RawConnection(gw)
    try:
        c.send(request_head(TRANSCRIBE, ctype, len(body)))
        r = c.read_response()
        openai_error(r, 413, code="request_too_large")
        assert c.closed_by_peer(), "the connection stayed open over an unread body"
    finally:
        c.close()
    assert fake_vllm.requests_seen(TRANSCRIBE) == 0

    # chunked over the cap: 413 while the client is still sending, then the connection closes
    c = RawConnection(gw)
    try:
        c.send(request_head(TRANSCRIBE, ctype, None))
        sent = 0
        for i in range(0, len(body), 4096):
            if not c.send(b"%x\r\n%s\r\n" % (len(body[i:i + 4096]), body[i:i + 4096])):
                break
            sent += 4096
        r = c.read_response()
        openai_error(r, 413, code="request_too_large")
        assert r.headers.get("connection") == "close", r.headers
        assert c.closed_by_peer(), "the connection stayed open after a 413 mid-upload"
    finally:
        c.close()
    # the upstream never got a whole form (it may have seen the start of one)
    counters = settled(fake_vllm)
    assert counters["completed"].get(TRANSCRIBE, 0) == 0, counters

    # a small one on the same gateway is fine
    ok, octype = audio_form("m", data=AUDIO)
    assert upload(gw, TRANSCRIBE, ok, octype).status == 200
    wait_no_open_requests(gw)


def test_unknown_model_and_wrong_method(gateway_factory, fake_vllm):
    gw = gateway_factory(config=config(fake_vllm), workers=1)
    for first in (True, False):
        body, ctype = audio_form("no-such-model", model_first=first)
        openai_error(upload(gw, TRANSCRIBE, body, ctype), 404, code="model_not_found", param="model")
    # known from the head of a large body: answered at once, the rest not read
    body, ctype = audio_form("no-such-model", data=big_audio(900_000))
    c = RawConnection(gw)
    try:
        c.send(request_head(TRANSLATE, ctype, len(body)) + body)
        openai_error(c.read_response(), 404, code="model_not_found", param="model")
        assert c.closed_by_peer(), "the connection stayed open over an unread body"
    finally:
        c.close()
    for path in PATHS:
        r = gw.get(path)
        openai_error(r, 405, code="method_not_allowed")
        assert r.headers.get("allow") == "POST"
    assert fake_vllm.requests_seen(TRANSCRIBE) == fake_vllm.requests_seen(TRANSLATE) == 0


# --------------------------------------------------------------------------------------
# 5. breaker and fallbacks
# --------------------------------------------------------------------------------------

def test_refused_upstream_falls_over_to_the_next(gateway_factory, fake_vllm_factory):
    a, b = fake_vllm_factory(), fake_vllm_factory()
    a.stop_listener()
    gw = gateway_factory(config=config(a, b), workers=1, env={"RATE_LIMIT_RPM": OK_RPM})
    large = big_audio(2 * REPLAY_LIMIT)  # nothing reached a: kept whole, sent to b
    for i, data in enumerate([AUDIO, AUDIO, large, large]):
        body, ctype = audio_form("m-alias", data=data, extra=[("stream", "true")] if i % 2 else [])
        r = upload(gw, TRANSCRIBE, body, ctype)
        assert r.status == 200, (i, r)
        seen = received_file(b, TRANSCRIBE)
        assert seen["file"]["sha256"] == sha(data) and seen["body"]["model"] == UPSTREAM_MODEL, i
    assert b.requests_seen(TRANSCRIBE) == 4


def test_small_upload_is_sent_again_after_a_5xx(gateway_factory, fake_vllm_factory):
    a, b = fake_vllm_factory(), fake_vllm_factory(models=["spare-model"])
    gw = gateway_factory(config=fallback_config(a, b), workers=1, env={"RATE_LIMIT_RPM": OK_RPM})
    data = big_audio(REPLAY_LIMIT - 4096)
    for stream in (False, True):
        a.fail_next(count=1, status=503, routes=[TRANSCRIBE])
        body, ctype = audio_form("m-alias", data=data, model_first=stream, extra=[("stream", "true")] if stream else [])
        r = upload(gw, TRANSCRIBE, body, ctype)
        assert r.status == 200, (stream, r)
        if stream:
            assert streamed_text(stream_chunks(r)) == REPLY
        else:
            assert r.json()["text"] == REPLY
        first, second = received_file(a, TRANSCRIBE), received_file(b, TRANSCRIBE)
        assert first["file"]["sha256"] == second["file"]["sha256"] == sha(data)
        assert first["body"]["model"] == UPSTREAM_MODEL
        assert second["body"]["model"] == "spare-model"  # renamed for the attempt that took it
        assert second["form"]["order"] == first["form"]["order"]
    assert len(a.counters()["injected"]) == 2 and b.requests_seen(TRANSCRIBE) == 2


def test_large_upload_gets_the_error_when_the_upstream_failed(gateway_factory, fake_vllm_factory):
    a, b = fake_vllm_factory(), fake_vllm_factory(models=["spare-model"])
    gw = gateway_factory(config=fallback_config(a, b), workers=2, env={"RATE_LIMIT_RPM": OK_RPM})
    workers = gw.worker_pids()
    data = big_audio(REPLAY_LIMIT + 65536)
    a.fail_next(count=1, status=500, routes=[TRANSCRIBE])
    body, ctype = audio_form("m-alias", data=data)
    r = upload(gw, TRANSCRIBE, body, ctype)
    assert r.status in (502, 503), r
    openai_error(r, r.status)
    assert received_file(a, TRANSCRIBE)["file"]["sha256"] == sha(data)
    assert b.requests_seen(TRANSCRIBE) == 0, "a large upload was replayed from a partial copy"
    # fine afterwards, large or small
    for d in (data, AUDIO):
        body, ctype = audio_form("m-alias", data=d)
        assert upload(gw, TRANSCRIBE, body, ctype).status == 200
        assert received_file(a, TRANSCRIBE)["file"]["sha256"] == sha(d)
    assert gw.worker_pids() == workers


def test_breaker_opens_on_failing_uploads(gateway_factory, fake_vllm):
    gw = gateway_factory(config=config(fake_vllm), workers=1, env={
        "CIRCUIT_BREAKER_THRESHOLD": "2", "CIRCUIT_BREAKER_COOLDOWN": "30", "UPSTREAM_HEALTH_INTERVAL": "60",
        "RATE_LIMIT_RPM": OK_RPM})
    fake_vllm.fail_next(count=100, status=500, routes=[TRANSCRIBE])
    body, ctype = audio_form("m")
    for _ in range(2):
        openai_error(upload(gw, TRANSCRIBE, body, ctype), 502)
    seen = fake_vllm.requests_seen(TRANSCRIBE)
    r = upload(gw, TRANSCRIBE, body, ctype)
    openai_error(r, 503, code="circuit_open")
    assert int(r.headers["retry-after"]) >= 1
    assert fake_vllm.requests_seen(TRANSCRIBE) == seen


# --------------------------------------------------------------------------------------
# 6. disconnects
# --------------------------------------------------------------------------------------

def test_client_gone_mid_upload_closes_the_upstream(gateway_factory, fake_vllm):
    gw = gateway_factory(config=config(fake_vllm), workers=1, env={"RATE_LIMIT_RPM": OK_RPM})
    workers = gw.worker_pids()
    body, ctype = audio_form("m", data=big_audio(600_000))
    c = RawConnection(gw)
    c.send(request_head(TRANSCRIBE, ctype, len(body)) + body[:len(body) // 2])
    wait_until(lambda: fake_vllm.requests_seen(TRANSCRIBE) == 1, 5, what="the upload reached the upstream")
    time.sleep(0.2)
    dropped = time.time()
    c.close()
    cancel = fake_vllm.wait_for_cancellation(1, timeout=3)[0]
    assert cancel["path"] == TRANSCRIBE and cancel["phase"] == "received", cancel
    assert cancel["time"] - dropped < 1.0
    counters = settled(fake_vllm)
    assert counters["completed"].get(TRANSCRIBE, 0) == 0
    wait_until(lambda: requests_counted(gw, TRANSCRIBE, "499") == 1, 3, what="the upload counted as 499")
    wait_no_open_requests(gw)

    # gone before the model was read (it comes after the file): nothing reaches the upstream
    body, ctype = audio_form("m", data=big_audio(600_000), model_first=False)
    c = RawConnection(gw)
    c.send(request_head(TRANSLATE, ctype, len(body)) + body[:len(body) // 2])
    time.sleep(0.3)
    c.close()
    wait_until(lambda: requests_counted(gw, TRANSLATE, "499") == 1, 3, what="the upload counted as 499")
    assert fake_vllm.requests_seen(TRANSLATE) == 0
    wait_no_open_requests(gw)

    ok, octype = audio_form("m")
    assert upload(gw, TRANSCRIBE, ok, octype).status == 200
    assert gw.worker_pids() == workers


def test_client_gone_mid_stream_cancels_the_upstream(gateway_factory, fake_vllm):
    gw = gateway_factory(config=config(fake_vllm), workers=1, env={"RATE_LIMIT_RPM": OK_RPM})
    fake_vllm.set_stream(events=50, delay=0.1)
    body, ctype = audio_form("m-alias", extra=[("stream", "true")])
    events = stream_upload(gw, TRANSLATE, body, ctype)
    first = [json.loads(next(events)) for _ in range(3)]
    assert [c["choices"][0]["delta"]["content"] for c in first] == ["The", " quick", " brown"]
    dropped = time.time()
    events.close()
    cancel = fake_vllm.wait_for_cancellation(1, timeout=3)[0]
    assert cancel["path"] == TRANSLATE and cancel["phase"] == "streaming", cancel
    assert cancel["time"] - dropped < 1.0
    fake_vllm.set_stream(events=DEFAULT_STREAM_EVENTS, delay=0)
    ok, octype = audio_form("m")
    assert upload(gw, TRANSLATE, ok, octype).status == 200


# --------------------------------------------------------------------------------------
# 7. hostile forms: a 400 in OpenAI's shape, and nothing else
# --------------------------------------------------------------------------------------

def _hostile() -> List[Tuple[str, Dict[str, Any]]]:
    file_part: Part = ("file", ("a.wav", AUDIO, "audio/wav"))
    cases = []

    def case(name, body, ctype, code, param=None, raw_ctypes=None):
        cases.append((name, {"body": body, "ctype": ctype, "code": code, "param": param, "raw_ctypes": raw_ctypes}))

    body, ctype = form([("model", "m"), file_part])
    case("json", json.dumps({"model": "m", "file": "x"}).encode(), "application/json", "invalid_content_type")
    case("no-boundary", body, "multipart/form-data", "invalid_content_type")
    case("two-content-types", body, None, "invalid_content_type", raw_ctypes=[ctype, ctype])
    case("model-as-file", *form([("model", ("m.txt", b"m", "text/plain")), file_part]), "invalid_value", "model")
    case("model-twice", *form([("model", "m"), file_part, ("model", "m")]), "duplicate_field", "model")
    case("model-twice-adjacent", *form([("model", "m"), ("model", "other"), file_part]), "duplicate_field", "model")
    case("model-not-utf8", *form([file_part, ("model", b"m\xff\xfe")]), "invalid_value", "model")
    case("model-over-1024", *form([("model", "m" * 1025), file_part]), "multipart_part_too_large", "model")
    case("no-model", *form([file_part]), "missing_model", "model")
    case("empty-model", *form([("model", ""), file_part]), "missing_model", "model")
    case("never-closed", *form([("model", "m"), file_part], close=False), "invalid_multipart")
    case("never-closed-no-model", *form([file_part], close=False), "invalid_multipart")
    case("garbage", b"\x00\xff\xfe garbage \r\n\x01" * 50, ctype, "invalid_multipart")
    case("bad-part-header", b"--" + BOUNDARY.encode() + b"\r\nno colon here\r\n\r\nm\r\n--" + BOUNDARY.encode() + b"--\r\n",
         ctype, "invalid_multipart")
    return cases


HOSTILE = _hostile()


def test_hostile_forms_get_a_400_and_nothing_else(gateway_factory, fake_vllm):
    gw = gateway_factory(config=config(fake_vllm), workers=2, env={"RATE_LIMIT_RPM": OK_RPM})
    workers = gw.worker_pids()
    assert len(workers) == 2
    failures = []
    for name, c in HOSTILE:
        conn = RawConnection(gw)
        try:
            head = request_head(TRANSCRIBE, c["raw_ctypes"] or c["ctype"], len(c["body"]))
            conn.send(head + c["body"])
            r = conn.read_response()
            extra = not conn.nothing_more()
        finally:
            conn.close()
        try:
            openai_error(r, 400, code=c["code"], param=c["param"])
            assert not extra, "more bytes followed the 400"
        except AssertionError as e:
            failures.append(f"{name}: {e}")
    assert not failures, "\n".join(failures)
    counters = settled(fake_vllm)
    assert counters["completed"].get(TRANSCRIBE, 0) == 0, f"a hostile form reached the upstream whole: {counters}"
    assert gw.worker_pids() == workers, "a worker died"
    assert gw.get("/health").status == 200
    wait_no_open_requests(gw)
    body, ctype = audio_form("m")
    assert upload(gw, TRANSCRIBE, body, ctype).status == 200


# --------------------------------------------------------------------------------------
# 8. keep-alive and 100-continue
# --------------------------------------------------------------------------------------

def test_uploads_one_after_another_on_one_connection(gateway_factory, fake_vllm):
    gw = gateway_factory(config=config(fake_vllm), workers=1, env={"RATE_LIMIT_RPM": OK_RPM})
    conn = http.client.HTTPConnection(gw.host, gw.port, timeout=10)
    try:
        socks = []
        for i, (path, extra) in enumerate([(TRANSCRIBE, []), (TRANSLATE, [("stream", "true")]), (TRANSCRIBE, [])]):
            body, ctype = audio_form("m-alias", data=AUDIO + bytes([i]), extra=extra)
            conn.request("POST", path, body=body, headers={"Content-Type": ctype})
            socks.append(conn.sock)
            r = conn.getresponse()
            answer = r.read()
            assert r.status == 200, (i, answer[:300])
            assert (r.getheader("connection") or "").lower() != "close", i
            assert received_file(fake_vllm, path)["file"]["sha256"] == sha(AUDIO + bytes([i]))
        assert socks[0] is not None and all(s is socks[0] for s in socks), "the connection was not kept alive"
    finally:
        conn.close()


def test_expect_100_continue(gateway_factory, fake_vllm):
    gw = gateway_factory(config=config(fake_vllm, keys=SCOPED_KEYS), workers=1)
    body, ctype = audio_form("m-alias")
    c = RawConnection(gw)
    try:
        c.send(request_head(TRANSCRIBE, ctype, len(body), {"Expect": "100-continue", "Authorization": f"Bearer {BOB}"}))
        status, _ = c.read_head()
        assert status == 100
        c.send(body)
        r = c.read_response()
        assert r.status == 200 and r.json()["text"] == REPLY, r
        # and the connection serves the next upload
        c.send(request_head(TRANSLATE, ctype, len(body), {"Authorization": f"Bearer {BOB}"}) + body)
        assert c.read_response().status == 200
    finally:
        c.close()
    assert received_file(fake_vllm, TRANSCRIBE)["file"]["sha256"] == sha(AUDIO)
    # refused from the head: the answer instead of the 100
    c = RawConnection(gw)
    try:
        c.send(request_head(TRANSCRIBE, ctype, len(body), {"Expect": "100-continue"}))
        r = c.read_response()
        openai_error(r, 401)
    finally:
        c.close()


# --------------------------------------------------------------------------------------
# 9. the demo model
# --------------------------------------------------------------------------------------

def test_demo_model(gateway_factory):
    gw = gateway_factory(upstream="demo", workers=1)
    demo_text = "The llm-gateway demo model does not transcribe audio. Point --upstream at vLLM serving a speech model."
    body, ctype = audio_form("demo", data=big_audio(300_000), model_first=False)
    r = upload(gw, TRANSCRIBE, body, ctype)
    assert r.status == 200 and r.json() == {"text": demo_text, "usage": {"type": "duration", "seconds": 0}}, r
    r = upload(gw, TRANSLATE, body, ctype)
    assert r.status == 200 and r.json() == {"text": demo_text}, r
    for path, obj in [(TRANSCRIBE, "transcription.chunk"), (TRANSLATE, "translation.chunk")]:
        body, ctype = audio_form("demo", extra=[("stream", "true")])
        chunks = stream_chunks(upload(gw, path, body, ctype))
        assert all(c["model"] == "demo" and c["object"] == obj for c in chunks), chunks
        assert streamed_text(chunks) == demo_text
    wait_no_open_requests(gw)


def test_demo_model_refuses_bad_uploads(gateway_factory):
    """The demo model drops the rest of an upload once `model` is read: a form that turns
    out bad after that, or a chunked body over the cap, must still get its 400 / 413 (and
    end: no request left open)."""
    gw = gateway_factory(upstream="demo", workers=1, env={"MAX_REQUEST_BODY_BYTES": "65536"})
    workers = gw.worker_pids()
    file_part: Part = ("file", ("a.wav", AUDIO, "audio/wav"))
    failures = []
    for name, (body, ctype), code in [
        ("never-closed", form([("model", "demo"), file_part], close=False), "invalid_multipart"),
        ("model-twice", form([("model", "demo"), file_part, ("model", "demo")]), "duplicate_field"),
    ]:
        c = RawConnection(gw, timeout=2)
        try:
            c.send(request_head(TRANSCRIBE, ctype, len(body)) + body)
            openai_error(c.read_response(), 400, code=code)
        except (AssertionError, OSError) as e:
            failures.append(f"{name}: expected 400 {code}, got {e!r}")
        finally:
            c.close()
    # chunked, over the cap after the model: 413, and the connection closes
    for over in (100, 70_000):
        body, ctype = audio_form("demo", data=big_audio(65536 + over))
        c = RawConnection(gw, timeout=2)
        try:
            c.send(request_head(TRANSCRIBE, ctype, None))
            for i in range(0, len(body), 4096):
                if not c.send(b"%x\r\n%s\r\n" % (len(body[i:i + 4096]), body[i:i + 4096])):
                    break
            c.send(b"0\r\n\r\n")
            r = c.read_response()
            openai_error(r, 413, code="request_too_large")
            assert r.headers.get("connection") == "close", r.headers
            assert c.closed_by_peer(2), "the connection stayed open after a 413 mid-upload"
        except (AssertionError, OSError) as e:
            failures.append(f"chunked {over} bytes over the cap: expected 413 then close, got {e!r}")
        finally:
            c.close()
    try:
        wait_no_open_requests(gw)
    except AssertionError as e:
        failures.append(str(e))
    assert not failures, "\n".join(failures)
    assert gw.worker_pids() == workers
