"""Self-tests of the Gateway process harness, run against a stand-in `llm-gateway`
(a small Python supervisor + workers written to tmp_path), so the harness is proven
before the Swift binaries exist."""
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import sys
import time
from pathlib import Path

import pytest

from gateway import (Gateway, GatewayStartError, NotifySocket, gateway_env, metric_value, missing_binaries,
                     parse_metrics, pid_alive, proc_status, run_cli, wait_until)

STUB_SUPERVISOR = r'''#!{python}
import argparse, os, signal, socket, subprocess, sys, time
p = argparse.ArgumentParser(prog="llm-gateway")
p.add_argument("--bind", default="127.0.0.1:8000")
p.add_argument("--workers", type=int, default=2)
p.add_argument("--upstream")
p.add_argument("--fail", action="store_true")
p.add_argument("--ignore-term", action="store_true")
args = p.parse_args()
if args.fail:
    print("error: config key 'workers' is invalid", file=sys.stderr, flush=True)
    sys.exit(2)
if os.environ.get("LISTEN_FDS") == "1" and os.environ.get("LISTEN_PID") == str(os.getpid()):
    sock = socket.socket(fileno=3)
    print("stub: socket activation", flush=True)
else:
    host, port = args.bind.rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.listen(64)
fd = sock.fileno()
worker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "llm-gateway-worker")
workers = [subprocess.Popen([worker, str(fd)], pass_fds=[fd]) for _ in range(args.workers)]
print(f"stub supervisor pid {{os.getpid()}} workers {{[w.pid for w in workers]}}", flush=True)
ns = os.environ.get("NOTIFY_SOCKET")
if ns:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(b"READY=1\nSTATUS=stub ready", ns)
stop = []
if args.ignore_term:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
while not stop:
    time.sleep(0.05)
for w in workers:
    w.terminate()
for w in workers:
    w.wait(5)
sys.exit(0)
'''

STUB_WORKER = r'''#!{python}
import http.server, json, os, socket, sys
sock = socket.socket(fileno=int(sys.argv[1]))
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        if self.path == "/health":
            body, ctype = b'{{"status":"ok"}}', "application/json"
        elif self.path == "/env":
            body, ctype = json.dumps(dict(os.environ)).encode(), "application/json"
        elif self.path == "/metrics":
            body = (b"# HELP llm_gateway_http_requests_total requests\n"
                    b"# TYPE llm_gateway_http_requests_total counter\n"
                    b'llm_gateway_http_requests_total{{route="/health",method="GET",status="200"}} 3\n'
                    b'llm_gateway_http_requests_total{{route="/v1/models",method="GET",status="401"}} 2\n')
            ctype = "text/plain; version=0.0.4"
        else:
            body, ctype = b'{{"error":{{"message":"not found","type":"not_found","param":null,"code":null}}}}', "application/json"
            self.send_response(404)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
srv = http.server.HTTPServer(("127.0.0.1", 0), H, bind_and_activate=False)
srv.socket.close()
srv.socket = sock
srv.serve_forever()
'''


@pytest.fixture
def stub_bin(tmp_path) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    for name, src in (("llm-gateway", STUB_SUPERVISOR), ("llm-gateway-worker", STUB_WORKER)):
        p = d / name
        p.write_text(src.format(python=sys.executable))
        p.chmod(p.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return d


@pytest.fixture
def gateways():
    started = []
    yield started
    for g in started:
        g.stop(timeout=5)


def test_missing_binaries(tmp_path, stub_bin):
    assert missing_binaries(tmp_path) == ["llm-gateway", "llm-gateway-worker"]
    assert missing_binaries(stub_bin) == []


def test_env_is_filtered():
    base = {"PATH": "/bin", "HOME": "/root", "BEARER_TOKEN": "x", "RATE_LIMIT_RPM": "1", "VLLM_UPSTREAM_URL": "u",
            "GITHUB_TOKEN": "t", "AWS_SECRET_ACCESS_KEY": "s", "LOG_LEVEL": "debug", "LANG": "C.UTF-8"}
    env = gateway_env({"BEARER_TOKEN": "given", "EXTRA": 1, "HOME": None}, base=base)
    assert env == {"PATH": "/bin", "LANG": "C.UTF-8", "BEARER_TOKEN": "given", "EXTRA": "1"}


def test_gateway_lifecycle(stub_bin, fake_vllm, gateways, monkeypatch, tmp_path):
    monkeypatch.setenv("BEARER_TOKEN", "leaked")
    monkeypatch.setenv("RATE_LIMIT_RPM", "1")
    gw = Gateway(stub_bin, args=[], env={"LOG_LEVEL": "debug"}, workers=3, upstream=fake_vllm,
                 workdir=tmp_path / "gw", health_timeout=10)
    gateways.append(gw)
    assert gw.argv[1:] == ["--bind", f"127.0.0.1:{gw.port}", "--workers", "3", "--upstream", fake_vllm.url]
    r = gw.get("/health")
    assert r.status == 200 and r.json() == {"status": "ok"}
    workers = gw.wait_for_workers(3, timeout=5)
    assert len(set(workers)) == 3 and gw.pid not in workers
    env = gw.get("/env").json()
    assert "BEARER_TOKEN" not in env and "RATE_LIMIT_RPM" not in env and env["LOG_LEVEL"] == "debug"
    st = gw.status()
    assert {"Uid", "CapEff", "NoNewPrivs"} <= set(st)
    assert int(st["Uid"].split()[0]) == os.getuid()
    assert set(proc_status(workers[0])) >= {"Uid", "CapEff"}
    assert "stub supervisor pid" in gw.log_text()
    samples = gw.metrics()
    assert metric_value(samples, "llm_gateway_http_requests_total") == 5
    assert metric_value(samples, "llm_gateway_http_requests_total", route="/health") == 3
    # a dead worker: the stub does not replace it, the harness sees it gone
    os.kill(workers[0], signal.SIGKILL)
    wait_until(lambda: len(gw.worker_pids()) == 2, 5, what="worker reaped or zombie excluded")
    gw.signal(signal.SIGTERM)
    assert gw.wait(10) == 0
    assert not any(pid_alive(w) for w in workers[1:])
    assert gw.stop() == 0  # idempotent


def test_start_failure_reports_log(stub_bin, gateways):
    t0 = time.monotonic()
    with pytest.raises(GatewayStartError) as ei:
        gateways.append(Gateway(stub_bin, args=["--fail"], health_timeout=10))
    assert "exited with code 2" in str(ei.value) and "config key 'workers'" in str(ei.value)
    assert time.monotonic() - t0 < 5
    gw = Gateway(stub_bin, args=["--fail"], wait_healthy=False)
    gateways.append(gw)
    assert gw.wait(10) == 2


def test_stop_kills_a_supervisor_that_ignores_sigterm(stub_bin, gateways):
    gw = Gateway(stub_bin, args=["--ignore-term"], workers=2, health_timeout=10)
    gateways.append(gw)
    workers = gw.wait_for_workers(2, timeout=5)
    t0 = time.monotonic()
    rc = gw.stop(timeout=1.0)
    assert rc == -signal.SIGKILL and time.monotonic() - t0 < 5
    wait_until(lambda: not any(pid_alive(w) for w in workers), 5, what="workers killed")


def test_run_cli(stub_bin):
    r = run_cli(stub_bin, ["--help"])
    assert r.returncode == 0 and "--workers" in r.stdout
    r = run_cli(stub_bin, ["--fail"])
    assert r.returncode == 2 and "workers" in r.stderr


def test_socket_activation_and_notify(stub_bin, gateways, tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    notify = NotifySocket(tmp_path)
    try:
        gw = Gateway(stub_bin, workers=1, bind=False, listen_socket=sock, env={"NOTIFY_SOCKET": notify.path},
                     health_timeout=10)
        gateways.append(gw)
        assert gw.port == sock.getsockname()[1] and "--bind" not in gw.argv
        assert "stub: socket activation" in gw.log_text()
        assert "READY=1" in notify.wait_for("READY=1", timeout=5)
    finally:
        sock.close()
        notify.close()
