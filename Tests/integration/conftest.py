"""Fixtures for the llm-gateway integration tests.

- fake_vllm            a FakeVLLM (fake_vllm.py subprocess) on free ports, reset, stopped at teardown
- fake_vllm_factory    fake_vllm_factory(models=[...], **cli_options) -> FakeVLLM (several upstreams)
- gateway_binary_dir   Path of llm-gateway + llm-gateway-worker (env LLM_GATEWAY_BIN_DIR, default
                       <repo>/.build/release); skips the test when they are missing
- gateway_factory      gateway_factory(args=(), env=None, **Gateway kwargs) -> Gateway, all stopped
                       at teardown; logs go to tmp_path
- gateway              a started Gateway in front of fake_vllm (--workers 2 --upstream fake_vllm.url)
- redis_server         a private RedisServer (redis_server.py) on 127.0.0.1 and a free port, nothing
                       persisted, stopped (SIGCONT first) at teardown; redis-server missing fails the
                       test unless LLM_GATEWAY_SKIP_REDIS=1 (then it is skipped)

On a failing test the last log lines of every fake and gateway it used are printed.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from fake_vllm import FakeVLLM  # noqa: E402
from gateway import Gateway, default_bin_dir, missing_binaries  # noqa: E402
from redis_server import SKIP_ENV, RedisServer, redis_server_path  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "gateway: needs the built llm-gateway binaries")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request) -> bool:
    rep = getattr(request.node, "rep_call", None)
    setup = getattr(request.node, "rep_setup", None)
    return bool((rep is not None and rep.failed) or (setup is not None and setup.failed))


def _dump(title: str, text: str, n: int = 60) -> None:
    lines = text.splitlines()[-n:]
    sys.stderr.write(f"\n----- {title} (last {len(lines)} lines) -----\n" + "\n".join(lines) + "\n")


@pytest.fixture
def fake_vllm_factory(tmp_path, request):
    started = []

    def make(models=None, **options) -> FakeVLLM:
        fv = FakeVLLM.start(models=models, workdir=str(tmp_path / f"fake_vllm_{len(started)}"), **options)
        started.append(fv)
        return fv

    yield make
    for fv in started:
        fv.stop()
        if _failed(request):
            _dump(f"fake_vllm {fv.url} log", fv.log_text())


@pytest.fixture
def fake_vllm(fake_vllm_factory) -> FakeVLLM:
    return fake_vllm_factory()


@pytest.fixture(scope="session")
def gateway_binary_dir() -> Path:
    bin_dir = default_bin_dir()
    missing = missing_binaries(bin_dir)
    if missing:
        pytest.skip(f"llm-gateway binaries missing in {bin_dir}: {', '.join(missing)} "
                    "(build with `swift build -c release` or set LLM_GATEWAY_BIN_DIR)")
    return bin_dir


@pytest.fixture
def gateway_factory(gateway_binary_dir, tmp_path, request):
    started = []

    def make(args=(), env=None, **kw) -> Gateway:
        idx = len(started)
        kw.setdefault("workdir", tmp_path / f"gateway_{idx}")
        kw.setdefault("log_path", tmp_path / f"gateway_{idx}.log")
        start = kw.pop("start", True)
        wait_healthy = kw.pop("wait_healthy", True)
        gw = Gateway(gateway_binary_dir, args=args, env=env, start=False, **kw)
        started.append(gw)
        if start:
            gw.start(wait_healthy=wait_healthy)
        return gw

    yield make
    crashed = []
    for gw in started:
        gw.stop()
        log = gw.log_text()
        # Swift's own traps print "Fatal error:" (precondition) or "*** Swift runtime
        # failure: …" (overflow, bounds) before the backtrace's "*** Program crashed".
        if any(mark in log for mark in ("*** Program crashed", "Fatal error:", "*** Swift runtime failure")):
            crashed.append(gw)
        if _failed(request) or crashed:
            _dump(f"llm-gateway {gw.url} log ({gw.log_path})", log, 200 if crashed else 60)
    # A worker or supervisor that crashed fails the test even if every request passed.
    assert not crashed, f"a gateway process crashed; see {crashed[0].log_path}" if crashed else ""



@pytest.fixture
def gateway(gateway_factory, fake_vllm) -> Gateway:
    return gateway_factory(upstream=fake_vllm, workers=2)


@pytest.fixture
def redis_server(tmp_path, request) -> RedisServer:
    if redis_server_path() is None:
        if os.environ.get(SKIP_ENV) == "1":
            pytest.skip(f"redis-server not on PATH and {SKIP_ENV}=1")
        pytest.fail(f"redis-server is not on PATH: install it (scripts/setup-deps redis-server) or set {SKIP_ENV}=1")
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()
    if _failed(request):
        _dump(f"redis-server {server.url} log", server.log_text())
