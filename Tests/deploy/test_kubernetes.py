"""Checks of the Kubernetes manifests in deploy/kubernetes/, offline and kubectl-free.

Run: python3 -m pytest Tests/deploy/test_kubernetes.py -q

- Every manifest validates against the Kubernetes JSON schemas shipped by the PyPI
  package kubernetes-validate (strict: unknown fields are errors), for the oldest
  Kubernetes these manifests support (1.30: the preStop `sleep` action) and the newest
  the package ships. A deliberately broken copy must fail, so the validator is known
  to bite.
- Cross-file consistency: selectors and labels, Service/probe ports, probe paths,
  terminationGracePeriodSeconds > preStop pause + DRAIN_TIMEOUT, the Secret and
  ConfigMap the Deployment names exist with the keys it reads, the security context.
- When the gateway binaries are built (LLM_GATEWAY_BIN_DIR or .build/release): the
  ConfigMap's config file and the Deployment's environment are run through the real
  supervisor: without BEARER_TOKEN it must refuse the pod's 0.0.0.0 bind (exit 2,
  before binding anything), and with one it must start (on 127.0.0.1 here).

Needs: pytest, PyYAML, kubernetes-validate (Tests/integration/requirements.txt).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML not installed (pip install pyyaml)")
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate not installed (pip install -r Tests/integration/requirements.txt)")

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"
INTEGRATION = REPO / "Tests" / "integration"
MANIFESTS = ["configmap.yaml", "secret.yaml", "deployment.yaml", "service.yaml", "poddisruptionbudget.yaml"]
OLDEST_SUPPORTED = "1.30.0"
DEFAULT_DRAIN_TIMEOUT_S = 30


def newest_schema() -> str:
    return kubernetes_validate.latest_version() + ".0"


def load(name: str) -> dict:
    docs = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d is not None]
    assert len(docs) == 1, f"{name}: one object per file"
    return docs[0]


def objects() -> dict[str, dict]:
    return {obj["kind"]: obj for obj in (load(name) for name in MANIFESTS)}


def deployment() -> dict:
    return objects()["Deployment"]


def container() -> dict:
    containers = deployment()["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one container: the supervisor"
    return containers[0]


def env() -> dict[str, dict]:
    return {e["name"]: e for e in container()["env"]}


# ---------------------------------------------------------------------------- schemas

@pytest.mark.parametrize("version", [OLDEST_SUPPORTED, "newest"])
@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_matches_the_kubernetes_schema(name: str, version: str) -> None:
    version = newest_schema() if version == "newest" else version
    try:
        kubernetes_validate.validate(load(name), version, strict=True)
    except kubernetes_validate.ValidationError as error:
        pytest.fail(f"{name} against Kubernetes {version}: {error}")


@pytest.mark.parametrize("breakage", [
    ("unknown field", lambda d: d["spec"]["template"]["spec"]["containers"][0].update(readinessProbes={})),
    ("wrong type", lambda d: d["spec"].update(replicas="two")),
    ("list as a string", lambda d: d["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]
     .update(drop="ALL")),
    ("missing required", lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name")),
], ids=lambda b: b[0])
def test_the_validator_catches_mistakes(breakage) -> None:
    what, mutate = breakage
    broken = copy.deepcopy(load("deployment.yaml"))
    mutate(broken)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, newest_schema(), strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(MANIFESTS)
    on_disk = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert on_disk == sorted(MANIFESTS), "a manifest is missing from the test (and kustomization.yaml)"


# ---------------------------------------------------------------------------- consistency

def test_labels_and_selectors_match() -> None:
    objs = objects()
    dep = objs["Deployment"]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items(), "the Deployment's selector must match its own pods"
    assert objs["Service"]["spec"]["selector"].items() <= pod_labels.items()
    assert objs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    spread = dep["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert all(c["labelSelector"]["matchLabels"].items() <= pod_labels.items() for c in spread)
    for obj in objs.values():
        assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "llm-gateway"


def test_ports_line_up() -> None:
    objs = objects()
    c = container()
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    bind_port = int(env()["BIND"]["value"].rsplit(":", 1)[1])
    assert ports == {"http": bind_port} == {"http": 8000}
    (svc_port,) = objs["Service"]["spec"]["ports"]
    assert svc_port["targetPort"] in (ports["http"], "http") and svc_port["port"] == 8000
    annotations = objs["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == bind_port
    assert annotations["prometheus.io/path"] == "/metrics"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["port"] in ("http", bind_port), probe


def test_probes_use_the_gateways_health_routes() -> None:
    c = container()
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["startupProbe"]["httpGet"]["path"] == "/health"
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    # A liveness probe must never depend on vLLM, or a vLLM outage restarts every gateway.
    assert "/ready" not in str(c["livenessProbe"])
    # Workers have 30 s to boot; the startup probe waits at least that long.
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30


def test_termination_grace_exceeds_prestop_plus_drain_timeout() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    drain = int(env().get("DRAIN_TIMEOUT", {}).get("value", DEFAULT_DRAIN_TIMEOUT_S))
    pre_stop = container()["lifecycle"]["preStop"]
    pause = pre_stop["sleep"]["seconds"] if "sleep" in pre_stop else 0
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > pause + drain, f"terminationGracePeriodSeconds {grace} <= preStop {pause} + DRAIN_TIMEOUT {drain}"
    # The comment in the manifest states the figures; keep it honest.
    text = (K8S / "deployment.yaml").read_text()
    assert f"DRAIN_TIMEOUT ({drain} s)" in text and f"preStop pause ({pause} s)" in text


def test_security_context_matches_the_systemd_hardening() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    c = container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 1001 and sc["runAsGroup"] == 1001, "the image's user (Containerfile: 1001)"
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc.get("privileged", False) is False
    assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False, "service links inject VLLM_*/LLM_GATEWAY_* variables"
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    # Only in-memory scratch space; nothing else writable.
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in c["volumeMounts"]:
        volume = volumes[mount["name"]]
        assert mount.get("readOnly") is True or volume.get("emptyDir", {}).get("medium") == "Memory", mount


def test_one_supervisor_with_explicit_workers_matching_cpu() -> None:
    c = container()
    workers = int(env()["WORKERS"]["value"])
    assert 1 <= workers <= 64
    assert float(c["resources"]["requests"]["cpu"]) == workers, "WORKERS = CPU request"
    assert "cpu" not in c["resources"].get("limits", {}), "a CPU limit throttles the event loops"
    assert not c.get("command"), "the image's ENTRYPOINT is the supervisor"
    assert deployment()["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_config_and_secret_wiring() -> None:
    objs = objects()
    e = env()
    assert e["BIND"]["value"] == "0.0.0.0:8000"
    # The config file the gateway reads is the ConfigMap's key, mounted where the env says.
    config_path = Path(e["LLM_GATEWAY_CONFIG"]["value"])
    mount = next(m for m in container()["volumeMounts"] if m["mountPath"] == str(config_path.parent))
    volume = next(v for v in deployment()["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    cm = objs["ConfigMap"]
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    items = {i["key"]: i["path"] for i in volume["configMap"].get("items", [])} or {k: k for k in cm["data"]}
    assert items[config_path.name] == config_path.name and config_path.name in cm["data"]
    # The secrets come from the Secret, by reference; BEARER_TOKEN is not optional.
    secret = objs["Secret"]
    for name in ("BEARER_TOKEN", "CLOUD_API_KEY"):
        ref = e[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
        assert "value" not in e[name], f"{name} must not be written into the Deployment"
    assert not e["BEARER_TOKEN"]["valueFrom"]["secretKeyRef"].get("optional", False)
    # Shipped empty: no secret is committed; an empty token makes the pod refuse to start.
    assert all(v == "" for v in secret["stringData"].values())
    assert "data" not in secret


def test_configmap_config_parses_and_names_known_sections() -> None:
    config = yaml.safe_load(objects()["ConfigMap"]["data"]["config.yaml"])
    assert set(config) <= {"upstreams", "models", "keys"}
    for model in config["models"].values():
        assert set(model["upstreams"]) <= set(config["upstreams"])


# ---------------------------------------------------------------------------- the real gateway

@pytest.fixture(scope="module")
def bin_dir() -> Path:
    sys.path.insert(0, str(INTEGRATION))
    from gateway import default_bin_dir, missing_binaries
    directory = default_bin_dir()
    missing = missing_binaries(directory)
    if missing:
        pytest.skip(f"gateway binaries missing in {directory}: {', '.join(missing)}")
    return directory


def pod_environment(config_file: Path) -> dict[str, str]:
    """The Deployment's plain env values, with the config path pointed at a local copy."""
    values = {name: e["value"] for name, e in env().items() if "value" in e}
    values["LLM_GATEWAY_CONFIG"] = str(config_file)
    return values


def test_real_gateway_refuses_the_pods_bind_without_a_token(bin_dir: Path, tmp_path: Path) -> None:
    from gateway import run_cli
    config_file = tmp_path / "config.yaml"
    config_file.write_text(objects()["ConfigMap"]["data"]["config.yaml"])
    # The Secret as shipped: BEARER_TOKEN empty. The check runs while the configuration
    # loads, before any socket is bound.
    result = run_cli(bin_dir, [], env={**pod_environment(config_file), "BEARER_TOKEN": ""}, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "BEARER_TOKEN" in result.stderr and "loopback" in result.stderr


def test_real_gateway_starts_with_the_pods_config_and_a_token(bin_dir: Path, tmp_path: Path) -> None:
    from gateway import Gateway
    config_file = tmp_path / "config.yaml"
    config_file.write_text(objects()["ConfigMap"]["data"]["config.yaml"])
    environment = {**pod_environment(config_file), "BEARER_TOKEN": "k8s-test-token"}
    # --bind (a flag beats BIND from the environment) keeps this test on loopback.
    gw = Gateway(bin_dir, env=environment, workers=None, workdir=tmp_path / "gw", start=False)
    try:
        gw.start()
        assert gw.get("/health").status == 200
        assert gw.get("/v1/models").status == 401, "auth must be on"
        models = gw.get("/v1/models", headers={"Authorization": "Bearer k8s-test-token"})
        assert models.status == 200 and [m["id"] for m in models.json()["data"]] == ["qwen2.5-7b"]
        workers = int(env()["WORKERS"]["value"])
        gw.wait_for_workers(workers, timeout=20)
    finally:
        gw.stop()
