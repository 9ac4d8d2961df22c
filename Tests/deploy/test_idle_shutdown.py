"""The idle-shutdown guardrail: deploy/idle/llm-gateway-idle-check and its systemd units.

Run: python3 -m pytest Tests/deploy/test_idle_shutdown.py -q

The script is run as shipped (its shebang, its exec bit) against a throw-away HTTP
server on 127.0.0.1 standing in for the gateway's GET /idle, with a stand-in
IDLE_SHUTDOWN_COMMAND that creates a file: the file appears only when the script
decided to shut down. It must fire when idle long enough with no stream open, and
never below the limit, with a stream open, when the gateway is unreachable, slow, or
answers an error or garbage, nor on bad configuration.
`systemd-analyze verify` checks the .service and .timer when the tool is installed.
When the gateway binaries are built (LLM_GATEWAY_BIN_DIR or .build/release) and have
GET /idle, the script is also run against the real gateway in front of the fake vLLM.
"""

from __future__ import annotations

import http.server
import importlib.machinery
import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "idle" / "llm-gateway-idle-check"
SERVICE = REPO / "deploy" / "systemd" / "llm-gateway-idle.service"
TIMER = REPO / "deploy" / "systemd" / "llm-gateway-idle.timer"
INSTALLED_SCRIPT = "/usr/local/bin/llm-gateway-idle-check"

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_systemd_unit import SYSTEMD_ANALYZE, needs_systemd_analyze, parse_unit, run, values  # noqa: E402


# ---------------------------------------------------------------------------- stand-in gateway

class IdleServer:
    """GET /idle answers whatever the test set: status, body (bytes or a JSON value), delay."""

    def __init__(self) -> None:
        self.status = 200
        self.body: object = {"idle_seconds": 0.0, "open_streams": 0}
        self.delay = 0.0
        self.requests: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                owner.requests.append(self.path)
                if owner.delay:
                    time.sleep(owner.delay)
                if self.path != "/idle":
                    status, body = 404, b'{"error":"not found"}'
                else:
                    status = owner.status
                    body = owner.body if isinstance(owner.body, bytes) else json.dumps(owner.body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (timeout test)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def answer(self, idle_seconds: object, open_streams: object = 0) -> None:
        self.body = {"idle_seconds": idle_seconds, "open_streams": open_streams}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateway():
    server = IdleServer()
    yield server
    server.close()


def closed_port_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more


class Check:
    """Runs the script with a stand-in command that creates `self.marker`."""

    def __init__(self, tmp_path: Path) -> None:
        self.marker = tmp_path / "shutdown-ran"
        self.command = f"touch {shlex.quote(str(self.marker))}"

    def __call__(self, url: str | None, after: str | None = "30m", *args: str,
                 command: str | None = None, **extra: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("IDLE_") and k != "GATEWAY_URL"}
        if url is not None:
            env["GATEWAY_URL"] = url
        if after is not None:
            env["IDLE_SHUTDOWN_AFTER"] = after
        env["IDLE_SHUTDOWN_COMMAND"] = self.command if command is None else command
        env.update(extra)
        return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=30)

    @property
    def fired(self) -> bool:
        return self.marker.exists()


@pytest.fixture
def check(tmp_path: Path) -> Check:
    return Check(tmp_path)


def log_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


# ---------------------------------------------------------------------------- fires

def test_script_is_executable_with_a_python3_shebang() -> None:
    assert os.access(SCRIPT, os.X_OK), f"{SCRIPT} must be executable (chmod 755)"
    assert SCRIPT.read_text().splitlines()[0] == "#!/usr/bin/env python3"


def test_fires_when_idle_past_the_limit_with_no_stream(gateway: IdleServer, check: Check) -> None:
    gateway.answer(1860.5, 0)
    result = check(gateway.url, "30m")
    assert result.returncode == 0, result.stderr
    assert check.fired, "the shutdown command did not run"
    assert gateway.requests == ["/idle"]
    lines = log_lines(result)
    assert len(lines) == 1, lines
    line = lines[0]
    # One line that says why: how long idle, the limit, no stream, and what it runs.
    assert "idle for 31m00s" in line and "30m00s" in line and "no open stream" in line, line
    assert check.command.split()[0] in line


@pytest.mark.parametrize("after, idle, fires", [
    ("1800", 1800, True), ("1800s", 1800.0, True), ("30m", 1800.0, True), ("0.5h", 1800, True),
    ("1800", 1799.9, False), ("30m", 1799, False), ("1h", 3599.5, False), ("2h", 7200, True),
])
def test_limit_units_and_boundary(gateway: IdleServer, check: Check, after: str, idle: float, fires: bool) -> None:
    gateway.answer(idle, 0)
    result = check(gateway.url, after)
    assert result.returncode == 0, result.stderr
    assert check.fired is fires, result.stderr


def test_dry_run_says_what_it_would_run_and_runs_nothing(gateway: IdleServer, check: Check) -> None:
    gateway.answer(7200, 0)
    result = check(gateway.url, "1h", "--dry-run")
    assert result.returncode == 0
    assert not check.fired
    assert "would run: touch" in result.stderr and "dry run" in result.stderr


def test_a_failing_command_is_reported(gateway: IdleServer, check: Check) -> None:
    gateway.answer(7200, 0)
    result = check(gateway.url, "1h", command="false")
    assert result.returncode == 1
    assert "exited with status 1" in result.stderr
    result = check(gateway.url, "1h", command="/nonexistent/poweroff-stand-in")
    assert result.returncode == 1 and "failed" in result.stderr


# ---------------------------------------------------------------------------- does not fire

def test_not_while_a_stream_is_open(gateway: IdleServer, check: Check) -> None:
    # The gateway reports idle_seconds 0 while a stream is open; the script does not rely
    # on that: any open stream blocks the shutdown, whatever idle_seconds says.
    for idle in (0, 99999):
        gateway.answer(idle, 1)
        result = check(gateway.url, "30m", "--verbose")
        assert result.returncode == 0
        assert not check.fired
        assert "1 stream(s) open" in result.stderr


def test_not_below_the_limit(gateway: IdleServer, check: Check) -> None:
    gateway.answer(600.0, 0)
    quiet = check(gateway.url, "30m")
    assert quiet.returncode == 0 and not check.fired
    assert quiet.stderr == "", "a check that does nothing logs nothing unless --verbose"
    verbose = check(gateway.url, "30m", "--verbose")
    assert "idle for 10m00s, limit 30m00s" in verbose.stderr and not check.fired


def test_not_when_the_gateway_is_unreachable(check: Check) -> None:
    url = closed_port_url()
    result = check(url, "1s")
    assert result.returncode == 1
    assert not check.fired
    lines = log_lines(result)
    assert len(lines) == 1 and f"cannot reach {url}/idle" in lines[0] and "not shutting down" in lines[0], lines


def test_not_when_the_gateway_is_too_slow(gateway: IdleServer, check: Check) -> None:
    gateway.answer(99999, 0)
    gateway.delay = 3.0
    started = time.monotonic()
    result = check(gateway.url, "1s", IDLE_CHECK_TIMEOUT="0.5")
    assert time.monotonic() - started < 2.5, "the timeout was not applied"
    assert result.returncode == 1 and not check.fired
    assert "not shutting down" in result.stderr


@pytest.mark.parametrize("status", [404, 500, 503])
def test_not_on_an_http_error(gateway: IdleServer, check: Check, status: int) -> None:
    # 404: a gateway too old to have /idle. The body would say "idle" if it were read.
    gateway.status = status
    gateway.answer(99999, 0)
    result = check(gateway.url, "1s")
    assert result.returncode == 1 and not check.fired
    assert f"HTTP {status}" in result.stderr


@pytest.mark.parametrize("body", [
    b"", b"idle", b"<html>idle</html>", b"[]", b"null", b'"99999"', b"{}",
    b'{"idle_seconds": 99999}',                          # open_streams missing
    b'{"open_streams": 0}',                              # idle_seconds missing
    b'{"idle_seconds": "99999", "open_streams": 0}',     # a string
    b'{"idle_seconds": true, "open_streams": 0}',        # a bool is not a number
    b'{"idle_seconds": -5, "open_streams": 0}',
    b'{"idle_seconds": NaN, "open_streams": 0}',
    b'{"idle_seconds": Infinity, "open_streams": 0}',
    b'{"idle_seconds": 99999, "open_streams": "0"}',
    b'{"idle_seconds": 99999, "open_streams": 0.5}',
    b'{"idle_seconds": 99999, "open_streams": -1}',
    b'{"idle_seconds": 99999, "open_streams": null}',
    b'{"idle_seconds": 99999, "open_streams": false}',
    b"\xff\xfe{",
])
def test_not_on_garbage(gateway: IdleServer, check: Check, body: bytes) -> None:
    gateway.body = body
    result = check(gateway.url, "1s")
    assert result.returncode == 1, result.stderr
    assert not check.fired, f"fired on {body!r}"
    assert len(log_lines(result)) == 1 and "not shutting down" in result.stderr


def test_not_on_an_oversized_answer(gateway: IdleServer, check: Check) -> None:
    gateway.body = json.dumps({"idle_seconds": 99999, "open_streams": 0, "pad": "x" * 70000}).encode()
    result = check(gateway.url, "1s")
    assert result.returncode == 1 and not check.fired


@pytest.mark.parametrize("after", [None, "", "abc", "0", "0s", "-5", "30x", "5 min", "1e3"])
def test_bad_configuration_exits_2_and_does_nothing(gateway: IdleServer, check: Check, after: str | None) -> None:
    gateway.answer(99999, 0)
    result = check(gateway.url, after)
    assert result.returncode == 2, result.stderr
    assert not check.fired
    assert "invalid configuration: IDLE_SHUTDOWN_AFTER" in result.stderr
    assert gateway.requests == [], "a bad configuration must not even ask the gateway"


@pytest.mark.parametrize("extra, message", [
    ({"GATEWAY_URL": "127.0.0.1:8000"}, "GATEWAY_URL"),
    ({"IDLE_SHUTDOWN_COMMAND": "touch 'unterminated"}, "IDLE_SHUTDOWN_COMMAND"),
    ({"IDLE_CHECK_TIMEOUT": "soon"}, "IDLE_CHECK_TIMEOUT"),
])
def test_other_bad_settings_exit_2(gateway: IdleServer, check: Check, extra: dict, message: str) -> None:
    gateway.answer(99999, 0)
    extra = dict(extra)
    url = extra.pop("GATEWAY_URL", gateway.url)
    result = check(url, "1s", **extra)
    assert result.returncode == 2 and not check.fired
    assert f"invalid configuration: {message}" in result.stderr


def test_unknown_argument_exits_2(gateway: IdleServer, check: Check) -> None:
    gateway.answer(99999, 0)
    result = check(gateway.url, "1s", "--force")
    assert result.returncode == 2 and not check.fired


def test_defaults() -> None:
    """GATEWAY_URL and IDLE_SHUTDOWN_COMMAND defaults, read without running anything."""
    loader = importlib.machinery.SourceFileLoader("llm_gateway_idle_check", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    url, after, command, timeout = module.read_config({"IDLE_SHUTDOWN_AFTER": "30m"})
    assert (url, after, command, timeout) == ("http://127.0.0.1:8000", 1800.0, ["systemctl", "poweroff"], 5.0)
    _, _, command, _ = module.read_config({"IDLE_SHUTDOWN_AFTER": "1",
                                           "IDLE_SHUTDOWN_COMMAND": "sh -c 'echo a | logger'"})
    assert command == ["sh", "-c", "echo a | logger"]


# ---------------------------------------------------------------------------- the units

def test_units_wire_the_script_and_the_timer() -> None:
    service, timer = parse_unit(SERVICE), parse_unit(TIMER)
    assert values(service, "Service", "Type") == ["oneshot"]
    assert values(service, "Service", "ExecStart") == [INSTALLED_SCRIPT]
    envs = dict(v.split("=", 1) for v in values(service, "Service", "Environment"))
    assert envs["IDLE_SHUTDOWN_AFTER"] == "30m"
    assert envs["IDLE_SHUTDOWN_COMMAND"] == '"systemctl poweroff"'
    assert envs["GATEWAY_URL"] == "http://127.0.0.1:8000"
    assert values(service, "Service", "IPAddressAllow") == ["localhost"]
    assert not values(service, "Install", "WantedBy"), "the timer starts the service, not a target"
    assert values(timer, "Timer", "Unit") == [SERVICE.name]
    assert values(timer, "Timer", "OnUnitActiveSec") and values(timer, "Timer", "OnBootSec")
    assert values(timer, "Install", "WantedBy") == ["timers.target"]


def test_the_units_defaults_are_accepted_by_the_script(gateway: IdleServer, check: Check) -> None:
    """The unit's Environment= values, as systemd would pass them, pass the script's checks."""
    envs = dict(v.split("=", 1) for v in values(parse_unit(SERVICE), "Service", "Environment"))
    gateway.answer(1799, 0)
    result = check(gateway.url, envs["IDLE_SHUTDOWN_AFTER"], "--verbose")
    assert result.returncode == 0 and "limit 30m00s" in result.stderr and not check.fired
    gateway.answer(1800, 0)
    assert check(gateway.url, envs["IDLE_SHUTDOWN_AFTER"]).returncode == 0 and check.fired


@needs_systemd_analyze
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    # As in test_systemd_unit.py: verify wants ExecStart's binary to exist, so only that
    # path is pointed at a stand-in; everything else is verified as shipped.
    stand_in = tmp_path / "llm-gateway-idle-check"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    text = SERVICE.read_text()
    pattern = re.compile(r"^ExecStart=" + re.escape(INSTALLED_SCRIPT) + r"$", re.M)
    assert len(pattern.findall(text)) == 1
    (tmp_path / SERVICE.name).write_text(pattern.sub(f"ExecStart={stand_in}", text))
    shutil.copy(TIMER, tmp_path / TIMER.name)
    result = run([SYSTEMD_ANALYZE, "verify", "--man=no", "--generators=no",
                  str(tmp_path / SERVICE.name), str(tmp_path / TIMER.name)])
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not output, f"systemd-analyze verify exit {result.returncode}:\n{output}"


@needs_systemd_analyze
def test_verify_would_catch_a_typo(tmp_path: Path) -> None:
    stand_in = tmp_path / "llm-gateway-idle-check"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    text = SERVICE.read_text().replace(f"ExecStart={INSTALLED_SCRIPT}", f"ExecStart={stand_in}")
    (tmp_path / SERVICE.name).write_text(text)
    (tmp_path / TIMER.name).write_text(TIMER.read_text().replace("OnUnitActiveSec=", "OnUnitActiveSecs="))
    result = run([SYSTEMD_ANALYZE, "verify", "--man=no", "--generators=no",
                  str(tmp_path / SERVICE.name), str(tmp_path / TIMER.name)])
    assert "OnUnitActiveSecs" in result.stdout + result.stderr


# ---------------------------------------------------------------------------- the real gateway

def test_against_the_real_gateway(check: Check, tmp_path: Path) -> None:
    """The script reads the real GET /idle: not while a stream is open, fires once the
    gateway has been idle past the limit; scrapes and health checks are not activity.
    Skipped when the binaries are not built or predate GET /idle."""
    sys.path.insert(0, str(REPO / "Tests" / "integration"))
    from fake_vllm import FakeVLLM
    from gateway import Gateway, default_bin_dir, missing_binaries
    bin_dir = default_bin_dir()
    if missing_binaries(bin_dir):
        pytest.skip(f"gateway binaries missing in {bin_dir}")
    fake = FakeVLLM.start(workdir=str(tmp_path / "fake_vllm"))
    gw = Gateway(bin_dir, workers=1, upstream=fake, workdir=tmp_path / "gw", start=False)
    try:
        gw.start()
        if gw.get("/idle").status == 404:
            pytest.skip("this gateway build has no GET /idle yet")
        body = {"model": fake.control("models")["models"][0], "messages": [{"role": "user", "content": "hi"}]}
        assert gw.post("/v1/chat/completions", body).status == 200
        assert check(gw.url, "1h").returncode == 0 and not check.fired
        # A stream held open past the limit: never fires.
        fake.set_stream(events=6, delay=0.4)
        events = gw.stream("/v1/chat/completions", {**body, "stream": True})
        next(events)
        time.sleep(1.2)
        result = check(gw.url, "1s", "--verbose")
        assert result.returncode == 0 and not check.fired, result.stderr
        assert "stream(s) open" in result.stderr
        for _ in events:
            pass
        # Idle past the limit, with only scrapes and health checks meanwhile: fires.
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert gw.get("/metrics").status == 200 and gw.get("/health").status == 200
            time.sleep(0.2)
        result = check(gw.url, "1s")
        assert result.returncode == 0, result.stderr
        assert check.fired, f"did not fire on the real gateway: {result.stderr}"
        assert "no open stream" in result.stderr
    finally:
        gw.stop()
        fake.stop()
