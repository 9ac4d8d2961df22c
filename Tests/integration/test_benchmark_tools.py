"""The pieces of benchmarks/ that compute figures the README quotes: sse_client.py's pooling
of interleaved rounds (benchmarks/run merges one client run per round and target), and
`benchmarks/run --redis` end to end, briefly (that it measures both gateways and shows the
added latency, not what the figure is)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SSE_CLIENT = BENCHMARKS / "sse_client.py"


def client_output(ttfe, total, chunks, *, failed=0, errors=None, walls=(0.01,), max_open=1):
    return {
        "url": "http://127.0.0.1:1", "streams": len(ttfe) + failed, "rounds": 1, "completed": len(ttfe), "failed": failed,
        "errors": errors or {}, "events_per_stream": [20] if ttfe else [], "round_wall_s": list(walls),
        "connect_wall_s": [0.001], "max_open_at_once": max_open,
        "samples": {"ttfe_ms": list(ttfe), "total_ms": list(total), "chunks": list(chunks)},
    }


def merge(tmp_path: Path, *outputs, missing: int = 0):
    paths = []
    for i, out in enumerate(outputs):
        path = tmp_path / f"round{i}.json"
        path.write_text(json.dumps(out))
        paths.append(str(path))
    paths += [str(tmp_path / f"missing{i}.json") for i in range(missing)]
    run = subprocess.run([sys.executable, str(SSE_CLIENT), "--merge", *paths], capture_output=True, text=True, timeout=30)
    return run.returncode, json.loads(run.stdout)


def test_rounds_are_pooled_by_stream_not_averaged(tmp_path):
    # Round 1 is fast, round 2 slow: the pooled p50 and p99 are those of all 200 streams,
    # which averaging the two rounds' percentiles would not give.
    fast = client_output([1.0 + i / 100 for i in range(100)], [2.0] * 100, [1] * 100, walls=(0.02,), max_open=90)
    slow = client_output([10.0 + i / 10 for i in range(100)], [20.0] * 100, [2] * 100, walls=(0.04,), max_open=100)
    code, out = merge(tmp_path, fast, slow)
    assert code == 0
    assert out["completed"] == 200 and out["failed"] == 0 and out["rounds"] == 2
    assert out["ttfe_ms"]["p50"] == pytest.approx(1.99)  # the 100th of 200, nearest rank
    assert out["ttfe_ms"]["p99"] == pytest.approx(19.7)  # the 198th: the slow round's 98th
    assert out["ttfe_ms"]["max"] == pytest.approx(19.9)
    assert out["total_ms"]["p50"] == 2.0 and out["total_ms"]["p99"] == 20.0
    assert out["chunks_per_stream"]["p50"] == 1 and out["chunks_per_stream"]["max"] == 2
    assert out["round_wall_s"] == [0.02, 0.04]
    assert out["max_open_at_once"] == 100
    assert out["events_per_stream"] == [20]
    assert len(out["samples"]["ttfe_ms"]) == 200


def test_failures_and_a_crashed_round_are_counted(tmp_path):
    ok = client_output([1.0] * 10, [2.0] * 10, [1] * 10)
    bad = client_output([1.0] * 8, [2.0] * 8, [1] * 8, failed=2, errors={"timeout": 2})
    code, out = merge(tmp_path, ok, bad, missing=1)
    assert code == 1
    assert out["completed"] == 18
    assert out["failed"] == 3
    assert out["errors"] == {"timeout": 2, "client crashed": 1}


@pytest.mark.gateway
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_run_redis_compares_the_gateway_with_and_without_redis(gateway_binary_dir, tmp_path):
    # Its own tools only: the test does not install packages (benchmarks/run would).
    tools = ["wrk", "nginx", "redis-server", "redis-cli", "curl"]
    missing = [t for t in tools if shutil.which(t) is None]
    if not Path("/usr/lib/nginx/modules/ngx_http_echo_module.so").exists():
        missing.append("libnginx-mod-http-echo")
    if missing:
        pytest.skip(f"benchmarks/run --redis needs {', '.join(missing)}")
    argv = [str(BENCHMARKS / "run"), "--redis", "--bin-dir", str(gateway_binary_dir), "--duration", "1",
            "--warmup", "0", "--repeat", "1", "--redis-connections", "1,4"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "REDIS_"))}
    env["TMPDIR"] = str(tmp_path)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=200)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # its trap stops nginx, redis-server and both gateways
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        pytest.fail(f"benchmarks/run --redis did not finish in 200 s:\n{out[-3000:]}")
    assert proc.returncode == 0, out[-3000:]
    assert "| 1           | shared memory |" in out and "| 4           | Redis         |" in out, out[-3000:]
    used = re.search(r"Redis used: (\d+) scripts run \(EVALSHA/EVAL\) for (\d+) chat completions", out)
    assert used and int(used.group(1)) >= int(used.group(2)) > 0, out[-3000:]
    for c in ("1 connection", "4 connections"):
        assert re.search(rf"{c}: added p50 [+-]\d+\.\d{{3}} ms, p99 [+-]\d+\.\d{{3}} ms .* -> (MET|MISSED)", out), out[-3000:]
    assert not list(tmp_path.glob("llm-gateway-bench.*")), "the run directory was not removed"
