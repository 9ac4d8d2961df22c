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
/v1/responses route; through the gateway, on the other routes, it is required.
"""
from __future__ import annotations

import re

import pytest

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


@pytest.mark.routes("/v1/chat/completions")
def test_chat_stream_disconnect_aborts(target):
    stream = target.openai().chat.completions.create(
        model=target.model, messages=MESSAGES, max_tokens=LONG, temperature=0, stream=True,
        extra_body={"ignore_eos": True})
    it = iter(stream)
    first = [next(it) for _ in range(3)]
    stream.close()
    _wait_aborted(target, first[0].id)


@pytest.mark.routes("/v1/completions")
def test_completions_stream_disconnect_aborts(target):
    stream = target.openai().completions.create(
        model=target.model, prompt="Count forever.", max_tokens=LONG, temperature=0, stream=True,
        extra_body={"ignore_eos": True})
    it = iter(stream)
    first = [next(it) for _ in range(3)]
    stream.close()
    _wait_aborted(target, first[0].id)


@pytest.mark.routes("/v1/responses")
def test_responses_stream_disconnect_aborts(target):
    stream = target.openai().responses.create(
        model=target.model, input="Count forever.", max_output_tokens=LONG, temperature=0, stream=True,
        extra_body={"ignore_eos": True})
    it = iter(stream)
    events = [next(it) for _ in range(5)]
    stream.close()
    assert events[0].type == "response.created"
    try:
        _wait_aborted(target, events[0].response.id, timeout=30)
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
    with target.anthropic().messages.stream(model=target.model, max_tokens=LONG, messages=MESSAGES,
                                            extra_body={"temperature": 0}) as stream:
        it = iter(stream)
        events = [next(it) for _ in range(4)]
    assert events[0].type == "message_start"
    _wait_aborted(target, events[0].message.id)
