"""A client that disconnects mid-stream cancels the generation in vLLM.

Each test starts a long greedy generation (3000 tokens; 10 to 30 s or more on CPU if left
to run), reads the first events, closes the connection and waits
for vLLM 0.32's abort line, e.g.

    (APIServer pid=…) INFO … [async_llm.py:783] Request chatcmpl-9f5e65406e1e4bde aborted.

The engine request id is the id the client sees, plus a suffix on some routes:
chat `chatcmpl-X`, completions `cmpl-X-0`, responses `resp_X_0`, messages `chatcmpl-X`.
Through the gateway the id the client sees is still vLLM's (the gateway's x-request-id
becomes vLLM's request id: `chatcmpl-req_…`).

vLLM aborts when the cancelled handler task closes the engine's generator; when the cancel
lands outside it (the task was writing to the socket), the orphaned generator is closed only
when Python's garbage collector finalizes it. Measured here: 0 to 12 s after the hang-up on
every route, once over 20 s for /v1/responses on a loaded CI machine — hence 60 s — and in
another CI run none at all for /v1/responses: the generation ran to its end first; once none
within 60 s for /v1/chat/completions straight to vLLM on this machine. A missing abort is
therefore recorded as an expected failure on the direct side (vLLM itself) and on the
/v1/responses route; through the gateway, on the other routes, it is required, unless vLLM
then also fails to abort the same stream hung up by a client of its own (seen in CI: a run
where vLLM aborted none within 60 s, direct or not): the gateway is held to what vLLM does
without it.
"""
from __future__ import annotations

import datetime
import re
import time

import pytest

from conftest import API_KEY, VLLM_MODEL, Target

LONG = 3000
MESSAGES = [{"role": "user", "content": "Count forever."}]


def _wait_aborted(target, request_id, timeout=60):
    try:
        target.vllm.wait_for_log(rf"Request {re.escape(request_id)}([-_]\d+)? aborted\.", timeout=timeout)
    except AssertionError:
        if target.name != "vllm":
            raise
        # Direct to vLLM (the reference side), the abort depends on when Python finalizes
        # the orphaned generator; seen missing for 60 s on /v1/chat/completions too. The
        # gateway side stays required.
        pytest.xfail(f"vLLM 0.32 did not abort {request_id} within {timeout} s of a direct "
                     "client's hang-up (its generator was not finalized in time)")


def _first_then_close(stream, count):
    """The first `count` events of an SDK stream, then a hang-up."""
    it = iter(stream)
    events = [next(it) for _ in range(count)]
    stream.close()
    return events


# Every route's SSE events take well over 100 bytes per generated token: a hang-up the gateway
# saw only after relaying this much came after most of the stream.
LATE_BYTES = LONG * 100


def _hang_up_came_late(target, route, closed_at):
    """Through the gateway: its access line for the last request on `route` says the client's
    hang-up reached it only after (most of) the stream: the stream ran to its end before the
    client hung up at `closed_at`, or the gateway had relayed LATE_BYTES of it when it saw the
    hang-up (seen in CI: 406 KB, the whole generation, in 4.3 s, the client unscheduled)."""
    mine = [entry for entry in target.gateway.access_lines() if entry.get("route") == route]
    if not mine:
        return False
    last = mine[-1]
    if last.get("error"):
        return last["error"] == "client_closed_request" and (last.get("bytes") or 0) >= LATE_BYTES
    ended = datetime.datetime.fromisoformat(last["ts"].replace("Z", "+00:00")).timestamp()
    return ended <= closed_at


def _hang_up_until_aborted(target, route, hang_up, timeout=60, attempts=3):
    """`hang_up(target)` starts a long stream, reads its first events, hangs up and returns
    the engine request id; vLLM must then abort it. Seen on this 2-core machine with vLLM
    generating flat out: every other process, the gateway's timer thread included, went
    unscheduled for the whole 4.5 s generation (strace: a 250 ms epoll timeout returned
    after 4.75 s), so the client's hang-up came after the stream had ended and there was
    nothing left to abort. Such an attempt, and only such (the gateway's log says the
    hang-up came after the stream, or most of it), is tried again. Any other missing abort
    through the gateway is then tried straight to vLLM: if vLLM does not abort that one
    either, the missing abort is vLLM's (an expected failure), else the gateway's (a failure)."""
    for _ in range(attempts):
        request_id = hang_up(target)
        closed_at = time.time()
        try:
            return _wait_aborted(target, request_id, timeout=timeout)
        except AssertionError:
            if target.name == "vllm":
                raise
            if not _hang_up_came_late(target, route, closed_at):
                _unless_vllm_misses_it_too(target, hang_up, timeout)
                raise
    pytest.fail(f"in {attempts} attempts the client could not hang up before the stream ended")


def _unless_vllm_misses_it_too(target, hang_up, timeout):
    """After a missing abort through the gateway: the same hang-up straight to vLLM, whose
    missing abort ``_wait_aborted`` records as an expected failure; returns when it aborts."""
    direct = Target("vllm", target.vllm.url, VLLM_MODEL, API_KEY, target.vllm)
    _wait_aborted(direct, hang_up(direct), timeout=timeout)


@pytest.mark.routes("/v1/chat/completions")
def test_chat_stream_disconnect_aborts(target):
    def hang_up(t):
        stream = t.openai().chat.completions.create(
            model=t.model, messages=MESSAGES, max_tokens=LONG, temperature=0, stream=True,
            extra_body={"ignore_eos": True})
        return _first_then_close(stream, 3)[0].id
    _hang_up_until_aborted(target, "/v1/chat/completions", hang_up)


@pytest.mark.routes("/v1/completions")
def test_completions_stream_disconnect_aborts(target):
    def hang_up(t):
        stream = t.openai().completions.create(
            model=t.model, prompt="Count forever.", max_tokens=LONG, temperature=0, stream=True,
            extra_body={"ignore_eos": True})
        return _first_then_close(stream, 3)[0].id
    _hang_up_until_aborted(target, "/v1/completions", hang_up)


@pytest.mark.routes("/v1/responses")
def test_responses_stream_disconnect_aborts(target):
    def hang_up(t):
        stream = t.openai().responses.create(
            model=t.model, input="Count forever.", max_output_tokens=LONG, temperature=0, stream=True,
            extra_body={"ignore_eos": True})
        events = _first_then_close(stream, 5)
        assert events[0].type == "response.created"
        return events[0].response.id
    try:
        _hang_up_until_aborted(target, "/v1/responses", hang_up, timeout=30)
    except AssertionError:
        # Seen in CI, direct to vLLM: no abort line, and the engine ran the generation to its
        # end (~13 s): the cancel landed outside the generator and nothing finalized it in time.
        pytest.xfail("vLLM 0.32's /v1/responses stream aborts only when its orphaned generator is "
                     "finalized; it was not within 30 s. The gateway's part (closing the upstream at "
                     "once) is tested deterministically in test_api_families "
                     "test_client_disconnect_cancels_the_upstream_stream[/v1/responses].")


@pytest.mark.routes("/v1/messages")
def test_messages_stream_disconnect_aborts(target):
    # No ignore_eos on vLLM's Messages route; greedy decoding of this model never picks EOS
    # for this prompt (checked: 3900 tokens, stop_reason max_tokens).
    # (anthropic 2.10's messages.stream() takes no `temperature`: it goes in extra_body.)
    def hang_up(t):
        with t.anthropic().messages.stream(model=t.model, max_tokens=LONG, messages=MESSAGES,
                                           extra_body={"temperature": 0}) as stream:
            it = iter(stream)
            events = [next(it) for _ in range(4)]
        assert events[0].type == "message_start"
        return events[0].message.id
    _hang_up_until_aborted(target, "/v1/messages", hang_up)
