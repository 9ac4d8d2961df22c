"""Routing across several replicas of one model (issue 22): with `routing: cache_aware`
requests that share a long prefix land on the same upstream whichever worker takes them;
prompts cached nowhere spread; an upstream whose engine reports a queue, or that went
down, is left; `round_robin` and `least_loaded` behave as named; the decisions are counted."""
import threading

import pytest

from gateway import http_request, metric_value, parse_metrics, wait_until

pytestmark = pytest.mark.gateway

MODEL = "qwen"
FAST = {"UPSTREAM_METRICS_INTERVAL": "0.1", "UPSTREAM_HEALTH_INTERVAL": "0.2"}


def config(upstreams, routing: str = "cache_aware") -> str:
    ups = "".join(f"  u{i}: {{ url: {u.url} }}\n" for i, u in enumerate(upstreams))
    names = ", ".join(f"u{i}" for i in range(len(upstreams)))
    return f"upstreams:\n{ups}models:\n  m: {{ upstreams: [{names}], upstream_model: {MODEL}, routing: {routing} }}\n"


def spare_config(upstreams) -> str:
    """Model m on u0 and u1 (cache_aware), with the fallback model spare on the rest."""
    ups = "".join(f"  u{i}: {{ url: {u.url} }}\n" for i, u in enumerate(upstreams))
    spare = ", ".join(f"u{i}" for i in range(2, len(upstreams)))
    return (f"upstreams:\n{ups}models:\n"
            f"  m: {{ upstreams: [u0, u1], upstream_model: {MODEL}, fallbacks: [spare] }}\n"
            f"  spare: {{ upstreams: [{spare}], upstream_model: {MODEL} }}\n")


def system_prompt(tenant: int) -> str:
    # ~3 KB: a dozen whole 256-byte blocks.
    return f"You are the assistant of tenant {tenant}. " + " ".join(f"rule-{tenant}-{i}" for i in range(300))


def chat(gw, tenant: int, turn: str, headers=None):
    body = {"model": "m", "max_tokens": 4,
            "messages": [{"role": "system", "content": system_prompt(tenant)}, {"role": "user", "content": turn}]}
    r = http_request(gw.host, gw.port, "POST", "/v1/chat/completions", body, headers=headers)
    assert r.status == 200, r.text
    return r


def served(fakes):
    return [f.counters()["requests"].get("/v1/chat/completions", 0) for f in fakes]


def fresh_connections(gw, n, fn):
    """n requests, each on its own connection, two at a time: the workers share them."""
    errors = []

    def run(i):
        try:
            fn(i)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    for start in range(0, n, 2):
        threads = [threading.Thread(target=run, args=(i,)) for i in range(start, min(n, start + 2))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    assert not errors, errors


def test_a_shared_prefix_lands_on_one_upstream_across_workers(gateway_factory, fake_vllm_factory):
    fakes = [fake_vllm_factory(models=[MODEL]) for _ in range(3)]
    gw = gateway_factory(config=config(fakes), workers=2, env=FAST)
    chat(gw, 1, "first turn")
    home = served(fakes).index(1)
    fresh_connections(gw, 12, lambda i: chat(gw, 1, f"question {i}"))
    counts = served(fakes)
    assert counts[home] == 13, counts
    workers = {line.get("pid") for line in gw.access_lines() if line.get("route") == "/v1/chat/completions"}
    assert len(workers) == 2, "both workers served the tenant and agreed on its upstream"
    samples = parse_metrics(http_request(gw.host, gw.port, "GET", "/metrics").text)
    assert metric_value(samples, "llm_gateway_routing_decisions_total", model="m", reason="prefix") >= 12
    assert metric_value(samples, "llm_gateway_prefix_match_ratio_count", model="m") >= 12


def test_prompts_cached_nowhere_spread_over_the_upstreams(gateway_factory, fake_vllm_factory):
    fakes = [fake_vllm_factory(models=[MODEL]) for _ in range(3)]
    gw = gateway_factory(config=config(fakes), workers=2, env=FAST)
    for tenant in range(24):
        chat(gw, 100 + tenant, "hello")
    counts = served(fakes)
    assert all(c >= 3 for c in counts), counts
    samples = parse_metrics(http_request(gw.host, gw.port, "GET", "/metrics").text)
    assert metric_value(samples, "llm_gateway_routing_decisions_total", model="m", reason="cold") >= 20


def test_an_engine_queue_releases_the_affinity(gateway_factory, fake_vllm_factory):
    fakes = [fake_vllm_factory(models=[MODEL]) for _ in range(2)]
    gw = gateway_factory(config=config(fakes), workers=1, env=FAST)
    chat(gw, 7, "first")
    home = served(fakes).index(1)
    fakes[home].config(metrics_waiting=4)  # saturated: requests queue in its engine
    samples = lambda: parse_metrics(http_request(gw.host, gw.port, "GET", "/metrics").text)
    wait_until(lambda: metric_value(samples(), "llm_gateway_upstream_queue_depth", upstream=f"u{home}") == 4,
               timeout=10, what="the queue scraped")
    for i in range(4):
        chat(gw, 7, f"next {i}")
    assert served(fakes)[1 - home] == 4, served(fakes)
    fakes[home].config(metrics_waiting=0)
    wait_until(lambda: metric_value(samples(), "llm_gateway_upstream_queue_depth", upstream=f"u{home}") == 0,
               timeout=10, what="the queue drained")


def test_a_restarted_engine_is_taken_as_holding_nothing(gateway_factory, fake_vllm_factory):
    """A replica whose server restarted (a later process_start_time_seconds) has an empty
    cache: the prefix it held no longer draws its tenant's requests as a prefix match."""
    fakes = [fake_vllm_factory(models=[MODEL]) for _ in range(2)]
    gw = gateway_factory(config=config(fakes), workers=1, env=FAST)
    samples = lambda: parse_metrics(http_request(gw.host, gw.port, "GET", "/metrics").text)
    decisions = lambda reason: metric_value(samples(), "llm_gateway_routing_decisions_total", model="m", reason=reason) or 0
    wait_until(lambda: all(metric_value(samples(), "llm_gateway_upstream_queue_depth", upstream=f"u{i}") is not None
                           for i in range(2)), timeout=10, what="both engines scraped")
    chat(gw, 9, "first")
    home = served(fakes).index(1)
    chat(gw, 9, "second")
    assert decisions("prefix") == 1 and served(fakes)[home] == 2
    fakes[home].config(metrics_process_start=4_000_000_000.0)
    wait_until(lambda: "upstream engine restarted" in gw.log_text(), timeout=10, what="the restart seen")
    chat(gw, 9, "third")
    assert decisions("prefix") == 1, "nothing cached anywhere: the prompt is routed as cold"
    assert decisions("cold") == 2


def test_a_down_upstream_is_skipped(gateway_factory, fake_vllm_factory):
    fakes = [fake_vllm_factory(models=[MODEL]) for _ in range(2)]
    gw = gateway_factory(config=config(fakes), workers=1, env=FAST)
    chat(gw, 9, "first")
    home = served(fakes).index(1)
    fakes[home].control("/_control/health", {"status": 503})
    samples = lambda: parse_metrics(http_request(gw.host, gw.port, "GET", "/metrics").text)
    wait_until(lambda: metric_value(samples(), "llm_gateway_upstream_up", upstream=f"u{home}") == 0, timeout=10,
               what="the upstream marked down")
    for i in range(3):
        chat(gw, 9, f"next {i}")
    assert served(fakes)[1 - home] == 3, served(fakes)


def test_a_session_header_keeps_a_session_on_one_upstream(gateway_factory, fake_vllm_factory):
    fakes = [fake_vllm_factory(models=[MODEL]) for _ in range(3)]
    gw = gateway_factory(config=config(fakes), workers=2, env=FAST)
    # Different prompts (no shared prefix), one session.
    fresh_connections(gw, 8, lambda i: chat(gw, 200 + i, "hi", headers={"x-session-id": "conversation-42"}))
    assert sorted(served(fakes)) == [0, 0, 8], served(fakes)
    samples = parse_metrics(http_request(gw.host, gw.port, "GET", "/metrics").text)
    assert metric_value(samples, "llm_gateway_routing_decisions_total", model="m", reason="session") == 8


def test_round_robin_takes_turns_across_workers(gateway_factory, fake_vllm_factory):
    fakes = [fake_vllm_factory(models=[MODEL]) for _ in range(3)]
    gw = gateway_factory(config=config(fakes, "round_robin"), workers=2, env=FAST)
    fresh_connections(gw, 12, lambda i: chat(gw, 1, f"q{i}"))
    assert served(fakes) == [4, 4, 4]


def test_least_loaded_ignores_the_prefix(gateway_factory, fake_vllm_factory):
    fakes = [fake_vllm_factory(models=[MODEL]) for _ in range(2)]
    fakes[0].control("/_control/delay", {"seconds": 1.0, "count": 1, "routes": ["/v1/chat/completions"]})
    gw = gateway_factory(config=config(fakes, "least_loaded"), workers=1, env=FAST)
    slow = threading.Thread(target=lambda: chat(gw, 1, "slow"))
    slow.start()
    # Its arrival, not "inflight" (a health check is in flight there too, now and then).
    wait_until(lambda: served(fakes)[0] == 1, timeout=5, what="the slow request at u0")
    chat(gw, 1, "fast")
    slow.join(timeout=10)
    assert served(fakes) == [1, 1]


def lora_config(fakes) -> str:
    ups = "".join(f"  u{i}: {{ url: {u.url} }}\n" for i, u in enumerate(fakes))
    names = ", ".join(f"u{i}" for i in range(len(fakes)))
    return f"upstreams:\n{ups}models:\n  sql: {{ upstreams: [{names}], upstream_model: sql-lora }}\n"


def chat_model(gw, model: str, text: str):
    body = {"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": text}]}
    r = http_request(gw.host, gw.port, "POST", "/v1/chat/completions", body)
    assert r.status == 200, r.text
    return r


def test_a_lora_adapter_goes_where_it_runs_then_where_a_slot_is_free(gateway_factory, fake_vllm_factory):
    fakes = [fake_vllm_factory(models=[MODEL]) for _ in range(3)]
    fakes[0].config(lora_adapters=["sql-lora", "chat-lora"], metrics_max_lora=1, metrics_lora_running=["chat-lora"])  # full
    fakes[1].config(lora_adapters=["sql-lora", "chat-lora"], metrics_max_lora=2, metrics_lora_running=["chat-lora"])  # a slot
    fakes[2].config(lora_adapters=["sql-lora", "chat-lora"], metrics_max_lora=2, metrics_lora_running=["sql-lora"])  # runs it
    gw = gateway_factory(config=lora_config(fakes), workers=2, env=FAST)
    samples = lambda: parse_metrics(http_request(gw.host, gw.port, "GET", "/metrics").text)
    wait_until(lambda: all(metric_value(samples(), "llm_gateway_upstream_queue_depth", upstream=f"u{i}") is not None
                           for i in range(3)), timeout=10, what="every engine scraped")
    # Prompts with nothing in common: without LoRA they would spread.
    fresh_connections(gw, 8, lambda i: chat_model(gw, "sql", f"question {i} " * (i + 1)))
    assert served(fakes) == [0, 0, 8], served(fakes)
    assert metric_value(samples(), "llm_gateway_routing_decisions_total", model="sql", reason="lora") == 8
    # The adapter stops running there (and its slots fill): the upstream with a free slot.
    fakes[2].config(metrics_max_lora=1, metrics_lora_running=["chat-lora"])
    before = served(fakes)
    wait_until(lambda: chat_model(gw, "sql", "probe") and served(fakes)[1] > before[1], timeout=10,
               what="the adapter routed to the free slot")
    before = served(fakes)
    fresh_connections(gw, 4, lambda i: chat_model(gw, "sql", f"again {i} " * (i + 1)))
    assert [a - b for a, b in zip(served(fakes), before)] == [0, 4, 0], served(fakes)


def test_a_model_none_of_whose_upstreams_is_well_counts_a_fallback(gateway_factory, fake_vllm_factory):
    fakes = [fake_vllm_factory(models=[MODEL]) for _ in range(3)]
    gw = gateway_factory(config=spare_config(fakes), workers=1, env=FAST)
    for fake in fakes[:2]:
        fake.control("/_control/health", {"status": 503})
    samples = lambda: parse_metrics(http_request(gw.host, gw.port, "GET", "/metrics").text)
    wait_until(lambda: all(metric_value(samples(), "llm_gateway_upstream_up", upstream=f"u{i}") == 0 for i in range(2)),
               timeout=10, what="both upstreams marked down")
    for i in range(3):
        chat(gw, 3, f"q{i}")
    assert metric_value(samples(), "llm_gateway_routing_decisions_total", model="m", reason="fallback") == 3
    assert served(fakes)[2] == 3, served(fakes)


def test_a_prompt_is_recorded_only_where_it_was_sent(gateway_factory, fake_vllm_factory):
    """Routing orders a fallback model's replicas too, but the prompt is recorded in the
    prefix index only for the replica it was sent to: the fallback's replicas, never asked,
    do not pass for holding it."""
    fakes = [fake_vllm_factory(models=[MODEL]) for _ in range(4)]
    gw = gateway_factory(config=spare_config(fakes), workers=1, env=FAST)
    long_text = system_prompt(5)
    chat_model(gw, "m", long_text)
    chat_model(gw, "m", long_text)
    assert sum(served(fakes)[:2]) == 2 and sum(served(fakes)[2:]) == 0, served(fakes)
    samples = lambda: parse_metrics(http_request(gw.host, gw.port, "GET", "/metrics").text)
    assert metric_value(samples(), "llm_gateway_routing_decisions_total", model="m", reason="prefix") == 1
    chat_model(gw, "spare", long_text)
    assert metric_value(samples(), "llm_gateway_routing_decisions_total", model="spare", reason="cold") == 1
    assert not metric_value(samples(), "llm_gateway_routing_decisions_total", model="spare", reason="prefix")
