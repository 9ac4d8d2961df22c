#!/usr/bin/env python3
"""benchmarks/stall.py: the longest a single request can hold a worker's event loop.

    python3 benchmarks/stall.py [--bin-dir .build/release] [--rounds 5]

Starts the gateway (one worker, default body cap of 1 MiB, a model with a Hermes tool
parser) in front of the fake vLLM, then sends worst-case bodies of up to 1 MiB built for
each parser a request body meets (the JSON scanner, the tool pre-flight). While each is handled, a second connection to the same worker asks
`GET /health` back to back; the longest wait for one of those answers is how long the
event loop was held (minus one round trip). Prints, per body, the request's own time and
the longest `/health` wait, over `--rounds` sends. Everything on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "Tests" / "integration"))

from fake_vllm import FakeVLLM  # noqa: E402
from gateway import Gateway  # noqa: E402

CAP = 1 << 20


def padded(prefix: str, unit: str, suffix: str, cap: int = CAP - 64) -> bytes:
    """prefix + unit × n + suffix, as large as fits in `cap` bytes (units joined by commas)."""
    n = (cap - len(prefix) - len(suffix)) // (len(unit) + 1)
    return (prefix + ",".join([unit] * n) + suffix).encode()


def bodies() -> dict:
    head = '{"model":"tools","messages":[{"role":"user","content":"hi"}],'
    many_keys = "{" + ",".join(f'"k{i}":0' for i in range(80_000)) + "}"
    many_keys = many_keys[: many_keys.rfind(",", 0, CAP - 200)] + "}"
    tool = '{"type":"function","function":{"name":"f%d","parameters":{"type":"object","properties":%s}}}'
    props = "{" + ",".join(f'"p{i}":{{"type":"string"}}' for i in range(3000)) + "}"
    tools_wide = "[" + ",".join(tool % (i, props) for i in range(10)) + "]"
    return {
        "numbers": padded(head + '"x":[', "0", "]}"),
        "nested arrays (depth 64)": padded(head + '"x":[', "[" * 62 + "]" * 62, "]}"),
        "escaped strings": padded(head + '"x":["', "\\u0041\\n\\\"", '"]}'),
        "top-level keys": (head + '"x":' + many_keys + "}").encode()[: CAP - 1],
        "20,000 tools (over the cap)": padded(head + '"tools":[', '{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}', "]}"),
        "128 tools, 1 MiB of schemas": (head + '"tools":' + tools_wide + "}").encode(),
        "1 tool, 1 MiB of properties": (head + '"tools":[' + tool % (0, "{" + ",".join(f'"p{i}":{{}}' for i in range(60_000)) + "}") + "]}").encode(),
        "tool names to compare": (head + '"tools":[' + ",".join(tool % (i, "{}") for i in range(128)) + "]}").encode(),
    }


def health_prober(port: int, stop: threading.Event, waits: list) -> None:
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(30)
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    try:
        while not stop.is_set():
            t0 = time.perf_counter()
            s.sendall(request)
            data = b""
            while not data.endswith(b'{"status":"ok"}'):
                chunk = s.recv(4096)
                if not chunk:
                    return
                data += chunk
            waits.append(time.perf_counter() - t0)
    finally:
        s.close()


def post(port: int, body: bytes) -> tuple:
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(60)
    t0 = time.perf_counter()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
              + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    status = int(data[9:12]) if len(data) >= 12 else 0
    return status, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin-dir", default=str(HERE.parent / ".build" / "release"))
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    fake = FakeVLLM.start(models=["tools-upstream"])
    workdir = Path(tempfile.mkdtemp(prefix="llm-gateway-stall-"))
    config = workdir / "gateway.yaml"
    config.write_text(
        "upstreams:\n  a: { url: %s }\nmodels:\n  tools: { upstreams: [a], upstream_model: tools-upstream, tool_parser: hermes }\n"
        % fake.url)
    gw = Gateway(args.bin_dir, workers=1, config=config, env={"RATE_LIMIT_RPM": "1000000", "LOG_LEVEL": "warning"})
    port = gw.port
    try:
        gw.wait_ready()
        print(f"{'body':32} {'bytes':>9} {'status':>6} {'request p50 / max ms':>22} {'longest /health wait ms':>24}")
        for name, body in bodies().items():
            assert len(body) <= CAP, (name, len(body))
            json.loads(body)  # every body is valid JSON: the parsers' worst case, not an early refusal
            times, stalls, statuses = [], [], set()
            for _ in range(args.rounds):
                stop, waits = threading.Event(), []
                prober = threading.Thread(target=health_prober, args=(port, stop, waits))
                prober.start()
                time.sleep(0.05)
                status, seconds = post(port, body)
                time.sleep(0.05)
                stop.set()
                prober.join()
                times.append(seconds)
                stalls.append(max(waits) if waits else float("nan"))
                statuses.add(status)
            times.sort()
            print(f"{name:32} {len(body):>9} {'/'.join(map(str, sorted(statuses))):>6} "
                  f"{times[len(times) // 2] * 1e3:>11.2f} / {times[-1] * 1e3:>8.2f} {max(stalls) * 1e3:>24.2f}")
    finally:
        gw.stop()
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
