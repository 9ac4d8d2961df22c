#!/usr/bin/env python3
"""benchmarks/routing/run.py: routing across vLLM replicas, on simulated replicas.

Starts ``--replicas`` (4) replica simulators (replica_sim.py) on 127.0.0.1, then for each
target and workload: resets the replicas (``POST /reset``: empty caches, zero counters),
starts the target in front of them, plays the workload (loadgen.py: closed loop,
streaming) and stops the target. Targets:

* ``direct-random``: the client picks a replica at random for every request (no router).
* ``vllm-router:cache_aware``, ``vllm-router:round_robin``: PyPI's ``vllm-router``
  (0.1.17; installed on first use into ``--router-venv``), ``--policy`` as named,
  ``--worker-urls`` = the replicas, its other settings at their defaults.
* ``gateway:least_loaded``, ``gateway:cache_aware``, ``gateway:round_robin``: llm-gateway
  from ``--gateway-bin-dir`` with a config file whose one model has the replicas as
  upstreams and ``routing:`` as named. A gateway that refuses the config (a build from
  before ``routing:``) or is missing is reported "not available"; the run goes on.
  ``gateway:default`` (only when named): the same config without ``routing:``.

``--targets`` takes names or groups (``direct-random``, ``vllm-router``, ``gateway``,
``all``). Per target and workload it reports the prefix-cache hit rate (the replicas'
``vllm:prefix_cache_hits_total / vllm:prefix_cache_queries_total``), client-side TTFT
p50/p90 of the streams, output tokens/s and requests/s over the run's wall time, and
the requests each replica served. Markdown table on stdout, JSON in ``--json`` (default
``RUN_DIR/results.json``); logs in the run directory. Everything listens on 127.0.0.1;
each run is bounded by ``--max-seconds``. ``--quick``: a small run for tests.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO_ROOT / "Tests" / "integration"))

from loadgen import run_load, run_open_load  # noqa: E402
from replica_sim import DEFAULT_MODEL, ReplicaSim, metric_sum  # noqa: E402
from workload import KINDS, add_arguments, build, describe, params_from  # noqa: E402

ROUTER_PACKAGE = "vllm-router==0.1.17"
TARGET_GROUPS = {
    "direct-random": ["direct-random"],
    "vllm-router": ["vllm-router:cache_aware", "vllm-router:round_robin"],
    "gateway": ["gateway:least_loaded", "gateway:cache_aware", "gateway:round_robin"],
}
ALL_TARGETS = [t for group in TARGET_GROUPS.values() for t in group]
# Opt-in: the gateway with no routing: key (whatever the build does by default).
EXTRA_TARGETS = ["gateway:default"]


_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[routing {time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str, timeout: float = 2.0) -> Optional[int]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def expand_targets(spec: str) -> List[str]:
    out: List[str] = []
    for name in (s.strip() for s in spec.split(",") if s.strip()):
        names = ALL_TARGETS if name == "all" else TARGET_GROUPS.get(name, [name])
        for t in names:
            if t not in ALL_TARGETS + EXTRA_TARGETS:
                raise SystemExit(f"unknown target {t!r} (known: {', '.join(ALL_TARGETS + EXTRA_TARGETS)}, or a group: "
                                 f"{', '.join(TARGET_GROUPS)}, all)")
            if t not in out:
                out.append(t)
    return out


# --------------------------------------------------------------------------------------
# vllm-router
# --------------------------------------------------------------------------------------

def default_router_venv() -> Path:
    return Path(os.environ.get("LLM_GATEWAY_ROUTER_VENV") or "/var/cache/llm-gateway/vllm-router-venv")


def ensure_vllm_router(venv: Path, install: bool) -> Path:
    """The vllm-router executable in venv, installing ROUTER_PACKAGE there if needed
    (a stamp file records it; a lock file keeps concurrent runs apart). Raises
    RuntimeError with the reason when it cannot be had."""
    exe = venv / "bin" / "vllm-router"
    stamp = venv / ".llm-gateway-stamp"

    def ready() -> bool:
        return exe.is_file() and stamp.is_file() and stamp.read_text().strip() == ROUTER_PACKAGE

    if ready():
        return exe
    if not install:
        raise RuntimeError(f"{ROUTER_PACKAGE} is not installed in {venv} (and --no-install)")
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(str(venv) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready():
            return exe
        log(f"installing {ROUTER_PACKAGE} into {venv}")
        steps = [[sys.executable, "-m", "venv", "--clear", str(venv)],
                 [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                  ROUTER_PACKAGE]]
        for cmd in steps:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if p.returncode != 0:
                raise RuntimeError(f"`{' '.join(cmd[-3:])}` failed: {(p.stderr or p.stdout).strip()[-400:]}")
        p = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
        if p.returncode != 0 or "--policy" not in p.stdout:
            raise RuntimeError(f"{exe} --help failed: {(p.stderr or p.stdout).strip()[-400:]}")
        stamp.write_text(ROUTER_PACKAGE + "\n")
    return exe


def stop_process_group(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


# --------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------

class Unavailable(Exception):
    pass


@contextlib.contextmanager
def start_target(target: str, a: argparse.Namespace, replicas: Sequence[ReplicaSim], run_dir: Path,
                 label: str) -> Iterator[Callable[[], str]]:
    """Starts target in front of the replicas; yields pick() -> base URL of the next
    request. Raises Unavailable(reason) when the target cannot run."""
    urls = [r.url for r in replicas]
    kind, _, policy = target.partition(":")
    if kind == "direct-random":
        rng = random.Random(a.seed)
        yield lambda: rng.choice(urls)
        return
    if kind == "vllm-router":
        try:
            exe = ensure_vllm_router(a.router_venv, not a.no_install)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            raise Unavailable(str(e)) from None
        port = free_port()
        cmd = [str(exe), "--host", "127.0.0.1", "--port", str(port), "--worker-urls", *urls, "--policy", policy,
               "--worker-startup-check-interval", "1", "--prometheus-host", "127.0.0.1",
               "--prometheus-port", str(free_port()), "--log-level", "warning"]
        log_path = run_dir / f"{label}.log"
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env={**os.environ, "NO_COLOR": "1"})
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while http_status(base + "/health") != 200:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
                    raise Unavailable(f"vllm-router did not become healthy (rc={proc.poll()}): {' | '.join(tail)}")
                time.sleep(0.2)
            yield lambda: base
        finally:
            stop_process_group(proc)
        return
    if kind == "gateway":
        from gateway import Gateway, GatewayStartError, missing_binaries
        bin_dir = Path(a.gateway_bin_dir)
        missing = missing_binaries(bin_dir)
        if missing:
            raise Unavailable(f"{', '.join(missing)} missing in {bin_dir} (build with `swift build -c release`)")
        ups = "\n".join(f"  r{i}: {{ url: {u} }}" for i, u in enumerate(urls))
        names = ", ".join(f"r{i}" for i in range(len(urls)))
        config = (f"upstreams:\n{ups}\nmodels:\n  {a.model}:\n    upstreams: [{names}]\n"
                  + ("" if policy == "default" else f"    routing: {policy}\n"))
        workdir = run_dir / label
        workdir.mkdir(parents=True, exist_ok=True)
        env = {"RATE_LIMIT_RPM": "100000000", "LOG_LEVEL": a.gateway_log_level}
        env.update(kv.split("=", 1) for kv in a.gateway_env)
        gw = Gateway(bin_dir, workers=a.gateway_workers, config=config, env=env, workdir=workdir,
                     log_path=run_dir / f"{label}.log", start=False, health_timeout=30.0)
        try:
            try:
                gw.start(wait_healthy=True)
            except GatewayStartError as e:
                lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
                why = next((ln for ln in lines if "invalid configuration" in ln or "routing" in ln), lines[0])
                why = why.split("invalid configuration: ", 1)[-1].replace(str(workdir / "config.yaml") + ": ", "")
                raise Unavailable(f"the gateway refused the config: {why[:300]}") from None
            try:
                gw.wait_ready(timeout=20.0)
            except AssertionError as e:
                log(f"warning: {label}: /ready is not 200: {str(e).splitlines()[0][:200]}")
            yield lambda: gw.url
        finally:
            gw.stop()
        return
    raise Unavailable(f"unknown target {target}")


# --------------------------------------------------------------------------------------
# One measurement
# --------------------------------------------------------------------------------------

def replica_counters(replicas: Sequence[ReplicaSim]) -> List[Dict[str, float]]:
    out = []
    for r in replicas:
        s = r.metrics()
        out.append({"queries": metric_sum(s, "vllm:prefix_cache_queries_total"),
                    "hits": metric_sum(s, "vllm:prefix_cache_hits_total"),
                    "finished": metric_sum(s, "vllm:request_success_total", finished_reason="length"),
                    "aborted": metric_sum(s, "vllm:request_success_total", finished_reason="abort"),
                    "queue_s": metric_sum(s, "vllm:request_queue_time_seconds_sum"),
                    "queued": metric_sum(s, "vllm:request_queue_time_seconds_count")})
    return out


def wait_idle(replicas: Sequence[ReplicaSim], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(st["running"] == 0 and st["waiting"] == 0 for st in (r.state() for r in replicas)):
            return
        time.sleep(0.1)


def run_one(target: str, kind: str, convs, a: argparse.Namespace, replicas: Sequence[ReplicaSim],
            run_dir: Path, rep: int = 0) -> Dict[str, Any]:
    level = f"rate{a.rate:g}" if a.rate else str(a.concurrency)
    label = f"{target.replace(':', '-')}-{kind}-{level}" + (f"-run{rep + 1}" if rep else "")
    wait_idle(replicas)
    for r in replicas:
        r.reset()
    result: Dict[str, Any] = {"target": target, "workload": kind, "concurrency": None if a.rate else a.concurrency,
                              "rate": a.rate or None, "available": True, "run": rep + 1}
    try:
        with start_target(target, a, replicas, run_dir, label) as pick:
            if a.rate:
                load = asyncio.run(run_open_load(convs, pick, a.model, a.rate, a.think_time, a.seed, a.request_timeout,
                                                 a.max_seconds, a.session_header or None))
            else:
                load = asyncio.run(run_load(convs, pick, a.model, a.concurrency, a.open_conversations, a.think_time,
                                            a.seed, a.request_timeout, a.max_seconds, a.session_header or None))
    except Unavailable as e:
        return {**result, "available": False, "reason": str(e)}
    wait_idle(replicas)
    counters = replica_counters(replicas)
    queries = sum(c["queries"] for c in counters)
    hits = sum(c["hits"] for c in counters)
    queued = sum(c["queued"] for c in counters)
    with open(run_dir / f"{label}.requests.jsonl", "w") as f:
        for rec in load["records"]:
            f.write(json.dumps(rec) + "\n")
    return {**result, **load["summary"], "stopped_by_deadline": load["stopped_by_deadline"],
            "prefix_hit_rate": round(hits / queries, 4) if queries else None,
            # Time in the engines' waiting queues (vllm:request_queue_time_seconds): the part of
            # the time to first token spent waiting for a place in a full batch.
            "engine_queue_ms_mean": round(1000 * sum(c["queue_s"] for c in counters) / queued, 1) if queued else None,
            "replicas": [{"url": r.url, **c} for r, c in zip(replicas, counters)]}


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------

def fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    if pct:
        return f"{100 * v:.1f}%"
    if isinstance(v, float):
        return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}"
    return str(v)


def load_label(r: Dict[str, Any]) -> str:
    """A result's load level as the table shows it."""
    return f"{r['rate']:g} req/s" if r.get("rate") else f"{r['concurrency']} in flight"


def workload_lines(sizes: Dict[str, Dict[str, Any]], a: argparse.Namespace) -> str:
    out = []
    for k, d in sizes.items():
        loads = []
        if a.levels:
            loads.append(f"{' and '.join(map(str, a.levels))} in flight ({a.replicas} x {a.max_num_seqs} batch places), "
                         f"{a.open_conversations_arg or 'twice as many'} conversations open")
        if a.rates and k == "shared":
            loads.append(f"open loop at {' and '.join(f'{r:g}' for r in a.rates)} requests/s")
        line = (f"- {k}: {d['requests']} requests in {d['conversations']} conversations, avg prompt "
                f"{d['avg_prompt_tokens']} tokens; {'; '.join(loads)}; think time {a.think_time} s; "
                f"{a.replicas} replicas of {a.num_gpu_blocks} blocks x {a.block_size} tokens")
        if d["tenants"]:
            line += (f"; {d['tenants']} tenants' system prompts {d['system_prompt_blocks']} blocks; best possible "
                     f"prefix-cache hit rate {100 * d['ideal_hit_rate']:.1f}%")
        out.append(line)
    return "\n".join(out)


def table(results: Sequence[Dict[str, Any]]) -> str:
    runs = max((r.get("run", 1) for r in results), default=1) > 1
    head = ("| workload | load | target | ok / failed | prefix-cache hits | TTFT mean ms | TTFT mean ms, warm "
            "| TTFT p50 ms | TTFT p90 ms | queued ms mean | output tok/s | req/s | requests per replica |")
    lines = [head, "|" + "---|" * 13]
    for r in results:
        target = f"{r['target']} (run {r.get('run', 1)})" if runs else r["target"]
        if not r["available"]:
            lines.append(f"| {r['workload']} | {load_label(r)} | {target} | not available: "
                         f"{r['reason'][:110].replace('|', '/')} | | | | | | | | | |")
            continue
        per = " / ".join(str(int(x["finished"])) for x in r["replicas"])
        flag = " (deadline)" if r.get("stopped_by_deadline") else ""
        lines.append(f"| {r['workload']} | {load_label(r)} | {target} | {r['ok']} / {r['failed']}{flag} | "
                     f"{fmt(r['prefix_hit_rate'], pct=True)} | {fmt(r['ttft_ms'].get('mean'))} | {fmt(r['ttft_ms'].get('mean_warm'))} | "
                     f"{fmt(r['ttft_ms']['p50'])} | "
                     f"{fmt(r['ttft_ms']['p90'])} | {fmt(r.get('engine_queue_ms_mean'))} | "
                     f"{fmt(r['output_tokens_per_s'])} | {fmt(r['requests_per_s'])} | {per} |")
    return "\n".join(lines)


def ratios(results: Sequence[Dict[str, Any]], base: str = "gateway:least_loaded") -> str:
    """Each target's mean time to first token over ``base``'s, run by run (each against the
    same run's ``base``), per workload and level: how the ratio moves from run to run."""
    done = [r for r in results if r["available"] and r["ok"] and r["ttft_ms"].get("mean")]
    key = lambda r: (r["workload"], load_label(r), r.get("run", 1))
    bases = {key(r): r["ttft_ms"]["mean"] for r in done if r["target"] == base}
    rows: Dict[tuple, List[float]] = {}
    for r in done:
        if r["target"] != base and key(r) in bases:
            rows.setdefault((r["workload"], load_label(r), r["target"]), []).append(r["ttft_ms"]["mean"] / bases[key(r)])
    if not rows:
        return ""
    lines = [f"| workload | load | target | TTFT mean / {base}'s, each run | median |", "|---|---|---|---|---|"]
    for (kind, level, target), values in rows.items():
        lines.append(f"| {kind} | {level} | {target} | {' / '.join(f'{v:.2f}' for v in values)} | "
                     f"{statistics.median(values):.2f} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------

def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/routing/run",
                                description="Routing across vLLM replicas: direct, vllm-router, llm-gateway, "
                                            "on simulated replicas (benchmarks/routing/README.md)")
    p.add_argument("--targets", default="all", help="comma-separated targets or groups: "
                   + ", ".join(ALL_TARGETS + EXTRA_TARGETS) + "; groups direct-random, vllm-router, gateway, "
                   "all (default: all but gateway:default)")
    p.add_argument("--workloads", default=",".join(KINDS), help="comma-separated: shared, random")
    p.add_argument("--quick", action="store_true", help="a small run (tests): few requests and users")
    p.add_argument("--requests", type=int, default=600, help="requests of the shared-prefix workload")
    p.add_argument("--random-requests", type=int, default=200, help="requests of the random workload")
    p.add_argument("--concurrency", default="24,32",
                   help="requests in flight (closed loop), comma-separated: each workload runs at each level "
                        "(default 24,32: three quarters of the replicas' batch places, and all of them)")
    p.add_argument("--rates", default=None,
                   help="open-loop levels of the shared workload, requests/s, comma-separated: conversations "
                        "arrive at random (Poisson) times whatever is in flight, as vLLM's benchmark_serving "
                        "--request-rate (default 14,16: about 80 and 90 %% of what least_loaded serves with every "
                        "batch place taken; none with --quick; '' for none; --concurrency '' runs these alone)")
    p.add_argument("--open-conversations", type=int, default=0,
                   help="conversations open at a time (default: 2 x concurrency)")
    p.add_argument("--think-time", type=float, default=0.5,
                   help="mean seconds between a reply and the conversation's next turn (exponential)")
    p.add_argument("--repeat", type=int, default=1,
                   help="run every target this many times over (in turn, so that drift of the machine "
                        "touches each alike) and report each run, and each target's mean TTFT over "
                        "gateway:least_loaded's run by run")
    p.add_argument("--max-seconds", type=float, default=240.0, help="bound of one target's run of one workload")
    p.add_argument("--request-timeout", type=float, default=120.0)
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--model", default=DEFAULT_MODEL)
    g = p.add_argument_group("replicas (replica_sim.py)")
    g.add_argument("--num-gpu-blocks", type=int, default=1280)
    g.add_argument("--block-size", type=int, default=16)
    g.add_argument("--max-num-seqs", type=int, default=8)
    g.add_argument("--max-num-batched-tokens", type=int, default=2048)
    g.add_argument("--prefill-us-per-token", type=float, default=100.0)
    g.add_argument("--decode-ms-per-step", type=float, default=15.0)
    g.add_argument("--decode-us-per-seq", type=float, default=250.0)
    g.add_argument("--max-loras", type=int, default=2, help="LoRA slots (only for the metric: no adapters run)")
    w = p.add_argument_group("workload (workload.py)")
    add_arguments(w)
    t = p.add_argument_group("targets")
    t.add_argument("--gateway-bin-dir",
                   default=os.environ.get("LLM_GATEWAY_BIN_DIR") or str(REPO_ROOT / ".build" / "release"))
    t.add_argument("--gateway-workers", type=int, default=2)
    t.add_argument("--gateway-log-level", default="warning")
    t.add_argument("--gateway-env", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for the gateway (repeatable), e.g. ROUTING_RUNNING_REQUEST_TOKENS=128")
    t.add_argument("--router-venv", type=Path, default=default_router_venv(),
                   help="venv for vllm-router (env LLM_GATEWAY_ROUTER_VENV)")
    t.add_argument("--no-install", action="store_true", help="do not install vllm-router when missing")
    t.add_argument("--session-header", nargs="?", const="x-session-id", default="",
                   help="send the conversation id in this header (default x-session-id when given bare)")
    p.add_argument("--run-dir", type=Path, default=None, help="logs and per-request records (default: a new temp dir)")
    p.add_argument("--json", type=Path, default=None, help="results JSON (default RUN_DIR/results.json)")
    a = p.parse_args(argv)
    a.open_conversations_arg = a.open_conversations
    try:
        a.levels = [int(x) for x in str(a.concurrency).split(",") if x.strip()]
    except ValueError:
        p.error(f"--concurrency: whole numbers, comma-separated: {a.concurrency!r}")
    if a.rates is None:
        a.rates = "" if a.quick else "14,16"
    try:
        a.rates = [float(x) for x in str(a.rates).split(",") if x.strip()]
    except ValueError:
        p.error(f"--rates: numbers, comma-separated: {a.rates!r}")
    if (a.levels and min(a.levels) < 1) or (a.rates and not min(a.rates) > 0) or not (a.levels or a.rates):
        p.error(f"--concurrency / --rates: at least one level, each above 0: {a.concurrency!r} / {a.rates!r}")
    if a.repeat < 1:
        p.error(f"--repeat: 1 or more: {a.repeat}")
    if a.quick:
        a.requests = min(a.requests, 48)
        a.random_requests = min(a.random_requests, 16)
        a.levels = sorted({min(c, 12) for c in a.levels})
        a.rates = sorted({min(r, 8.0) for r in a.rates})
        a.think_time = min(a.think_time, 0.2)
        a.max_seconds = min(a.max_seconds, 60.0)
    a.concurrency = a.levels[-1] if a.levels else 0
    a.rate = 0.0
    # (An open loop has as many open as arrive: the workload's live-size estimate takes 64.)
    a.open_conversations = a.open_conversations or (2 * a.concurrency if a.concurrency else 64)
    return a


def at_level(a: argparse.Namespace, level: tuple) -> argparse.Namespace:
    """The arguments of one load level: ``("in flight", n)``, n in flight with (unless
    given) twice as many conversations open; or ``("rate", r)``, open loop at r requests/s."""
    out = argparse.Namespace(**vars(a))
    kind, value = level
    if kind == "rate":
        out.rate = value
    else:
        out.concurrency = value
        out.open_conversations = a.open_conversations_arg or 2 * value
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = parse_args(argv)
    targets = expand_targets(a.targets)
    kinds = [k.strip() for k in a.workloads.split(",") if k.strip()]
    for k in kinds:
        if k not in KINDS:
            raise SystemExit(f"unknown workload {k!r} (known: {', '.join(KINDS)})")
    run_dir = a.run_dir or Path(tempfile.mkdtemp(prefix="routing-bench-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    json_path = a.json or run_dir / "results.json"
    counts = {"shared": a.requests, "random": a.random_requests}
    workloads = {k: build(params_from(a, k, counts[k])) for k in kinds}
    sizes = {k: describe(c, a.block_size, a.num_gpu_blocks, a.replicas, a.open_conversations)
             for k, c in workloads.items()}
    for k, d in sizes.items():
        log(f"workload {k}: {d['requests']} requests in {d['conversations']} conversations, avg prompt "
            f"{d['avg_prompt_tokens']} tokens; system prompts {d['system_prompt_blocks']} blocks, live estimate "
            f"{d['live_blocks_estimate']} blocks vs {a.num_gpu_blocks} per replica, "
            f"{a.num_gpu_blocks * a.replicas} in all")
    log(f"run directory {run_dir}")
    started = time.time()
    replicas: List[ReplicaSim] = []
    results: List[Dict[str, Any]] = []
    try:
        for i in range(a.replicas):
            replicas.append(ReplicaSim.start(
                workdir=str(run_dir), name=f"replica-r{i}", model=a.model, replica_id=f"r{i}",
                num_gpu_blocks=a.num_gpu_blocks,
                block_size=a.block_size, max_num_seqs=a.max_num_seqs, max_num_batched_tokens=a.max_num_batched_tokens,
                prefill_us_per_token=a.prefill_us_per_token, decode_ms_per_step=a.decode_ms_per_step,
                decode_us_per_seq=a.decode_us_per_seq, max_loras=a.max_loras))
        runs = [(kind, ("in flight", n)) for n in a.levels for kind in kinds]
        runs += [("shared", ("rate", r)) for r in a.rates if "shared" in kinds]
        unavailable = set()
        for rep in range(a.repeat):
            for target in targets:
                if target in unavailable:
                    continue
                for n, (kind, level) in enumerate(runs):
                    shown = f"{level[1]:g} req/s" if level[0] == "rate" else f"{level[1]} in flight"
                    log(f"{target} / {kind} / {shown}" + (f" (run {rep + 1} of {a.repeat})" if a.repeat > 1 else "") + " ...")
                    res = run_one(target, kind, workloads[kind], at_level(a, level), replicas, run_dir, rep)
                    results.append(res)
                    if not res["available"]:
                        log(f"{target}: not available: {res['reason']}")
                        results += [{**res, "workload": k, "concurrency": None if kind_ == "rate" else v,
                                     "rate": v if kind_ == "rate" else None} for k, (kind_, v) in runs[n + 1:]]
                        unavailable.add(target)
                        break
                    log(f"{target} / {kind} / {shown}: {res['ok']} ok, {res['failed']} failed, hits "
                        f"{fmt(res['prefix_hit_rate'], pct=True)}, TTFT mean {fmt(res['ttft_ms'].get('mean'))} ms, "
                        f"p50 {fmt(res['ttft_ms']['p50'])} ms, {fmt(res['output_tokens_per_s'])} tok/s, {res['wall_s']} s")
    finally:
        for r in replicas:
            r.stop()
    report = {
        "command": " ".join(["benchmarks/routing/run"] + list(argv if argv is not None else sys.argv[1:])),
        "started": started, "duration_s": round(time.time() - started, 1),
        "machine": {"nproc": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
                    "loadavg_end": open("/proc/loadavg").read().split()[:3]},
        "git": _git_rev(), "run_dir": str(run_dir),
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "workloads": sizes, "results": results,
    }
    json_path.write_text(json.dumps(report, indent=1))
    print(workload_lines(sizes, a) + "\n")
    print(table(results))
    summary = ratios(results)
    if summary and (a.repeat > 1 or "gateway:cache_aware" in targets):
        print("\n" + summary)
    print(f"\nJSON: {json_path} (logs and per-request records in {run_dir})")
    base = [r for r in results if r["target"] == "direct-random" and r["available"]]
    broken = [r for r in results
              if r["available"] and (r["ok"] == 0 or (r["target"] == "direct-random" and r["failed"]))]
    if broken or (targets[:1] == ["direct-random"] and not base):
        log("failed: " + ", ".join(f"{r['target']}/{r['workload']}" for r in broken))
        return 1
    return 0


def _git_rev() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
