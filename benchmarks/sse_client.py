#!/usr/bin/env python3
"""Concurrent SSE streaming client for benchmarks/run (standard library only).

Opens K connections, then sends K ``stream: true`` chat completions at the same instant
and reads every stream to ``data: [DONE]``. Per stream it records the time from sending
the request to the first complete SSE event (time to first event, TTFE) and to the end
of the stream (total). It also tracks how many streams were open at once (first event
received, [DONE] not yet), which is how ``--streams 5000`` checks that the target
holds them all.

    sse_client.py --url http://127.0.0.1:8000 --streams 100 --rounds 5 [--key bench-key]
    sse_client.py --merge A.json B.json ...

Prints one JSON object on stdout, with every stream's figures under "samples". Exit code
0 when every stream completed (HTTP 200, the expected number of events, [DONE]), 1
otherwise. ``--merge`` pools the samples of earlier outputs (rounds run at different
times, interleaved with other targets by benchmarks/run) and prints the same summary.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.parse
from typing import Any, Dict, List, Optional

BODY = {"model": "bench", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


class Tracker:
    def __init__(self) -> None:
        self.open = 0
        self.max_open = 0
        self.connected = 0

    def opened(self) -> None:
        self.open += 1
        self.max_open = max(self.max_open, self.open)

    def closed(self) -> None:
        self.open -= 1


def percentile(values: List[float], p: float) -> Optional[float]:
    """Nearest-rank percentile (p in 0..100), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


async def read_body_chunks(reader: asyncio.StreamReader, headers: Dict[str, str]):
    """Yields the decoded response body piece by piece (chunked, sized or to EOF)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return
            data = await reader.readexactly(size)
            await reader.readexactly(2)
            yield data
    elif "content-length" in headers:
        remaining = int(headers["content-length"])
        while remaining > 0:
            data = await reader.read(min(65536, remaining))
            if not data:
                raise ConnectionError("EOF before content-length")
            remaining -= len(data)
            yield data
    else:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            yield data


async def one_stream(host: str, port: int, path: str, key: Optional[str], go: asyncio.Event,
                     connect_sem: asyncio.Semaphore, tracker: Tracker, deadline: float) -> Dict[str, Any]:
    result: Dict[str, Any] = {"ok": False, "status": None, "events": 0, "done": False,
                              "ttfe": None, "total": None, "error": None, "chunks": 0}
    body = json.dumps(BODY, separators=(",", ":")).encode()
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
            "Accept: text/event-stream", f"Content-Length: {len(body)}"]
    if key:
        head.append(f"Authorization: Bearer {key}")
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    writer = None
    counted_open = False
    try:
        async with connect_sem:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=1 << 20),
                                                    max(0.1, deadline - time.monotonic()))
        tracker.connected += 1
        await go.wait()

        async def exchange() -> None:
            nonlocal counted_open
            t0 = time.perf_counter()
            writer.write(request)
            await writer.drain()
            raw = await reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            result["status"] = int(lines[0].split(" ", 2)[1])
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            buf = b""
            async for piece in read_body_chunks(reader, headers):
                result["chunks"] += 1  # body pieces: HTTP chunks when chunked (what the client parses)
                buf += piece
                while b"\n\n" in buf:
                    event, buf = buf.split(b"\n\n", 1)
                    event = event.strip(b"\r\n")
                    if not event.startswith(b"data:"):
                        continue
                    if result["ttfe"] is None:
                        result["ttfe"] = time.perf_counter() - t0
                        tracker.opened()
                        counted_open = True
                    if event[5:].strip() == b"[DONE]":
                        result["done"] = True
                        result["total"] = time.perf_counter() - t0
                        return
                    result["events"] += 1
            result["total"] = time.perf_counter() - t0

        await asyncio.wait_for(exchange(), max(0.1, deadline - time.monotonic()))
        result["ok"] = result["status"] == 200 and result["done"]
    except asyncio.TimeoutError:
        result["error"] = "timeout"
    except (OSError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
        result["error"] = type(e).__name__ + (f": {e}" if str(e) else "")
    finally:
        if counted_open:
            tracker.closed()
        if writer is not None:
            writer.close()
    return result


async def run_round(args, tracker: Tracker) -> Dict[str, Any]:
    u = urllib.parse.urlsplit(args.url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    path = (u.path.rstrip("/") or "") + "/v1/chat/completions"
    go = asyncio.Event()
    sem = asyncio.Semaphore(args.connect_concurrency)
    deadline = time.monotonic() + args.timeout
    tasks = [asyncio.ensure_future(one_stream(host, port, path, args.key, go, sem, tracker, deadline))
             for _ in range(args.streams)]
    # Fire together once every connection is open (bounded by the deadline).
    while tracker.connected + sum(1 for t in tasks if t.done()) < args.streams and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    connect_wall = time.monotonic() - (deadline - args.timeout)
    t0 = time.perf_counter()
    go.set()

    sampler_open: List[int] = []

    async def sample() -> None:
        while True:
            sampler_open.append(tracker.open)
            await asyncio.sleep(0.25)

    sampler = asyncio.ensure_future(sample())
    results = await asyncio.gather(*tasks)
    sampler.cancel()
    wall = time.perf_counter() - t0
    return {"results": results, "wall": wall, "connect_wall": connect_wall}


async def main_async(args) -> Dict[str, Any]:
    all_results: List[Dict[str, Any]] = []
    walls: List[float] = []
    max_open = 0
    connect_walls = []
    for _ in range(args.rounds):
        tracker = Tracker()
        r = await run_round(args, tracker)
        all_results.extend(r["results"])
        walls.append(r["wall"])
        connect_walls.append(r["connect_wall"])
        max_open = max(max_open, tracker.max_open)
    ok = [r for r in all_results if r["ok"]]
    errors: Dict[str, int] = {}
    for r in all_results:
        if not r["ok"]:
            why = r["error"] or (f"status {r['status']}" if r["status"] != 200 else "no [DONE]")
            errors[why] = errors.get(why, 0) + 1
    return summary(
        url=args.url, streams=args.streams, rounds=args.rounds, failed=len(all_results) - len(ok), errors=errors,
        events=sorted({r["events"] for r in ok}), ttfe=[r["ttfe"] * 1000 for r in ok], total=[r["total"] * 1000 for r in ok],
        chunks=[r["chunks"] for r in ok], walls=walls, connect_walls=connect_walls, max_open=max_open)


def summary(*, url: str, streams: int, rounds: int, failed: int, errors: Dict[str, int], events: List[int],
            ttfe: List[float], total: List[float], chunks: List[int], walls: List[float], connect_walls: List[float],
            max_open: int) -> Dict[str, Any]:
    return {
        "url": url, "streams": streams, "rounds": rounds,
        "completed": len(ttfe), "failed": failed, "errors": errors,
        "events_per_stream": events,
        "ttfe_ms": {"p50": percentile(ttfe, 50), "p99": percentile(ttfe, 99), "max": max(ttfe) if ttfe else None},
        "total_ms": {"p50": percentile(total, 50), "p99": percentile(total, 99), "max": max(total) if total else None},
        "chunks_per_stream": {"p50": percentile(chunks, 50), "max": max(chunks) if chunks else None},
        "round_wall_s": walls, "connect_wall_s": connect_walls,
        "max_open_at_once": max_open,
        "samples": {"ttfe_ms": ttfe, "total_ms": total, "chunks": chunks},
    }


def merge(paths: List[str]) -> Dict[str, Any]:
    """One summary of several outputs' streams (a file that is missing or not JSON counts as
    one failed stream: the client crashed)."""
    parts = []
    for path in paths:
        try:
            with open(path) as f:
                parts.append(json.load(f))
        except (OSError, ValueError):
            parts.append({"failed": 1, "errors": {"client crashed": 1}})
    errors: Dict[str, int] = {}
    for part in parts:
        for why, n in (part.get("errors") or {}).items():
            errors[why] = errors.get(why, 0) + n
    pooled = lambda key: [x for part in parts for x in (part.get("samples") or {}).get(key, [])]  # noqa: E731
    return summary(
        url=next((part["url"] for part in parts if "url" in part), ""), streams=max(part.get("streams", 0) for part in parts),
        rounds=sum(part.get("rounds", 0) for part in parts), failed=sum(max(0, part.get("failed", 0)) for part in parts),
        errors=errors, events=sorted({e for part in parts for e in part.get("events_per_stream", [])}),
        ttfe=pooled("ttfe_ms"), total=pooled("total_ms"), chunks=pooled("chunks"),
        walls=[w for part in parts for w in part.get("round_wall_s", [])],
        connect_walls=[w for part in parts for w in part.get("connect_wall_s", [])],
        max_open=max(part.get("max_open_at_once", 0) for part in parts))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="pool the streams of earlier outputs instead of running")
    ap.add_argument("--url", help="root URL of the target (no /v1)")
    ap.add_argument("--streams", type=int, default=100, help="concurrent streams per round")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--key", default=None, help="bearer key to send")
    ap.add_argument("--timeout", type=float, default=60.0, help="limit for one round, seconds")
    ap.add_argument("--connect-concurrency", type=int, default=1000,
                    help="connections being opened at once (all are open before the requests go)")
    ap.add_argument("--expect-events", type=int, default=0, help="fail streams with another event count")
    args = ap.parse_args()
    if args.merge:
        out = merge(args.merge)
        print(json.dumps(out))
        return 0 if out["failed"] == 0 else 1
    if not args.url:
        ap.error("--url is required (or --merge)")
    out = asyncio.run(main_async(args))
    if args.expect_events and out["events_per_stream"] not in ([], [args.expect_events]):
        out["errors"]["unexpected event count"] = out["completed"]
        out["failed"] += out["completed"]
        out["completed"] = 0
        out["samples"] = {"ttfe_ms": [], "total_ms": [], "chunks": []}  # none counts when merged
    print(json.dumps(out))
    return 0 if out["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
