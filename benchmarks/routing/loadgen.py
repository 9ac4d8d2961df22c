"""Streaming load for benchmarks/routing (asyncio; aiohttp's client), closed or open loop.

Closed loop (``run_load``): at most ``concurrency`` requests are in flight;
``open_conversations`` conversations are open at a time. Open loop (``run_open_load``):
conversations arrive at the times of a Poisson process, at a rate that offers a given
number of requests a second, however many are already in flight (as vLLM's
``benchmark_serving --request-rate``). Either way each conversation is played turn by turn:
a ``stream: true`` chat completion (with ``stream_options.include_usage``) per turn, the
reply appended to the history, the next turn ready after a think time. A conversation whose
turn fails is dropped (the next turn would lack its reply). Per
request: the time to the first non-empty content delta (TTFT, client side, from just
before the request is sent), the time to ``data: [DONE]``, the content deltas counted as
output tokens, and ``usage`` (``prompt_tokens_details.cached_tokens`` when present).

``pick()`` gives the base URL of each request: a fixed router/gateway, or a random
replica for the ``direct-random`` baseline.
"""
from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter, deque
from typing import Any, Callable, Dict, List, Optional, Sequence

from workload import Conversation


def percentile(values: Sequence[float], p: float) -> Optional[float]:
    """Nearest-rank percentile (p in 0..100), None for no values (as benchmarks/sse_client.py)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


async def stream_chat(session, base_url: str, body: Dict[str, Any], headers: Dict[str, str],
                      timeout: float) -> Dict[str, Any]:
    """One streamed chat completion; a record of what happened (never raises)."""
    import aiohttp

    rec: Dict[str, Any] = {"ok": False, "status": None, "error": None, "ttft_s": None, "e2e_s": None,
                           "completion_tokens": 0, "prompt_tokens": None, "cached_tokens": None, "reply": ""}
    parts: List[str] = []
    t0 = time.monotonic()
    done = False
    try:
        async with session.post(base_url + "/v1/chat/completions", json=body, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            rec["status"] = resp.status
            if resp.status != 200:
                rec["error"] = f"HTTP {resp.status}: {(await resp.text())[:200]}"
                return rec
            async for raw in resp.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    break
                event = json.loads(data)
                if event.get("error"):
                    rec["error"] = f"error event: {str(event['error'])[:200]}"
                    return rec
                for choice in event.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        if rec["ttft_s"] is None:
                            rec["ttft_s"] = time.monotonic() - t0
                        rec["completion_tokens"] += 1
                        parts.append(text)
                usage = event.get("usage")
                if usage:
                    rec["prompt_tokens"] = usage.get("prompt_tokens")
                    rec["cached_tokens"] = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    except asyncio.TimeoutError:
        rec["error"] = f"timeout after {timeout}s"
        return rec
    except (aiohttp.ClientError, ValueError, OSError) as e:
        rec["error"] = f"{type(e).__name__}: {str(e)[:200]}"
        return rec
    rec["e2e_s"] = time.monotonic() - t0
    rec["reply"] = "".join(parts)
    if not done:
        rec["error"] = "stream ended without [DONE]"
    else:
        rec["ok"] = rec["ttft_s"] is not None
        if not rec["ok"]:
            rec["error"] = "no content"
    return rec


def think_seconds(conv: Conversation, turn: int, think_time: float, seed: int) -> float:
    """The think time after turn ``turn`` of ``conv``: exponential, mean ``think_time``, seeded
    by conversation and turn (the same for every target)."""
    if think_time <= 0:
        return 0.0
    return random.Random(f"{seed}/{conv.id}/{turn}").expovariate(1.0 / think_time)


async def play_turn(session, base_url: str, model: str, conv: Conversation, k: int, replies: List[str],
                    session_header: Optional[str], timeout: float, seq: int) -> tuple:
    """Sends turn ``k`` of ``conv``; its record and reply."""
    turn = conv.turns[k]
    body = {"model": model, "messages": conv.messages_for(k, replies), "max_tokens": turn.max_tokens,
            "stream": True, "stream_options": {"include_usage": True}}
    headers = {session_header: conv.id} if session_header else {}
    rec = await stream_chat(session, base_url, body, headers, timeout)
    reply = rec.pop("reply")
    rec.update(conversation=conv.id, turn=k, tenant=conv.tenant, seq=seq)
    return rec, reply


async def run_load(conversations: Sequence[Conversation], pick: Callable[[], str], model: str, concurrency: int,
                   open_conversations: int = 0, think_time: float = 0.0, seed: int = 1,
                   request_timeout: float = 120.0, max_seconds: float = 600.0,
                   session_header: Optional[str] = None) -> Dict[str, Any]:
    """Plays the conversations; returns the records and a summary.

    ``concurrency`` requests are in flight at most (a closed loop). ``open_conversations``
    (default 2 x concurrency) conversations are open at a time, in workload order; after a
    turn, its conversation is ready again only after a think time (exponential, mean
    ``think_time`` seconds, seeded by conversation and turn), so a next turn does not
    simply follow its previous one onto the replica that just became the least loaded."""
    import aiohttp

    loop = asyncio.get_running_loop()
    pending = deque(conversations)
    ready: "asyncio.Queue[Optional[tuple]]" = asyncio.Queue()
    records: List[Dict[str, Any]] = []
    deadline = time.monotonic() + max_seconds
    state = {"open": 0, "stopped_by_deadline": False, "sent": 0}

    def open_next() -> None:
        if pending and not state["stopped_by_deadline"]:
            state["open"] += 1
            ready.put_nowait((pending.popleft(), []))

    def conversation_done() -> None:
        state["open"] -= 1
        open_next()
        if state["open"] == 0:
            for _ in range(concurrency):
                ready.put_nowait(None)

    async def slot(session) -> None:
        while True:
            item = await ready.get()
            if item is None:
                return
            conv, replies = item
            k = len(replies)
            if time.monotonic() > deadline:
                state["stopped_by_deadline"] = True
                conversation_done()
                continue
            seq = state["sent"]
            state["sent"] += 1
            rec, reply = await play_turn(session, pick(), model, conv, k, replies, session_header, request_timeout, seq)
            records.append(rec)
            if rec["ok"] and k + 1 < len(conv.turns):
                replies.append(reply)
                loop.call_later(think_seconds(conv, k, think_time, seed), ready.put_nowait, (conv, replies))
            else:
                conversation_done()

    for _ in range(open_conversations or 2 * concurrency):
        open_next()
    if state["open"] == 0:
        return {"records": [], "wall_s": 0.0, "stopped_by_deadline": False, "summary": summarize([], 0.0)}
    connector = aiohttp.TCPConnector(limit=0, force_close=False, enable_cleanup_closed=True)
    t0 = time.monotonic()
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(slot(session) for _ in range(concurrency)))
    wall = time.monotonic() - t0
    return {"records": records, "wall_s": wall, "stopped_by_deadline": state["stopped_by_deadline"],
            "summary": summarize(records, wall)}


async def run_open_load(conversations: Sequence[Conversation], pick: Callable[[], str], model: str, rate: float,
                        think_time: float = 0.0, seed: int = 1, request_timeout: float = 120.0,
                        max_seconds: float = 600.0, session_header: Optional[str] = None) -> Dict[str, Any]:
    """Plays the conversations open loop; returns the records and a summary.

    Conversations start at the times of a Poisson process (seeded: the same for every target)
    whose rate, times the workload's turns per conversation, offers ``rate`` requests a
    second; each plays its turns one after another, a think time after each reply. Nothing
    waits for a place: a router that serves slower has more requests in flight, and they
    queue in the replicas. No conversation starts after ``max_seconds``."""
    import aiohttp

    turns = sum(len(c.turns) for c in conversations)
    if not conversations or turns == 0 or rate <= 0:
        return {"records": [], "wall_s": 0.0, "stopped_by_deadline": False, "summary": summarize([], 0.0)}
    arrivals = random.Random(f"{seed}/arrivals")
    conversation_rate = rate * len(conversations) / turns
    records: List[Dict[str, Any]] = []
    state = {"sent": 0, "stopped_by_deadline": False}
    t0 = time.monotonic()
    deadline = t0 + max_seconds

    async def play(session, conv: Conversation) -> None:
        replies: List[str] = []
        for k in range(len(conv.turns)):
            seq = state["sent"]
            state["sent"] += 1
            rec, reply = await play_turn(session, pick(), model, conv, k, replies, session_header, request_timeout, seq)
            records.append(rec)
            if not rec["ok"] or k + 1 == len(conv.turns):
                return
            replies.append(reply)
            await asyncio.sleep(think_seconds(conv, k, think_time, seed))

    connector = aiohttp.TCPConnector(limit=0, force_close=False, enable_cleanup_closed=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = []
        start = t0
        for conv in conversations:
            start += arrivals.expovariate(conversation_rate)
            if start > deadline:
                state["stopped_by_deadline"] = True
                break
            await asyncio.sleep(max(0.0, start - time.monotonic()))
            tasks.append(asyncio.create_task(play(session, conv)))
        await asyncio.gather(*tasks)
    wall = time.monotonic() - t0
    return {"records": records, "wall_s": wall, "stopped_by_deadline": state["stopped_by_deadline"],
            "summary": summarize(records, wall)}


def summarize(records: Sequence[Dict[str, Any]], wall_s: float) -> Dict[str, Any]:
    """Totals of one run. ``ttft_ms.mean_warm`` leaves out the first tenth of the requests
    sent (``seq``): a run starts with every cache empty and ``concurrency`` new conversations
    at once, a burst of cold prefills every router has to get through."""
    ok = [r for r in records if r["ok"]]
    ttft = [r["ttft_s"] * 1000 for r in ok]
    warm_from = len(records) // 10
    ttft_warm = [r["ttft_s"] * 1000 for r in ok if r.get("seq", 0) >= warm_from]
    e2e = [r["e2e_s"] * 1000 for r in ok]
    out_tokens = sum(r["completion_tokens"] for r in ok)
    prompt = sum(r["prompt_tokens"] or 0 for r in ok)
    cached = sum(r["cached_tokens"] or 0 for r in ok)
    errors = Counter((r["error"] or "?").split(":")[0] for r in records if not r["ok"])

    def rnd(v: Optional[float]) -> Optional[float]:
        return None if v is None else round(v, 1)

    return {
        "requests": len(records), "ok": len(ok), "failed": len(records) - len(ok), "errors": dict(errors),
        "ttft_ms": {"mean": rnd(sum(ttft) / len(ttft) if ttft else None),
                    "mean_warm": rnd(sum(ttft_warm) / len(ttft_warm) if ttft_warm else None),
                    "p50": rnd(percentile(ttft, 50)), "p90": rnd(percentile(ttft, 90)),
                    "p99": rnd(percentile(ttft, 99)), "max": rnd(max(ttft) if ttft else None)},
        "e2e_ms": {"p50": rnd(percentile(e2e, 50)), "p90": rnd(percentile(e2e, 90))},
        "output_tokens": out_tokens, "output_tokens_per_s": round(out_tokens / wall_s, 1) if wall_s > 0 else None,
        "requests_per_s": round(len(ok) / wall_s, 2) if wall_s > 0 else None, "wall_s": round(wall_s, 2),
        "client_cached_ratio": round(cached / prompt, 4) if prompt else None,
    }
