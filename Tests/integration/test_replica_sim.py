"""Tests of benchmarks/routing: the replica simulator (its prefix cache alone, then the
server over HTTP), the real vLLM /metrics fixture, and --quick runs of run.py (direct-random
and vllm-router; the latter is skipped, with the reason, when vllm-router cannot be had).
No gateway binary is needed.
"""
from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

ROUTING = Path(__file__).resolve().parents[2] / "benchmarks" / "routing"
sys.path.insert(0, str(ROUTING))

from replica_sim import (  # noqa: E402
    CHARS_PER_TOKEN, PrefixCache, ReplicaSim, block_hashes, count_tokens, parse_metrics, render_chat,
)

BS = 16
BLOCK_CHARS = BS * CHARS_PER_TOKEN
FIXTURE = ROUTING / "fixtures" / "vllm-metrics-sample.txt"


def text_of(blocks: str) -> str:
    """One full block of text per character of blocks ("ab" -> 64 a's then 64 b's)."""
    return "".join(c * BLOCK_CHARS for c in blocks)


def admit(cache: PrefixCache, text: str, extra_blocks: int = 0):
    hashes = block_hashes(text, BS)
    return cache.allocate(hashes, len(hashes) + extra_blocks)


def run_request(cache: PrefixCache, text: str) -> int:
    """Admit, compute, finish: the blocks that hit."""
    alloc = admit(cache, text)
    assert alloc is not None
    hit = alloc.hit_blocks
    cache.commit(alloc, block_hashes(text, BS))
    cache.release(alloc)
    return hit


# --------------------------------------------------------------------------------------
# The prefix cache, without I/O
# --------------------------------------------------------------------------------------

def test_repeated_prefix_hits_and_a_different_one_misses():
    cache = PrefixCache(num_blocks=64, block_size=BS)
    assert run_request(cache, text_of("abcd")) == 0
    assert run_request(cache, text_of("abcd")) == 4
    assert run_request(cache, text_of("abcx")) == 3  # shares the first three blocks
    assert run_request(cache, text_of("zbcd")) == 0  # differs from the first block on
    assert cache.used_blocks == 0 and cache.cached_blocks == 4 + 1 + 4


def test_chained_hashes_need_every_earlier_block():
    # The same second block after a different first block is a different block.
    assert block_hashes(text_of("ab"), BS)[1] != block_hashes(text_of("xb"), BS)[1]
    assert block_hashes(text_of("ab"), BS)[0] == block_hashes(text_of("ac"), BS)[0]
    cache = PrefixCache(num_blocks=64, block_size=BS)
    run_request(cache, text_of("abcd"))
    assert cache.match(block_hashes(text_of("xbcd"), BS)) == 0
    assert run_request(cache, text_of("xbcd")) == 0
    # A partial block is never cached: 1.5 blocks of text hash one block.
    assert len(block_hashes("a" * (BLOCK_CHARS + BLOCK_CHARS // 2), BS)) == 1


def test_lru_eviction_when_the_cache_is_full():
    cache = PrefixCache(num_blocks=8, block_size=BS)
    run_request(cache, text_of("aaaa"))   # freed first: least recently used
    run_request(cache, text_of("bbbb"))
    assert cache.cached_blocks == 8
    assert run_request(cache, text_of("cccc")) == 0  # needs 4 blocks: evicts a's
    assert cache.evictions == 4
    assert cache.match(block_hashes(text_of("aaaa"), BS)) == 0
    assert cache.match(block_hashes(text_of("bbbb"), BS)) == 4
    # A hit refreshes: b's used now, so the next newcomer evicts c's.
    assert run_request(cache, text_of("bbbb")) == 4
    run_request(cache, text_of("dddd"))
    assert cache.match(block_hashes(text_of("bbbb"), BS)) == 4
    assert cache.match(block_hashes(text_of("cccc"), BS)) == 0


def test_tail_blocks_are_evicted_before_the_head():
    cache = PrefixCache(num_blocks=4, block_size=BS)
    run_request(cache, text_of("abcd"))
    run_request(cache, text_of("xy"))  # evicts two blocks of abcd: d and c, not a and b
    assert cache.match(block_hashes(text_of("abcd"), BS)) == 2


def test_blocks_in_use_are_never_evicted():
    cache = PrefixCache(num_blocks=8, block_size=BS)
    held = admit(cache, text_of("aaaa"), extra_blocks=2)  # running: 6 blocks pinned
    assert held is not None and cache.used_blocks == 6 and cache.usage == 0.75
    assert admit(cache, text_of("bbbb")) is None  # 2 free, 4 needed: waits
    assert cache.used_blocks == 6  # nothing changed
    shared = admit(cache, text_of("aaaa"))  # hits nothing yet: a's prefill is not done
    assert shared is None
    cache.commit(held, block_hashes(text_of("aaaa"), BS))
    shared = admit(cache, text_of("aaaa"))  # now shares the 4 computed blocks
    assert shared is not None and shared.hit_blocks == 4 and cache.used_blocks == 6
    cache.release(held)
    cache.release(shared)
    assert cache.used_blocks == 0 and cache.cached_blocks == 4


def test_tokens_are_four_characters():
    assert count_tokens("abcd") == 1 and count_tokens("abcde") == 2 and count_tokens("") == 1
    assert render_chat([{"role": "user", "content": "hi"}]) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


# --------------------------------------------------------------------------------------
# The replica over HTTP
# --------------------------------------------------------------------------------------

@pytest.fixture
def replica_factory(tmp_path):
    started = []

    def make(**options) -> ReplicaSim:
        options.setdefault("model", "sim")
        r = ReplicaSim.start(workdir=str(tmp_path), name=f"replica{len(started)}", **options)
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()


def chat(replica: ReplicaSim, system: str, user: str = "hello", max_tokens: int = 4, **extra):
    body = {"model": "sim", "max_tokens": max_tokens,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}], **extra}
    return replica.json("POST", "/v1/chat/completions", body)


def counters(replica: ReplicaSim):
    samples = replica.metrics()
    get = lambda n: sum(v for name, _, v in samples if name == n)  # noqa: E731
    return get("vllm:prefix_cache_queries_total"), get("vllm:prefix_cache_hits_total")


def test_http_prefix_hits_are_reported_in_usage_and_metrics(replica_factory):
    r = replica_factory(decode_ms_per_step=1, prefill_us_per_token=1)
    system = "s" * 4000
    first = chat(r, system)
    prompt_tokens = first["usage"]["prompt_tokens"]
    assert prompt_tokens == count_tokens(render_chat([{"role": "system", "content": system},
                                                      {"role": "user", "content": "hello"}]))
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert first["usage"]["completion_tokens"] == 4 and first["choices"][0]["finish_reason"] == "length"
    second = chat(r, system, user="another question")
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached > 0 and cached % BS == 0 and cached >= prompt_tokens - 2 * BS
    other = chat(r, "t" * 4000)
    assert other["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    queries, hits = counters(r)
    assert hits == cached
    assert queries == prompt_tokens + second["usage"]["prompt_tokens"] + other["usage"]["prompt_tokens"]
    # The same prompt gets the same reply (so the benchmark's workloads repeat exactly).
    assert chat(r, system)["choices"][0]["message"]["content"] == first["choices"][0]["message"]["content"]
    # The reply's blocks are cached too: the next turn, history included, hits past its own prompt.
    turn1 = chat(r, system, max_tokens=80)
    reply = turn1["choices"][0]["message"]["content"]
    assert len(reply) == 80 * CHARS_PER_TOKEN
    turn2 = chat(r, system, max_tokens=4, messages=[
        {"role": "system", "content": system}, {"role": "user", "content": "hello"},
        {"role": "assistant", "content": reply}, {"role": "user", "content": "more"}])
    p1 = render_chat([{"role": "system", "content": system}, {"role": "user", "content": "hello"}])
    assert turn2["usage"]["prompt_tokens_details"]["cached_tokens"] == len(p1 + reply) // BLOCK_CHARS * BS


def test_http_lru_eviction(replica_factory):
    # 40 blocks of 16 tokens; a and b take 17 blocks each (prompt and reply room), c 34.
    r = replica_factory(num_gpu_blocks=40, decode_ms_per_step=1, prefill_us_per_token=1, max_model_len=640)
    a, b, c = "a" * 1000, "b" * 1000, "c" * 2000
    chat(r, a)
    chat(r, b)
    assert chat(r, b)["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    chat(r, c)  # does not fit beside a and b: the least recently used (a, then b's tail) goes
    assert chat(r, a)["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert r.state()["cache"]["evictions"] > 0


def test_uncached_prefill_costs_time(replica_factory):
    r = replica_factory(decode_ms_per_step=2, prefill_us_per_token=500)  # 1000 tokens = 0.5 s
    system = "p" * 4000
    t0 = time.monotonic()
    chat(r, system, max_tokens=1)
    cold = time.monotonic() - t0
    t0 = time.monotonic()
    chat(r, system, max_tokens=1)
    warm = time.monotonic() - t0
    assert cold >= 0.45 and warm < cold / 3, (cold, warm)


def test_a_prefix_being_prefilled_is_hit_by_the_next_request(replica_factory):
    """As in vLLM v1, a prompt's blocks are cached as its prefill chunks are scheduled: a
    request arriving while another with its prefix is still prefilling hits what that one
    has scheduled so far (cached only once prefilled, it would hit nothing)."""
    # 1000 tokens in chunks of 256, each a step of about 0.26 s.
    r = replica_factory(decode_ms_per_step=5, prefill_us_per_token=1000, max_num_batched_tokens=256)
    system = "w" * 4000
    replies = []
    threads = [threading.Thread(target=lambda u=u: replies.append(chat(r, system, user=u, max_tokens=1)))
               for u in ("first", "second")]
    for t in threads:
        t.start()
        time.sleep(0.05)  # the second arrives while the first is still prefilling
    for t in threads:
        t.join(20)
    cached = sorted(x["usage"]["prompt_tokens_details"]["cached_tokens"] for x in replies)
    assert len(cached) == 2 and cached[0] == 0 and cached[1] >= 256, cached


def test_batch_limit_queues_requests(replica_factory):
    r = replica_factory(max_num_seqs=1, decode_ms_per_step=20)
    done = []
    threads = [threading.Thread(target=lambda: done.append(chat(r, "q" * 200, max_tokens=25))) for _ in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    seen = None
    while time.monotonic() < deadline:
        st = r.state()
        if st["running"] == 1 and st["waiting"] == 2:
            seen = st
            break
        time.sleep(0.01)
    samples = r.metrics()
    for t in threads:
        t.join(20)
    assert seen is not None, "never saw 1 running and 2 waiting"
    assert len(done) == 3
    assert any(n == "vllm:num_requests_waiting" for n, _, _ in samples)


def test_stream_is_sse_ending_in_done(replica_factory):
    r = replica_factory(decode_ms_per_step=1)
    body = {"model": "sim", "stream": True, "stream_options": {"include_usage": True}, "max_tokens": 5,
            "messages": [{"role": "system", "content": "z" * 2000}, {"role": "user", "content": "hi"}]}
    for _ in range(2):
        conn = http.client.HTTPConnection("127.0.0.1", r.port, timeout=10)
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/event-stream")
        raw = resp.read().decode()
        conn.close()
    events = [e[len("data: "):] for e in raw.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(content) == 5 and content[-1]["choices"][0]["finish_reason"] == "length"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == [] and usage["completion_tokens"] == 5
    assert usage["prompt_tokens_details"]["cached_tokens"] > 0  # the second time round
    # /v1/completions streams the same way.
    conn = http.client.HTTPConnection("127.0.0.1", r.port, timeout=10)
    conn.request("POST", "/v1/completions", body=json.dumps({"model": "sim", "prompt": "abc", "max_tokens": 3,
                                                             "stream": True}),
                 headers={"Content-Type": "application/json"})
    raw = conn.getresponse().read().decode()
    conn.close()
    events = [e[len("data: "):] for e in raw.split("\n\n") if e]
    assert events[-1] == "[DONE]" and len(events) == 4
    assert json.loads(events[0])["object"] == "text_completion"


def test_tokenize_and_render_routes(replica_factory):
    # vllm-router's cache_aware policy tokenizes through these before it picks a worker.
    r = replica_factory()
    messages = [{"role": "system", "content": "abcd" * 50}, {"role": "user", "content": "hi"}]
    tok = r.json("POST", "/tokenize", {"model": "sim", "messages": messages})
    assert tok["count"] == len(tok["tokens"]) == count_tokens(render_chat(messages))
    assert tok["max_model_len"] == 8192
    rendered = r.json("POST", "/v1/chat/completions/render", {"model": "sim", "messages": messages, "max_tokens": 7})
    assert rendered["token_ids"] == tok["tokens"] and rendered["sampling_params"]["max_tokens"] == 7
    longer = r.json("POST", "/tokenize", {"model": "sim", "messages": messages + [
        {"role": "assistant", "content": "ok"}, {"role": "user", "content": "more"}]})
    prefix = len(render_chat(messages[:1])) // CHARS_PER_TOKEN
    assert longer["tokens"][:prefix] == tok["tokens"][:prefix]  # same text, same ids
    (item,) = r.json("POST", "/v1/completions/render", {"model": "sim", "prompt": "abcdefgh"})
    assert len(item["token_ids"]) == 2


def test_models_health_and_errors(replica_factory):
    r = replica_factory(lora_modules="adapter-a")
    assert r.request("GET", "/health") == (200, b"")
    ids = [m["id"] for m in r.json("GET", "/v1/models")["data"]]
    assert ids == ["sim", "adapter-a"]
    status, body = r.request("POST", "/v1/chat/completions",
                             {"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    assert status == 404 and json.loads(body)["error"]["code"] == 404
    status, body = r.request("POST", "/v1/chat/completions", {"model": "sim", "max_tokens": 10_000,
                                                               "messages": [{"role": "user", "content": "x"}]})
    assert status == 400 and "maximum context length" in json.loads(body)["error"]["message"]


def test_metrics_have_vllm_names_and_parse(replica_factory):
    r = replica_factory(num_gpu_blocks=321, block_size=32, max_loras=2, lora_modules="adapter-a")
    chat(r, "m" * 3000)
    r.json("POST", "/v1/chat/completions", {"model": "adapter-a", "max_tokens": 2,
                                            "messages": [{"role": "user", "content": "lora"}]})
    text = r.metrics_text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, kind in [("vllm:num_requests_waiting", "gauge"), ("vllm:num_requests_running", "gauge"),
                       ("vllm:kv_cache_usage_perc", "gauge"), ("vllm:prefix_cache_queries", "counter"),
                       ("vllm:prefix_cache_hits", "counter"), ("vllm:time_to_first_token_seconds", "histogram"),
                       ("vllm:cache_config_info", "gauge"), ("vllm:lora_requests_info", "gauge")]:
        assert name in families, name
        assert families[name].type == kind, (name, families[name].type)
    samples = parse_metrics(text)
    by_name = {}
    for n, labels, v in samples:
        by_name.setdefault(n, []).append((labels, v))
    (labels, v), = by_name["vllm:prefix_cache_hits_total"]
    assert labels == {"engine": "0", "model_name": "sim"}
    (labels, v), = by_name["vllm:cache_config_info"]
    assert v == 1.0 and labels["block_size"] == "32" and labels["num_gpu_blocks"] == "321"
    lora = by_name["vllm:lora_requests_info"]
    assert all(set(lbl) == {"max_lora", "running_lora_adapters", "waiting_lora_adapters"} for lbl, _ in lora)
    assert {lbl["running_lora_adapters"] for lbl, _ in lora} >= {"", "adapter-a"}
    assert max(v for _, v in lora) > time.time() - 60  # the time of the last change
    count = [v for n, lbl, v in samples if n == "vllm:time_to_first_token_seconds_count"]
    assert count == [2.0]
    # Same sample names, types and label names as a real vLLM 0.32.0 scrape.
    real = {f.name: f for f in text_string_to_metric_families(FIXTURE.read_text())}
    real_labels = {s.name: set(s.labels) for f in real.values() for s in f.samples}
    for f in families.values():
        assert f.name in real and real[f.name].type == f.type, f.name
        for s in f.samples:
            if f.name != "vllm:cache_config_info":  # vLLM's carries every CacheConfig field
                assert set(s.labels) == real_labels[s.name], s.name
    # POST /reset zeroes the counters and empties the cache.
    assert r.json("POST", "/reset")["status"] == "ok"
    after = parse_metrics(r.metrics_text())
    assert sum(v for n, _, v in after if n in ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total")) == 0
    assert r.state()["cache"]["cached_blocks"] == 0


def test_real_vllm_fixture_parses():
    families = {f.name: f for f in text_string_to_metric_families(FIXTURE.read_text())}
    assert families["vllm:num_requests_waiting"].samples[0].value == 3.0
    assert families["vllm:num_requests_running"].samples[0].value == 2.0
    hits = families["vllm:prefix_cache_hits"].samples[0]
    assert hits.name == "vllm:prefix_cache_hits_total" and hits.labels == {"engine": "0", "model_name": "tiny-llama"}
    info = families["vllm:cache_config_info"].samples[0]
    assert info.labels["block_size"] == "128" and info.labels["num_gpu_blocks"] == "2048"
    # run.py's stdlib parser reads it as prometheus_client does.
    ours = sorted((n, sorted(lbl.items()), v) for n, lbl, v in parse_metrics(FIXTURE.read_text()))
    theirs = sorted((s.name, sorted(s.labels.items()), s.value) for f in families.values() for s in f.samples)
    assert ours == theirs and len(ours) > 400


# --------------------------------------------------------------------------------------
# run.py --quick
# --------------------------------------------------------------------------------------

def quick_run(tmp_path, *args):
    out = tmp_path / "results.json"
    p = subprocess.run([sys.executable, str(ROUTING / "run.py"), "--quick", "--run-dir", str(tmp_path / "run"),
                        "--json", str(out), *args], capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "| workload | load | target |" in p.stdout
    return json.loads(out.read_text())


def check_result(res, requests):
    assert res["available"], res
    assert res["ok"] == requests and res["failed"] == 0, res
    assert res["prefix_hit_rate"] is not None and res["ttft_ms"]["p50"] > 0
    assert sum(x["finished"] for x in res["replicas"]) == requests


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_run_direct_random(tmp_path):
    report = quick_run(tmp_path, "--targets", "direct-random")
    shared, random_ = report["results"]
    assert (shared["workload"], random_["workload"]) == ("shared", "random")
    check_result(shared, 48)
    check_result(random_, 16)
    assert shared["prefix_hit_rate"] > 0.2 and random_["prefix_hit_rate"] == 0
    assert report["workloads"]["shared"]["ideal_hit_rate"] > shared["prefix_hit_rate"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_run_open_loop(tmp_path):
    """--rates: the shared workload open loop, every conversation played whole."""
    report = quick_run(tmp_path, "--targets", "direct-random", "--concurrency", "", "--rates", "6")
    (res,) = report["results"]
    assert (res["workload"], res["rate"], res["concurrency"]) == ("shared", 6.0, None)
    check_result(res, 48)
    assert (tmp_path / "run" / "direct-random-shared-rate6.requests.jsonl").exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_run_vllm_router(tmp_path):
    from run import default_router_venv, ensure_vllm_router
    try:
        ensure_vllm_router(default_router_venv(), install=True)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"vllm-router cannot be installed here: {e}")
    report = quick_run(tmp_path, "--targets", "vllm-router", "--workloads", "shared")
    results = {r["target"]: r for r in report["results"]}
    assert set(results) == {"vllm-router:cache_aware", "vllm-router:round_robin"}
    for res in results.values():
        check_result(res, 48)
    per = [x["finished"] for x in results["vllm-router:round_robin"]["replicas"]]
    assert per == [12, 12, 12, 12]


def test_repeated_runs_report_each_run_and_the_ratio_run_by_run():
    """--repeat: every run is a row of its own, and each target's mean TTFT is set against
    least_loaded's of the same run (a slow run of the machine slows both)."""
    from run import ratios, table

    def result(target, run, mean):
        return {"target": target, "workload": "shared", "concurrency": 24, "available": True, "run": run, "ok": 10,
                "failed": 0, "prefix_hit_rate": 0.5, "ttft_ms": {"mean": mean, "mean_warm": mean, "p50": mean, "p90": mean},
                "engine_queue_ms_mean": 1.0, "output_tokens_per_s": 100.0, "requests_per_s": 1.0,
                "replicas": [{"finished": 5}, {"finished": 5}]}

    results = [result("gateway:cache_aware", 1, 80.0), result("gateway:least_loaded", 1, 160.0),
               result("gateway:cache_aware", 2, 90.0), result("gateway:least_loaded", 2, 150.0),
               result("gateway:cache_aware", 3, 100.0), result("gateway:least_loaded", 3, 200.0)]
    assert "| shared | 24 in flight | gateway:cache_aware (run 2) |" in table(results)
    assert "| shared | 24 in flight | gateway:cache_aware | 0.50 / 0.60 / 0.50 | 0.50 |" in ratios(results)
    assert "(run" not in table(results[:2])
    assert ratios(results[1:2]) == ""
