"""The supervisor scrapes each upstream's vLLM metrics (issue 22, part 1): the engine's
queue and KV-cache use reach the gateway's own /metrics within a few scrape intervals; an
upstream with `metrics: none` is never scraped; a broken or huge metrics page is ignored
and harms nothing; a failing one leaves the last figures."""
import time

import pytest

from gateway import http_request, metric_value, parse_metrics, run_cli, wait_until

pytestmark = pytest.mark.gateway

MODEL = "qwen"
FAST = {"UPSTREAM_METRICS_INTERVAL": "0.1"}


def two_upstreams(a, b, b_extra: str = "") -> str:
    return (f"upstreams:\n  a: {{ url: {a.url} }}\n  b: {{ url: {b.url}{b_extra} }}\n"
            f"models:\n  m: {{ upstreams: [a, b], upstream_model: {MODEL} }}\n")


def samples(gw):
    r = http_request(gw.host, gw.port, "GET", "/metrics")
    assert r.status == 200
    return parse_metrics(r.text)


def series(gw, name: str, upstream: str):
    return [v for (n, labels, v) in samples(gw) if n == name and labels.get("upstream") == upstream]


def test_engine_queue_and_cache_use_reach_the_gateway_metrics(gateway_factory, fake_vllm_factory):
    a = fake_vllm_factory(models=[MODEL])
    b = fake_vllm_factory(models=[MODEL])
    a.config(metrics_waiting=7, metrics_kv_cache_usage=0.625)
    b.config(metrics_waiting=0, metrics_kv_cache_usage=0.125)
    gw = gateway_factory(config=two_upstreams(a, b), workers=2, env=FAST)
    wait_until(lambda: series(gw, "llm_gateway_upstream_queue_depth", "a") == [7.0], timeout=10,
               what="queue depth of a scraped")
    got = samples(gw)
    assert metric_value(got, "llm_gateway_upstream_kv_cache_usage_ratio", upstream="a") == pytest.approx(0.625)
    assert metric_value(got, "llm_gateway_upstream_queue_depth", upstream="b") == 0
    assert metric_value(got, "llm_gateway_upstream_kv_cache_usage_ratio", upstream="b") == pytest.approx(0.125)
    # A change shows within a few intervals.
    a.config(metrics_waiting=2)
    wait_until(lambda: series(gw, "llm_gateway_upstream_queue_depth", "a") == [2.0], timeout=10,
               what="the new queue depth")
    assert a.counters()["metrics_scrapes"] >= 2


def test_metrics_none_is_never_scraped(gateway_factory, fake_vllm_factory):
    a = fake_vllm_factory(models=[MODEL])
    b = fake_vllm_factory(models=[MODEL])
    gw = gateway_factory(config=two_upstreams(a, b, ", metrics: none"), workers=1, env=FAST)
    wait_until(lambda: series(gw, "llm_gateway_upstream_queue_depth", "a") == [0.0], timeout=10, what="a scraped")
    time.sleep(0.5)
    assert b.counters()["metrics_scrapes"] == 0
    assert series(gw, "llm_gateway_upstream_queue_depth", "b") == []


@pytest.mark.parametrize("mode", ["garbage", "huge", "error"])
def test_a_broken_metrics_page_is_ignored(gateway_factory, fake_vllm_factory, mode):
    a = fake_vllm_factory(models=[MODEL])
    b = fake_vllm_factory(models=[MODEL])
    b.config(metrics_mode=mode)
    gw = gateway_factory(config=two_upstreams(a, b), workers=1, env=FAST)
    wait_until(lambda: b.counters()["metrics_scrapes"] >= 3, timeout=10, what="b scraped a few times")
    assert series(gw, "llm_gateway_upstream_queue_depth", "b") == []
    assert series(gw, "llm_gateway_upstream_kv_cache_usage_ratio", "b") == []
    r = http_request(gw.host, gw.port, "POST", "/v1/chat/completions",
                     {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    assert r.status == 200
    assert "Fatal error" not in gw.log_text()


def test_a_failing_scrape_keeps_the_last_figures(gateway_factory, fake_vllm_factory):
    a = fake_vllm_factory(models=[MODEL])
    b = fake_vllm_factory(models=[MODEL])
    a.config(metrics_waiting=5)
    gw = gateway_factory(config=two_upstreams(a, b), workers=1, env=FAST)
    wait_until(lambda: series(gw, "llm_gateway_upstream_queue_depth", "a") == [5.0], timeout=10, what="a scraped")
    a.config(metrics_mode="error")
    before = a.counters()["metrics_scrapes"]
    wait_until(lambda: a.counters()["metrics_scrapes"] >= before + 3, timeout=10, what="failed scrapes")
    assert series(gw, "llm_gateway_upstream_queue_depth", "a") == [5.0]


def test_a_bad_metrics_key_stops_start_up_naming_it(gateway_binary_dir, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("upstreams:\n  a: { url: http://127.0.0.1:9, metrics: prometheus }\nmodels:\n  m: { upstreams: [a] }\n")
    r = run_cli(gateway_binary_dir, ["--config", str(config)])
    assert r.returncode != 0
    assert "upstreams.a.metrics" in r.stdout + r.stderr
