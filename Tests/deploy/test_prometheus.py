"""The Grafana dashboard and the alert rules, proven on a real Prometheus.

Run: LLM_GATEWAY_BIN_DIR=.build/release python3 -m pytest Tests/deploy/test_prometheus.py -q

Static checks (no process started):
- `promtool check rules deploy/prometheus/alerts.yml` and
  `promtool test rules deploy/prometheus/alerts.test.yml` pass; the unit tests have,
  for every alert, a case where it fires and one where it stays silent; every rule has
  a `for:`, a severity and a runbook_url whose anchor is a heading of docs/runbook.md.
- The dashboard is a Grafana JSON model with a DS_PROMETHEUS input, the datasource,
  model and upstream variables, unique panel ids, every panel on ${datasource}.

Live checks (one stack for the module, about 30 s): a fake vLLM (fake_vllm.py), the real
gateway in front of it (gateway.py harness, binaries from LLM_GATEWAY_BIN_DIR), and
`prometheus` on a free 127.0.0.1 port scraping it every second with the alert rules
loaded. Traffic in two rounds (chat, completions, embeddings, a stream, a 404, a 429, a
502), a circuit-breaker trip (fake /_control/fail) and a worker killed and replaced,
with scrapes between the rounds so counters move. Then, through the HTTP API
(/api/v1/query):
- every dashboard panel expression (with $model/$upstream/$instance = .*,
  $__rate_interval = 30s, $__range = 5m) parses and returns at least one sample with a
  finite value; every variable's label_values() query returns values, and model and
  upstream are the configured names;
- every alert expression parses and evaluates; every loaded rule reports health "ok";
- the gateway-down and no-worker-accepting expressions tell a closed port from a port
  that accepts but never answers (both scraped under job="llm-gateway");
- every llm_gateway_* name the dashboard and the rules use is exposed by /metrics.

prometheus/promtool missing: the test skips, except under CI=true where it fails
(scripts/test installs the Debian package `prometheus`, which brings promtool).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INTEGRATION = REPO / "Tests" / "integration"
DASHBOARD = REPO / "deploy" / "grafana" / "llm-gateway.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = REPO / "deploy" / "prometheus" / "alerts.test.yml"
RUNBOOK = REPO / "docs" / "runbook.md"
RUNBOOK_URL_PREFIX = "file:///usr/local/share/doc/llm-gateway/runbook.md#"

if str(INTEGRATION) not in sys.path:
    sys.path.insert(0, str(INTEGRATION))

CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")

# What the dashboard's Grafana variables become in the test's queries.
SUBSTITUTIONS = {
    "$__rate_interval": "30s",
    "$__interval": "15s",
    "$__range": "5m",
    "${model}": ".*", "$model": ".*",
    "${upstream}": ".*", "$upstream": ".*",
    "${instance}": ".*", "$instance": ".*",
}
MODEL = "fake-model"      # the fake vLLM's model, configured under its own name
UPSTREAM = "vllm-a"
RPM = 10                  # RATE_LIMIT_RPM: an 11th request on one key gets 429
BREAKER_THRESHOLD = 3


def unavailable(what: str) -> None:
    """Skip, or fail under CI=true: in CI a missing tool must not turn into a silent skip."""
    if CI:
        pytest.fail(f"{what} (CI=true: required)", pytrace=False)
    pytest.skip(what)


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} not installed (Debian: apt-get install prometheus; scripts/test installs it)")
    return path


def yaml_module():
    try:
        import yaml
    except ImportError:
        unavailable("PyYAML not installed (pip install -r Tests/integration/requirements.txt)")
    return yaml


# ---------------------------------------------------------------------------- the files

def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(panels: list) -> list:
    out = []
    for panel in panels:
        out.append(panel)
        out.extend(all_panels(panel.get("panels", [])))  # collapsed rows keep theirs inside
    return out


def dashboard_expressions() -> list[tuple[str, str]]:
    """[(id "panel title / refId", expr)] for every query target of every panel."""
    out = []
    for panel in all_panels(load_dashboard()["panels"]):
        for target in panel.get("targets", []):
            out.append((f"{panel['title']} / {target['refId']}", target["expr"]))
    return out


def dashboard_variables() -> list[dict]:
    return load_dashboard()["templating"]["list"]


def load_rules() -> list[dict]:
    yaml = yaml_module()
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def substitute(expr: str) -> str:
    for variable in sorted(SUBSTITUTIONS, key=len, reverse=True):
        expr = expr.replace(variable, SUBSTITUTIONS[variable])
    assert "$" not in expr, f"a Grafana variable the test does not know is left in: {expr}"
    return expr


def github_anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading (lower case, punctuation dropped, spaces -> -)."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def runbook_anchors() -> set[str]:
    anchors, fenced = set(), False
    for line in RUNBOOK.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            anchors.add(github_anchor(line.lstrip("#")))
    return anchors


def metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\bllm_gateway_[a-z0-9_]+", expr))
    return {re.sub(r"_(bucket|count|sum)$", "", n) for n in names}


# ---------------------------------------------------------------------------- static checks

def test_promtool_check_rules() -> None:
    promtool = tool("promtool")
    result = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in result.stdout


def test_promtool_test_rules() -> None:
    promtool = tool("promtool")
    result = subprocess.run([promtool, "test", "rules", ALERT_TESTS.name], cwd=ALERT_TESTS.parent,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    yaml = yaml_module()
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    assert tests["rule_files"] == [ALERTS.name]
    fires, silent = set(), set()
    for group in tests["tests"]:
        for case in group.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {rule["alert"] for rule in load_rules()}
    assert names - fires == set(), f"no unit test where these fire: {sorted(names - fires)}"
    assert names - silent == set(), f"no unit test where these stay silent: {sorted(names - silent)}"
    assert (fires | silent) <= names, f"tests for unknown alerts: {sorted((fires | silent) - names)}"


def test_rules_have_for_severity_and_a_runbook_section() -> None:
    anchors = runbook_anchors()
    required = {"LLMGatewayDown", "LLMGatewayNoWorkerAccepting", "LLMGatewayUpstreamDown", "LLMGatewayBreakerOpen",
                "LLMGatewayHigh5xxRatio", "LLMGatewayHigh429Ratio", "LLMGatewayWorkerRestartLoop",
                "LLMGatewayHighTTFT"}
    rules = load_rules()
    assert required <= {r["alert"] for r in rules}
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: needs a for: duration"
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOK_URL_PREFIX), f"{name}: {url}"
        anchor = url[len(RUNBOOK_URL_PREFIX):]
        assert anchor == name.lower(), f"{name}: anchor {anchor!r} should be the alert's name"
        assert anchor in anchors, f"{name}: docs/runbook.md has no heading for #{anchor}"


def test_dashboard_model() -> None:
    dash = load_dashboard()
    assert [i["name"] for i in dash["__inputs"]] == ["DS_PROMETHEUS"]
    assert dash["__inputs"][0]["pluginId"] == "prometheus"
    assert 36 <= dash["schemaVersion"] <= 41
    assert dash["uid"] == "llm-gateway" and dash["id"] is None
    variables = {v["name"]: v for v in dashboard_variables()}
    assert {"datasource", "model", "upstream"} <= set(variables)
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert "${DS_PROMETHEUS}" in json.dumps(variables["datasource"]["current"])
    for name in ("model", "upstream", "instance"):
        v = variables[name]
        assert v["type"] == "query" and v["definition"].startswith("label_values(")
        assert v["includeAll"] and v["allValue"] == ".*", f"${name}: All must be a regex for =~"
    panels = all_panels(dash["panels"])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert rows == ["Traffic", "Latency", "Tokens", "Rate limits", "Upstreams", "Processes", "Limits store (Redis)"]
    for p in panels:
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"], p["title"]
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
    # What the issue asks the dashboard to show.
    text = json.dumps(dash)
    for metric in ("llm_gateway_http_requests_total", "llm_gateway_http_request_duration_seconds_bucket",
                   "llm_gateway_time_to_first_token_seconds_bucket", "llm_gateway_tokens_total",
                   "llm_gateway_rate_limited_total", "llm_gateway_circuit_breaker_state", "llm_gateway_upstream_up",
                   "llm_gateway_inflight_requests", "llm_gateway_workers", "llm_gateway_worker_restarts_total"):
        assert metric in text, metric
    for _, expr in dashboard_expressions():
        substitute(expr)  # no unknown variable


# ---------------------------------------------------------------------------- the live stack

class Prometheus:
    def __init__(self, binary: str, workdir: Path, config: str) -> None:
        from gateway import free_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (workdir / "prometheus.yml").write_text(config)
        self.log_path = workdir / "prometheus.log"
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir,
                start_new_session=True)
        finally:
            log.close()

    def get(self, path: str, **params: str) -> dict:
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as error:  # 400 bad_data for a query that does not parse
            return json.loads(error.read())

    def query(self, expr: str) -> dict:
        return self.get("/api/v1/query", query=expr)

    def vector(self, expr: str) -> list:
        answer = self.query(expr)
        assert answer["status"] == "success", f"{expr}: {answer}"
        return answer["data"]["result"]

    def wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready in time:\n{self.log_tail()}")

    def wait_scraped_after(self, instance: str, after: float, deadline: float, scrapes: int = 1) -> None:
        """Wait until the gateway target has been scraped `scrapes` times after wall time `after`."""
        seen = 0
        last = after
        while time.monotonic() < deadline:
            result = self.vector(f'timestamp(up{{job="llm-gateway", instance="{instance}"}})')
            if result and float(result[0]["value"][1]) > last:
                last = float(result[0]["value"][1])
                seen += 1
                if seen >= scrapes:
                    return
            time.sleep(0.25)
        raise AssertionError(f"prometheus did not scrape {instance} {scrapes}x after {after}")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


class Stack:
    """Fake vLLM + gateway + Prometheus, with the traffic already sent and scraped."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started = time.monotonic()
        self.deadline = self.started + 70
        self.fake = self.gateway = self.prometheus = self.redis = None
        self.black_hole = None
        self.gateway_metrics_text = ""
        self.breaker_seen_open = False

    # -- setup -------------------------------------------------------------------------
    def start(self) -> "Stack":
        from fake_vllm import FakeVLLM
        from gateway import Gateway, default_bin_dir, free_port, missing_binaries
        prometheus_bin = tool("prometheus")
        tool("promtool")
        bin_dir = default_bin_dir()
        missing = missing_binaries(bin_dir)
        if missing:
            unavailable(f"gateway binaries missing in {bin_dir}: {', '.join(missing)} (swift build -c release)")

        # A private Redis keeps the per-key limits (REDIS_URL): the limits-store panels and
        # alert read real series. Traffic below is the same either way.
        from redis_server import RedisServer, redis_server_path
        if not redis_server_path():
            unavailable("redis-server not installed (scripts/test installs it)")
        self.redis = RedisServer(self.tmp / "redis").start()
        self.fake = FakeVLLM.start(models=[MODEL], workdir=str(self.tmp / "fake_vllm"))
        config = (f"upstreams:\n  {UPSTREAM}: {{ url: {self.fake.url}, health: /health }}\n"
                  f"models:\n  {MODEL}:\n    upstreams: [{UPSTREAM}]\n    upstream_model: {MODEL}\n")
        self.gateway = Gateway(bin_dir, workers=2, config=config, workdir=self.tmp / "gateway", start=False, env={
            "RATE_LIMIT_RPM": str(RPM),
            "REDIS_URL": self.redis.url,
            "CIRCUIT_BREAKER_THRESHOLD": str(BREAKER_THRESHOLD),
            "CIRCUIT_BREAKER_COOLDOWN": "3",
            "UPSTREAM_HEALTH_INTERVAL": "0.5",
            "LOG_LEVEL": "warning",
        })
        self.gateway.start()
        self.gateway.wait_ready(timeout=15)
        self.instance = f"127.0.0.1:{self.gateway.port}"

        # Two more targets under job="llm-gateway": a port that accepts connections and
        # never answers (what a gateway with no worker accepting looks like), and a
        # closed port (a gateway that is down).
        self.black_hole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.black_hole.bind(("127.0.0.1", 0))
        self.black_hole.listen(256)
        self.silent_instance = f"127.0.0.1:{self.black_hole.getsockname()[1]}"
        self.closed_instance = f"127.0.0.1:{free_port()}"
        prometheus_config = f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - {ALERTS}
scrape_configs:
  - job_name: llm-gateway
    static_configs:
      - targets: ['{self.instance}']
  - job_name: llm-gateway-unreachable
    scrape_timeout: 800ms
    static_configs:
      - targets: ['{self.silent_instance}', '{self.closed_instance}']
    relabel_configs:
      - target_label: job
        replacement: llm-gateway
"""
        workdir = self.tmp / "prometheus"
        workdir.mkdir()
        self.prometheus = Prometheus(prometheus_bin, workdir, prometheus_config)
        self.prometheus.wait_ready(self.deadline)
        self.prometheus.wait_scraped_after(self.instance, 0, self.deadline)

        self.traffic(1)
        self.fake.fail_next(count=1, status=500, routes=["/v1/chat/completions"])
        assert self.chat("user-502-1").status == 502
        self.prometheus.wait_scraped_after(self.instance, time.time(), self.deadline, scrapes=2)

        self.traffic(2)
        assert self.kill_a_worker()
        self.trip_breaker()
        self.prometheus.wait_scraped_after(self.instance, time.time(), self.deadline, scrapes=2)
        self.gateway_metrics_text = self.gateway.metrics_text()
        return self

    # -- traffic -----------------------------------------------------------------------
    def chat(self, key: str, **extra):
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}], **extra}
        return self.gateway.post("/v1/chat/completions", body, headers={"Authorization": f"Bearer {key}"}, timeout=15)

    def traffic(self, round_: int) -> None:
        """One round of ordinary traffic. With auth off each Bearer value is its own
        rate-limit key: a key per request, except the one that is meant to hit 429."""
        gw = self.gateway
        for i in range(3):
            assert self.chat(f"user-{round_}-{i}").status == 200
        auth = {"Authorization": f"Bearer user-{round_}-x"}
        assert gw.post("/v1/completions", {"model": MODEL, "prompt": "once upon"}, headers=auth).status == 200
        assert gw.post("/v1/embeddings", {"model": MODEL, "input": "a"},
                       headers={"Authorization": f"Bearer user-{round_}-e"}).status == 200
        assert gw.get("/v1/models", headers={"Authorization": f"Bearer user-{round_}-m"}).status == 200
        assert gw.get("/no/such/route").status == 404
        events = list(gw.stream("/v1/chat/completions", {
            "model": MODEL, "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "stream please"}]},
            headers={"Authorization": f"Bearer user-{round_}-s"}))
        assert events and events[-1][1] == "[DONE]"
        statuses = []
        for _ in range(RPM + 5):
            statuses.append(self.chat(f"hammer-{round_}").status)
            if statuses[-1] == 429:
                break
        assert statuses[-1] == 429 and set(statuses[:-1]) == {200}, statuses

    def kill_a_worker(self) -> bool:
        victim = self.gateway.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        self.gateway.wait_for_workers(2, timeout=20, exclude=[victim])
        return True

    def trip_breaker(self) -> None:
        """BREAKER_THRESHOLD upstream 500s in a row (502 each), then the breaker is open: 503."""
        from gateway import metric_value, parse_metrics
        self.fake.fail_next(count=BREAKER_THRESHOLD, status=500, routes=["/v1/chat/completions"])
        statuses = [self.chat(f"user-breaker-{i}").status for i in range(BREAKER_THRESHOLD)]
        assert statuses == [502] * BREAKER_THRESHOLD, statuses
        assert self.chat("user-breaker-open").status == 503
        state = metric_value(parse_metrics(self.gateway.metrics_text()), "llm_gateway_circuit_breaker_state",
                             upstream=UPSTREAM)
        self.breaker_seen_open = state == 2

    # -- teardown ----------------------------------------------------------------------
    def stop(self) -> None:
        for step in (lambda: self.prometheus and self.prometheus.stop(),
                     lambda: self.gateway and self.gateway.stop(),
                     lambda: self.fake and self.fake.stop(),
                     lambda: self.redis and self.redis.stop(),
                     lambda: self.black_hole and self.black_hole.close()):
            try:
                step()
            except Exception as error:  # keep stopping the rest
                sys.stderr.write(f"teardown: {error!r}\n")

    def dump(self) -> str:
        parts = []
        if self.prometheus:
            parts.append("--- prometheus log ---\n" + self.prometheus.log_tail())
        if self.gateway:
            parts.append("--- gateway log ---\n" + self.gateway.log_tail(40))
        return "\n".join(parts)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("prometheus_stack"))
    try:
        s.start()
    except BaseException:
        sys.stderr.write(s.dump() + "\n")
        s.stop()
        raise
    yield s
    s.stop()
    # Everything (setup, queries, teardown) within the bound the brief sets.
    assert time.monotonic() - s.started < 90


def finite_values(result: list) -> list[float]:
    values = [float(sample["value"][1]) for sample in result]
    return [v for v in values if math.isfinite(v)]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("panel, expr", dashboard_expressions(), ids=[p for p, _ in dashboard_expressions()])
def test_dashboard_expression_returns_data(stack: Stack, panel: str, expr: str) -> None:
    query = substitute(expr)
    answer = stack.prometheus.query(query)
    assert answer["status"] == "success", f"{panel}: {answer.get('error')}\n{query}"
    result = answer["data"]["result"]
    assert result, f"{panel}: no data\n{query}"
    assert finite_values(result), f"{panel}: only NaN/Inf\n{query}\n{result}"


@pytest.mark.timeout(90)
def test_dashboard_variables_list_the_configured_names(stack: Stack) -> None:
    values = {}
    for variable in dashboard_variables():
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", substitute(variable["definition"]))
        assert match, variable["definition"]
        selector, label = match.groups()
        result = stack.prometheus.vector(f"count by ({label}) ({selector})")
        values[variable["name"]] = {sample["metric"].get(label) for sample in result}
        assert values[variable["name"]] - {None, ""}, f"${variable['name']}: no values"
    assert values["model"] == {MODEL}
    assert values["upstream"] == {UPSTREAM}
    assert values["instance"] == {stack.instance}


def rule_names_for_collection() -> list[str]:
    try:
        import yaml
    except ImportError:
        return []  # test_rules_have_for_severity_and_a_runbook_section reports it
    return [rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("rule", rule_names_for_collection())
def test_alert_expression_parses_and_evaluates(stack: Stack, rule: str) -> None:
    expr = next(r["expr"] for r in load_rules() if r["alert"] == rule)
    answer = stack.prometheus.query(expr)
    assert answer["status"] == "success", f"{rule}: {answer.get('error')}"


@pytest.mark.timeout(90)
def test_loaded_rules_evaluate_without_error(stack: Stack) -> None:
    groups = stack.prometheus.get("/api/v1/rules")["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert sorted(r["name"] for r in rules) == sorted(r["alert"] for r in load_rules())
    for rule in rules:
        assert rule["health"] == "ok" and not rule.get("lastError"), rule


@pytest.mark.timeout(90)
def test_down_and_no_worker_alerts_tell_refused_from_unanswered(stack: Stack) -> None:
    rules = {r["alert"]: r["expr"] for r in load_rules()}
    down = {s["metric"].get("instance") for s in stack.prometheus.vector(rules["LLMGatewayDown"])}
    silent = {s["metric"].get("instance") for s in stack.prometheus.vector(rules["LLMGatewayNoWorkerAccepting"])}
    assert down == {stack.silent_instance, stack.closed_instance}
    assert silent == {stack.silent_instance}


@pytest.mark.timeout(90)
def test_traffic_shows_in_the_alert_inputs(stack: Stack) -> None:
    """The alert expressions that can be non-empty here are; the thresholds keep them quiet."""
    prom = stack.prometheus
    assert stack.breaker_seen_open, "the gateway did not report the breaker open after the trip"
    assert prom.vector(f'max_over_time(llm_gateway_circuit_breaker_state{{upstream="{UPSTREAM}"}}[1m]) == 2'), (
        "Prometheus never scraped the breaker open")
    assert prom.vector('increase(llm_gateway_worker_restarts_total[1m]) > 0'), "the killed worker was not counted"
    assert prom.vector('sum(increase(llm_gateway_http_requests_total{status="429"}[1m])) > 0')
    assert prom.vector('sum(increase(llm_gateway_http_requests_total{status=~"5.."}[1m])) > 0')
    assert prom.vector(f'llm_gateway_upstream_up{{upstream="{UPSTREAM}"}} == 1')


@pytest.mark.timeout(90)
def test_only_metrics_the_gateway_exposes_are_used(stack: Stack) -> None:
    exposed = set(re.findall(r"^# TYPE (llm_gateway_[a-z0-9_]+) ", stack.gateway_metrics_text, re.M))
    used = set()
    for _, expr in dashboard_expressions():
        used |= metric_names(expr)
    for variable in dashboard_variables():
        used |= metric_names(variable.get("definition", ""))
    for rule in load_rules():
        used |= metric_names(rule["expr"])
    assert used - exposed == set(), f"not exposed by GET /metrics: {sorted(used - exposed)}"
