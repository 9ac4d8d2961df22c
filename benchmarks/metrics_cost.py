#!/usr/bin/env python3
"""benchmarks/metrics_cost.py: the worker CPU one GET /metrics costs, per build.

    python3 benchmarks/metrics_cost.py BIN_DIR [BIN_DIR ...]

For each build: a one-worker gateway in front of the fake vLLM, then wrk (-t1 -c4, 4 s,
pinned to CPU 1) asks /metrics in a loop; the worker's user+system CPU time over the run
divided by the scrapes answered is the cost of one (the HTTP handling included). Needs wrk
(benchmarks/run installs it). Everything on 127.0.0.1.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "Tests" / "integration"))

from fake_vllm import FakeVLLM  # noqa: E402
from gateway import Gateway  # noqa: E402


def worker_cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[-1].split()
    return (int(fields[11]) + int(fields[12])) / float(subprocess.check_output(["getconf", "CLK_TCK"]).strip())


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    fake = FakeVLLM.start(models=["m"])
    try:
        for bin_dir in sys.argv[1:]:
            gw = Gateway(bin_dir, workers=1, upstream=fake, env={"LOG_LEVEL": "warning"})
            try:
                gw.wait_ready()
                worker = gw.worker_pids()[0]
                before = worker_cpu_seconds(worker)
                out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c4", "-d4s", f"http://127.0.0.1:{gw.port}/metrics"],
                                     capture_output=True, text=True, check=True).stdout
                spent = worker_cpu_seconds(worker) - before
                scrapes = int(re.search(r"(\d+) requests in", out).group(1))
                print(f"{bin_dir}: {scrapes} scrapes, worker CPU {spent:.2f} s, {1e6 * spent / scrapes:.0f} us per scrape")
            finally:
                gw.stop()
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
