"""Issue 23: the other APIs vLLM serves, through the gateway — Responses (`/v1/responses`,
GET and cancel by id), Anthropic Messages (`/v1/messages`, `/v1/messages/count_tokens`),
rerank, score, tokenize, detokenize, pooling and classify — with auth (Bearer and
x-api-key), key scopes, the `upstream_model` rewrite both ways (inside stream events too),
each family's error shape, response-id affinity across replicas and workers, token usage
and limits, breaker, fallbacks, disconnect-cancel and hostile input.

The contract (lead's routes): same path upstream as the client used, query dropped (kept on GET /v1/responses/{id}: stream replay); route
label = the template; errors on /v1/messages and /v1/messages/count_tokens are
{"type":"error","error":{"type","message"}} with Anthropic's type names, OpenAI's shape
on every other route; a response id or previous_response_id longer than 256 bytes (or
not a string) is a 400 that never reaches an upstream.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import http.server
import json
import socket
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import pytest

from fake_vllm import ANTHROPIC_STREAM, DEFAULT_STREAM_EVENTS, RESPONSES_STREAM, default_text
from gateway import http_request, metric_value, parse_sse, sse_named_events, wait_until

pytestmark = pytest.mark.gateway

UPSTREAM_MODEL = "fake-model"
RESP = "/v1/responses"
MSG = "/v1/messages"
COUNT = "/v1/messages/count_tokens"
ANTHROPIC_PATHS = {MSG, COUNT}
ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                   404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                   503: "overloaded_error"}
OK_RPM = "100000"
REPLY = default_text(DEFAULT_STREAM_EVENTS)
COMPLETION = DEFAULT_STREAM_EVENTS + 1  # tokens + EOS



# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------

def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def config(*fakes, routing: str = "round_robin", keys: str = "", extra_models: str = "") -> str:
    """Model `m` (alias `m-alias`) on every fake as `fake-model`; `other` likewise."""
    ups = "".join(f"  up{i}: {{ url: {f.url}, health: /health }}\n" for i, f in enumerate(fakes))
    names = ", ".join(f"up{i}" for i in range(len(fakes)))
    text = (f"upstreams:\n{ups}models:\n"
            f"  m: {{ upstreams: [{names}], upstream_model: {UPSTREAM_MODEL}, aliases: [m-alias], routing: {routing} }}\n"
            f"  other: {{ upstreams: [{names}], upstream_model: {UPSTREAM_MODEL} }}\n{extra_models}")
    if keys:
        text += "keys:\n" + keys
    return text


ALICE, BOB = "alice-key-23", "bob-key-23"
SCOPED_KEYS = (f"  - {{ name: alice, sha256: {sha(ALICE)}, models: [m], rpm: 100000 }}\n"
               f"  - {{ name: bob, sha256: {sha(BOB)}, rpm: 100000 }}\n")


def auth(key: Optional[str], style: str = "bearer") -> Dict[str, str]:
    if key is None:
        return {}
    return {"Authorization": f"Bearer {key}"} if style == "bearer" else {"x-api-key": key}


def post(gw, path: str, body: Any, key: Optional[str] = None, style: str = "bearer",
         headers: Optional[Dict[str, str]] = None, timeout: float = 20.0):
    h = {"Content-Type": "application/json"}
    h.update(auth(key, style))
    h.update(headers or {})
    data = body if isinstance(body, (bytes, str)) else json.dumps(body).encode()
    return http_request(gw.host, gw.port, "POST", path, data, h, timeout)


def get(gw, path: str, key: Optional[str] = None, style: str = "bearer", timeout: float = 20.0):
    return http_request(gw.host, gw.port, "GET", path, None, auth(key, style), timeout)


def responses_body(model: str = "m", **kw) -> Dict[str, Any]:
    return dict({"model": model, "input": "hello there"}, **kw)


def messages_body(model: str = "m", **kw) -> Dict[str, Any]:
    return dict({"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "hello there"}]}, **kw)


def openai_error(r, status: int) -> Dict[str, Any]:
    assert r.status == status, f"expected {status}, got {r.status}: {r.body[:300]!r}"
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def anthropic_error(r, status: int, err_type: Optional[str] = None) -> Dict[str, Any]:
    """The gateway's own errors on the Anthropic routes: exactly Anthropic's envelope with the
    type its status maps to."""
    assert r.status == status, f"expected {status}, got {r.status}: {r.body[:300]!r}"
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"type", "error"} and body["type"] == "error", body
    assert set(body["error"]) == {"type", "message"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    expected = err_type or ANTHROPIC_TYPES.get(status)
    if expected is not None:
        assert body["error"]["type"] == expected, body
    return body["error"]


def family_error(path: str, r, status: int) -> Dict[str, Any]:
    return anthropic_error(r, status) if path in ANTHROPIC_PATHS else openai_error(r, status)


def named_stream(gw, path: str, body: Any, key: Optional[str] = None, style: str = "bearer",
                 headers: Optional[Dict[str, str]] = None) -> List[Tuple[Optional[str], str]]:
    h = dict(auth(key, style))
    h.update(headers or {})
    return [(e, d) for _, e, d in sse_named_events(gw.host, gw.port, path, body, h)]


def token_totals(gw, model: str = "m") -> Dict[str, float]:
    samples = gw.metrics()
    return {kind: metric_value(samples, "llm_gateway_tokens_total", model=model, kind=kind)
            for kind in ("prompt", "completion")}


def wait_tokens(gw, before: Dict[str, float], prompt: float, completion: float, model: str = "m") -> None:
    def grown():
        now = token_totals(gw, model)
        return (now["prompt"] - before["prompt"], now["completion"] - before["completion"])
    try:
        wait_until(lambda: grown() == (prompt, completion), 3, what="tokens counted")
    except AssertionError:
        raise AssertionError(f"llm_gateway_tokens_total{{model={model}}} grew by (prompt, completion) = "
                             f"{grown()}, expected ({prompt}, {completion})") from None


# (path, body, does the answer carry `model`)
ROUTES = [
    (RESP, responses_body(), True),
    (MSG, messages_body(), True),
    (COUNT, {"model": "m", "messages": [{"role": "user", "content": "a b c"}]}, False),
    ("/v1/rerank", {"model": "m", "query": "red fox", "documents": ["a fox", "the sea"]}, True),
    ("/rerank", {"model": "m", "query": "red fox", "documents": ["a fox", "the sea"]}, True),
    ("/v2/rerank", {"model": "m", "query": "red fox", "documents": ["a fox", "the sea"]}, True),
    ("/v1/score", {"model": "m", "text_1": "red fox", "text_2": ["a fox", "the sea"]}, True),
    ("/tokenize", {"model": "m", "prompt": "a b c"}, False),
    ("/detokenize", {"model": "m", "tokens": []}, False),
    ("/pooling", {"model": "m", "input": "a b c"}, True),
    ("/classify", {"model": "m", "input": "a b c"}, True),
]
ROUTE_IDS = [p for p, _, _ in ROUTES]


# --------------------------------------------------------------------------------------
# every route: proxied to the same path, model rewritten both ways, key needed
# --------------------------------------------------------------------------------------

def test_every_route_reaches_the_same_path_with_the_model_rewritten(gateway_factory, fake_vllm):
    gw = gateway_factory(config=config(fake_vllm, keys=SCOPED_KEYS), workers=2)
    for path, body, has_model in ROUTES:
        r = post(gw, path + "?trace=1&x=y", dict(body, model="m-alias"), key=BOB)
        assert r.status == 200, (path, r)
        seen = fake_vllm.last_request(path)
        assert seen is not None, f"{path} did not reach the upstream on the same path"
        assert seen["query"] == "", (path, seen["query"])
        assert seen["body"]["model"] == UPSTREAM_MODEL, (path, seen["body"])
        if has_model:
            assert r.json()["model"] == "m-alias", (path, r.json())
    # GET and cancel by id, on the same paths
    rid = post(gw, RESP, responses_body(), key=BOB).json()["id"]
    assert get(gw, f"{RESP}/{rid}?x=1", key=BOB).status == 200
    assert fake_vllm.last_request(f"{RESP}/{rid}")["method"] == "GET"
    cancel = post(gw, f"{RESP}/{rid}/cancel", b"", key=BOB)
    assert openai_error(cancel, 400)["message"] == "Cannot cancel a synchronous response."
    assert fake_vllm.last_request(f"{RESP}/{rid}/cancel")["query"] == ""
    # the route label is the template, never the id
    samples = gw.metrics()
    routes = {lbl.get("route") for n, lbl, _ in samples if n == "llm_gateway_http_requests_total"}
    for path in ROUTE_IDS + [f"{RESP}/{{id}}", f"{RESP}/{{id}}/cancel"]:
        assert path in routes, (path, sorted(routes))
    assert not any(rid in (r or "") for r in routes), routes
    assert metric_value(samples, "llm_gateway_http_requests_total", route=f"{RESP}/{{id}}") >= 1


@pytest.mark.parametrize("path,body,_", ROUTES, ids=ROUTE_IDS)
def test_a_key_is_needed_in_either_header(gateway_factory, fake_vllm, path, body, _):
    gw = gateway_factory(config=config(fake_vllm, keys=SCOPED_KEYS), workers=1)
    for key, style in [(None, "bearer"), ("wrong-key", "bearer"), ("wrong-key", "x-api-key")]:
        family_error(path, post(gw, path, body, key=key, style=style), 401)
    assert fake_vllm.requests_seen(path) == 0, "a request without a valid key reached the upstream"
    assert post(gw, path, body, key=ALICE, style="bearer").status == 200
    assert post(gw, path, body, key=ALICE, style="x-api-key").status == 200
    assert fake_vllm.requests_seen(path) == 2


def test_get_and_cancel_by_id_need_a_key(gateway_factory, fake_vllm):
    gw = gateway_factory(config=config(fake_vllm, keys=SCOPED_KEYS), workers=1)
    rid = post(gw, RESP, responses_body(), key=ALICE, style="x-api-key").json()["id"]
    openai_error(get(gw, f"{RESP}/{rid}"), 401)
    openai_error(post(gw, f"{RESP}/{rid}/cancel", b""), 401)
    assert fake_vllm.requests_seen(f"{RESP}/{rid}") == 0
    assert get(gw, f"{RESP}/{rid}", key=ALICE, style="x-api-key").json()["id"] == rid
    assert get(gw, f"{RESP}/{rid}", key=ALICE).json()["id"] == rid


@pytest.mark.parametrize("path", [RESP, MSG, COUNT, "/v1/rerank", "/pooling"])
def test_key_scopes_apply(gateway_factory, fake_vllm, path):
    gw = gateway_factory(config=config(fake_vllm, keys=SCOPED_KEYS), workers=1)
    body = dict(next(b for p, b, _ in ROUTES if p == path), model="other")
    err = family_error(path, post(gw, path, body, key=ALICE), 403)
    if path not in ANTHROPIC_PATHS:
        assert err["param"] == "model", err
    assert fake_vllm.requests_seen(path) == 0
    assert post(gw, path, body, key=BOB).status == 200
    assert post(gw, path, dict(body, model="m"), key=ALICE, style="x-api-key").status == 200


@pytest.mark.parametrize("path", [RESP, MSG, COUNT, "/v1/score", "/tokenize"])
def test_unknown_model_is_404_in_the_family_shape(gateway_factory, fake_vllm, path):
    gw = gateway_factory(config=config(fake_vllm), workers=1)
    body = dict(next(b for p, b, _ in ROUTES if p == path), model="no-such-model")
    family_error(path, post(gw, path, body), 404)
    assert fake_vllm.requests_seen(path) == 0


# --------------------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------------------

def test_responses_plain_and_streamed(gateway_factory, fake_vllm):
    fake_vllm.config(prompt_tokens=7)
    gw = gateway_factory(config=config(fake_vllm), workers=2, env={"RATE_LIMIT_RPM": OK_RPM})
    before = token_totals(gw)
    r = post(gw, RESP, responses_body(model="m-alias"))
    assert r.status == 200, r
    body = r.json()
    assert body["object"] == "response" and body["status"] == "completed" and body["id"].startswith("resp_")
    assert body["model"] == "m-alias"
    assert body["output"][0]["content"][0]["text"] == REPLY
    assert body["usage"]["input_tokens"] == 7 and body["usage"]["output_tokens"] == COMPLETION
    assert fake_vllm.last_request(RESP)["body"]["model"] == UPSTREAM_MODEL
    wait_tokens(gw, before, 7, COMPLETION)
    sdk = gw.openai_client().responses.create(model="m", input="hi")
    assert sdk.output_text == REPLY and sdk.model == "m"

    before = token_totals(gw)
    events = named_stream(gw, RESP, responses_body(model="m-alias", stream=True))
    assert [e for e, _ in events] == RESPONSES_STREAM
    datas = [json.loads(d) for _, d in events]
    assert [d["type"] for d in datas] == RESPONSES_STREAM  # each `event:` still with its own `data:`
    assert [d["sequence_number"] for d in datas] == list(range(len(datas)))
    for d in (datas[0], datas[1], datas[-1]):
        assert d["response"]["model"] == "m-alias", d["type"]
    assert "".join(d["delta"] for d in datas if d["type"] == "response.output_text.delta") == REPLY
    assert datas[-1]["response"]["usage"]["output_tokens"] == COMPLETION
    assert fake_vllm.last_request(RESP)["body"]["model"] == UPSTREAM_MODEL
    wait_tokens(gw, before, 7, COMPLETION)


def test_responses_stream_events_pass_one_by_one(gateway_factory, fake_vllm):
    gw = gateway_factory(config=config(fake_vllm), workers=1)
    fake_vllm.set_stream(events=8, delay=0.1)
    received = list(sse_named_events(gw.host, gw.port, RESP, responses_body(stream=True)))
    sent = fake_vllm.last_stream()["events"]
    assert [e for _, e, _ in received] == [s["event"] for s in sent]
    deltas = [(t, s["time"]) for (t, e, _), s in zip(received, sent) if e == "response.output_text.delta"]
    lags = [r - s for r, s in deltas]
    assert max(lags) < 0.05, lags
    gaps = [b[0] - a[0] for a, b in zip(deltas, deltas[1:])]
    assert min(gaps) > 0.05, gaps  # not coalesced


def replicas(fake_vllm_factory, n=2):
    return [fake_vllm_factory() for _ in range(n)]


def home_of(fakes, rid: str) -> int:
    homes = [i for i, f in enumerate(fakes) if rid in f.stored_responses()]
    assert len(homes) == 1, (rid, homes)
    return homes[0]


def fresh(fn, items, threads: int = 2):
    """fn over items on separate connections, two at a time: both workers take them."""
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, items))


def test_response_ids_stick_to_the_upstream_that_created_them(gateway_factory, fake_vllm_factory):
    fakes = replicas(fake_vllm_factory)
    gw = gateway_factory(config=config(*fakes, routing="round_robin"), workers=2, env={"RATE_LIMIT_RPM": OK_RPM})
    ids: List[str] = []
    for i in range(20):  # round robin: both replicas create some
        r = post(gw, RESP, responses_body(input=f"conversation {i}"))
        assert r.status == 200, r
        ids.append(r.json()["id"])
        homes = [home_of(fakes, x) for x in ids]
        if i >= 5 and homes.count(0) >= 2 and homes.count(1) >= 2:
            break
    homes = {rid: home_of(fakes, rid) for rid in ids}
    assert set(homes.values()) == {0, 1}, f"round robin never used both replicas: {homes}"

    def follow_up(rid):
        r = post(gw, RESP, responses_body(input="and then?", previous_response_id=rid))
        return rid, r.status, r.json()

    for _ in range(2):
        for rid, status, body in fresh(follow_up, ids):
            assert status == 200, f"follow-up of {rid} (made on up{homes[rid]}) failed: {body}"
            assert body["previous_response_id"] == rid
            # the follow-up is stored where it ran: the creator's replica
            assert home_of(fakes, body["id"]) == homes[rid]

    def read(rid):
        return rid, get(gw, f"{RESP}/{rid}")

    for rid, r in fresh(read, ids * 2):
        assert r.status == 200, (rid, r)
        assert r.json()["id"] == rid and r.json()["status"] == "completed"

    def cancel(rid):
        return rid, post(gw, f"{RESP}/{rid}/cancel", b"")

    for rid, r in fresh(cancel, ids):
        # finished, not background: the creator's own answer (not a 404 from the other one)
        assert openai_error(r, 400)["message"] == "Cannot cancel a synchronous response.", rid
    for rid, home in homes.items():
        other = fakes[1 - home].counters()["requests"]
        assert other.get(f"{RESP}/{rid}", 0) == 0 and other.get(f"{RESP}/{rid}/cancel", 0) == 0, rid


def test_a_response_whose_upstream_is_down_is_unavailable_not_gone(gateway_factory, fake_vllm_factory):
    """The table knows which upstream made a response; while that one cannot be asked, the
    other's 404 does not make it gone: the client gets a 502/503 to retry, not a 404."""
    fakes = replicas(fake_vllm_factory)
    gw = gateway_factory(config=config(*fakes, routing="round_robin"), workers=1, env={"RATE_LIMIT_RPM": OK_RPM})
    r = post(gw, RESP, responses_body(input="keep this"))
    assert r.status == 200, r
    rid = r.json()["id"]
    home = home_of(fakes, rid)
    fakes[home].stop_listener()
    for path, send in [(f"{RESP}/{rid}", lambda p: get(gw, p)), (f"{RESP}/{rid}/cancel", lambda p: post(gw, p, b""))]:
        answer = send(path)
        assert answer.status in (502, 503), (path, answer.status, answer.text)
        assert answer.json()["error"]["message"] != f"Response with id '{rid}' not found.", answer.text
    # A follow-up of it waits for that upstream too: the other has not got it.
    seen = fakes[1 - home].requests_seen(RESP)
    follow = post(gw, RESP, responses_body(input="and then?", previous_response_id=rid))
    assert follow.status in (502, 503), follow.text
    assert fakes[1 - home].requests_seen(RESP) == seen
    # An id nobody made is still not found on the upstream that is up.
    assert openai_error(get(gw, f"{RESP}/resp_{'2' * 32}"), 404)["param"] == "response_id"
    fakes[home].start_listener()


def test_background_response_is_cancelled_where_it_runs(gateway_factory, fake_vllm_factory):
    fakes = replicas(fake_vllm_factory)
    for f in fakes:
        f.set_stream(delay=0.5)  # 8 tokens: 4 s of generation in the background
    gw = gateway_factory(config=config(*fakes, routing="round_robin"), workers=2, env={"RATE_LIMIT_RPM": OK_RPM})
    ids = []
    for i in range(4):
        r = post(gw, RESP, responses_body(input=f"job {i}", background=True))
        assert r.status == 200 and r.json()["status"] == "queued", r
        ids.append(r.json()["id"])
    for rid in ids:
        r = post(gw, f"{RESP}/{rid}/cancel", b"")
        assert r.status == 200, (rid, r)
        assert r.json()["status"] == "cancelled"
        assert fakes[home_of(fakes, rid)].stored_responses()[rid] == "cancelled"


def test_ids_the_gateway_never_saw_are_asked_of_each_upstream_once(gateway_factory, fake_vllm_factory):
    """An id the table does not hold (forgotten, or made by another gateway) is asked of each
    upstream that may hold it, in turn, until one answers other than 404; when none holds it
    the client gets a 404 in vLLM's words. A new response naming it as previous_response_id
    goes to one upstream, by routing."""
    fakes = replicas(fake_vllm_factory)
    gw = gateway_factory(config=config(*fakes), workers=2, env={"RATE_LIMIT_RPM": OK_RPM})
    rid = "resp_" + "0" * 32
    for method, path in [("GET", f"{RESP}/{rid}"), ("POST", f"{RESP}/{rid}/cancel")]:
        r = get(gw, path) if method == "GET" else post(gw, path, b"")
        err = openai_error(r, 404)
        assert err["message"] == f"Response with id '{rid}' not found." and err["param"] == "response_id"
        assert [f.requests_seen(path) for f in fakes] == [1] * len(fakes), path
    r = post(gw, RESP, responses_body(previous_response_id=rid))
    assert openai_error(r, 404)["param"] == "response_id"
    assert sum(f.requests_seen(RESP) for f in fakes) == 1


class _NoResponsesAPI(http.server.BaseHTTPRequestHandler):
    """An upstream that serves no Responses API (a Whisper or pooling vLLM): FastAPI's 404."""

    def _answer(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        status, body = (200, b"") if self.path == "/health" else (404, b'{"detail":"Not Found"}')
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


def test_an_id_no_upstream_holds_is_not_found_whatever_came_last(gateway_factory, fake_vllm):
    """Asked of every model's upstreams, the last may serve no Responses API (FastAPI's
    {"detail":"Not Found"}) or be down: neither body stands, the client gets the 404."""
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoResponsesAPI)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: connection refused
    try:
        extra = (f"  stt: {{ upstreams: [plain], upstream_model: whisper }}\n"
                 f"  gone: {{ upstreams: [dead], upstream_model: x }}\n")
        text = config(fake_vllm, extra_models=extra).replace(
            "models:\n", f"  plain: {{ url: http://127.0.0.1:{other.server_address[1]}, health: /health }}\n"
            f"  dead: {{ url: http://127.0.0.1:{dead.getsockname()[1]}, health: /health }}\nmodels:\n", 1)
        gw = gateway_factory(config=text, workers=1, env={"RATE_LIMIT_RPM": OK_RPM})
        rid = "resp_" + "1" * 32
        for path, send in [(f"{RESP}/{rid}", lambda p: get(gw, p)), (f"{RESP}/{rid}/cancel", lambda p: post(gw, p, b""))]:
            err = openai_error(send(path), 404)
            assert err["message"] == f"Response with id '{rid}' not found.", err
            assert err["param"] == "response_id", err
            assert fake_vllm.requests_seen(path) == 1, path
        # one that exists is still found, on the upstream that made it
        made = post(gw, RESP, responses_body())
        assert made.status == 200, made
        assert get(gw, f"{RESP}/{made.json()['id']}").json()["status"] == "completed"
    finally:
        other.shutdown()
        other.server_close()
        dead.close()


@pytest.mark.parametrize("value", ["r" * 257, "resp_" + "x" * 10_000, 5, ["resp_1"], {"id": "resp_1"}],
                         ids=["257-bytes", "10k", "int", "list", "object"])
def test_bad_previous_response_id_is_400_before_any_upstream(gateway_factory, fake_vllm, value):
    gw = gateway_factory(config=config(fake_vllm), workers=1)
    err = openai_error(post(gw, RESP, responses_body(previous_response_id=value)), 400)
    assert err["param"] == "previous_response_id", err
    assert fake_vllm.requests_seen(RESP) == 0


def test_response_id_length_bound(gateway_factory, fake_vllm):
    gw = gateway_factory(config=config(fake_vllm), workers=1)
    # A path whose id is too long is no route: 404 in OpenAI's shape, nothing forwarded.
    for rid in ["r" * 257, "r" * 4000]:
        openai_error(get(gw, f"{RESP}/{rid}"), 404)
        openai_error(post(gw, f"{RESP}/{rid}/cancel", b""), 404)
    assert fake_vllm.requests_seen(f"{RESP}/{'r' * 257}") == fake_vllm.requests_seen(f"{RESP}/{'r' * 4000}") == 0
    assert fake_vllm.requests_seen(f"{RESP}/{'r' * 257}/cancel") == 0
    # 256 bytes is still an id: the upstream decides
    rid = "r" * 256
    assert openai_error(get(gw, f"{RESP}/{rid}"), 404)["param"] == "response_id"
    assert fake_vllm.requests_seen(f"{RESP}/{rid}") == 1
    assert openai_error(post(gw, RESP, responses_body(previous_response_id=rid)), 404)["param"] == "response_id"


# --------------------------------------------------------------------------------------
# Anthropic Messages
# --------------------------------------------------------------------------------------

def test_messages_plain_and_streamed(gateway_factory, fake_vllm):
    fake_vllm.config(prompt_tokens=7)
    gw = gateway_factory(config=config(fake_vllm), workers=2, env={"RATE_LIMIT_RPM": OK_RPM})
    before = token_totals(gw)
    r = post(gw, MSG, messages_body(model="m-alias"), headers={"anthropic-version": "2023-06-01"})
    assert r.status == 200, r
    body = r.json()
    assert body["type"] == "message" and body["role"] == "assistant" and body["model"] == "m-alias"
    assert body["content"] == [{"type": "text", "text": REPLY}] and body["stop_reason"] == "end_turn"
    assert body["usage"] == {"input_tokens": 7, "output_tokens": COMPLETION}
    seen = fake_vllm.last_request(MSG)
    assert seen["body"]["model"] == UPSTREAM_MODEL
    assert seen["headers"].get("anthropic-version") == "2023-06-01"
    wait_tokens(gw, before, 7, COMPLETION)

    before = token_totals(gw)
    events = named_stream(gw, MSG, messages_body(model="m-alias", stream=True),
                          headers={"anthropic-version": "2023-06-01"})
    assert [e for e, _ in events] == ANTHROPIC_STREAM
    datas = [json.loads(d) for _, d in events]
    assert [d["type"] for d in datas] == ANTHROPIC_STREAM
    assert datas[0]["message"]["model"] == "m-alias"
    assert datas[0]["message"]["usage"] == {"input_tokens": 7, "output_tokens": 0}
    assert "".join(d["delta"]["text"] for d in datas if d["type"] == "content_block_delta") == REPLY
    assert datas[-2]["usage"] == {"input_tokens": 7, "output_tokens": COMPLETION}
    assert fake_vllm.last_request(MSG)["body"]["model"] == UPSTREAM_MODEL
    # input_tokens is in message_start and again in message_delta: counted once
    wait_tokens(gw, before, 7, COMPLETION)


def test_messages_with_the_anthropic_sdk(gateway_factory, fake_vllm):
    import anthropic  # Tests/integration/requirements.txt: never skipped
    gw = gateway_factory(config=config(fake_vllm, keys=SCOPED_KEYS), workers=1)
    ac = anthropic.Anthropic(base_url=gw.url, api_key=ALICE, max_retries=0, timeout=20.0)  # sends x-api-key
    msg = ac.messages.create(model="m-alias", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    assert msg.model == "m-alias" and msg.content[0].text == REPLY
    with ac.messages.stream(model="m", max_tokens=64, messages=[{"role": "user", "content": "hi"}]) as s:
        assert "".join(s.text_stream) == REPLY
        assert s.get_final_message().usage.output_tokens == COMPLETION
    assert ac.messages.count_tokens(model="m", messages=[{"role": "user", "content": "a b c"}]).input_tokens == 3
    with pytest.raises(anthropic.PermissionDeniedError):
        ac.messages.create(model="other", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=gw.url, api_key="nope", max_retries=0).messages.create(
            model="m", max_tokens=8, messages=[{"role": "user", "content": "x"}])


def test_messages_stream_passes_ping_and_a_trailing_done_through(gateway_factory, fake_vllm):
    """Anthropic's own API sends `ping`; vLLM up to 0.11 ended with `data: [DONE]` after
    message_stop. Both reach the client as sent."""
    gw = gateway_factory(config=config(fake_vllm), workers=1)
    fake_vllm.config(anthropic_ping=True, anthropic_done=True)
    events = named_stream(gw, MSG, messages_body(stream=True))
    assert [e for e, _ in events] == ANTHROPIC_STREAM[:1] + ["ping"] + ANTHROPIC_STREAM[1:] + [None]
    assert json.loads(events[1][1]) == {"type": "ping"} and events[-1][1] == "[DONE]"


def test_count_tokens(gateway_factory, fake_vllm):
    gw = gateway_factory(config=config(fake_vllm), workers=1)
    r = post(gw, COUNT, {"model": "m-alias", "system": "be brief", "messages": [{"role": "user", "content": "a b c"}]},
             headers={"anthropic-version": "2023-06-01"})
    assert r.status == 200, r
    assert r.json()["input_tokens"] == 5
    assert fake_vllm.last_request(COUNT)["body"]["model"] == UPSTREAM_MODEL


def test_upstream_errors_on_messages_stay_anthropic_shaped(gateway_factory, fake_vllm):
    gw = gateway_factory(config=config(fake_vllm), workers=1, env={"CIRCUIT_BREAKER_ENABLED": "false"})
    fake_vllm.fail_next(count=1, status=400, routes=[MSG], message="prompt too long")
    r = post(gw, MSG, messages_body())
    assert r.status == 400 and r.json()["type"] == "error" and "prompt too long" in r.json()["error"]["message"]


# --------------------------------------------------------------------------------------
# token usage of the pooling families, token limits
# --------------------------------------------------------------------------------------

TWO_TEXTS = {
    "/v1/rerank": {"model": "m", "query": "red fox", "documents": ["a fox", "the sea"]},
    "/v1/score": {"model": "m", "text_1": "red fox", "text_2": ["a fox", "the sea"]},
    "/pooling": {"model": "m", "input": ["a b", "c"]},
    "/classify": {"model": "m", "input": ["a b", "c"]},
}


@pytest.mark.parametrize("path", sorted(TWO_TEXTS))
def test_prompt_side_usage_is_counted(gateway_factory, fake_vllm, path):
    fake_vllm.config(prompt_tokens=6)
    gw = gateway_factory(config=config(fake_vllm), workers=1)
    before = token_totals(gw)
    r = post(gw, path, TWO_TEXTS[path])
    assert r.status == 200, r
    used = r.json()["usage"]["prompt_tokens"]
    assert used == 12  # two texts (or pairs) of 6
    wait_tokens(gw, before, used, 0)


@pytest.mark.parametrize("path,stream", [(RESP, False), (RESP, True), (MSG, False), (MSG, True), ("/pooling", False)],
                         ids=["responses", "responses-stream", "messages", "messages-stream", "pooling"])
def test_token_limit_charges_every_family(gateway_factory, fake_vllm, path, stream):
    fake_vllm.config(prompt_tokens=6)
    gw = gateway_factory(config=config(fake_vllm), workers=2,
                         env={"BEARER_TOKEN": "k1", "RATE_LIMIT_TPM": "100", "RATE_LIMIT_RPM": OK_RPM})
    body = dict(next(b for p, b, _ in ROUTES if p == path))
    per_request = 6 if path == "/pooling" else 6 + COMPLETION
    if stream:
        body["stream"] = True

    def once():
        r = post(gw, path, body, key="k1")
        if r.status == 200 and stream:
            assert r.headers.get("content-type", "").startswith("text/event-stream")
        return r

    statuses = []
    for _ in range(40):
        r = once()
        statuses.append(r.status)
        if r.status == 429:
            break
    ok = statuses.count(200)
    expected = -(-100 // per_request)  # admitted while a token is left
    assert statuses[-1] == 429 and ok == len(statuses) - 1, statuses
    assert expected <= ok <= expected + 1, (ok, expected, statuses)
    limited = once()
    err = family_error(path, limited, 429)
    assert int(limited.headers.get("retry-after")) >= 1
    assert "tokens" in err["message"]


@pytest.mark.parametrize("path", [RESP, MSG, "/tokenize"])
def test_request_limit_is_429_with_retry_after(gateway_factory, fake_vllm, path):
    gw = gateway_factory(config=config(fake_vllm), workers=2, env={"BEARER_TOKEN": "k1", "RATE_LIMIT_RPM": "2"})
    body = next(b for p, b, _ in ROUTES if p == path)
    assert [post(gw, path, body, key="k1", style="x-api-key").status for _ in range(2)] == [200, 200]
    r = post(gw, path, body, key="k1")
    family_error(path, r, 429)
    assert int(r.headers.get("retry-after")) >= 1
    assert fake_vllm.requests_seen(path) == 2


@pytest.mark.parametrize("path", [RESP, MSG, COUNT, "/v1/rerank"])
def test_body_over_the_cap_is_413(gateway_factory, fake_vllm, path):
    gw = gateway_factory(config=config(fake_vllm), workers=1, env={"MAX_REQUEST_BODY_BYTES": "2048"})
    body = dict(next(b for p, b, _ in ROUTES if p == path))
    big = "x " * 3000
    if path == RESP:
        body["input"] = big
    elif path in ANTHROPIC_PATHS:
        body["messages"] = [{"role": "user", "content": big}]
    else:
        body["query"] = big
    family_error(path, post(gw, path, body), 413)
    assert fake_vllm.requests_seen(path) == 0


# --------------------------------------------------------------------------------------
# breaker, fallbacks, mid-stream failures, disconnects
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [RESP, MSG])
def test_breaker_opens_and_fails_fast_in_the_family_shape(gateway_factory, fake_vllm, path):
    gw = gateway_factory(config=config(fake_vllm), workers=2, env={
        "CIRCUIT_BREAKER_THRESHOLD": "3", "CIRCUIT_BREAKER_COOLDOWN": "30", "UPSTREAM_HEALTH_INTERVAL": "60",
        "RATE_LIMIT_RPM": OK_RPM})
    body = next(b for p, b, _ in ROUTES if p == path)
    fake_vllm.fail_next(count=100, status=500, routes=[path])
    for _ in range(3):
        r = post(gw, path, body)
        assert r.status == 502, r
        if path in ANTHROPIC_PATHS:
            assert r.json()["type"] == "error" and set(r.json()["error"]) == {"type", "message"}, r
        else:
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}, r
    seen = fake_vllm.requests_seen(path)
    for stream in (False, True):
        r = post(gw, path, dict(body, stream=stream))
        err = family_error(path, r, 503)
        if path not in ANTHROPIC_PATHS:
            assert err["code"] == "circuit_open", err
        assert int(r.headers.get("retry-after")) >= 1
    assert fake_vllm.requests_seen(path) == seen


@pytest.mark.parametrize("path,stream", [(RESP, False), (RESP, True), (MSG, False), (MSG, True)],
                         ids=["responses", "responses-stream", "messages", "messages-stream"])
def test_fallback_to_the_other_replica_before_the_first_byte(gateway_factory, fake_vllm_factory, path, stream):
    a, b = fake_vllm_factory(), fake_vllm_factory()
    a.stop_listener()
    gw = gateway_factory(config=config(a, b), workers=1, env={"RATE_LIMIT_RPM": OK_RPM})
    body = dict(next(x for p, x, _ in ROUTES if p == path), stream=stream)
    for _ in range(3):
        if stream:
            names = [e for e, _ in named_stream(gw, path, body)]
            assert names == (RESPONSES_STREAM if path == RESP else ANTHROPIC_STREAM)
        else:
            assert post(gw, path, body).status == 200
    assert b.requests_seen(path) == 3


def test_fallback_model_on_an_upstream_error_before_the_first_byte(gateway_factory, fake_vllm_factory):
    a, b = fake_vllm_factory(), fake_vllm_factory()
    cfg = (f"upstreams:\n  a: {{ url: {a.url} }}\n  b: {{ url: {b.url} }}\n"
           f"models:\n  m: {{ upstreams: [a], upstream_model: {UPSTREAM_MODEL}, fallbacks: [spare] }}\n"
           f"  spare: {{ upstreams: [b], upstream_model: {UPSTREAM_MODEL} }}\n")
    gw = gateway_factory(config=cfg, workers=1, env={"RATE_LIMIT_RPM": OK_RPM})
    for path in (RESP, MSG):
        a.fail_next(count=1, status=503, routes=[path])
        r = post(gw, path, next(x for p, x, _ in ROUTES if p == path))
        assert r.status == 200, (path, r)
        assert b.requests_seen(path) == 1, path


@pytest.mark.parametrize("path", [RESP, MSG])
def test_upstream_breaking_off_mid_stream_ends_with_an_error_event(gateway_factory, fake_vllm_factory, path):
    a, b = fake_vllm_factory(), fake_vllm_factory()
    gw = gateway_factory(config=config(a, b), workers=1, env={"UPSTREAM_HEALTH_INTERVAL": "0.5"})
    b.set_health(status=503)  # the stream starts on a
    wait_until(lambda: "down" in gw.log_text(), 10, what="b marked down")
    a.fail_stream(count=1, after_events=4, mode="close", routes=[path])
    body = dict(next(x for p, x, _ in ROUTES if p == path), stream=True)
    events = named_stream(gw, path, body)
    expected = RESPONSES_STREAM if path == RESP else ANTHROPIC_STREAM
    assert [e for e, _ in events[:4]] == expected[:4], events
    assert events[-1][0] == "error" and len(events) == 5, [e for e, _ in events]
    data = json.loads(events[-1][1])
    if path == MSG:
        assert data["type"] == "error" and set(data["error"]) == {"type", "message"}, data
    else:
        assert set(data) == {"error"} and set(data["error"]) == {"message", "type", "param", "code"}, data
    assert b.requests_seen(path) == 0


@pytest.mark.parametrize("path", [RESP, MSG])
def test_client_disconnect_cancels_the_upstream_stream(gateway_factory, fake_vllm, path):
    gw = gateway_factory(config=config(fake_vllm), workers=2)
    fake_vllm.set_stream(events=50, delay=0.2)
    body = dict(next(x for p, x, _ in ROUTES if p == path), stream=True)
    events = sse_named_events(gw.host, gw.port, path, body)
    for _ in range(3):
        next(events)
    dropped = time.time()
    events.close()
    cancel = fake_vllm.wait_for_cancellation(1, timeout=3)[0]
    assert cancel["path"] == path and cancel["phase"] == "streaming"
    assert cancel["time"] - dropped < 1.0


@pytest.mark.parametrize("path", [RESP, MSG, "/v1/rerank"])
def test_client_disconnect_cancels_a_waiting_request(gateway_factory, fake_vllm, path):
    gw = gateway_factory(config=config(fake_vllm), workers=1)
    fake_vllm.delay_headers(seconds=5, count=1, routes=[path])
    body = json.dumps(next(x for p, x, _ in ROUTES if p == path)).encode()
    s = socket.create_connection((gw.host, gw.port), timeout=5)
    s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
              % (path.encode(), len(body), body))
    wait_until(lambda: fake_vllm.requests_seen(path) >= 1, 5)
    dropped = time.time()
    s.close()
    cancel = fake_vllm.wait_for_cancellation(1, timeout=3)[0]
    assert cancel["path"] == path and cancel["time"] - dropped < 1.0


# --------------------------------------------------------------------------------------
# hostile input: the family's error shape and nothing else
# --------------------------------------------------------------------------------------

HOSTILE = [
    ("model-int", b'{"model": 3, "input": "x", "max_tokens": 8, "messages": []}', "application/json", 400),
    ("model-list", b'{"model": ["m"], "input": "x", "max_tokens": 8, "messages": []}', "application/json", 400),
    ("model-object", b'{"model": {"m": 1}, "input": "x", "max_tokens": 8, "messages": []}', "application/json", 400),
    ("garbage", b"\x00\xff{not json", "application/json", 400),
    ("truncated", b'{"model": "m", "inp', "application/json", 400),
    ("deep", b'{"model":"m","x":' + b"[" * 2000 + b"]" * 2000 + b"}", "application/json", 400),
]


@pytest.mark.parametrize("path", [RESP, MSG, COUNT, "/v1/rerank", "/v1/score", "/tokenize", "/detokenize",
                                  "/pooling", "/classify"])
def test_hostile_bodies_get_the_family_shape_and_nothing_else(gateway_factory, fake_vllm, path):
    gw = gateway_factory(config=config(fake_vllm), workers=1, env={"RATE_LIMIT_RPM": OK_RPM})
    for name, raw, ctype, status in HOSTILE:
        r = post(gw, path, raw, headers={"Content-Type": ctype})
        err = family_error(path, r, status)
        if name.startswith("model-") and path not in ANTHROPIC_PATHS:
            assert err["param"] == "model", (name, err)
    assert fake_vllm.requests_seen(path) == 0, "a hostile body reached the upstream"
    assert gw.get("/health").status == 200


@pytest.mark.parametrize("path", [RESP, MSG])
def test_wrong_content_type_gets_the_family_shape(gateway_factory, fake_vllm, path):
    """A JSON body under another content type: refused in the family's shape (400/415)
    without reaching the upstream, or read as the JSON it is and sent on as
    application/json (vLLM itself answers 400 to anything but application/json, in OpenAI's
    shape even on /v1/messages, so it must never see the client's content type)."""
    gw = gateway_factory(config=config(fake_vllm), workers=1)
    body = json.dumps(next(x for p, x, _ in ROUTES if p == path)).encode()
    for ctype in ["text/plain", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded"]:
        before = fake_vllm.requests_seen(path)
        r = post(gw, path, body, headers={"Content-Type": ctype})
        if r.status == 200:
            sent = fake_vllm.last_request(path)["headers"].get("content-type", "")
            assert sent.split(";")[0].strip() == "application/json", (ctype, sent)
        else:
            assert r.status in (400, 415), (ctype, r)
            family_error(path, r, r.status)
            assert fake_vllm.requests_seen(path) == before, ctype


def test_hostile_response_ids_in_the_path(gateway_factory, fake_vllm):
    gw = gateway_factory(config=config(fake_vllm), workers=1)
    for rid in ["r" * 300, "%00" * 100, "resp_1%0d%0aX-Injected:%201"]:
        r = get(gw, f"{RESP}/{rid}")
        assert r.status in (400, 404), (rid, r)
        openai_error(r, r.status)
        assert "x-injected" not in r.headers
    assert fake_vllm.requests_seen(f"{RESP}/{'r' * 300}") == 0
    assert gw.get("/health").status == 200


def test_raw_sse_framing_is_whole_events(gateway_factory, fake_vllm):
    """Read the raw body: every block is `event: NAME` + `data: JSON` whose type is NAME."""
    gw = gateway_factory(config=config(fake_vllm), workers=1)
    for path in (RESP, MSG):
        body = dict(next(x for p, x, _ in ROUTES if p == path), stream=True)
        r = post(gw, path, body)
        assert r.status == 200 and r.headers["content-type"].startswith("text/event-stream"), r
        events = parse_sse(r.body)
        assert r.body.endswith(b"\n\n")
        assert all(e is not None and json.loads(d)["type"] == e for e, d in events), events[:3]
