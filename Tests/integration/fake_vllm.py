#!/usr/bin/env python3
"""A fake vLLM OpenAI-compatible server owned by the llm-gateway integration tests.

It mimics the parts of vLLM's OpenAI server (``vllm/entrypoints/openai/api_server.py``)
that the gateway talks to, with deterministic output, and adds a JSON control API under
``/_control/...`` so a test can inject latency and failures and read what the server saw.

Run it on its own::

    python3 fake_vllm.py --port 18000 --models qwen,other [--control-port 18001]
                         [--ready-file F] [--stream-events 8] [--stream-delay 0.1]

It listens on 127.0.0.1 only. ``--port 0`` / ``--control-port 0`` pick free ports; the
chosen ports are printed on a ``fake_vllm listening ...`` line and written (JSON) to the
ready file. The control API is served on both ports; the control port keeps answering
while the main listener is stopped (``POST /_control/listener {"enabled": false}``), so a
test can simulate "connection refused" and bring the upstream back.

Import it to drive it from Python: ``FakeVLLM.start(...)`` starts it as a subprocess and
returns a handle with ``.url``, ``.control(...)``, ``.counters()`` and friends. The client
half of this module uses the standard library only; aiohttp is imported only to serve.

Served routes (vLLM's shapes)::

    GET  /health                 200, empty body (controllable: status, hang, delay)
    GET  /metrics                vLLM-named engine gauges (config metrics_*: waiting, KV use,
                                 cache geometry, LoRA slots; metrics_mode garbage | huge | error)
    GET  /ping, /version         as vLLM
    GET  /v1/models              {"object":"list","data":[{"id","object":"model",...}]}
    POST /v1/chat/completions    plain and SSE (stream: true)
    POST /v1/completions         plain and SSE
    POST /v1/embeddings          deterministic unit vectors; float or base64
    POST /v1/responses           Responses API: a Response object, or with stream: true
                                 `event: TYPE` + `data: JSON` pairs (response.created,
                                 .in_progress, .output_item.added, .content_part.added,
                                 .output_text.delta per token, .output_text.done, .content_part.done,
                                 .output_item.done, .completed with usage), sequence_number from 0;
                                 stored per instance unless store: false (config responses_store);
                                 previous_response_id unknown here -> 404; background: true ->
                                 "queued", completed later
    GET  /v1/responses/{id}      the stored Response, or 404 invalid_request_error param response_id
    POST /v1/responses/{id}/cancel  background and still running -> "cancelled"; finished ->
                                 400 "Cannot cancel a synchronous response."; unknown -> 404
    POST /v1/messages            Anthropic Messages as vLLM serves it (id "chatcmpl-...", no
                                 stop_sequence key); stream: message_start, content_block_start,
                                 content_block_delta per token, content_block_stop, message_delta
                                 (usage input_tokens + cumulative output_tokens), message_stop.
                                 Errors {"type":"error","error":{"type","message"}} with vLLM's type
                                 names (NotFoundError...), but a body pydantic rejects gets the
                                 OpenAI-shaped 400, as in vLLM
    POST /v1/messages/count_tokens  {"input_tokens": N, "context_management": {...}}
    POST /rerank, /v1/rerank, /v2/rerank   {id "score-...", model, usage, results sorted by score}
    POST /score, /v1/score       text_1/text_2 (or queries/documents, data_1/data_2) -> data of scores
    POST /tokenize, /detokenize  {count, max_model_len, tokens, token_strs} / {prompt}; one id per
                                 whitespace word, ids from 1000 (round-trips through /detokenize)
    POST /pooling, /classify     {id "pool-"|"classify-", object "list", data, usage}
    POST /v1/audio/transcriptions, /v1/audio/translations
                                 multipart/form-data (file, model, response_format, stream,
                                 stream_include_usage, max_completion_tokens, ...; the last of a
                                 repeated field wins; no model = the first served one):
                                 {"text", "usage": {"type": "duration", "seconds"}} (translations:
                                 {"text"}; verbose_json: duration, language, text, segments, words);
                                 stream: "transcription.chunk" / "translation.chunk" chunks, ids
                                 "transcribe-" / "translate-", usage chunk only with
                                 stream_include_usage=true, [DONE]. A file over
                                 audio_max_filesize_mb (25) -> 400 param audio_filesize_mb; a body
                                 Starlette cannot read -> 400 {"detail": ...}. last_request holds
                                 form (fields, order), file (filename, content_type, size, sha256),
                                 body_size, body_sha256

All API routes go through the same rules: fail / fail_stream / delay keyed by path (for
GET /v1/responses/{id} the path holds the id), counters, cancellations, model checks.

Control API (JSON; on the control port and the main port)::

    POST /_control/reset                       config back to the start-up defaults, counters cleared
    GET|POST /_control/config                  read / patch config keys (see ``serve()``)
    POST /_control/stream                      {"events": N, "delay": S, "first_token_delay": S}
    POST /_control/health                      {"status": 503, "mode": "ok"|"hang", "delay": S}
    POST /_control/fail                        next N API requests fail before any byte:
                                               {"count", "status", "mode": "status"|"close"|"abort"|"hang",
                                                "style": "new"|"flat", "message", "routes", "retry_after", "body"}
    POST /_control/fail_stream                 next N streams fail after K events:
                                               {"count", "after_events", "mode": "close"|"abort"|"error_event"|"hang",
                                                "status", "message", "routes"}
    POST /_control/delay                       {"seconds": S, "count": N|null, "routes": [...]}: header delay
    POST /_control/clear_rules                 drop pending fail / fail_stream / delay rules
    GET|POST /_control/models                  {"models": [...], "max_model_len": N}
    GET|POST /_control/listener                {"enabled": false, "drop_connections": true}: refuse connections
    POST /_control/drop_connections            abort open connections on the main port
    GET  /_control/counters                    requests/completed/cancelled per path, cancellations, injected,
                                               inflight, max_inflight, total, streams_started, connections_seen
    GET  /_control/last_request[?path=/v1/..]  last API request: method, path, headers, body, time
    GET  /_control/requests                    log of the last 500 API requests (path, model, stream, time)
    GET  /_control/last_stream                 per-event send times of the last stream
    GET  /_control/cancellations               client disconnects: path, phase, events_sent, time, ...
    GET  /_control/responses                   {response id: status} of the Responses store
    GET  /_control/state                       everything above at once

Stream layout (chat): role chunk, one chunk per token, then for finish_reason "stop" an
EOS chunk with empty content carrying finish_reason (for "length" the last token chunk
carries it), then with ``stream_options.include_usage`` a chunk with ``choices: []`` and
``usage``, then ``data: [DONE]``. Completions: the same without the role chunk.
Every SSE event is one ``transport.write`` of ``data: ...\\n\\n`` (TCP_NODELAY), and its
send time is recorded in ``last_stream``.

Token accounting (deterministic, so tests can predict usage): prompt_tokens is the number
of whitespace-separated words in the prompt (chat: all message text; minimum 1), unless
the ``prompt_tokens`` config overrides it; completion_tokens is the number of tokens
generated (stream events carrying text, plus 1 for the EOS when finish_reason is "stop").

Misbehaviour switches (config keys, ``fv.config(...)``; added for issue 20, off by default):

- ``force_sse: true``: chat and completions answer as a stream (``text/event-stream``,
  with the usage chunk) whatever the request's ``stream`` said, as vLLM does for a
  ``stream`` value its lax parsing reads as true ("true", 1, "yes", ...).
- ``usage_override: {"prompt_tokens": N, ...}``: merged into every ``usage`` object the
  fake writes (plain answers, the streamed usage chunk, continuous usage), e.g. absurd
  counts such as 18446744073709551615 or 1e30 from a hostile upstream.
  On the Responses, Anthropic and rerank answers only the keys that family's usage has
  are replaced (``input_tokens``, ``output_tokens``, ...).

Streams with named events (Responses, Anthropic) record ``event`` (the SSE event name) in
``last_stream`` entries; their kind is ``content`` for text deltas, ``usage`` for the event
that carries the final usage, ``done`` for message_stop, ``event`` otherwise. A
``fail_stream`` ``error_event`` there is ``event: error`` with vLLM's payload for that API
(Responses: ``{"error":{...}}``; Anthropic: ``{"type":"error","error":{"type":"internal_error",...}}``).
"""
from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import math
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))

DEFAULT_MODEL = "fake-model"
DEFAULT_MAX_MODEL_LEN = 4096
DEFAULT_EMBEDDING_DIM = 32
DEFAULT_STREAM_EVENTS = 8
# The named events of a default Responses / Anthropic Messages stream, in order.
RESPONSES_STREAM = (["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added"]
                    + ["response.output_text.delta"] * DEFAULT_STREAM_EVENTS
                    + ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                       "response.completed"])
ANTHROPIC_STREAM = (["message_start", "content_block_start"] + ["content_block_delta"] * DEFAULT_STREAM_EVENTS
                    + ["content_block_stop", "message_delta", "message_stop"])

# Default reply: the words of this sentence, cycled, one token per word.
DEFAULT_WORDS = ["The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", "."]

DEFAULT_TOOL_CALLS = [{"name": "get_weather", "arguments": {"city": "Paris"}}]

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


# --------------------------------------------------------------------------------------
# Pure helpers (shared by the server and by tests that want to predict the output)
# --------------------------------------------------------------------------------------

def default_tokens(n: int) -> List[str]:
    """The default reply as a list of n tokens: DEFAULT_WORDS cycled ("The", " quick", ...,
    ".", " The", " quick", ...)."""
    out = []
    for i in range(max(0, n)):
        w = DEFAULT_WORDS[i % len(DEFAULT_WORDS)]
        if i >= len(DEFAULT_WORDS) and i % len(DEFAULT_WORDS) == 0:
            w = " " + w
        out.append(w)
    return out


def default_text(n: int = DEFAULT_STREAM_EVENTS) -> str:
    """The default reply text for n tokens ("The quick brown fox jumps over the lazy" for 8)."""
    return "".join(default_tokens(n))


_TOKEN_RE = re.compile(r"</?tool_call>|\[TOOL_CALLS\]|<\|python_tag\|>|\s*\w+|\s*[^\w\s]|\s+")


def tokenize(text: str, chunk_chars: int = 0) -> List[str]:
    """Split text into stream tokens. chunk_chars > 0: fixed-size chunks; otherwise words,
    single punctuation marks, and tool-call markers (``<tool_call>``...) as one token each,
    leading whitespace attached to the following word. "".join(tokenize(t)) == t."""
    if not text:
        return []
    if chunk_chars and chunk_chars > 0:
        return [text[i:i + chunk_chars] for i in range(0, len(text), chunk_chars)]
    toks = _TOKEN_RE.findall(text)
    assert "".join(toks) == text
    return toks


def count_words(text: str) -> int:
    return len(text.split())


def hermes_tool_text(tool_calls: List[Dict[str, Any]], prefix: str = "") -> str:
    """Raw Hermes tool-call text as a model emits it when vLLM has no tool parser:
    ``<tool_call>{"name":"get_weather","arguments":{"city":"Paris"}}</tool_call>``."""
    parts = [prefix or ""]
    for call in tool_calls:
        payload = {"name": call["name"], "arguments": call.get("arguments", {})}
        parts.append("<tool_call>" + json.dumps(payload, separators=(",", ":")) + "</tool_call>")
    return "".join(parts)


def embedding_vector(text: str, dim: int) -> List[float]:
    """Deterministic L2-normalised vector for text (same text -> same vector)."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")
    rng = random.Random(seed)
    vec = [rng.uniform(-1.0, 1.0) for _ in range(dim)]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


def _dumps(obj: Any) -> str:
    """Compact JSON, as pydantic's model_dump_json (what vLLM sends)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def random_uuid() -> str:
    return uuid.uuid4().hex


ERROR_TYPES = {
    400: "BadRequestError",
    401: "Unauthorized",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    408: "RequestTimeoutError",
    413: "RequestEntityTooLarge",
    422: "UnprocessableEntityError",
    429: "RateLimitError",
    500: "InternalServerError",
    501: "NotImplementedError",
    502: "BadGatewayError",
    503: "ServiceUnavailableError",
    504: "GatewayTimeoutError",
}


def error_body(message: str, status: int, style: str = "new", err_type: Optional[str] = None,
               param: Optional[str] = None) -> Dict[str, Any]:
    """vLLM's ErrorResponse. style "new": {"error":{message,type,param,code}} (current vLLM);
    "flat": {"object":"error",message,type,param,code} (older vLLM)."""
    info = {"message": message, "type": err_type or ERROR_TYPES.get(status, "InternalServerError"),
            "param": param, "code": status}
    if style == "flat":
        return {"object": "error", **info}
    return {"error": info}


# --------------------------------------------------------------------------------------
# multipart/form-data (the audio routes), read as vLLM reads it: Starlette over
# python-multipart. Standard library only, so tests can build and check bodies too.
# --------------------------------------------------------------------------------------

class MultipartError(ValueError):
    """A body Starlette refuses; str() is its ``detail`` (400 ``{"detail": ...}``)."""


def _header_params(value: str):
    """(first word lower-cased, {key lower-cased: value}) of a header value, as
    python-multipart's parse_options_header: ``;`` outside quotes splits, ``key*`` parameters
    are ignored, quotes are removed with ``\\\\`` and ``\\"`` unescaped, the last repeat wins."""
    segments, current, quoted, escaped = [], [], False, False
    for ch in value:
        if ch == ";" and not quoted:
            segments.append("".join(current))
            current = []
            continue
        if ch == '"' and not escaped:
            quoted = not quoted
        escaped = ch == "\\" and not escaped
        current.append(ch)
    segments.append("".join(current))
    first, params = segments[0].strip(" \t").lower(), {}
    for segment in segments[1:]:
        key, _, val = segment.partition("=")
        key, val = key.strip(" \t").lower(), val.strip(" \t")
        if not key or "*" in key:
            continue
        if len(val) >= 2 and val[0] == '"' and val[-1] == '"':
            val = val[1:-1].replace("\\\\", "\\").replace('\\"', '"')
        params[key] = val
    return first, params


def multipart_boundary(content_type: str) -> Optional[str]:
    """The boundary of a multipart/form-data ``content-type``; None for another media type.
    Raises MultipartError("Missing boundary in multipart.") when it has none."""
    kind, params = _header_params(content_type or "")
    if kind != "multipart/form-data":
        return None
    if "boundary" not in params:
        raise MultipartError("Missing boundary in multipart.")
    return params["boundary"]


def parse_multipart(body: bytes, boundary: str) -> List[Dict[str, Any]]:
    """The parts of a multipart/form-data body, in order: ``{"name", "filename" (None for a
    field), "content_type", "headers", "data" (bytes)}``. As python-multipart: leading CR/LF
    skipped, the first line must be the boundary, a delimiter is CRLF ``--boundary`` then
    CRLF (blanks allowed before it) or ``--``; a part missing its closing delimiter is
    dropped. Raises MultipartError("Invalid multipart data.") otherwise."""
    invalid = MultipartError("Invalid multipart data.")
    dash = b"--" + boundary.encode("latin-1")
    delimiter = b"\r\n" + dash
    i = 0
    while i < len(body) and body[i] in b"\r\n":
        i += 1
    if not body.startswith(dash, i):
        raise invalid
    i += len(dash)
    parts: List[Dict[str, Any]] = []
    while True:
        if body.startswith(b"--", i):
            return parts
        while i < len(body) and body[i] in b" \t":
            i += 1
        if not body.startswith(b"\r\n", i):
            if i >= len(body):
                return parts
            raise invalid
        i += 2
        end_headers = body.find(b"\r\n\r\n", i - 2)
        if end_headers < 0:
            return parts
        headers: Dict[str, str] = {}
        raw_headers = body[i:end_headers]
        for line in raw_headers.split(b"\r\n") if raw_headers else []:
            name, colon, value = line.partition(b":")
            if not colon or not name or any(c in name for c in b" \t\r\n"):
                raise invalid
            headers[name.decode("latin-1").lower()] = value.decode("latin-1").lstrip(" ")
        _, params = _header_params(headers.get("content-disposition", ""))
        if "name" not in params:
            raise MultipartError('The Content-Disposition header field "name" must be provided.')
        start = end_headers + 4
        end = body.find(delimiter, start)
        while end >= 0 and not (body.startswith(b"\r\n", end + len(delimiter))
                                or body.startswith(b"--", end + len(delimiter))
                                or body[end + len(delimiter):end + len(delimiter) + 1] in (b" ", b"\t")):
            end = body.find(delimiter, end + 1)  # "--boundaryX" inside data is data
        if end < 0:
            return parts
        parts.append({"name": _decode(params["name"]),
                      "filename": _decode(params["filename"]) if "filename" in params else None,
                      "content_type": headers.get("content-type"), "headers": headers,
                      "data": body[start:end]})
        i = end + len(delimiter)


# pydantic's words for a boolean given as a string (a form field).
TRUE_WORDS = {"1", "on", "t", "true", "y", "yes"}
FALSE_WORDS = {"0", "off", "f", "false", "n", "no"}


def _decode(value: str) -> str:
    raw = value.encode("latin-1")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return value


def form_summary(parts: List[Dict[str, Any]]) -> Dict[str, Any]:
    """What a test reads of a received form: ``fields`` (name -> value, the last wins, as in
    vLLM; a file is ``{"filename", "content_type", "size", "sha256"}``) and ``order`` (every
    part's name in order, repeats kept)."""
    fields: Dict[str, Any] = {}
    for part in parts:
        if part["filename"] is None:
            fields[part["name"]] = part["data"].decode("utf-8", "replace")
        else:
            fields[part["name"]] = {"filename": part["filename"], "content_type": part["content_type"],
                                    "size": len(part["data"]), "sha256": hashlib.sha256(part["data"]).hexdigest()}
    return {"fields": fields, "order": [p["name"] for p in parts]}


def multipart_body(parts: List[Any], boundary: Optional[str] = None, close: bool = True):
    """(body, content_type) of a multipart/form-data body: each part ``(name, "value")``
    (str or bytes) or ``(name, (filename, bytes, content_type))``, in order (repeats
    allowed); ``close=False`` leaves out the closing boundary."""
    boundary = boundary or "fakevllm" + uuid.uuid4().hex
    out = bytearray()
    for name, value in parts:
        out += b"--" + boundary.encode() + b"\r\n"
        if isinstance(value, tuple):
            filename, data, ctype = value
            out += f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'.encode()
            out += f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n"
        else:
            data = value if isinstance(value, bytes) else str(value).encode()
            out += f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + data + b"\r\n"
    if close:
        out += b"--" + boundary.encode() + b"--\r\n"
    return bytes(out), f"multipart/form-data; boundary={boundary}"


# --------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------

class _InjectedClose(Exception):
    """Raised inside a handler after the fake itself dropped the connection on purpose."""


class ServerState:
    def __init__(self, defaults: Dict[str, Any]):
        self.defaults = copy.deepcopy(defaults)
        self.started = time.time()
        self.created = int(self.started)
        self.reset()

    def reset(self) -> None:
        self.config: Dict[str, Any] = copy.deepcopy(self.defaults)
        self.fail_rules: List[Dict[str, Any]] = []
        self.stream_fail_rules: List[Dict[str, Any]] = []
        self.delay_rules: List[Dict[str, Any]] = []
        self.requests: Dict[str, int] = {}
        self.requests_by_method: Dict[str, int] = {}
        self.completed: Dict[str, int] = {}
        self.cancelled: Dict[str, int] = {}
        self.cancellations: List[Dict[str, Any]] = []
        self.injected: List[Dict[str, Any]] = []
        self.request_log: List[Dict[str, Any]] = []
        self.last_request: Optional[Dict[str, Any]] = None
        self.last_requests: Dict[str, Dict[str, Any]] = {}
        self.last_stream: Optional[Dict[str, Any]] = None
        self.streams_started = 0
        self.metrics_scrapes = 0
        self.inflight = 0
        self.max_inflight = 0
        self.total = 0
        self.peers: set = set()
        # Responses API store (vLLM keeps it in the memory of one server) and the
        # background tasks still running, by response id.
        self.responses: Dict[str, Dict[str, Any]] = {}
        self.response_texts: Dict[str, str] = {}
        self.background: Dict[str, Any] = {}
        # /tokenize vocabulary: word -> id, grown on demand (ids from 1000).
        self.vocab: Dict[str, int] = {}
        self.vocab_words: List[str] = []

    # rules -------------------------------------------------------------------------
    @staticmethod
    def _take(rules: List[Dict[str, Any]], path: str) -> Optional[Dict[str, Any]]:
        for rule in rules:
            routes = rule.get("routes")
            if routes and path not in routes:
                continue
            remaining = rule.get("remaining")
            if remaining is None:  # persistent
                return rule
            if remaining > 0:
                rule["remaining"] = remaining - 1
                return rule
        return None

    def counters(self) -> Dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "requests_by_method": dict(self.requests_by_method),
            "completed": dict(self.completed),
            "cancelled": dict(self.cancelled),
            "cancellations": list(self.cancellations),
            "injected": list(self.injected),
            "inflight": self.inflight,
            "max_inflight": self.max_inflight,
            "total": self.total,
            "streams_started": self.streams_started,
            "connections_seen": len(self.peers),
            "metrics_scrapes": self.metrics_scrapes,
        }


class _Ctx:
    """Per-request bookkeeping for cancellation detection."""

    def __init__(self, state: ServerState, request, kind: str, family: str = "openai"):
        self.state = state
        self.path = request.path
        self.method = request.method
        self.kind = kind
        self.family = family  # openai | responses | anthropic: the shape of errors and SSE events
        self.phase = "received"
        self.events_sent = 0
        self.model: Optional[str] = None
        self.request_id: Optional[str] = None
        self.injected_close = False
        self.finished = False
        self.started = time.time()
        self.stream_record: Optional[Dict[str, Any]] = None
        self.request = request

    def record_cancel(self, reason: str) -> None:
        if self.injected_close or self.finished:
            return
        self.finished = True
        st = self.state
        st.cancelled[self.path] = st.cancelled.get(self.path, 0) + 1
        st.cancellations.append({
            "path": self.path, "method": self.method, "phase": self.phase,
            "events_sent": self.events_sent, "model": self.model, "request_id": self.request_id,
            "time": time.time(), "monotonic": time.monotonic(), "started": self.started,
            "reason": reason,
        })
        if self.stream_record is not None:
            self.stream_record["cancelled"] = True


def build_apps(state: ServerState, log=print):
    """Create the aiohttp applications (main, control) sharing one ServerState."""
    import asyncio
    from aiohttp import web

    hang_limit = lambda: float(state.config.get("hang_limit", 300.0))  # noqa: E731

    def jresp(obj: Any, status: int = 200, headers: Optional[Dict[str, str]] = None):
        return web.Response(status=status, body=_dumps(obj).encode("utf-8"),
                            content_type="application/json", headers=headers)

    def verr(message: str, status: int, err_type: Optional[str] = None, param: Optional[str] = None,
             style: Optional[str] = None, headers: Optional[Dict[str, str]] = None):
        return jresp(error_body(message, status, style or state.config["error_style"], err_type, param),
                     status, headers)

    # ---- middleware: counters, api key, injected delays/failures ---------------------
    @web.middleware
    async def middleware(request, handler):
        path = request.path
        if path.startswith("/_control"):
            return await handler(request)
        if path == "/metrics":  # the gateway's scrapes: not counted with API traffic
            state.metrics_scrapes += 1
            return await handler(request)
        state.total += 1
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            state.peers.add(tuple(peer[:2]))
        state.requests[path] = state.requests.get(path, 0) + 1
        key = f"{request.method} {path}"
        state.requests_by_method[key] = state.requests_by_method.get(key, 0) + 1
        state.inflight += 1
        state.max_inflight = max(state.max_inflight, state.inflight)
        try:
            try:
                resp = await handler(request)
            except web.HTTPNotFound:
                resp = jresp({"detail": "Not Found"}, 404)  # FastAPI's default
            except web.HTTPMethodNotAllowed:
                resp = jresp({"detail": "Method Not Allowed"}, 405)
            state.completed[path] = state.completed.get(path, 0) + 1
            return resp
        finally:
            state.inflight -= 1

    async def read_json(request, ctx: _Ctx):
        raw = await request.read()
        rec = {
            "method": request.method, "path": request.path, "query": request.query_string,
            "headers": {k.lower(): v for k, v in request.headers.items()},  # lower-case names
            "time": time.time(), "monotonic": time.monotonic(), "body": None, "raw": None,
        }
        body = None
        err = None
        try:
            body = json.loads(raw.decode("utf-8")) if raw else None
            rec["body"] = body
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            rec["raw"] = raw.decode("utf-8", "replace")[:65536]
            err = str(e)
        state.last_request = rec
        state.last_requests[request.path] = rec
        log_entry = {"method": request.method, "path": request.path, "time": rec["time"],
                     "model": body.get("model") if isinstance(body, dict) else None,
                     "stream": bool(body.get("stream")) if isinstance(body, dict) else False}
        state.request_log.append(log_entry)
        del state.request_log[:-500]
        if isinstance(body, dict):
            ctx.model = body.get("model")
        return body, err

    async def read_form(request, ctx: _Ctx):
        """(fields, None), or (None, the 400 Starlette gives) for a body it cannot read. Records
        the request with ``form`` (form_summary: fields, order), ``file`` (the last file part's
        filename, content_type, size, sha256) and the raw body's size and sha256."""
        raw = await request.read()
        rec = {
            "method": request.method, "path": request.path, "query": request.query_string,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "time": time.time(), "monotonic": time.monotonic(), "body": None, "raw": None,
            "form": None, "file": None, "body_size": len(raw), "body_sha256": hashlib.sha256(raw).hexdigest(),
        }
        fields, refused = None, None
        try:
            boundary = multipart_boundary(request.headers.get("Content-Type", ""))
            parts = parse_multipart(raw, boundary) if boundary is not None else []
            summary = form_summary(parts)
            rec["form"], rec["body"] = summary, summary["fields"]
            files = [p for p in parts if p["filename"] is not None]
            if files:
                rec["file"] = form_summary([files[-1]])["fields"][files[-1]["name"]]
            fields = {p["name"]: (p if p["filename"] is not None else p["data"].decode("utf-8", "replace"))
                      for p in parts}
        except MultipartError as e:
            rec["raw"] = raw[:4096].decode("utf-8", "replace")
            refused = jresp({"detail": str(e)}, 400)
        state.last_request = rec
        state.last_requests[request.path] = rec
        model = fields.get("model") if fields else None
        state.request_log.append({"method": request.method, "path": request.path, "time": rec["time"],
                                  "model": model, "stream": bool(fields and fields.get("stream") in TRUE_WORDS)})
        del state.request_log[:-500]
        ctx.model = model
        return fields, refused

    def check_api_key(request):
        key = state.config.get("api_key")
        if key and request.headers.get("Authorization") != f"Bearer {key}":
            return jresp({"error": "Unauthorized"}, 401)  # vLLM's exact --api-key reply
        return None

    async def bounded_sleep(seconds: float) -> None:
        if seconds and seconds > 0:
            await asyncio.sleep(min(seconds, hang_limit()))

    async def pre_response(request, ctx: _Ctx):
        """Injected header delay and failures before any byte. Returns a response or None."""
        rule = state._take(state.delay_rules, request.path)
        delay = float(state.config.get("header_delay") or 0)
        if rule is not None:
            delay += float(rule.get("seconds", 0))
        if delay > 0:
            ctx.phase = "header_delay"
            await bounded_sleep(delay)
        rule = state._take(state.fail_rules, request.path)
        if rule is None:
            return None
        mode = rule.get("mode", "status")
        state.injected.append({"path": request.path, "mode": mode, "status": rule.get("status"),
                               "time": time.time()})
        if mode in ("close", "abort"):
            ctx.injected_close = True
            tr = request.transport
            if tr is not None:
                tr.abort() if mode == "abort" else tr.close()
            raise _InjectedClose()
        if mode == "hang":
            ctx.phase = "hang"
            await asyncio.sleep(hang_limit())
            raise _InjectedClose()
        status = int(rule.get("status", 500))
        headers = {}
        if rule.get("retry_after") is not None:
            headers["Retry-After"] = str(rule["retry_after"])
        if rule.get("body") is not None:
            b = rule["body"]
            return web.Response(status=status, text=b if isinstance(b, str) else json.dumps(b),
                                content_type="application/json", headers=headers)
        message = rule.get("message") or f"Injected failure ({status})"
        style = rule.get("style")
        if style == "anthropic" or (style is None and ctx.family == "anthropic"):
            # vLLM's /v1/messages turns its ErrorResponse into Anthropic's envelope,
            # keeping vLLM's error type name (api_router.translate_error_response).
            return aerr(message, status, headers=headers)
        return verr(message, status, style=style, headers=headers)

    def aerr(message: str, status: int, err_type: Optional[str] = None,
             headers: Optional[Dict[str, str]] = None):
        """vLLM's error on /v1/messages: {"type":"error","error":{"type","message"}} with
        vLLM's own error type names (NotFoundError, BadRequestError, ...)."""
        return jresp({"type": "error", "error": {
            "type": err_type or ERROR_TYPES.get(status, "InternalServerError"), "message": message}},
            status, headers)

    def api_handler(kind: str, family: str = "openai", body_required: bool = True, form: bool = False):
        """form: the body is multipart/form-data (the audio routes); fn gets the form's fields
        (the last of a repeated name wins, a file is its part dict) instead of JSON."""
        def deco(fn):
            async def wrapper(request):
                ctx = _Ctx(state, request, kind, family)
                try:
                    if form:
                        body, refused = await read_form(request, ctx)
                        err = None
                    else:
                        body, err = await read_json(request, ctx)
                        refused = None
                    denied = check_api_key(request)
                    if denied is not None:
                        return denied
                    early = await pre_response(request, ctx)
                    if early is not None:
                        return early
                    if refused is not None:
                        return refused
                    if not form and request.method == "POST" and (body_required or body is not None or err is not None):
                        if err is not None:
                            return verr(f"JSON decode error: {err}", 400)
                        if not isinstance(body, dict):
                            return verr("Request body must be a JSON object", 400)
                    result = await fn(request, ctx, body)
                    ctx.finished = True
                    return result
                except asyncio.CancelledError:
                    ctx.record_cancel("cancelled")
                    raise
                except (ConnectionResetError, ConnectionError) as e:
                    ctx.record_cancel(f"write failed: {e.__class__.__name__}")
                    raise asyncio.CancelledError()
                except _InjectedClose:
                    raise asyncio.CancelledError()
            wrapper.__name__ = fn.__name__
            return wrapper
        return deco

    # ---- model helpers -------------------------------------------------------------
    def resolve_model(body: Dict[str, Any]):
        models = state.config["models"]
        model = body.get("model")
        if model is None:
            return models[0], None
        if model not in models and model not in state.config.get("lora_adapters", []):
            return None, verr(f"The model `{model}` does not exist.", 404, "NotFoundError", "model")
        return model, None

    def chat_prompt_text(messages: List[Dict[str, Any]]) -> str:
        parts = []
        for m in messages:
            c = m.get("content") if isinstance(m, dict) else None
            if isinstance(c, str):
                parts.append(c)
            elif isinstance(c, list):
                for p in c:
                    if isinstance(p, dict) and isinstance(p.get("text"), str):
                        parts.append(p["text"])
        return " ".join(parts)

    def last_user_text(messages: List[Dict[str, Any]]) -> str:
        for m in reversed(messages):
            if isinstance(m, dict) and m.get("role") == "user":
                return chat_prompt_text([m])
        return ""

    def prompt_tokens_for(text: str) -> int:
        override = state.config.get("prompt_tokens")
        if override is not None:
            return int(override)
        return max(1, count_words(text))

    def plan_reply(kind: str, body: Dict[str, Any], user_text: str):
        """Returns (tokens, finish_reason, tool_calls or None)."""
        cfg = state.config
        tool_mode = cfg.get("tool_mode", "none") if kind == "chat" else "none"
        chunk = int(cfg.get("chunk_chars") or 0)
        if tool_mode == "structured":
            calls = cfg.get("tool_calls") or DEFAULT_TOOL_CALLS
            return tokenize(cfg.get("tool_prefix_text") or "", chunk), "tool_calls", calls
        if tool_mode == "hermes_raw":
            text = hermes_tool_text(cfg.get("tool_calls") or DEFAULT_TOOL_CALLS, cfg.get("tool_prefix_text") or "")
            toks = tokenize(text, chunk)
        elif cfg.get("reply_text") is not None:
            toks = tokenize(cfg["reply_text"], chunk)
        elif cfg.get("reply_mode") == "echo":
            toks = tokenize(user_text, chunk)
        else:
            toks = default_tokens(int(cfg.get("stream_events", DEFAULT_STREAM_EVENTS)))
        # vLLM: the EOS token counts against max_tokens, so a reply of L tokens needs
        # max_tokens >= L + 1 to finish with "stop"; otherwise it is cut to max_tokens, "length".
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens <= len(toks):
            return toks[:max_tokens], "length", None
        return toks, "stop", None

    def completion_tokens_for(tokens: List[str], finish: str) -> int:
        return len(tokens) + (1 if finish == "stop" else 0)

    def usage(prompt: int, completion: int) -> Dict[str, Any]:
        u = {"prompt_tokens": prompt, "total_tokens": prompt + completion,
             "completion_tokens": completion, "prompt_tokens_details": None}
        override = state.config.get("usage_override")
        if isinstance(override, dict):
            u.update(override)
        return u

    def forced_stream(body: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """force_sse: the body to stream with (usage chunk included), else None."""
        if not state.config.get("force_sse") or body.get("stream"):
            return None
        b = dict(body)
        b["stream_options"] = {"include_usage": True}
        return b

    def context_check(body: Dict[str, Any], prompt: int):
        max_len = int(state.config["max_model_len"])
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
            if max_tokens < 1:
                return verr("max_tokens must be at least 1, got %d." % max_tokens, 400, param="max_tokens")
            if prompt + max_tokens > max_len:
                return verr(
                    f"This model's maximum context length is {max_len} tokens. However, you requested "
                    f"{prompt + max_tokens} tokens ({prompt} in the messages, {max_tokens} in the completion). "
                    "Please reduce the length of the messages or completion.", 400, param=None)
        elif prompt > max_len:
            return verr(f"This model's maximum context length is {max_len} tokens. However, your "
                        f"request has {prompt} input tokens. Please reduce the length of the input.", 400)
        return None

    def structured_tool_calls(calls: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        out = []
        for c in calls:
            out.append({"id": f"chatcmpl-tool-{random_uuid()}", "type": "function",
                        "function": {"name": c["name"],
                                     "arguments": json.dumps(c.get("arguments", {}))}})
        return out

    # ---- streaming -----------------------------------------------------------------
    class _StreamEnded(Exception):
        pass

    async def open_stream(request, ctx: _Ctx, rid: str, model: str):
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream; charset=utf-8"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        state.streams_started += 1
        ctx.phase = "streaming"
        rec = {"path": request.path, "request_id": rid, "model": model, "started": time.time(),
               "started_monotonic": time.monotonic(), "events": [], "event_times": [],
               "completed": False, "cancelled": False, "failure": None}
        state.last_stream = rec
        ctx.stream_record = rec
        return resp, rec

    async def send_event(resp, ctx: _Ctx, rec, payload: Any, kind: str,
                         fail_rule: Optional[Dict[str, Any]], event: Optional[str] = None):
        """Write one SSE event (``event: NAME`` first when given, as the Responses and
        Anthropic streams do); apply an injected mid-stream failure first if due."""
        if fail_rule is not None and ctx.events_sent >= int(fail_rule.get("after_events", 0)) \
                and not fail_rule.get("_fired"):
            fail_rule["_fired"] = True
            await inject_stream_failure(resp, ctx, rec, fail_rule)
        data = payload if isinstance(payload, str) else _dumps(payload)
        head = f"event: {event}\n" if event else ""
        await resp.write(f"{head}data: {data}\n\n".encode("utf-8"))
        ctx.events_sent += 1
        t, m = time.time(), time.monotonic()
        entry = {"i": len(rec["events"]), "kind": kind, "time": t, "monotonic": m, "bytes": len(data)}
        if event:
            entry["event"] = event
        rec["events"].append(entry)
        rec["event_times"].append(t)

    async def inject_stream_failure(resp, ctx: _Ctx, rec, rule):
        mode = rule.get("mode", "close")
        rec["failure"] = mode
        state.injected.append({"path": ctx.path, "mode": "stream_" + mode,
                               "after_events": ctx.events_sent, "time": time.time()})
        if mode == "error_event":
            msg = rule.get("message") or "Injected mid-stream failure"
            status = int(rule.get("status", 500))
            if ctx.family == "anthropic":
                # vLLM's message_stream_converter: an error event, no [DONE] (vLLM 0.32).
                body = {"type": "error", "error": {"type": "internal_error", "message": msg}}
                await resp.write(f"event: error\ndata: {_dumps(body)}\n\n".encode("utf-8"))
            elif ctx.family == "responses":
                # vLLM's ErrorResponse as an `error` event; the stream then ends.
                body = error_body(msg, status, rule.get("style") or "new", "InternalServerError")
                await resp.write(f"event: error\ndata: {_dumps(body)}\n\n".encode("utf-8"))
            else:
                body = error_body(msg, status, rule.get("style") or state.config["error_style"])
                await resp.write(f"data: {_dumps(body)}\n\n".encode("utf-8"))
                await resp.write(b"data: [DONE]\n\n")
            rec["events"].append({"i": len(rec["events"]), "kind": "error", "time": time.time(),
                                  "monotonic": time.monotonic(), "bytes": 0})
            rec["event_times"].append(time.time())
            await resp.write_eof()
            raise _StreamEnded()
        if mode == "hang":
            ctx.phase = "stream_hang"
            await asyncio.sleep(hang_limit())
            raise _StreamEnded()
        ctx.injected_close = True
        tr = ctx.request.transport
        if tr is not None:
            tr.abort() if mode == "abort" else tr.close()
        raise _InjectedClose()

    async def run_stream(request, ctx: _Ctx, kind: str, body, model, rid, created, tokens,
                         finish, tool_calls, prompt_n):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        continuous = bool((body.get("stream_options") or {}).get("continuous_usage_stats"))
        n = int(body.get("n") or 1)
        fail_rule = state._take(state.stream_fail_rules, request.path)
        if fail_rule is not None:
            fail_rule = dict(fail_rule)
        resp, rec = await open_stream(request, ctx, rid, model)
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
        delay = float(state.config.get("stream_event_delay") or 0)
        completion_so_far = 0

        def chunk(choices, usage_obj=None):
            c = {"id": rid, "object": obj, "created": created, "model": model, "choices": choices}
            if usage_obj is not None:
                c["usage"] = usage_obj
            elif continuous and include_usage:
                c["usage"] = usage(prompt_n, completion_so_far)
            return c

        def choice(i, text=None, finish_reason=None, role=None, tool_delta=None):
            if kind == "chat":
                delta: Dict[str, Any] = {}
                if role:
                    delta["role"] = role
                if text is not None:
                    delta["content"] = text
                if tool_delta is not None:
                    delta["tool_calls"] = tool_delta
                ch = {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            else:
                ch = {"index": i, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
            if finish_reason is not None or kind != "chat":
                ch["stop_reason"] = None
            return ch

        try:
            await bounded_sleep(float(state.config.get("first_token_delay") or 0))
            if kind == "chat":
                await send_event(resp, ctx, rec, chunk([choice(i, "", role="assistant") for i in range(n)]),
                                 "role", fail_rule)
            last = len(tokens) - 1
            for idx, tok in enumerate(tokens):
                await bounded_sleep(delay)
                completion_so_far += 1
                fr = finish if (idx == last and finish == "length") else None
                await send_event(resp, ctx, rec, chunk([choice(i, tok, fr) for i in range(n)]),
                                 "content", fail_rule)
            if tool_calls:
                for ti, call in enumerate(structured_tool_calls(tool_calls)):
                    await bounded_sleep(delay)
                    head = [{"index": ti, "id": call["id"], "type": "function",
                             "function": {"name": call["function"]["name"], "arguments": ""}}]
                    await send_event(resp, ctx, rec, chunk([choice(i, None, tool_delta=head) for i in range(n)]),
                                     "tool_call", fail_rule)
                    for piece in tokenize(call["function"]["arguments"]):
                        await bounded_sleep(delay)
                        completion_so_far += 1
                        td = [{"index": ti, "function": {"arguments": piece}}]
                        await send_event(resp, ctx, rec, chunk([choice(i, None, tool_delta=td) for i in range(n)]),
                                         "tool_call", fail_rule)
            if finish != "length":
                # "stop": the EOS token arrives as an empty delta carrying finish_reason.
                # "tool_calls": an empty delta carrying finish_reason.
                await bounded_sleep(delay)
                if finish == "stop":
                    completion_so_far += 1
                text = "" if (kind != "chat" or finish == "stop") else None
                await send_event(resp, ctx, rec, chunk([choice(i, text, finish) for i in range(n)]),
                                 "finish", fail_rule)
            if include_usage:
                await send_event(resp, ctx, rec,
                                 chunk([], usage(prompt_n, completion_so_far * n)), "usage", fail_rule)
            await send_event(resp, ctx, rec, "[DONE]", "done", fail_rule)
            await resp.write_eof()
            rec["completed"] = True
            ctx.phase = "done"
        except _StreamEnded:
            pass
        return resp

    # ---- handlers --------------------------------------------------------------------
    async def engine_metrics(request):
        """vLLM's Prometheus metrics the gateway routes by (names and labels as vLLM 0.32
        writes them), or a broken page (``metrics_mode``)."""
        cfg = state.config
        mode = cfg.get("metrics_mode", "vllm")
        if mode == "error":
            return web.Response(status=500, text="internal error")
        if mode == "garbage":
            return web.Response(text="<html>not metrics {{{ \"\\ \n vllm:num_requests_waiting{ 7\n\x00\xff",
                                content_type="text/plain")
        if mode == "huge":
            line = "# " + "x" * 1000 + "\n"
            return web.Response(text=line * 6000, content_type="text/plain")
        model = (cfg.get("models") or ["model"])[0]
        labels = f'engine="0",model_name="{model}"'
        text = (
            "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
            "# TYPE process_start_time_seconds gauge\n"
            f"process_start_time_seconds {float(cfg.get('metrics_process_start') or state.created)}\n"
            "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
            "# TYPE vllm:num_requests_running gauge\n"
            f"vllm:num_requests_running{{{labels}}} {float(state.inflight)}\n"
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
            "# TYPE vllm:num_requests_waiting gauge\n"
            f"vllm:num_requests_waiting{{{labels}}} {float(cfg.get('metrics_waiting', 0))}\n"
            "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n"
            "# TYPE vllm:kv_cache_usage_perc gauge\n"
            f"vllm:kv_cache_usage_perc{{{labels}}} {float(cfg.get('metrics_kv_cache_usage', 0.0))}\n"
            "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n"
            "# TYPE vllm:cache_config_info gauge\n"
            f'vllm:cache_config_info{{block_size="{cfg.get("metrics_block_size", 16)}",enable_prefix_caching="True",engine="0",'
            f'num_gpu_blocks="{cfg.get("metrics_num_gpu_blocks", 1000)}"}} 1.0\n'
        )
        if int(cfg.get("metrics_max_lora", 0)) > 0:
            # One series per change in vLLM, its value the time it was set: the newest wins.
            running = ",".join(cfg.get("metrics_lora_running", []))
            text += (
                "# HELP vllm:lora_requests_info Running stats on lora requests.\n"
                "# TYPE vllm:lora_requests_info gauge\n"
                f'vllm:lora_requests_info{{max_lora="{int(cfg["metrics_max_lora"])}",running_lora_adapters="",'
                f'waiting_lora_adapters=""}} {state.created - 10.0}\n'
                f'vllm:lora_requests_info{{max_lora="{int(cfg["metrics_max_lora"])}",running_lora_adapters="{running}",'
                f'waiting_lora_adapters=""}} {float(state.created)}\n'
            )
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    async def health(request):
        cfg = state.config
        ctx = _Ctx(state, request, "health")
        try:
            if cfg.get("health_mode") == "hang":
                ctx.phase = "hang"
                end = time.monotonic() + hang_limit()
                while state.config.get("health_mode") == "hang" and time.monotonic() < end:
                    await asyncio.sleep(0.05)
            await bounded_sleep(float(cfg.get("health_delay") or 0))
            status = int(state.config.get("health_status", 200))
            return web.Response(status=status, body=b"")
        except asyncio.CancelledError:
            ctx.record_cancel("cancelled")
            raise

    async def ping(request):
        return await health(request)

    async def version(request):
        return jresp({"version": "0.0.0-fake"})

    @api_handler("models")
    async def list_models(request, ctx: _Ctx, body):
        data = []
        for m in state.config["models"]:
            data.append({
                "id": m, "object": "model", "created": state.created, "owned_by": "vllm", "root": m,
                "parent": None, "max_model_len": int(state.config["max_model_len"]),
                "permission": [{
                    "id": f"modelperm-{random_uuid()}", "object": "model_permission",
                    "created": state.created, "allow_create_engine": False, "allow_sampling": True,
                    "allow_logprobs": True, "allow_search_indices": False, "allow_view": True,
                    "allow_fine_tuning": False, "organization": "*", "group": None, "is_blocking": False,
                }],
            })
        for adapter in state.config.get("lora_adapters", []):
            # vLLM lists a LoRA adapter (--lora-modules) with its base model as parent.
            data.append({
                "id": adapter, "object": "model", "created": state.created, "owned_by": "vllm",
                "root": f"/adapters/{adapter}", "parent": state.config["models"][0],
                "max_model_len": None, "permission": [],
            })
        return jresp({"object": "list", "data": data})

    @api_handler("chat")
    async def chat_completions(request, ctx: _Ctx, body):
        model, err = resolve_model(body)
        if err is not None:
            return err
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return verr("[{'type': 'missing', 'loc': ('body', 'messages'), 'msg': 'Field required'}]", 400)
        prompt_n = prompt_tokens_for(chat_prompt_text(messages))
        bad = context_check(body, prompt_n)
        if bad is not None:
            return bad
        rid = f"chatcmpl-{random_uuid()}"
        ctx.request_id = rid
        created = int(time.time())
        tokens, finish, tool_calls = plan_reply("chat", body, last_user_text(messages))
        forced = forced_stream(body)
        if forced is not None:
            return await run_stream(request, ctx, "chat", forced, model, rid, created, tokens, finish,
                                    tool_calls, prompt_n)
        if body.get("stream"):
            return await run_stream(request, ctx, "chat", body, model, rid, created, tokens, finish,
                                    tool_calls, prompt_n)
        n = int(body.get("n") or 1)
        ctx.phase = "generating"
        extra = sum(len(tokenize(json.dumps(c.get("arguments", {})))) for c in (tool_calls or []))
        await bounded_sleep(float(state.config.get("first_token_delay") or 0)
                            + float(state.config.get("stream_event_delay") or 0) * (len(tokens) + extra))
        completion_n = completion_tokens_for(tokens, finish) + extra
        text = "".join(tokens)
        choices = []
        for i in range(n):
            msg = {"role": "assistant", "content": text if (text or not tool_calls) else None,
                   "refusal": None, "annotations": None, "audio": None, "function_call": None,
                   "tool_calls": structured_tool_calls(tool_calls) if tool_calls else [],
                   "reasoning_content": None}
            choices.append({"index": i, "message": msg, "logprobs": None, "finish_reason": finish,
                            "stop_reason": None})
        return jresp({
            "id": rid, "object": "chat.completion", "created": created, "model": model,
            "choices": choices, "service_tier": None, "system_fingerprint": None,
            "usage": usage(prompt_n, completion_n * n), "prompt_logprobs": None,
            "kv_transfer_params": None,
        })

    def completion_prompts(prompt) -> Optional[List[str]]:
        if isinstance(prompt, str):
            return [prompt]
        if isinstance(prompt, list) and prompt:
            if all(isinstance(p, str) for p in prompt):
                return list(prompt)
            if all(isinstance(p, int) for p in prompt):
                return [" ".join(str(p) for p in prompt)]
            if all(isinstance(p, list) and all(isinstance(x, int) for x in p) for p in prompt):
                return [" ".join(str(x) for x in p) for p in prompt]
        return None

    @api_handler("completion")
    async def completions(request, ctx: _Ctx, body):
        model, err = resolve_model(body)
        if err is not None:
            return err
        prompts = completion_prompts(body.get("prompt"))
        if prompts is None:
            return verr("[{'type': 'missing', 'loc': ('body', 'prompt'), 'msg': 'Field required'}]", 400)
        body = dict(body)
        body.setdefault("max_tokens", 16)  # vLLM's default for /v1/completions
        prompt_n = sum(prompt_tokens_for(p) for p in prompts)
        bad = context_check(body, max(prompt_tokens_for(p) for p in prompts))
        if bad is not None:
            return bad
        rid = f"cmpl-{random_uuid()}"
        ctx.request_id = rid
        created = int(time.time())
        tokens, finish, _ = plan_reply("completion", body, prompts[0])
        n = int(body.get("n") or 1) * len(prompts)
        if body.get("stream") or forced_stream(body) is not None:
            b = forced_stream(body) or dict(body)
            b["n"] = n
            return await run_stream(request, ctx, "completion", b, model, rid, created, tokens, finish,
                                    None, prompt_n)
        ctx.phase = "generating"
        await bounded_sleep(float(state.config.get("first_token_delay") or 0)
                            + float(state.config.get("stream_event_delay") or 0) * len(tokens))
        text = "".join(tokens)
        choices = [{"index": i, "text": text, "logprobs": None, "finish_reason": finish,
                    "stop_reason": None, "prompt_logprobs": None} for i in range(n)]
        return jresp({
            "id": rid, "object": "text_completion", "created": created, "model": model,
            "choices": choices, "service_tier": None, "system_fingerprint": None,
            "usage": usage(prompt_n, completion_tokens_for(tokens, finish) * n),
            "kv_transfer_params": None,
        })

    @api_handler("embedding")
    async def embeddings(request, ctx: _Ctx, body):
        model, err = resolve_model(body)
        if err is not None:
            return err
        inp = body.get("input")
        texts = completion_prompts(inp)
        if texts is None:
            return verr("[{'type': 'missing', 'loc': ('body', 'input'), 'msg': 'Field required'}]", 400)
        dim = int(state.config["embedding_dim"])
        dims = body.get("dimensions")
        if dims is not None:
            if not isinstance(dims, int) or dims < 1 or dims > dim:
                return verr(f"dimensions must be between 1 and {dim}", 400, param="dimensions")
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            return verr(f"Unsupported encoding_format: {fmt}", 400, param="encoding_format")
        rid = f"embd-{random_uuid()}"
        ctx.request_id = rid
        ctx.phase = "generating"
        await bounded_sleep(float(state.config.get("first_token_delay") or 0))
        data = []
        prompt_n = 0
        for i, t in enumerate(texts):
            prompt_n += prompt_tokens_for(t)
            vec = embedding_vector(t, dim)
            if dims is not None:
                vec = vec[:dims]
                norm = math.sqrt(sum(v * v for v in vec)) or 1.0
                vec = [v / norm for v in vec]
            emb: Any = vec
            if fmt == "base64":
                emb = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode("ascii")
            data.append({"index": i, "object": "embedding", "embedding": emb})
        return jresp({"id": rid, "object": "list", "created": int(time.time()), "model": model,
                      "data": data, "usage": usage(prompt_n, 0)})

    # ---- helpers shared by the other API families ----------------------------------
    def validation_error(loc: str, msg: str = "Field required", kind: str = "missing", value: Any = None):
        """vLLM's answer to a body pydantic rejects (its RequestValidationError handler):
        400, OpenAI's shape on every route, /v1/messages included."""
        err = {"type": kind, "loc": ("body",) + tuple(loc.split(".")), "msg": msg, "input": value}
        return verr(f"1 validation error:\n  {err}", 400, "Bad Request", "body." + loc)

    def family_usage(u: Dict[str, Any]) -> Dict[str, Any]:
        """usage_override applied to a usage object of another family: only the keys it has."""
        override = state.config.get("usage_override")
        if isinstance(override, dict):
            for k, v in override.items():
                if k in u:
                    u[k] = v
        return u

    def content_text(content: Any) -> str:
        """Text of a message/item content: a string, or the `text` of its parts."""
        if isinstance(content, str):
            return content
        parts = []
        if isinstance(content, list):
            for p in content:
                if isinstance(p, dict):
                    if isinstance(p.get("text"), str):
                        parts.append(p["text"])
                    elif "content" in p:
                        parts.append(content_text(p["content"]))
        return " ".join(x for x in parts if x)

    def generation_time(tokens: List[str]) -> float:
        return (float(state.config.get("first_token_delay") or 0)
                + float(state.config.get("stream_event_delay") or 0) * len(tokens))

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    # ---- Responses API (vllm/entrypoints/openai/responses: api_router, serving, protocol)
    def responses_input_text(inp: Any) -> Optional[str]:
        if isinstance(inp, str):
            return inp
        if isinstance(inp, list):
            return " ".join(t for t in (content_text(i.get("content")) if isinstance(i, dict) else ""
                                        for i in inp) if t)
        return None

    def responses_usage(prompt_n: int, output_n: int) -> Dict[str, Any]:
        return family_usage({
            "input_tokens": prompt_n,
            "input_tokens_details": {"cached_tokens": 0, "input_tokens_per_turn": [prompt_n],
                                     "cached_tokens_per_turn": [0]},
            "output_tokens": output_n,
            "output_tokens_details": {"reasoning_tokens": 0, "tool_output_tokens": 0,
                                      "output_tokens_per_turn": [output_n],
                                      "tool_output_tokens_per_turn": [0]},
            "total_tokens": prompt_n + output_n,
        })

    def response_object(rid: str, body: Dict[str, Any], model: str, created: int, status: str,
                        output: List[Dict[str, Any]], usage_obj: Optional[Dict[str, Any]],
                        max_output: int) -> Dict[str, Any]:
        """ResponsesResponse.from_request(...).model_dump(), field for field."""
        return {
            "id": rid, "created_at": created,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": body.get("instructions"), "metadata": body.get("metadata"),
            "model": model, "object": "response", "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "temperature": body.get("temperature") if body.get("temperature") is not None else 1.0,
            "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [],
            "top_p": body.get("top_p") if body.get("top_p") is not None else 1.0,
            "background": bool(body.get("background")), "max_output_tokens": max_output,
            "max_tool_calls": body.get("max_tool_calls"),
            "previous_response_id": body.get("previous_response_id"), "prompt": None,
            "reasoning": body.get("reasoning"), "service_tier": body.get("service_tier", "auto"),
            "status": status, "text": body.get("text"), "top_logprobs": None,
            "truncation": body.get("truncation", "disabled"), "usage": usage_obj,
            "user": body.get("user"), "input_messages": None, "output_messages": None,
        }

    def output_message(item_id: str, text: str, status: str = "completed") -> Dict[str, Any]:
        return {"id": item_id, "content": [{"annotations": [], "text": text, "type": "output_text",
                                            "logprobs": None}],
                "role": "assistant", "status": status, "type": "message"}

    def response_not_found(response_id: str):
        return verr(f"Response with id '{response_id}' not found.", 404, "invalid_request_error",
                    "response_id")

    def store_response(obj: Dict[str, Any], text: str) -> None:
        state.responses[obj["id"]] = obj
        state.response_texts[obj["id"]] = text
        limit = int(state.config.get("responses_store_limit") or 10000)
        while len(state.responses) > limit:
            oldest = next(iter(state.responses))
            state.responses.pop(oldest, None)
            state.response_texts.pop(oldest, None)

    @api_handler("responses", family="responses")
    async def create_response(request, ctx: _Ctx, body):
        if "model" in body and body["model"] is not None and not isinstance(body["model"], str):
            return validation_error("model", "Input should be a valid string", "string_type", body["model"])
        model, err = resolve_model(body)
        if err is not None:
            return err
        if "input" not in body:
            return validation_error("input")
        text = responses_input_text(body["input"])
        if text is None:
            return validation_error("input", "Input should be a valid string", "string_type", body["input"])
        prev_id = body.get("previous_response_id")
        if prev_id is not None and not isinstance(prev_id, str):
            return validation_error("previous_response_id", "Input should be a valid string", "string_type", prev_id)
        for flag in ("stream", "store", "background"):
            if body.get(flag) is not None and not isinstance(body.get(flag), bool):
                return validation_error(flag, "Input should be a valid boolean", "bool_type", body.get(flag))
        store_on = bool(state.config.get("responses_store", True))
        store = body.get("store", True) is not False
        if body.get("background") and not store:
            return validation_error("background", "Value error, background can only be used when `store` is true",
                                    "value_error", body.get("background"))
        if store and not store_on and body.get("background"):
            return verr("This vLLM engine does not support `store=True` and therefore does not support the "
                        "background mode. To enable these features, set the environment variable "
                        "`VLLM_ENABLE_RESPONSES_API_STORE=1` when launching the vLLM server.", 400,
                        "invalid_request_error", "background")
        store = store and store_on  # vLLM ignores store=True silently when its store is off
        history = ""
        if prev_id is not None:
            if prev_id not in state.responses:
                return response_not_found(prev_id)
            history = state.response_texts.get(prev_id, "")
        instructions = body.get("instructions") if isinstance(body.get("instructions"), str) else ""
        prompt_text = " ".join(t for t in (instructions, history, text) if t)
        prompt_n = prompt_tokens_for(prompt_text)
        max_len = int(state.config["max_model_len"])
        if prompt_n >= max_len:
            return verr(f"The engine prompt length {prompt_n} exceeds the max_model_len {max_len}. "
                        "Please reduce prompt.", 400, "invalid_request_error", "input")
        max_output = body.get("max_output_tokens")
        max_output = min(max_output, max_len - prompt_n) if is_int(max_output) else max_len - prompt_n
        rid = f"resp_{random_uuid()}"
        ctx.request_id = rid
        created = int(time.time())
        tokens, finish, _ = plan_reply("responses", {"max_tokens": max_output}, text)
        status = "incomplete" if finish == "length" else "completed"
        output_n = completion_tokens_for(tokens, finish)
        reply = "".join(tokens)
        conversation = " ".join(t for t in (history, text, reply) if t)

        if body.get("background"):
            queued = response_object(rid, body, model, created, "queued", [], None, max_output)
            store_response(queued, conversation)

            async def run_background():
                try:
                    if rid in state.responses:
                        state.responses[rid]["status"] = "in_progress"
                    await bounded_sleep(generation_time(tokens))
                    if state.responses.get(rid, {}).get("status") != "in_progress":
                        return  # cancelled, or the store was reset
                    done = response_object(rid, body, model, created, status,
                                           [output_message(f"msg_{random_uuid()}", reply)] if reply else [],
                                           responses_usage(prompt_n, output_n), max_output)
                    store_response(done, conversation)
                finally:
                    state.background.pop(rid, None)
            state.background[rid] = asyncio.get_running_loop().create_task(run_background())
            return jresp(queued)

        if body.get("stream"):
            return await run_responses_stream(request, ctx, body, model, rid, created, tokens, finish,
                                              prompt_n, max_output, store, conversation)
        ctx.phase = "generating"
        await bounded_sleep(generation_time(tokens))
        obj = response_object(rid, body, model, created, status,
                              [output_message(f"msg_{random_uuid()}", reply)] if reply else [],
                              responses_usage(prompt_n, output_n), max_output)
        if store:
            store_response(obj, conversation)
        return jresp(obj)

    async def run_responses_stream(request, ctx: _Ctx, body, model, rid, created, tokens, finish,
                                   prompt_n, max_output, store, conversation):
        """vLLM's responses_stream_generator for plain text: `event: TYPE` + `data: JSON`
        pairs, sequence_number from 0, the final response (with usage) in response.completed."""
        fail_rule = state._take(state.stream_fail_rules, request.path)
        if fail_rule is not None:
            fail_rule = dict(fail_rule)
        resp, rec = await open_stream(request, ctx, rid, model)
        delay = float(state.config.get("stream_event_delay") or 0)
        seq = 0
        item_id = f"msg_{random_uuid()}"

        async def emit(ev: Dict[str, Any], kind: str = "event"):
            nonlocal seq
            ev["sequence_number"] = seq
            seq += 1
            await send_event(resp, ctx, rec, ev, kind, fail_rule, event=ev["type"])

        try:
            initial = response_object(rid, body, model, created, "in_progress", [], None, max_output)
            await emit({"response": initial, "sequence_number": 0, "type": "response.created"})
            await emit({"response": initial, "sequence_number": 0, "type": "response.in_progress"})
            await bounded_sleep(float(state.config.get("first_token_delay") or 0))
            text = ""
            for idx, tok in enumerate(tokens):
                if idx:
                    await bounded_sleep(delay)
                if idx == 0:
                    await emit({"item": {"id": item_id, "content": [], "role": "assistant",
                                         "status": "in_progress", "type": "message"},
                                "output_index": 0, "sequence_number": 0, "type": "response.output_item.added"})
                    await emit({"content_index": 0, "item_id": item_id, "output_index": 0,
                                "part": {"annotations": [], "text": "", "type": "output_text", "logprobs": []},
                                "sequence_number": 0, "type": "response.content_part.added"})
                text += tok
                await emit({"content_index": 0, "delta": tok, "item_id": item_id, "logprobs": [],
                            "output_index": 0, "sequence_number": 0, "type": "response.output_text.delta"},
                           "content")
            if tokens:
                await emit({"content_index": 0, "item_id": item_id, "logprobs": [], "output_index": 0,
                            "sequence_number": 0, "text": text, "type": "response.output_text.done"})
                await emit({"content_index": 0, "item_id": item_id, "output_index": 0,
                            "part": {"annotations": [], "text": text, "type": "output_text", "logprobs": None},
                            "sequence_number": 0, "type": "response.content_part.done"})
                await emit({"item": output_message(item_id, text), "output_index": 0,
                            "sequence_number": 0, "type": "response.output_item.done"})
            status = "incomplete" if finish == "length" else "completed"
            final = response_object(rid, body, model, created, status,
                                    [output_message(item_id, text)] if text else [],
                                    responses_usage(prompt_n, completion_tokens_for(tokens, finish)), max_output)
            if store:
                store_response(final, conversation)
            await emit({"response": final, "sequence_number": 0, "type": "response.completed"}, "usage")
            await resp.write_eof()
            rec["completed"] = True
            ctx.phase = "done"
        except _StreamEnded:
            pass
        return resp

    @api_handler("responses", family="responses")
    async def retrieve_response(request, ctx: _Ctx, body):
        response_id = request.match_info["response_id"]
        obj = state.responses.get(response_id)
        if obj is None:
            return response_not_found(response_id)
        if request.query.get("stream", "").lower() in ("true", "1"):
            # Only background streams can be replayed; vLLM's VLLMValidationError -> 400.
            return verr(f"Unknown response_id: {response_id}", 400, "BadRequestError", "response_id")
        return jresp(obj)

    @api_handler("responses", family="responses", body_required=False)
    async def cancel_response(request, ctx: _Ctx, body):
        response_id = request.match_info["response_id"]
        obj = state.responses.get(response_id)
        if obj is None:
            return response_not_found(response_id)
        if obj.get("status") not in ("queued", "in_progress"):
            return verr("Cannot cancel a synchronous response.", 400, "invalid_request_error", "response_id")
        obj["status"] = "cancelled"
        task = state.background.pop(response_id, None)
        if task is not None:
            task.cancel()
        return jresp(obj)

    # ---- Anthropic Messages (vllm/entrypoints/anthropic: api_router, serving, protocol) --
    def anthropic_prompt_text(body: Dict[str, Any]) -> str:
        parts = [content_text(body.get("system"))] if body.get("system") else []
        for m in body.get("messages") or []:
            if isinstance(m, dict):
                parts.append(content_text(m.get("content")))
        return " ".join(p for p in parts if p)

    def anthropic_validate(body: Dict[str, Any], need_max_tokens: bool):
        if not isinstance(body.get("model"), str):
            if "model" not in body:
                return validation_error("model")
            return validation_error("model", "Input should be a valid string", "string_type", body.get("model"))
        msgs = body.get("messages")
        if not isinstance(msgs, list):
            return validation_error("messages") if msgs is None else \
                validation_error("messages", "Input should be a valid list", "list_type", msgs)
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ("user", "assistant", "system"):
                return validation_error(f"messages.{i}.role", "Input should be 'user' or 'assistant'",
                                        "literal_error", m)
        if need_max_tokens:
            mt = body.get("max_tokens")
            if mt is None:
                return validation_error("max_tokens")
            if not is_int(mt):
                return validation_error("max_tokens", "Input should be a valid integer", "int_type", mt)
            if mt <= 0:
                return validation_error("max_tokens", "Value error, max_tokens must be positive", "value_error", mt)
            if body.get("stream") is not None and not isinstance(body.get("stream"), bool):
                return validation_error("stream", "Input should be a valid boolean", "bool_type", body.get("stream"))
        if not msgs:
            return aerr("messages must contain at least one item", 400, "BadRequestError")
        return None

    def anthropic_model(body: Dict[str, Any]):
        model = body["model"]
        if model not in state.config["models"] and model not in state.config.get("lora_adapters", []):
            return None, aerr(f"The model `{model}` does not exist.", 404, "NotFoundError")
        return model, None

    STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}

    @api_handler("messages", family="anthropic")
    async def anthropic_messages(request, ctx: _Ctx, body):
        bad = anthropic_validate(body, need_max_tokens=True)
        if bad is not None:
            return bad
        model, err = anthropic_model(body)
        if err is not None:
            return err
        prompt_n = prompt_tokens_for(anthropic_prompt_text(body))
        max_len = int(state.config["max_model_len"])
        if prompt_n + body["max_tokens"] > max_len:
            return aerr(f"This model's maximum context length is {max_len} tokens. However, you requested "
                        f"{prompt_n + body['max_tokens']} tokens ({prompt_n} in the messages, {body['max_tokens']} "
                        "in the completion). Please reduce the length of the messages or completion.",
                        400, "BadRequestError")
        rid = f"chatcmpl-{random_uuid()}"  # vLLM reuses the chat completion's id
        ctx.request_id = rid
        user = ""
        for m in reversed(body["messages"]):
            if isinstance(m, dict) and m.get("role") == "user":
                user = content_text(m.get("content"))
                break
        tokens, finish, _ = plan_reply("messages", {"max_tokens": body["max_tokens"]}, user)
        output_n = completion_tokens_for(tokens, finish)
        if body.get("stream"):
            return await run_anthropic_stream(request, ctx, model, rid, tokens, finish, prompt_n, output_n)
        ctx.phase = "generating"
        await bounded_sleep(generation_time(tokens))
        # model_dump(exclude_none=True): stop_sequence (None) is left out.
        return jresp({"id": rid, "type": "message", "role": "assistant",
                      "content": [{"type": "text", "text": "".join(tokens)}], "model": model,
                      "stop_reason": STOP_REASONS[finish],
                      "usage": family_usage({"input_tokens": prompt_n, "output_tokens": output_n})})

    async def run_anthropic_stream(request, ctx: _Ctx, model, rid, tokens, finish, prompt_n, output_n):
        """vLLM's message_stream_converter: message_start (input_tokens, output_tokens 0),
        content_block_start, content_block_delta (text_delta) per token, content_block_stop,
        message_delta (stop_reason; usage with input_tokens again and the cumulative
        output_tokens), message_stop. No ping and no [DONE] unless anthropic_ping /
        anthropic_done say so (Anthropic's own API pings; older vLLM ended with [DONE])."""
        fail_rule = state._take(state.stream_fail_rules, request.path)
        if fail_rule is not None:
            fail_rule = dict(fail_rule)
        resp, rec = await open_stream(request, ctx, rid, model)
        delay = float(state.config.get("stream_event_delay") or 0)

        async def emit(ev: Dict[str, Any], kind: str = "event"):
            await send_event(resp, ctx, rec, ev, kind, fail_rule, event=ev["type"])

        try:
            await bounded_sleep(float(state.config.get("first_token_delay") or 0))
            await emit({"type": "message_start", "message": {
                "id": rid, "type": "message", "role": "assistant", "content": [], "model": model,
                "stop_reason": None, "stop_sequence": None,
                "usage": family_usage({"input_tokens": prompt_n, "output_tokens": 0})}})
            if state.config.get("anthropic_ping"):
                await emit({"type": "ping"})
            for idx, tok in enumerate(tokens):
                await bounded_sleep(delay)
                if idx == 0:
                    await emit({"type": "content_block_start", "content_block": {"type": "text", "text": ""},
                                "index": 0})
                await emit({"type": "content_block_delta", "delta": {"type": "text_delta", "text": tok},
                            "index": 0}, "content")
            if tokens:
                await emit({"type": "content_block_stop", "index": 0})
            await emit({"type": "message_delta", "delta": {"stop_reason": STOP_REASONS[finish]},
                        "usage": family_usage({"input_tokens": prompt_n, "output_tokens": output_n})}, "usage")
            await emit({"type": "message_stop"}, "done")
            if state.config.get("anthropic_done"):
                await send_event(resp, ctx, rec, "[DONE]", "done", fail_rule)
            await resp.write_eof()
            rec["completed"] = True
            ctx.phase = "done"
        except _StreamEnded:
            pass
        return resp

    @api_handler("count_tokens", family="anthropic")
    async def anthropic_count_tokens(request, ctx: _Ctx, body):
        bad = anthropic_validate(body, need_max_tokens=False)
        if bad is not None:
            return bad
        _, err = anthropic_model(body)
        if err is not None:
            return err
        n = prompt_tokens_for(anthropic_prompt_text(body))
        return jresp({"input_tokens": n, "context_management": {"original_input_tokens": n}})

    # ---- rerank / score (vllm/entrypoints/pooling/scoring) -------------------------------
    def doc_text(d: Any) -> Optional[str]:
        if isinstance(d, str):
            return d
        if isinstance(d, dict):
            return content_text(d.get("content"))
        return None

    def relevance(query: str, doc: str) -> float:
        a, b = embedding_vector(query, 16), embedding_vector(doc, 16)
        return round((1.0 + sum(x * y for x, y in zip(a, b))) / 2.0, 6)

    def pooling_model(body: Dict[str, Any]):
        if "model" in body and body["model"] is not None and not isinstance(body["model"], str):
            return None, validation_error("model", "Input should be a valid string", "string_type", body["model"])
        return resolve_model(body)

    @api_handler("rerank")
    async def rerank(request, ctx: _Ctx, body):
        model, err = pooling_model(body)
        if err is not None:
            return err
        query = body.get("query")
        if not isinstance(query, (str, dict)):
            return validation_error("query")
        docs = body.get("documents")
        if docs is None:
            return validation_error("documents")
        docs = docs if isinstance(docs, list) else [docs]
        texts = [doc_text(d) for d in docs]
        if any(t is None for t in texts):
            return validation_error("documents", "Input should be a valid string", "string_type", docs)
        top_n = body.get("top_n", 0)
        if not is_int(top_n) or top_n < 0:
            return validation_error("top_n", "Input should be greater than or equal to 0", "greater_than_equal", top_n)
        rid = f"score-{random_uuid()}"
        ctx.request_id = rid
        ctx.phase = "generating"
        await bounded_sleep(float(state.config.get("first_token_delay") or 0))
        q = doc_text(query) or ""
        results, prompt_n = [], 0
        for i, (d, t) in enumerate(zip(docs, texts)):
            document = {"text": d, "multi_modal": None} if isinstance(d, str) else \
                {"text": None, "multi_modal": d.get("content", [])}
            results.append({"index": i, "document": document, "relevance_score": relevance(q, t)})
            prompt_n += prompt_tokens_for(f"{q} {t}")
        results.sort(key=lambda r: r["relevance_score"], reverse=True)
        if top_n and top_n < len(results):
            results = results[:top_n]
        return jresp({"id": rid, "model": model,
                      "usage": family_usage({"prompt_tokens": prompt_n, "total_tokens": prompt_n}),
                      "results": results})

    @api_handler("score")
    async def score(request, ctx: _Ctx, body):
        model, err = pooling_model(body)
        if err is not None:
            return err
        for a, b in (("text_1", "text_2"), ("queries", "documents"), ("queries", "items"), ("data_1", "data_2")):
            if a in body and b in body:
                left, right = body[a], body[b]
                break
        else:
            return validation_error("text_1")
        left = left if isinstance(left, list) else [left]
        right = right if isinstance(right, list) else [right]
        lt, rt = [doc_text(x) for x in left], [doc_text(x) for x in right]
        if any(t is None for t in lt + rt):
            return validation_error("text_1", "Input should be a valid string", "string_type", body.get("text_1"))
        if len(lt) == 1:
            lt = lt * len(rt)
        if len(lt) != len(rt):
            return verr("Input lengths must be either 1:1, 1:N or N:N", 400)
        rid = f"score-{random_uuid()}"
        ctx.request_id = rid
        ctx.phase = "generating"
        await bounded_sleep(float(state.config.get("first_token_delay") or 0))
        data, prompt_n = [], 0
        for i, (x, y) in enumerate(zip(lt, rt)):
            data.append({"index": i, "object": "score", "score": relevance(x, y)})
            prompt_n += prompt_tokens_for(f"{x} {y}")
        return jresp({"id": rid, "object": "list", "created": int(time.time()), "model": model,
                      "data": data, "usage": usage(prompt_n, 0)})

    # ---- tokenize / detokenize (vllm/entrypoints/serve/tokenize) -------------------------
    def token_id(word: str) -> int:
        if word not in state.vocab:
            state.vocab[word] = 1000 + len(state.vocab_words)
            state.vocab_words.append(word)
        return state.vocab[word]

    @api_handler("tokenize")
    async def tokenize_route(request, ctx: _Ctx, body):
        model, err = pooling_model(body)
        if err is not None:
            return err
        if "messages" in body:
            if not isinstance(body["messages"], list):
                return validation_error("messages", "Input should be a valid list", "list_type", body["messages"])
            text = chat_prompt_text(body["messages"])
        elif isinstance(body.get("prompt"), str):
            text = body["prompt"]
        else:
            return validation_error("prompt") if "prompt" not in body else \
                validation_error("prompt", "Input should be a valid string", "string_type", body.get("prompt"))
        words = text.split()
        ids = [token_id(w) for w in words]
        return jresp({"count": len(ids), "max_model_len": int(state.config["max_model_len"]), "tokens": ids,
                      "token_strs": words if body.get("return_token_strs") else None})

    @api_handler("detokenize")
    async def detokenize_route(request, ctx: _Ctx, body):
        model, err = pooling_model(body)
        if err is not None:
            return err
        toks = body.get("tokens")
        if not isinstance(toks, list) or not all(is_int(t) and t >= 0 for t in toks):
            return validation_error("tokens") if toks is None else \
                validation_error("tokens", "Input should be a valid integer", "int_type", toks)
        words = []
        for t in toks:
            i = t - 1000
            if not 0 <= i < len(state.vocab_words):
                return verr(f"Token id {t} is out of vocabulary", 400)
            words.append(state.vocab_words[i])
        return jresp({"prompt": " ".join(words)})

    # ---- pooling / classify (vllm/entrypoints/pooling) -----------------------------------
    def pooling_inputs(body: Dict[str, Any]):
        if "messages" in body:
            if not isinstance(body["messages"], list):
                return None, validation_error("messages", "Input should be a valid list", "list_type", body["messages"])
            return [chat_prompt_text(body["messages"])], None
        texts = completion_prompts(body.get("input"))
        if texts is None:
            return None, validation_error("input")
        return texts, None

    async def pooled_request(ctx: _Ctx, body, id_prefix: str):
        """(model, texts, id, None) of a pooling or classify request, once the first-token
        delay has passed; (None, None, None, error response) when it is refused."""
        model, err = pooling_model(body)
        if err is not None:
            return None, None, None, err
        texts, err = pooling_inputs(body)
        if err is not None:
            return None, None, None, err
        rid = f"{id_prefix}-{random_uuid()}"
        ctx.request_id = rid
        ctx.phase = "generating"
        await bounded_sleep(float(state.config.get("first_token_delay") or 0))
        return model, texts, rid, None

    @api_handler("pooling")
    async def pooling(request, ctx: _Ctx, body):
        model, texts, rid, err = await pooled_request(ctx, body, "pool")
        if err is not None:
            return err
        dim = int(state.config["embedding_dim"])
        data, prompt_n = [], 0
        for i, t in enumerate(texts):
            data.append({"index": i, "object": "pooling", "data": embedding_vector(t, dim)})
            prompt_n += prompt_tokens_for(t)
        return jresp({"id": rid, "object": "list", "created": int(time.time()), "model": model,
                      "data": data, "usage": usage(prompt_n, 0)})

    @api_handler("classify")
    async def classify(request, ctx: _Ctx, body):
        model, texts, rid, err = await pooled_request(ctx, body, "classify")
        if err is not None:
            return err
        labels = list(state.config.get("classify_labels") or ["negative", "positive"])
        data, prompt_n = [], 0
        for i, t in enumerate(texts):
            raw = [math.exp(3 * v) for v in embedding_vector(t, len(labels))]
            probs = [v / sum(raw) for v in raw]
            best = max(range(len(probs)), key=lambda k: probs[k])
            data.append({"index": i, "label": labels[best], "probs": probs, "num_classes": len(labels)})
            prompt_n += prompt_tokens_for(t)
        return jresp({"id": rid, "object": "list", "created": int(time.time()), "model": model,
                      "data": data, "usage": usage(prompt_n, 0)})

    # ---- audio (vllm/entrypoints/speech_to_text) -------------------------------------------
    def form_bool(fields: Dict[str, Any], name: str):
        """(value, None) of a boolean form field as pydantic reads it, or (None, the 400)."""
        value = fields.get(name)
        if value is None:
            return False, None
        if isinstance(value, str) and value.lower() in TRUE_WORDS:
            return True, None
        if isinstance(value, str) and value.lower() in FALSE_WORDS:
            return False, None
        return None, validation_error(name, "Input should be a valid boolean, unable to interpret input",
                                      "bool_parsing", value if isinstance(value, str) else None)

    async def speech_to_text(request, ctx: _Ctx, fields, task: str):
        """POST /v1/audio/transcriptions (task "transcribe") and /v1/audio/translations
        ("translate"): the text is the default reply (max_completion_tokens cuts it, finish
        "length"); a file of N bytes lasts N/32000 s (16 kHz, 16 bit) and, unless the
        prompt_tokens config says otherwise, is ceil(N/1024) prompt tokens."""
        upload = fields.get("file")
        if upload is None:
            return validation_error("file")
        if not isinstance(upload, dict):
            return validation_error("file", "Value error, Expected UploadFile, received: <class 'str'>",
                                    "value_error", upload)
        size = len(upload["data"])
        limit_mb = float(state.config.get("audio_max_filesize_mb") or 25)
        if size > limit_mb * 1024 * 1024:
            return verr(f"Maximum file size exceeded (parameter=audio_filesize_mb, value={size / 1048576})",
                        400, "BadRequestError", "audio_filesize_mb")
        stream, err = form_bool(fields, "stream")
        if err is not None:
            return err
        include_usage, err = form_bool(fields, "stream_include_usage")
        if err is not None:
            return err
        response_format = fields.get("response_format", "json")
        if response_format not in ("json", "text", "srt", "verbose_json", "vtt", "diarized_json"):
            return validation_error("response_format", "Input should be 'json', 'text', 'srt', 'verbose_json', "
                                    "'vtt' or 'diarized_json'", "literal_error", response_format)
        max_tokens = fields.get("max_completion_tokens")
        if max_tokens is not None:
            try:
                max_tokens = int(max_tokens)
            except ValueError:
                return validation_error("max_completion_tokens", "Input should be a valid integer, unable to parse "
                                        "string as an integer", "int_parsing", max_tokens)
        model, err = resolve_model({"model": fields.get("model") or None})
        if err is not None:
            return err
        ctx.model = model
        if response_format not in ("text", "json", "verbose_json", "diarized_json"):
            return verr("Currently only support response_format: "
                        "`text`, `json`, `verbose_json` or `diarized_json`", 400)
        if response_format == "diarized_json":
            return verr(f"Currently do not support diarized_json for {model}", 400)
        if stream and response_format == "verbose_json":
            return verr("verbose_json format doesn't support streaming case", 400)
        rid = f"{task}-{random_uuid()}"
        ctx.request_id = rid
        ctx.phase = "generating"
        tokens, finish, _ = plan_reply(task, {"max_completion_tokens": max_tokens}, "")
        prompt_n = int(state.config["prompt_tokens"]) if state.config.get("prompt_tokens") is not None \
            else max(1, math.ceil(size / 1024))
        duration = max(size, 1) / 32000
        created = int(time.time())
        if stream:
            return await run_speech_stream(request, ctx, task, model, rid, created, tokens, finish, prompt_n,
                                           include_usage)
        await bounded_sleep(float(state.config.get("first_token_delay") or 0) + generation_time(tokens))
        text = "".join(tokens)
        if response_format == "verbose_json":
            segment = {"id": 0, "avg_logprob": -0.25, "compression_ratio": 1.0, "end": round(duration, 3),
                       "no_speech_prob": None, "seek": 0, "start": 0.0, "temperature": 0.0, "text": text,
                       "tokens": [token_id(t.strip() or t) for t in tokens]}
            return jresp({"duration": duration, "language": fields.get("language") or "en", "text": text,
                          "segments": [segment], "words": None})
        if task == "translate":
            return jresp({"text": text})  # no usage in a translation (vLLM)
        return jresp({"text": text, "usage": {"type": "duration", "seconds": int(math.ceil(duration))}})

    async def run_speech_stream(request, ctx: _Ctx, task, model, rid, created, tokens, finish, prompt_n,
                                include_usage):
        """vLLM's speech-to-text stream: a chunk per token ({"delta": {"content"}}), the last
        with finish_reason and stop_reason (for "stop" an empty EOS chunk), the usage chunk
        (choices []) only with stream_include_usage, then [DONE]."""
        fail_rule = state._take(state.stream_fail_rules, request.path)
        if fail_rule is not None:
            fail_rule = dict(fail_rule)
        resp, rec = await open_stream(request, ctx, rid, model)
        obj = "transcription.chunk" if task == "transcribe" else "translation.chunk"
        delay = float(state.config.get("stream_event_delay") or 0)

        def chunk(choices, usage_obj=None):
            c = {"id": rid, "object": obj, "created": created, "model": model, "choices": choices}
            if usage_obj is not None:
                c["usage"] = usage_obj
            return c

        try:
            await bounded_sleep(float(state.config.get("first_token_delay") or 0))
            last = len(tokens) - 1
            for idx, tok in enumerate(tokens):
                await bounded_sleep(delay)
                ch: Dict[str, Any] = {"delta": {"content": tok}}
                if idx == last and finish == "length":
                    ch.update(finish_reason="length", stop_reason=None)
                await send_event(resp, ctx, rec, chunk([ch]), "content", fail_rule)
            if finish != "length":
                await bounded_sleep(delay)
                await send_event(resp, ctx, rec, chunk([{"delta": {"content": ""}, "finish_reason": finish,
                                                         "stop_reason": None}]), "finish", fail_rule)
            if include_usage:
                completion = completion_tokens_for(tokens, finish)
                u = {"prompt_tokens": prompt_n, "total_tokens": prompt_n + completion, "completion_tokens": completion}
                override = state.config.get("usage_override")
                if isinstance(override, dict):
                    u.update(override)
                await send_event(resp, ctx, rec, chunk([], u), "usage", fail_rule)
            await send_event(resp, ctx, rec, "[DONE]", "done", fail_rule)
            await resp.write_eof()
            rec["completed"] = True
            ctx.phase = "done"
        except _StreamEnded:
            pass
        return resp

    @api_handler("transcription", form=True)
    async def audio_transcriptions(request, ctx: _Ctx, fields):
        return await speech_to_text(request, ctx, fields, "transcribe")

    @api_handler("translation", form=True)
    async def audio_translations(request, ctx: _Ctx, fields):
        return await speech_to_text(request, ctx, fields, "translate")

    async def not_found(request):
        return jresp({"detail": "Not Found"}, 404)

    # ---- control API -----------------------------------------------------------------
    async def cbody(request) -> Dict[str, Any]:
        raw = await request.read()
        if not raw:
            return {}
        return json.loads(raw)

    def listener_state():
        return {"enabled": state.listener_enabled, "port": state.port, "control_port": state.control_port}

    async def c_reset(request):
        state.reset()
        if not state.listener_enabled:
            await state.start_listener()
        return jresp({"ok": True})

    async def c_state(request):
        return jresp({"config": state.config, "fail_rules": state.fail_rules,
                      "stream_fail_rules": state.stream_fail_rules, "delay_rules": state.delay_rules,
                      "listener": listener_state(), "counters": state.counters(), "pid": os.getpid()})

    async def c_config(request):
        if request.method == "POST":
            patch = await cbody(request)
            unknown = [k for k in patch if k not in state.defaults]
            if unknown:
                return jresp({"error": f"unknown config keys: {unknown}",
                              "known": sorted(state.defaults)}, 400)
            state.config.update(patch)
        return jresp(state.config)

    async def c_health(request):
        b = await cbody(request)
        if "status" in b:
            state.config["health_status"] = int(b["status"])
        if "mode" in b:
            state.config["health_mode"] = b["mode"]
        if "delay" in b:
            state.config["health_delay"] = float(b["delay"])
        return jresp({k: state.config[k] for k in ("health_status", "health_mode", "health_delay")})

    async def c_fail(request):
        b = await cbody(request)
        rule = {"remaining": b.get("count", 1), "status": int(b.get("status", 500)),
                "mode": b.get("mode", "status"), "style": b.get("style"), "message": b.get("message"),
                "routes": b.get("routes"), "retry_after": b.get("retry_after"), "body": b.get("body")}
        state.fail_rules.append(rule)
        return jresp(rule)

    async def c_fail_stream(request):
        b = await cbody(request)
        rule = {"remaining": b.get("count", 1), "after_events": int(b.get("after_events", 0)),
                "mode": b.get("mode", "close"), "status": int(b.get("status", 500)),
                "message": b.get("message"), "style": b.get("style"), "routes": b.get("routes")}
        state.stream_fail_rules.append(rule)
        return jresp(rule)

    async def c_delay(request):
        b = await cbody(request)
        rule = {"remaining": b.get("count"), "seconds": float(b.get("seconds", 0)), "routes": b.get("routes")}
        state.delay_rules.append(rule)
        return jresp(rule)

    async def c_clear_rules(request):
        state.fail_rules.clear()
        state.stream_fail_rules.clear()
        state.delay_rules.clear()
        return jresp({"ok": True})

    async def c_stream(request):
        b = await cbody(request)
        if "events" in b:
            state.config["stream_events"] = int(b["events"])
        if "delay" in b:
            state.config["stream_event_delay"] = float(b["delay"])
        if "first_token_delay" in b:
            state.config["first_token_delay"] = float(b["first_token_delay"])
        return jresp({k: state.config[k] for k in ("stream_events", "stream_event_delay", "first_token_delay")})

    async def c_models(request):
        if request.method == "POST":
            b = await cbody(request)
            if "models" in b:
                state.config["models"] = list(b["models"])
            if "max_model_len" in b:
                state.config["max_model_len"] = int(b["max_model_len"])
        return jresp({"models": state.config["models"], "max_model_len": state.config["max_model_len"]})

    async def c_counters(request):
        return jresp(state.counters())

    async def c_last_request(request):
        path = request.query.get("path")
        return jresp(state.last_requests.get(path) if path else state.last_request)

    async def c_requests(request):
        return jresp(state.request_log)

    async def c_last_stream(request):
        return jresp(state.last_stream)

    async def c_cancellations(request):
        return jresp(state.cancellations)

    async def c_responses(request):
        return jresp({rid: obj.get("status") for rid, obj in state.responses.items()})

    async def c_listener(request):
        b = await cbody(request)
        if request.method == "POST" and "enabled" in b:
            if b["enabled"]:
                await state.start_listener()
            else:
                await state.stop_listener(drop=bool(b.get("drop_connections", True)),
                                          via_main=request.transport is not None and _local_port(request) == state.port)
        return jresp(listener_state())

    async def c_drop_connections(request):
        n = state.drop_main_connections(exclude=request.transport)
        return jresp({"dropped": n})

    def add_control_routes(app):
        r = app.router
        r.add_post("/_control/reset", c_reset)
        r.add_get("/_control/state", c_state)
        r.add_get("/_control/config", c_config)
        r.add_post("/_control/config", c_config)
        r.add_post("/_control/health", c_health)
        r.add_post("/_control/fail", c_fail)
        r.add_post("/_control/fail_stream", c_fail_stream)
        r.add_post("/_control/delay", c_delay)
        r.add_post("/_control/clear_rules", c_clear_rules)
        r.add_post("/_control/stream", c_stream)
        r.add_get("/_control/models", c_models)
        r.add_post("/_control/models", c_models)
        r.add_get("/_control/counters", c_counters)
        r.add_get("/_control/last_request", c_last_request)
        r.add_get("/_control/requests", c_requests)
        r.add_get("/_control/last_stream", c_last_stream)
        r.add_get("/_control/cancellations", c_cancellations)
        r.add_get("/_control/responses", c_responses)
        r.add_get("/_control/listener", c_listener)
        r.add_post("/_control/listener", c_listener)
        r.add_post("/_control/drop_connections", c_drop_connections)

    async def on_prepare(request, response):
        response.headers["Server"] = "uvicorn"  # what vLLM's server says

    main = web.Application(middlewares=[middleware], client_max_size=64 * 1024 * 1024)
    main.on_response_prepare.append(on_prepare)
    main.router.add_get("/health", health)
    main.router.add_get("/metrics", engine_metrics)
    main.router.add_get("/ping", ping)
    main.router.add_post("/ping", ping)
    main.router.add_get("/version", version)
    main.router.add_get("/v1/models", list_models)
    main.router.add_post("/v1/chat/completions", chat_completions)
    main.router.add_post("/v1/completions", completions)
    main.router.add_post("/v1/embeddings", embeddings)
    main.router.add_post("/v1/responses", create_response)
    main.router.add_get("/v1/responses/{response_id}", retrieve_response)
    main.router.add_post("/v1/responses/{response_id}/cancel", cancel_response)
    main.router.add_post("/v1/messages", anthropic_messages)
    main.router.add_post("/v1/messages/count_tokens", anthropic_count_tokens)
    for path in ("/rerank", "/v1/rerank", "/v2/rerank"):
        main.router.add_post(path, rerank)
    main.router.add_post("/score", score)
    main.router.add_post("/v1/score", score)
    main.router.add_post("/tokenize", tokenize_route)
    main.router.add_post("/detokenize", detokenize_route)
    main.router.add_post("/pooling", pooling)
    main.router.add_post("/classify", classify)
    main.router.add_post("/v1/audio/transcriptions", audio_transcriptions)
    main.router.add_post("/v1/audio/translations", audio_translations)
    add_control_routes(main)

    control = web.Application()
    add_control_routes(control)
    return main, control


def _local_port(request) -> Optional[int]:
    tr = request.transport
    if tr is None:
        return None
    sock = tr.get_extra_info("sockname")
    return sock[1] if sock else None


async def serve(args) -> None:
    import asyncio
    from aiohttp import web

    host = args.host
    if host not in LOOPBACK_HOSTS:
        raise SystemExit(f"fake_vllm: refusing to listen on non-loopback host {host!r}")
    defaults = {
        "models": [m for m in args.models.split(",") if m],
        "max_model_len": args.max_model_len,
        "embedding_dim": args.embedding_dim,
        "stream_events": args.stream_events,
        "stream_event_delay": args.stream_delay,
        "first_token_delay": 0.0,
        "header_delay": 0.0,
        "reply_text": None,
        "reply_mode": "default",
        "tool_mode": "none",
        "tool_calls": copy.deepcopy(DEFAULT_TOOL_CALLS),
        "tool_prefix_text": "",
        "chunk_chars": 0,
        "error_style": args.error_style,
        "prompt_tokens": None,
        "force_sse": False,
        "usage_override": None,
        "api_key": args.api_key,
        "health_status": 200,
        "health_mode": "ok",
        "health_delay": 0.0,
        "hang_limit": args.hang_limit,
        # GET /metrics, in vLLM's names: running = requests in flight now; the rest as set.
        "metrics_mode": "vllm",  # vllm | garbage | huge | error
        "metrics_waiting": 0,
        "metrics_kv_cache_usage": 0.0,
        "metrics_block_size": 16,
        "metrics_num_gpu_blocks": 1000,
        # process_start_time_seconds: when the server started (None: state.created); a new
        # value is a restarted engine.
        "metrics_process_start": None,
        # LoRA: adapter names served as models (parent: the first model); with
        # metrics_max_lora > 0, vllm:lora_requests_info reports metrics_lora_running.
        "lora_adapters": [],
        "metrics_max_lora": 0,
        "metrics_lora_running": [],
        # Responses API: the store (vLLM: VLLM_ENABLE_RESPONSES_API_STORE=1; off, store=true
        # is ignored and previous_response_id always 404s), and how many responses it keeps.
        "responses_store": True,
        "responses_store_limit": 10000,
        # Anthropic stream extras vLLM does not send: a `ping` after message_start (as
        # Anthropic's API does), a trailing `data: [DONE]` (as vLLM <= 0.11 did).
        "anthropic_ping": False,
        "anthropic_done": False,
        "classify_labels": ["negative", "positive"],
        # /v1/audio/*: vLLM's VLLM_MAX_AUDIO_CLIP_FILESIZE_MB.
        "audio_max_filesize_mb": 25,
    }
    state = ServerState(defaults)
    main_app, control_app = build_apps(state, log=lambda *a: print(*a, file=sys.stderr, flush=True))
    runner_kw = dict(handler_cancellation=True, keepalive_timeout=args.keepalive_timeout,
                     shutdown_timeout=1.0, access_log=None)
    main_runner = web.AppRunner(main_app, **runner_kw)
    control_runner = web.AppRunner(control_app, handler_cancellation=True, shutdown_timeout=1.0,
                                   access_log=None)
    await main_runner.setup()
    await control_runner.setup()

    state.port = args.port
    state.control_port = None
    state.listener_enabled = False
    state._site = None

    async def start_listener():
        if state.listener_enabled:
            return
        site = web.TCPSite(main_runner, host, state.port, reuse_address=True)
        await site.start()
        state._site = site
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        state.port = sock.getsockname()[1]
        state.listener_enabled = True

    def drop_main_connections(exclude=None) -> int:
        n = 0
        server = main_runner.server
        if server is None:
            return 0
        for proto in server.connections:
            tr = proto.transport
            if tr is None or tr is exclude:
                continue
            tr.abort()
            n += 1
        return n

    async def stop_listener(drop: bool = True, via_main: bool = False):
        if state.listener_enabled and state._site is not None:
            await state._site.stop()
            state._site = None
            state.listener_enabled = False
        if drop:
            if via_main:  # answer first, then drop
                asyncio.get_running_loop().call_later(0.05, drop_main_connections)
            else:
                drop_main_connections()

    state.start_listener = start_listener
    state.stop_listener = stop_listener
    state.drop_main_connections = drop_main_connections

    await start_listener()
    control_site = web.TCPSite(control_runner, host, args.control_port, reuse_address=True)
    await control_site.start()
    state.control_port = control_site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    info = {"port": state.port, "control_port": state.control_port, "pid": os.getpid(),
            "url": f"http://{host}:{state.port}", "control_url": f"http://{host}:{state.control_port}"}
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(info, f)
        os.replace(tmp, args.ready_file)
    print(f"fake_vllm listening on http://{host}:{state.port} control http://{host}:{state.control_port} "
          f"pid {os.getpid()} models {','.join(defaults['models'])}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await main_runner.cleanup()
    await control_runner.cleanup()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Fake vLLM OpenAI server for llm-gateway tests")
    p.add_argument("--host", default="127.0.0.1", help="loopback only")
    p.add_argument("--port", type=int, required=True, help="main port (0 = pick a free one)")
    p.add_argument("--control-port", type=int, default=0,
                   help="extra port serving only /_control (0 = pick a free one)")
    p.add_argument("--models", default=DEFAULT_MODEL, help="comma-separated served model names")
    p.add_argument("--max-model-len", type=int, default=DEFAULT_MAX_MODEL_LEN)
    p.add_argument("--embedding-dim", type=int, default=DEFAULT_EMBEDDING_DIM)
    p.add_argument("--stream-events", type=int, default=DEFAULT_STREAM_EVENTS,
                   help="tokens in the default reply")
    p.add_argument("--stream-delay", type=float, default=0.0, help="seconds before each token")
    p.add_argument("--error-style", choices=["new", "flat"], default="new")
    p.add_argument("--api-key", default=None, help="like vllm --api-key: require this bearer token")
    p.add_argument("--keepalive-timeout", type=float, default=5.0,
                   help="idle keep-alive timeout (uvicorn's default is 5 s)")
    p.add_argument("--hang-limit", type=float, default=300.0, help="upper bound of any injected hang")
    p.add_argument("--ready-file", default=None, help="write {port, control_port, pid} JSON here when ready")
    return p.parse_args(argv)


def main(argv=None) -> None:
    import asyncio
    args = parse_args(argv)
    asyncio.run(serve(args))


# --------------------------------------------------------------------------------------
# Client / process handle (stdlib only)
# --------------------------------------------------------------------------------------

class FakeVLLMError(RuntimeError):
    pass


class FakeVLLM:
    """Handle on a fake vLLM server process. Use ``FakeVLLM.start(...)``."""

    def __init__(self, proc: subprocess.Popen, info: Dict[str, Any], log_path: str, argv: List[str],
                 workdir: str):
        self.proc = proc
        self.info = info
        self.log_path = log_path
        self.argv = argv
        self.workdir = workdir
        self.host = "127.0.0.1"
        self.port: int = info["port"]
        self.control_port: int = info["control_port"]

    # -- lifecycle ---------------------------------------------------------------------
    @classmethod
    def start(cls, models: Optional[List[str]] = None, port: int = 0, control_port: int = 0,
              workdir: Optional[str] = None, extra_args: Optional[List[str]] = None,
              timeout: float = 15.0, **options) -> "FakeVLLM":
        """Start fake_vllm.py as a subprocess (own process group) and wait until it listens.
        options map to command-line flags: stream_events=8 -> --stream-events 8."""
        workdir = workdir or tempfile.mkdtemp(prefix="fake_vllm_")
        os.makedirs(workdir, exist_ok=True)
        ready = os.path.join(workdir, f"fake_vllm_ready_{os.getpid()}_{time.monotonic_ns()}.json")
        log_path = os.path.join(workdir, os.path.basename(ready).replace("_ready_", "_log_").replace(".json", ".log"))
        argv = [sys.executable, os.path.join(HERE, "fake_vllm.py"), "--port", str(port),
                "--control-port", str(control_port), "--ready-file", ready]
        if models:
            argv += ["--models", ",".join(models)]
        for k, v in options.items():
            if v is None:
                continue
            argv += ["--" + k.replace("_", "-"), str(v)]
        argv += list(extra_args or [])
        logf = open(log_path, "ab")
        try:
            proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=workdir)
        finally:
            logf.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(ready):
                with open(ready) as f:
                    info = json.load(f)
                return cls(proc, info, log_path, argv, workdir)
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        _terminate(proc)
        raise FakeVLLMError(f"fake_vllm did not start (rc={proc.poll()}):\n{_tail(log_path)}")

    def stop(self, timeout: float = 5.0) -> Optional[int]:
        return _terminate(self.proc, timeout)

    def restart(self, timeout: float = 15.0) -> "FakeVLLM":
        """Kill the process and start a new one on the same ports (state is lost)."""
        self.stop()
        argv = list(self.argv)
        argv[argv.index("--port") + 1] = str(self.port)
        argv[argv.index("--control-port") + 1] = str(self.control_port)
        ready = argv[argv.index("--ready-file") + 1]
        if os.path.exists(ready):
            os.unlink(ready)
        logf = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, cwd=self.workdir)
        finally:
            logf.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(ready):
                with open(ready) as f:
                    self.info = json.load(f)
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise FakeVLLMError(f"fake_vllm did not restart:\n{_tail(self.log_path)}")

    def __repr__(self) -> str:
        return f"<FakeVLLM pid={self.proc.pid} url={self.url} control={self.control_url}>"

    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        with open(self.log_path, "r", errors="replace") as f:
            return f.read()

    # -- addresses ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Root URL without /v1 (what the gateway's --upstream takes)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """OpenAI base URL (url + /v1), for the openai SDK."""
        return self.url + "/v1"

    @property
    def control_url(self) -> str:
        return f"http://{self.host}:{self.control_port}"

    # -- control API -------------------------------------------------------------------
    def control(self, path: str, payload: Optional[Dict[str, Any]] = None, method: Optional[str] = None,
                timeout: float = 10.0) -> Any:
        """Call /_control/<path> on the control port. POST when payload is given, else GET
        (pass method="POST" for body-less POSTs such as reset)."""
        if not path.startswith("/"):
            path = "/_control/" + path
        method = method or ("POST" if payload is not None else "GET")
        data = json.dumps(payload or {}).encode() if method == "POST" else None
        req = urllib.request.Request(self.control_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            raise FakeVLLMError(f"control {method} {path} -> {e.code}: {e.read()[:500]!r}") from None
        return json.loads(raw) if raw else None

    def reset(self) -> None:
        self.control("reset", method="POST")

    def config(self, **patch) -> Dict[str, Any]:
        """Patch the live config, e.g. config(reply_text="hi", tool_mode="hermes_raw")."""
        return self.control("config", patch)

    def set_stream(self, events: Optional[int] = None, delay: Optional[float] = None,
                   first_token_delay: Optional[float] = None) -> Dict[str, Any]:
        b: Dict[str, Any] = {}
        if events is not None:
            b["events"] = events
        if delay is not None:
            b["delay"] = delay
        if first_token_delay is not None:
            b["first_token_delay"] = first_token_delay
        return self.control("stream", b)

    def set_health(self, status: Optional[int] = None, mode: Optional[str] = None,
                   delay: Optional[float] = None) -> Dict[str, Any]:
        b: Dict[str, Any] = {}
        if status is not None:
            b["status"] = status
        if mode is not None:
            b["mode"] = mode
        if delay is not None:
            b["delay"] = delay
        return self.control("health", b)

    def fail_next(self, count: int = 1, status: int = 500, mode: str = "status", style: Optional[str] = None,
                  message: Optional[str] = None, routes: Optional[List[str]] = None,
                  retry_after: Optional[float] = None, body: Any = None) -> Dict[str, Any]:
        """The next `count` API requests (optionally only on `routes`) fail before any byte:
        mode "status" answers `status` in vLLM's error shape; "close"/"abort" drop the
        connection (FIN / RST) without a response; "hang" never answers."""
        return self.control("fail", {"count": count, "status": status, "mode": mode, "style": style,
                                     "message": message, "routes": routes, "retry_after": retry_after,
                                     "body": body})

    def fail_stream(self, count: int = 1, after_events: int = 2, mode: str = "close",
                    status: int = 500, message: Optional[str] = None,
                    routes: Optional[List[str]] = None) -> Dict[str, Any]:
        """The next `count` streams fail after `after_events` SSE events: mode "close" (FIN without
        the final chunk), "abort" (RST), "error_event" (vLLM's `data: {"error":...}` + [DONE]) or
        "hang" (stop sending, keep the connection open)."""
        return self.control("fail_stream", {"count": count, "after_events": after_events, "mode": mode,
                                            "status": status, "message": message, "routes": routes})

    def delay_headers(self, seconds: float, count: Optional[int] = None,
                      routes: Optional[List[str]] = None) -> Dict[str, Any]:
        """Delay response headers of the next `count` API requests (None = all) by `seconds`."""
        return self.control("delay", {"seconds": seconds, "count": count, "routes": routes})

    def set_tool_mode(self, mode: str = "hermes_raw", tool_calls: Optional[List[Dict[str, Any]]] = None,
                      prefix_text: Optional[str] = None) -> Dict[str, Any]:
        patch: Dict[str, Any] = {"tool_mode": mode}
        if tool_calls is not None:
            patch["tool_calls"] = tool_calls
        if prefix_text is not None:
            patch["tool_prefix_text"] = prefix_text
        return self.config(**patch)

    def set_models(self, models: List[str], max_model_len: Optional[int] = None) -> Dict[str, Any]:
        b: Dict[str, Any] = {"models": list(models)}
        if max_model_len is not None:
            b["max_model_len"] = max_model_len
        return self.control("models", b)

    def stop_listener(self, drop_connections: bool = True) -> Dict[str, Any]:
        """Close the main listening socket (new connections are refused) and, by default, drop
        open connections on it. The control port keeps working."""
        return self.control("listener", {"enabled": False, "drop_connections": drop_connections})

    def start_listener(self) -> Dict[str, Any]:
        return self.control("listener", {"enabled": True})

    def drop_connections(self) -> int:
        return self.control("drop_connections", method="POST")["dropped"]

    def counters(self) -> Dict[str, Any]:
        return self.control("counters")

    def requests_seen(self, path: str) -> int:
        return self.counters()["requests"].get(path, 0)

    def last_request(self, path: Optional[str] = None) -> Optional[Dict[str, Any]]:
        """{method, path, query, headers (lower-case names), body (parsed JSON or None), raw (the
        text when it was not JSON), time, monotonic} of the last API request (on path, if given)."""
        return self.control("last_request" + (f"?path={path}" if path else ""))

    def request_log(self) -> List[Dict[str, Any]]:
        return self.control("requests")

    def last_stream(self) -> Optional[Dict[str, Any]]:
        """{path, request_id, events:[{i,kind,time,monotonic,bytes}], event_times, completed,
        cancelled, failure} of the last stream."""
        return self.control("last_stream")

    def cancellations(self) -> List[Dict[str, Any]]:
        return self.control("cancellations")

    def stored_responses(self) -> Dict[str, str]:
        """{response id: status} of the Responses API store of this instance."""
        return self.control("responses")

    def state(self) -> Dict[str, Any]:
        return self.control("state")

    def wait_for(self, predicate, timeout: float = 5.0, interval: float = 0.05, what: str = "condition"):
        """Poll counters() until predicate(counters) is truthy; returns the counters."""
        deadline = time.monotonic() + timeout
        c = None
        while time.monotonic() < deadline:
            c = self.counters()
            if predicate(c):
                return c
            time.sleep(interval)
        raise AssertionError(f"fake_vllm: timed out after {timeout}s waiting for {what}; counters={c}")

    def wait_for_cancellation(self, count: int = 1, timeout: float = 5.0) -> List[Dict[str, Any]]:
        c = self.wait_for(lambda c: len(c["cancellations"]) >= count, timeout,
                          what=f"{count} cancellation(s)")
        return c["cancellations"]


def _tail(path: str, n: int = 50) -> str:
    try:
        with open(path, "r", errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


def _terminate(proc: subprocess.Popen, timeout: float = 5.0) -> Optional[int]:
    if proc.poll() is not None:
        return proc.returncode
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return proc.wait(timeout)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
