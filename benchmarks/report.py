#!/usr/bin/env python3
"""Prints the tables of a benchmarks/run run from the JSON files in RUN_DIR/results.

    report.py compare|soak|streams|redis RUN_DIR
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List, Optional

TARGETS = ["direct", "nginx", "gateway"]
MIB = 1024.0  # kB per MiB


def load(run: str, name: str) -> Optional[Any]:
    path = os.path.join(run, "results", name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def table(headers: List[str], rows: List[List[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def ms(us: Optional[float]) -> str:
    return "n/a" if us is None else f"{us / 1000:.2f}"


def fmt(x: Optional[float], digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def median(values: List[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def median_run(runs: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """Median of each latency/throughput figure over the runs; error counts summed."""
    if not runs:
        return None
    out = dict(runs[0])
    for k in ("rps", "mean_us", "p50_us", "p90_us", "p99_us", "p999_us", "max_us"):
        out[k] = median([r[k] for r in runs])
    for k in ("requests", "non2xx", "err_connect", "err_read", "err_write", "err_status", "err_timeout"):
        out[k] = sum(r[k] for r in runs)
    return out


def verdict(ok: Optional[bool]) -> str:
    return "n/a" if ok is None else ("MET" if ok else "MISSED")


def header(run: str) -> List[str]:
    m = load(run, "machine.json") or {}
    p = load(run, "params.json") or {}
    return [
        f"machine: {m.get('nproc')} CPUs ({m.get('cpu')}), {m.get('mem_gib')} GiB, Linux {m.get('kernel')}, "
        f"load average at start {' '.join(m.get('loadavg_start', []))}",
        f"tools: {m.get('nginx')}, {' '.join(m.get('wrk') or [])}",
        f"command: {p.get('command')}  ({p.get('git')})",
        f"gateway: --workers {p.get('workers')}, BEARER_TOKEN set, RATE_LIMIT_RPM={p.get('rpm')}, LOG_LEVEL {p.get('log_level')}; "
        f"nginx: {p.get('nginx_workers')} worker processes (upstream and proxy share them); fd limit {p.get('fd_limit')}",
        "",
    ]


def rss_rows(run: str, files: List[tuple]) -> List[str]:
    snaps = [(label, (load(run, f) or {}).get(key, {})) for label, f, key in files]
    pids = []
    for _, snap in snaps:
        for pid in snap:
            if pid not in pids:
                pids.append(pid)
    rows = [[f"worker {pid}"] + [fmt(snap[pid] / MIB, 1) if pid in snap else "-" for _, snap in snaps] for pid in pids]
    return [table(["worker RSS (MiB)"] + [label for label, _ in snaps], rows)]


def log_lines(run: str) -> List[str]:
    log = load(run, "gateway-log.json")
    if not log:
        return []
    out = [f"gateway log: lines by level {json.dumps(log['levels'])}; access-log status counts {json.dumps(log['request_status'])}"]
    if log.get("other"):
        out.append(f"  other: {json.dumps(log['other'])}")
    for s in log.get("samples", []):
        out.append(f"  sample: {s}")
    return out


def compare(run: str) -> int:
    p = load(run, "params.json") or {}
    out = header(run)
    runs = {t: [w for w in (load(run, f"wrk-{t}-{i}.json") for i in range(1, int(p.get("repeat", 1)) + 1)) if w]
            for t in TARGETS}
    wrk = {t: median_run(runs[t]) for t in TARGETS}
    out.append(f"## Non-streaming POST /v1/chat/completions: wrk -t{p.get('threads')} -c{p.get('connections')} "
               f"-d{p.get('duration')}s, {p.get('repeat')} runs per target interleaved (each after a {p.get('warmup')} s "
               "warm-up); median of the runs, error counts summed")
    rows = []
    for t in TARGETS:
        w = wrk[t]
        if not w:
            rows.append([t] + ["n/a"] * 8)
            continue
        errors = w["err_connect"] + w["err_read"] + w["err_write"] + w["err_timeout"]
        vs_d = w["rps"] / wrk["direct"]["rps"] if wrk.get("direct") else None
        vs_n = w["rps"] / wrk["nginx"]["rps"] if wrk.get("nginx") else None
        add = (w["p99_us"] - wrk["direct"]["p99_us"]) / 1000 if wrk.get("direct") else None
        rows.append([t, f"{w['rps']:.0f}", ms(w["p50_us"]), ms(w["p99_us"]), fmt(add), fmt(vs_d), fmt(vs_n),
                     f"{w['non2xx']}/{errors}", " / ".join(f"{x['rps']:.0f}" for x in runs[t])])
    out.append(table(["target", "req/s", "p50 ms", "p99 ms", "p99 - direct ms", "req/s vs direct",
                      "req/s vs nginx", "non-2xx/socket errors", "req/s of each run"], rows))
    cpu_rows = []
    for t in TARGETS:
        w = wrk[t]
        if not w or "gateway_cpu_s" not in w:
            continue
        g_cpu = median([x["gateway_cpu_s"] for x in runs[t]])
        n_cpu = median([x["nginx_cpu_s"] for x in runs[t]])
        per = lambda c: fmt(c * 1e6 / (w["rps"] * w["duration_s"]), 1) if w["rps"] else "n/a"  # noqa: E731
        cpu_rows.append([t, fmt(g_cpu / w["duration_s"] * 100, 0), per(g_cpu), fmt(n_cpu / w["duration_s"] * 100, 0), per(n_cpu)])
    if cpu_rows:
        out.append("")
        out.append("CPU used during the runs (median run; % of one core, and CPU microseconds per request; nginx's "
                   "workers serve both the upstream and the proxy):")
        out.append(table(["target", "gateway workers %", "gateway us/req", "nginx workers %", "nginx us/req"], cpu_rows))
    health = load(run, "wrk-gateway-health.json")
    if health and health.get("rps"):
        per_req = health["gateway_cpu_s"] * 1e6 / (health["rps"] * health["duration_s"])
        out.append(f"Server-side floor: the gateway answering GET /health (no upstream) at the same concurrency: "
                   f"{health['rps']:.0f} req/s, p99 {ms(health['p99_us'])} ms, {per_req:.1f} us of gateway CPU per request.")
    out.append("CPU busy % just before each run (other processes): " + ", ".join(
        f"{t} {' / '.join(str(x.get('busy_before') or '-') for x in runs[t])}" for t in TARGETS)
        + "; 1-min load average after each run: " + ", ".join(
        f"{t} {' / '.join(x.get('loadavg', '?').split()[0] for x in runs[t])}" for t in TARGETS))
    out.append("")

    sse = {t: load(run, f"sse-{t}.json") for t in TARGETS}
    gap = f", {p.get('stream_gap')} s quiet before each" if float(p.get("stream_gap") or 0) else ""
    keepalive = (f"; upstream keep-alive {p.get('upstream_keepalive')} s in both proxies"
                 if p.get("upstream_keepalive") is not None else "")
    out.append(f"## Streaming: {p.get('stream_rounds')} rounds of {p.get('stream_k')} concurrent streams "
               f"per target, interleaved{gap} ({p.get('stream_events')} events + [DONE] each), times from request "
               f"sent{keepalive}")
    rows = []
    for t in TARGETS:
        s = sse[t]
        if not s:
            rows.append([t] + ["n/a"] * 8)
            continue
        walls = s.get("round_wall_s") or []
        chunks = (s.get("chunks_per_stream") or {}).get("p50")
        rows.append([t, f"{s['completed']}/{s['completed'] + max(0, s['failed'])}", fmt(s["ttfe_ms"]["p50"]),
                     fmt(s["ttfe_ms"]["p99"]), fmt(s["total_ms"]["p50"]), fmt(s["total_ms"]["p99"]),
                     fmt(sum(walls) / len(walls) * 1000 if walls else None),
                     "n/a" if chunks is None else str(chunks), json.dumps(s.get("errors") or {})])
    out.append(table(["target", "ok", "TTFE p50 ms", "TTFE p99 ms", "total p50 ms", "total p99 ms",
                      "all K done, ms (mean)", "HTTP chunks per stream (p50)", "errors"], rows))
    out.append("")
    serial = {t: load(run, f"sse-{t}-serial.json") for t in TARGETS}
    if any(serial.values()):
        out.append(f"## Streaming, one at a time: {p.get('serial_streams')} single streams in "
                   f"{min(int(p.get('stream_rounds') or 1), int(p.get('serial_streams') or 1))} interleaved blocks "
                   "(no client-side queuing), times from request sent")
        rows = []
        for t in TARGETS:
            s = serial[t]
            if not s:
                continue
            rows.append([t, f"{s['completed']}/{s['completed'] + max(0, s['failed'])}", fmt(s["ttfe_ms"]["p50"], 3),
                         fmt(s["ttfe_ms"]["p99"], 3), fmt(s["total_ms"]["p50"], 3), fmt(s["total_ms"]["p99"], 3),
                         json.dumps(s.get("errors") or {})])
        out.append(table(["target", "ok", "TTFE p50 ms", "TTFE p99 ms", "total p50 ms", "total p99 ms", "errors"], rows))
        out.append("")

    out += rss_rows(run, [("idle", "rss-idle.json", "idle"), ("after wrk", "rss-after-wrk.json", "after_wrk"),
                          ("after streams", "rss-after.json", "after")])
    out.append("")
    out.append("sanity (HTTP status of one plain request, one stream, one request without a key):")
    for t in TARGETS:
        s = load(run, f"sanity-{t}.json")
        out.append(f"  {t}: {json.dumps(s)}")
    out += log_lines(run)
    out.append("")

    # Targets of issue 7
    g, n, d = wrk.get("gateway"), wrk.get("nginx"), wrk.get("direct")
    idle = (load(run, "rss-idle.json") or {}).get("idle", {})
    tput = g["rps"] / n["rps"] if g and n else None
    added = (g["p99_us"] - d["p99_us"]) / 1000 if g and d else None
    sg, sn = sse.get("gateway"), sse.get("nginx")
    ttfe50 = ttfe99 = None
    if sg and sn and sg["ttfe_ms"]["p50"] is not None and sn["ttfe_ms"]["p50"] is not None:
        ttfe50 = sg["ttfe_ms"]["p50"] - sn["ttfe_ms"]["p50"]
        ttfe99 = sg["ttfe_ms"]["p99"] - sn["ttfe_ms"]["p99"]
    max_idle = max(idle.values()) / MIB if idle else None
    ser_g, ser_n = serial.get("gateway"), serial.get("nginx")
    ser50 = ser99 = None
    if ser_g and ser_n and ser_g["ttfe_ms"]["p50"] is not None and ser_n["ttfe_ms"]["p50"] is not None:
        ser50 = ser_g["ttfe_ms"]["p50"] - ser_n["ttfe_ms"]["p50"]
        ser99 = ser_g["ttfe_ms"]["p99"] - ser_n["ttfe_ms"]["p99"]
    out.append("## Targets (issue 7)")
    out.append(table(["target", "measured", "verdict"], [
        ["throughput >= 0.7 x nginx proxy", f"{fmt(tput)} x", verdict(None if tput is None else tput >= 0.7)],
        ["added p99 vs direct <= 1 ms (50 connections)", f"{fmt(added)} ms", verdict(None if added is None else added <= 1.0)],
        [f"streaming TTFE within 1 ms of nginx ({p.get('stream_k')} at once)", f"p50 {fmt(ttfe50)} ms, p99 {fmt(ttfe99)} ms",
         verdict(None if ttfe50 is None else (ttfe50 <= 1.0 and ttfe99 <= 1.0))],
        ["streaming TTFE within 1 ms of nginx (one at a time)", f"p50 {fmt(ser50, 3)} ms, p99 {fmt(ser99, 3)} ms",
         verdict(None if ser50 is None else (ser50 <= 1.0 and ser99 <= 1.0))],
        ["idle worker RSS <= 40 MB", f"max {fmt(max_idle, 1)} MiB", verdict(None if max_idle is None else max_idle <= 40.0)],
        ["5,000 concurrent open streams held", "see benchmarks/run --streams 5000", "n/a"],
    ]))
    print("\n".join(out))
    return 0


def soak(run: str) -> int:
    p = load(run, "params.json") or {}
    out = header(run)
    samples = []
    with open(os.path.join(run, "results", "soak.jsonl")) as f:
        for line in f:
            if line.strip():
                samples.append(json.loads(line))
    pids: List[str] = []
    for s in samples:
        for pid in s["rss"]:
            if pid not in pids:
                pids.append(pid)
    out.append(f"## Soak: {p.get('soak_minutes')} min of wrk -t{p.get('threads')} -c{p.get('connections')} against the gateway, "
               f"plus {p.get('stream_k')} concurrent streams each minute")
    rows = []
    for s in samples:
        st = s.get("streams")
        rows.append([str(s["minute"])] + [fmt(s["rss"][pid] / MIB, 1) if pid in s["rss"] else "-" for pid in pids]
                    + [fmt(sum(s["rss"].values()) / MIB, 1), s.get("loadavg", ""),
                       f"{st['completed']}/{st['completed'] + max(0, st['failed'])}" if st else "-"])
    out.append(table(["minute"] + [f"worker {pid} MiB" for pid in pids] + ["total MiB", "loadavg", "streams ok"], rows))
    first = samples[0]["rss"]
    m1 = samples[1]["rss"] if len(samples) > 2 else first
    last = [s for s in samples if s["minute"] != "idle-after"][-1]["rss"]
    out.append("")
    for pid in pids:
        if pid in first and pid in last:
            out.append(f"worker {pid}: idle {first[pid] / MIB:.1f} MiB -> minute 1 {m1.get(pid, 0) / MIB:.1f} -> "
                       f"last minute {last[pid] / MIB:.1f} MiB: growth {((last[pid] - first[pid]) / MIB):+.1f} MiB from idle, "
                       f"{((last[pid] - m1.get(pid, last[pid])) / MIB):+.1f} MiB after minute 1")
    if set(first) != set(last):
        out.append(f"WORKERS CHANGED during the soak: {sorted(first)} -> {sorted(last)} (a worker died and was replaced)")
    w = load(run, "wrk-gateway-soak.json")
    if w:
        out.append(f"wrk over the soak: {w['requests']} requests, {w['rps']:.0f} req/s, p50 {ms(w['p50_us'])} ms, "
                   f"p99 {ms(w['p99_us'])} ms, non-2xx {w['non2xx']}, socket errors connect {w['err_connect']} "
                   f"read {w['err_read']} write {w['err_write']} timeout {w['err_timeout']}")
    out += log_lines(run)
    print("\n".join(out))
    return 0


def streams(run: str) -> int:
    p = load(run, "params.json") or {}
    out = header(run)
    n = p.get("streams_n")
    out.append(f"## {n} concurrent streams, {p.get('slow_events')} events {p.get('slow_delay')} s apart "
               f"(+[DONE]); all connections opened first, then every request sent at once")
    rows = []
    held = None
    for t in ["nginx", "gateway"]:
        s = load(run, f"sse-hold-{t}.json")
        pk = load(run, f"hold-{t}-peaks.json") or {}
        if not s:
            continue
        ok = s["completed"] == n and s.get("max_open_at_once") == n and s["failed"] == 0
        if t == "gateway":
            held = ok
        rows.append([t, f"{s['completed']}/{n}", str(s.get("max_open_at_once")), str(pk.get("peak_established")),
                     fmt(s["ttfe_ms"]["p50"]), fmt(s["ttfe_ms"]["p99"]), fmt(s["total_ms"]["p50"]),
                     fmt(s["total_ms"]["max"]), fmt((s.get("connect_wall_s") or [None])[0]),
                     str(pk.get("peak_worker_fds", "-")) if t == "gateway" else "-",
                     fmt(pk.get("peak_worker_rss_kb_total", 0) / MIB, 1) if t == "gateway" else "-",
                     json.dumps(s.get("errors") or {}), "yes" if ok else "NO"])
    out.append(table(["target", "completed", "max open at once", "peak ESTABLISHED", "TTFE p50 ms", "TTFE p99 ms",
                      "total p50 ms", "total max ms", "connect all, s", "peak worker fds", "peak worker RSS MiB (sum)",
                      "errors", "held"], rows))
    out.append("")
    out += rss_rows(run, [("idle", "rss-idle.json", "idle"), ("after", "rss-after.json", "after")])
    out += log_lines(run)
    out.append("")
    out.append(f"5,000 concurrent open streams held (target): {verdict(held) if n and n >= 5000 else 'n/a (ran ' + str(n) + ')'}")
    print("\n".join(out))
    return 0


REDIS_TARGET_MS = 0.3  # issue 24: added p50 per request versus shared-memory limits
REDIS_LIMITS = [("shm", "shared memory"), ("redis", "Redis")]


def redis(run: str) -> int:
    """--redis: the same gateway with limits in its shared segment and in Redis."""
    p = load(run, "params.json") or {}
    repeat = int(p.get("repeat", 1))
    levels = [int(c) for c in str(p.get("redis_connections", "1")).split(",") if c]
    out = header(run)
    out.append(f"## Latency Redis-backed limits add (issue 24): the same build twice against the same upstream, "
               f"limits in the shared segment and with REDIS_URL (redis-server on 127.0.0.1); RATE_LIMIT_TPM={p.get('tpm')}. "
               f"wrk -d{p.get('duration')}s per run, {repeat} runs per gateway and connection count, interleaved "
               f"(each after a {p.get('warmup')} s warm-up); median of the runs")
    # First whether the Redis gateway really took every request to Redis: without that the
    # comparison means nothing (a REDIS_URL the build ignores gives "0 ms added").
    before, after = load(run, "redis-before.json") or {}, load(run, "redis-after.json") or {}
    used = False
    if before and after:
        scripts = after["scripts"] - before["scripts"]
        m0, m1 = before.get("metrics", {}), after.get("metrics", {})
        served = m1.get("chat_requests", 0) - m0.get("chat_requests", 0)
        count = m1.get("llm_gateway_limits_store_latency_seconds_count", 0) - m0.get("llm_gateway_limits_store_latency_seconds_count", 0)
        total = m1.get("llm_gateway_limits_store_latency_seconds_sum", 0) - m0.get("llm_gateway_limits_store_latency_seconds_sum", 0)
        errors = m1.get("llm_gateway_limits_store_errors_total", 0) - m0.get("llm_gateway_limits_store_errors_total", 0)
        used = served > 0 and scripts >= 0.99 * served
        kinds = {k[7:]: m1[k] - m0.get(k, 0) for k in m1 if k.startswith("errors_") and m1[k] - m0.get(k, 0)}
        used_line = (f"Redis used: {scripts} scripts run (EVALSHA/EVAL) for {served:.0f} chat completions through the Redis "
                     f"gateway ({scripts / served if served else 0:.2f} per request){'' if used else ' -- NOT EVERY REQUEST WENT TO REDIS'}; "
                     f"llm_gateway_limits_store_up {m1.get('llm_gateway_limits_store_up', 'absent')}, "
                     f"store errors during the runs {errors:.0f}{' ' + json.dumps(kinds) if kinds else ''}, mean store latency {total / count * 1000 if count else 0:.3f} ms "
                     f"over {count:.0f} commands (the gateway's histogram)")
    else:
        used_line = "Redis used: n/a (no redis-before/after.json)"
    failed = not used
    rows, verdicts = [], []
    for c in levels:
        runs = {t: [w for w in (load(run, f"wrk-{t}-c{c}-{i}.json") for i in range(1, repeat + 1)) if w]
                for t, _ in REDIS_LIMITS}
        wrk = {t: median_run(runs[t]) for t, _ in REDIS_LIMITS}
        for t, name in REDIS_LIMITS:
            w = wrk[t]
            if not w:
                rows.append([str(c), name] + ["n/a"] * 7)
                continue
            errors = w["err_connect"] + w["err_read"] + w["err_write"] + w["err_timeout"]
            failed |= bool(w["non2xx"] or errors)
            served = w["rps"] * w["duration_s"]
            per = lambda key: fmt(median([x[key] for x in runs[t]]) * 1e6 / served, 1) if served else "n/a"  # noqa: E731
            rows.append([str(c), name, f"{w['rps']:.0f}", ms(w["p50_us"]), ms(w["p99_us"]), per("gateway_cpu_s"),
                         per("redis_cpu_s") if t == "redis" else "-", f"{w['non2xx']}/{errors}",
                         " / ".join(ms(x["p50_us"]) for x in runs[t])])
        if wrk["shm"] and wrk["redis"]:
            added50 = (wrk["redis"]["p50_us"] - wrk["shm"]["p50_us"]) / 1000
            added99 = (wrk["redis"]["p99_us"] - wrk["shm"]["p99_us"]) / 1000
            pairs = [(r["p50_us"] - s_["p50_us"]) / 1000 for s_, r in zip(runs["shm"], runs["redis"])]
            verdicts.append(f"{c} connection{'s' if c != 1 else ''}: added p50 {added50:+.3f} ms, p99 {added99:+.3f} ms "
                            f"(p50 per round: {', '.join(f'{x:+.3f}' for x in pairs)}) -> "
                            f"{verdict(added50 <= REDIS_TARGET_MS) if used else 'n/a (Redis not used)'}")
        else:
            verdicts.append(f"{c} connections: n/a")
    out.append(table(["connections", "limits", "req/s", "p50 ms", "p99 ms", "gateway us/req", "redis-server us/req",
                      "non-2xx/socket errors", "p50 ms of each run"], rows))
    out.append("")
    out.append(used_line)
    for t, name in REDIS_LIMITS:
        s_ = load(run, f"sanity-{t}.json")
        if s_:
            ok = s_.get("plain") == 200 and s_.get("stream") == 200 and s_.get("stream_done") and s_.get("no_key") == 401
            failed |= not ok
            out.append(f"sanity ({name}): plain {s_.get('plain')}, stream {s_.get('stream')} ([DONE] {s_.get('stream_done')}), "
                       f"no key {s_.get('no_key')}")
    for name in ("gateway", "gateway-redis"):
        log = load(run, f"{name}-log.json")
        if log:
            out.append(f"{name} log: lines by level {json.dumps(log['levels'])}; access-log status counts {json.dumps(log['request_status'])}")
    out.append("")
    out.append(f"Target (issue 24): added p50 <= {REDIS_TARGET_MS} ms per request versus shared-memory limits:")
    out += ["  " + v for v in verdicts]
    print("\n".join(out))
    return 1 if failed else 0


def main() -> int:
    mode, run = sys.argv[1], sys.argv[2]
    return {"compare": compare, "soak": soak, "streams": streams, "redis": redis}[mode](run)


if __name__ == "__main__":
    sys.exit(main())
