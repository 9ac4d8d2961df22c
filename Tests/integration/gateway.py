"""Process harness for the llm-gateway integration tests.

``Gateway(bin_dir, args=[...], env={...})`` starts the ``llm-gateway`` supervisor as a
subprocess in its own process group::

    llm-gateway --bind 127.0.0.1:<free port> --workers N [--upstream URL] <args...>

with stdout+stderr captured to a log file, a working directory of its own (the gateway
reads ``.env`` from there), and an explicit environment: ``os.environ`` minus every
variable the gateway reads (``BEARER_TOKEN``, ``RATE_LIMIT_*``, ``VLLM_*``, ...) and
anything that looks like a secret, plus what the test passes. It waits for
``GET /health`` to answer 200 (bounded) and fails with the last log lines otherwise.
``stop()`` (SIGTERM, then SIGKILL of the process group and the known workers after a
bound) is idempotent and also runs at interpreter exit for every gateway still running.

Standard library only, except the optional ``openai_client()`` / ``metrics()`` helpers.
Everything talks to loopback only: 127.0.0.1 by default; ``host="127.0.0.2"`` (any
127.0.0.0/8 address, all of which Linux routes to ``lo``) makes a second "host" on the same
machine (each supervisor has its own memfd segment, so nothing else is needed).
"""
from __future__ import annotations

import atexit
import http.client
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent

SUPERVISOR_BIN = "llm-gateway"
WORKER_BIN = "llm-gateway-worker"
LOOPBACK = "127.0.0.1"

# Variables the gateway reads (SPEC.md) or that systemd hands to services: never inherited.
GATEWAY_ENV_NAMES = {
    "BIND", "WORKERS", "DRAIN_TIMEOUT", "RUN_AS_USER", "BEARER_TOKEN", "MAX_REQUEST_BODY_BYTES",
    "LOG_LEVEL", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC",
    "WATCHDOG_PID", "CLOUD_API_KEY", "GATEWAY_HOSTS",
}
GATEWAY_ENV_PREFIXES = ("BEARER_TOKEN", "RATE_LIMIT", "VLLM_", "LLM_GATEWAY_", "CIRCUIT_BREAKER", "OPENAI_", "REDIS_")
SECRET_RE = re.compile(r"TOKEN|SECRET|PASSW|API_?KEY|CREDENTIAL|PRIVATE_KEY|AUTH", re.I)


def gateway_env(extra: Optional[Mapping[str, str]] = None,
                base: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """os.environ (or base) minus gateway/secret variables, plus extra (which wins)."""
    base = os.environ if base is None else base
    env = {}
    for k, v in base.items():
        if k in GATEWAY_ENV_NAMES or k.startswith(GATEWAY_ENV_PREFIXES) or SECRET_RE.search(k):
            continue
        env[k] = v
    for k, v in (extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def default_bin_dir() -> Path:
    return Path(os.environ.get("LLM_GATEWAY_BIN_DIR") or (REPO_ROOT / ".build" / "release"))


def missing_binaries(bin_dir: Union[str, Path]) -> List[str]:
    bin_dir = Path(bin_dir)
    return [name for name in (SUPERVISOR_BIN, WORKER_BIN)
            if not (bin_dir / name).is_file() or not os.access(bin_dir / name, os.X_OK)]


# ------------------------------------------------------------------------------------
# /proc helpers
# ------------------------------------------------------------------------------------

def proc_stat(pid: int) -> Optional[Dict[str, Any]]:
    """{pid, comm, state, ppid, pgrp, session} from /proc/PID/stat, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("utf-8", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    lpar, rpar = raw.index("("), raw.rindex(")")
    rest = raw[rpar + 2:].split()
    return {"pid": int(raw[:lpar].strip()), "comm": raw[lpar + 1:rpar], "state": rest[0],
            "ppid": int(rest[1]), "pgrp": int(rest[2]), "session": int(rest[3])}


def proc_cmdline(pid: int) -> List[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def proc_status(pid: int) -> Dict[str, str]:
    """All fields of /proc/PID/status as strings (e.g. "Uid": "0\\t0\\t0\\t0",
    "CapEff": "0000000000000000", "NoNewPrivs": "1")."""
    out: Dict[str, str] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if ":" in line:
                k, v = line.split(":", 1)
                out[k.strip()] = v.strip()
    return out


def proc_uids(pid: int) -> Tuple[int, int, int, int]:
    """(real, effective, saved, filesystem) uid."""
    return tuple(int(x) for x in proc_status(pid)["Uid"].split())  # type: ignore[return-value]


def proc_cap_eff(pid: int) -> int:
    return int(proc_status(pid)["CapEff"], 16)


def pid_alive(pid: int) -> bool:
    st = proc_stat(pid)
    return st is not None and st["state"] not in ("Z", "X")


def children_of(pid: int, include_zombies: bool = False) -> List[int]:
    """Direct children of pid (by scanning /proc/*/stat for ppid; works whichever thread forked)."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = proc_stat(int(entry))
        if st is None or st["ppid"] != pid:
            continue
        if not include_zombies and st["state"] in ("Z", "X"):
            continue
        kids.append(st["pid"])
    return sorted(kids)


def is_worker_process(pid: int) -> bool:
    st = proc_stat(pid)
    if st is None:
        return False
    if WORKER_BIN.startswith(st["comm"]) and len(st["comm"]) >= 15 or st["comm"] == WORKER_BIN:
        return True
    argv = proc_cmdline(pid)
    return any(os.path.basename(a) == WORKER_BIN for a in argv[:2])


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll predicate() until truthy (returned) or raise AssertionError after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last={last!r})")
        time.sleep(interval)


# ------------------------------------------------------------------------------------
# Small HTTP client (stdlib; 127.0.0.1 only)
# ------------------------------------------------------------------------------------

class Response:
    def __init__(self, status: int, headers: List[Tuple[str, str]], body: bytes, elapsed: float):
        self.status = status
        self.headers_list = headers
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body
        self.elapsed = elapsed

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.body[:200]!r}>"


def is_loopback(host: str) -> bool:
    """True for localhost, ::1 and any 127.0.0.0/8 address (the tests' extra "hosts")."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def http_request(host: str, port: int, method: str, path: str, body: Union[bytes, str, None, Any] = None,
                 headers: Optional[Mapping[str, str]] = None, timeout: float = 10.0) -> Response:
    """One request on a fresh connection. Non-bytes/str bodies are sent as JSON."""
    assert is_loopback(host), f"tests talk to loopback only (got {host!r})"
    hdrs = dict(headers or {})
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
        hdrs.setdefault("Content-Type", "application/json")
    if isinstance(body, str):
        body = body.encode("utf-8")
    t0 = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, r.getheaders(), data, time.monotonic() - t0)
    finally:
        conn.close()


def _sse_blocks(host: str, port: int, path: str, body: Any, headers: Optional[Mapping[str, str]],
                timeout: float) -> Iterator[Tuple[float, Optional[str], Optional[str]]]:
    """POST body; yield (receive time.time(), event name or None, data or None when the
    event had no data line) per SSE event as it arrives. The status must be 200; closing
    the generator disconnects. A body cut short raises http.client.IncompleteRead."""
    hdrs = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    hdrs.update(headers or {})
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", path, body=json.dumps(body).encode(), headers=hdrs)
        r = conn.getresponse()
        if r.status != 200:
            raise AssertionError(f"SSE request got {r.status}: {r.read()[:500]!r}")
        event: Optional[str] = None
        data_lines: List[str] = []
        has_data = False
        while True:
            line = r.readline()
            if not line:
                # http.client's readline hides a truncated body: check the framing ourselves
                if (r.chunked and r.chunk_left is not None) or (not r.chunked and r.length):
                    raise http.client.IncompleteRead(b"".join(d.encode() for d in data_lines))
                return
            s = line.decode("utf-8").rstrip("\r\n")
            if s == "":
                if has_data or event:
                    yield time.time(), event, "\n".join(data_lines) if has_data else None
                    event, data_lines, has_data = None, [], False
                continue
            if s.startswith("event:"):
                event = s[6:].strip()
            elif s.startswith("data:"):
                v = s[5:]
                data_lines.append(v[1:] if v.startswith(" ") else v)
                has_data = True
    finally:
        conn.close()


def sse_events(host: str, port: int, path: str, body: Any, headers: Optional[Mapping[str, str]] = None,
               timeout: float = 30.0, max_events: int = 10000) -> Iterator[Tuple[float, str]]:
    """POST body and yield (receive time.time(), data) for every SSE ``data:`` event, as it
    arrives (the status must be 200). The caller may stop iterating (or .close()) to
    disconnect. A body cut short (no terminating chunk) raises http.client.IncompleteRead."""
    blocks = _sse_blocks(host, port, path, body, headers, timeout)
    try:
        count = 0
        for received, _, data in blocks:
            if data is None:
                continue
            yield received, data
            count += 1
            if count >= max_events:
                return
    finally:
        blocks.close()


def sse_named_events(host: str, port: int, path: str, body: Any, headers: Optional[Mapping[str, str]] = None,
                     timeout: float = 30.0, max_events: int = 10000) -> Iterator[Tuple[float, Optional[str], str]]:
    """Like sse_events, for streams that name their events (Responses, Anthropic): yields
    (receive time.time(), event name or None, data) per event as it arrives."""
    blocks = _sse_blocks(host, port, path, body, headers, timeout)
    try:
        for count, (received, event, data) in enumerate(blocks, 1):
            yield received, event, data or ""
            if count >= max_events:
                return
    finally:
        blocks.close()


def parse_sse(body: bytes) -> List[Tuple[Optional[str], str]]:
    """[(event name or None, data)] of every complete SSE event in body (``event:`` and
    ``data:`` lines of one block; data lines joined with newlines)."""
    out: List[Tuple[Optional[str], str]] = []
    for block in body.decode("utf-8", "replace").replace("\r\n", "\n").split("\n\n")[:-1]:
        event, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                v = line[5:]
                data.append(v[1:] if v.startswith(" ") else v)
        if data or event:
            out.append((event, "\n".join(data)))
    return out


# ------------------------------------------------------------------------------------
# Metrics helpers
# ------------------------------------------------------------------------------------

def parse_metrics(text: str) -> List[Tuple[str, Dict[str, str], float]]:
    """Prometheus text -> [(sample name, labels, value)] (uses prometheus_client's parser)."""
    from prometheus_client.parser import text_string_to_metric_families
    out = []
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.append((s.name, dict(s.labels), float(s.value)))
    return out


def metric_value(samples: Iterable[Tuple[str, Dict[str, str], float]], name: str, **labels: str) -> float:
    """Sum of the samples called name whose labels include all of labels (0.0 if none)."""
    total = 0.0
    for n, lbl, v in samples:
        if n == name and all(lbl.get(k) == v2 for k, v2 in labels.items()):
            total += v
    return total


# ------------------------------------------------------------------------------------
# sd_notify receiver
# ------------------------------------------------------------------------------------

class NotifySocket:
    """An AF_UNIX datagram socket to pass as NOTIFY_SOCKET; collects sd_notify messages."""

    def __init__(self, directory: Union[str, Path]):
        self.path = str(Path(directory) / f"notify-{os.getpid()}-{time.monotonic_ns()}.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: List[str] = []

    def poll(self) -> List[str]:
        while True:
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, BlockingIOError):
                return self.messages
            self.messages.append(data.decode("utf-8", "replace"))

    def wait_for(self, needle: str, timeout: float = 10.0) -> str:
        def found():
            for m in self.poll():
                if needle in m:
                    return m
            return None
        return wait_until(found, timeout, what=f"sd_notify {needle!r}")

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


# ------------------------------------------------------------------------------------
# The gateway process
# ------------------------------------------------------------------------------------

class GatewayStartError(AssertionError):
    pass


_LIVE: "set[Gateway]" = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _stop_all() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for gw in live:
        try:
            gw.stop(timeout=3.0)
        except Exception:
            pass


# Exec'd as `python3 -c LAUNCHER fd binary args...`: moves the listening socket to fd 3 and
# sets LISTEN_PID/LISTEN_FDS for its own pid (systemd socket activation), then execs.
_SOCKET_ACTIVATION_LAUNCHER = (
    "import os,sys\n"
    "fd=int(sys.argv[1])\n"
    "os.dup2(fd,3) if fd!=3 else os.set_inheritable(3,True)\n"
    "os.close(fd) if fd!=3 else None\n"
    "os.environ['LISTEN_PID']=str(os.getpid()); os.environ['LISTEN_FDS']='1'\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


class Gateway:
    """The llm-gateway supervisor as a subprocess. See the module docstring.

    Gateway(bin_dir, args=(), env=None, *, workers=2, upstream=None, port=None,
            config=None, workdir=None, log_path=None, start=True, wait_healthy=True,
            health_timeout=20.0, stop_timeout=15.0, bind=True, listen_socket=None)

    - args: extra command-line arguments appended after the defaults.
    - env: variables added to the filtered environment (value None removes one).
    - workers: passed as --workers N (None: omitted).
    - upstream: passed as --upstream URL (None: omitted); a FakeVLLM is accepted too.
    - config: a path, or YAML text (any str with a newline; written to workdir/config.yaml),
      passed as --config.
    - bind: False omits --bind (the port is then only known if you pass port=...).
    - listen_socket: a listening socket handed over as fd 3 with LISTEN_FDS=1/LISTEN_PID
      (systemd socket activation); --bind is still passed unless bind=False.
    - wait_healthy: wait for GET /health == 200 in start().
    - host: the address to bind and talk to, any 127.0.0.0/8 address (default 127.0.0.1).
    """

    def __init__(self, bin_dir: Union[str, Path], args: Sequence[str] = (), env: Optional[Mapping[str, Any]] = None,
                 *, workers: Optional[int] = 2, upstream: Any = None, port: Optional[int] = None,
                 config: Union[str, Path, None] = None, workdir: Union[str, Path, None] = None,
                 log_path: Union[str, Path, None] = None, start: bool = True, wait_healthy: bool = True,
                 health_timeout: float = 20.0, stop_timeout: float = 15.0, bind: bool = True,
                 listen_socket: Optional[socket.socket] = None, host: str = LOOPBACK):
        assert is_loopback(host), f"tests bind loopback addresses only (got {host!r})"
        self.bin_dir = Path(bin_dir)
        self.binary = self.bin_dir / SUPERVISOR_BIN
        self.host = host
        self.listen_socket = listen_socket
        if listen_socket is not None and port is None:
            port = listen_socket.getsockname()[1]
        self.port = port if port is not None else free_port(host)
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="llm-gateway-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = Path(log_path) if log_path else self.workdir / "gateway.log"
        self.health_timeout = health_timeout
        self.stop_timeout = stop_timeout
        self.proc: Optional[subprocess.Popen] = None
        self.returncode: Optional[int] = None
        self._seen_workers: set = set()

        argv = [str(self.binary)]
        if bind:
            argv += ["--bind", f"{host}:{self.port}"]
        if workers is not None:
            argv += ["--workers", str(workers)]
        if upstream is not None:
            argv += ["--upstream", str(getattr(upstream, "url", upstream))]
        if config is not None:
            cfg = str(config)
            if isinstance(config, str) and "\n" in config:  # YAML text, not a path
                p = self.workdir / "config.yaml"
                p.write_text(config)
                cfg = str(p)
            argv += ["--config", cfg]
        argv += [str(a) for a in args]
        self.argv = argv
        self.env = gateway_env(env)
        if start:
            self.start(wait_healthy=wait_healthy)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, wait_healthy: bool = True) -> "Gateway":
        assert self.proc is None, "already started"
        missing = missing_binaries(self.bin_dir)
        if SUPERVISOR_BIN in missing:
            raise GatewayStartError(f"{self.binary} not found or not executable")
        logf = open(self.log_path, "ab")
        try:
            cmd = list(self.argv)
            pass_fds: Tuple[int, ...] = ()
            if self.listen_socket is not None:
                fd = self.listen_socket.fileno()
                cmd = [sys.executable, "-c", _SOCKET_ACTIVATION_LAUNCHER, str(fd)] + cmd
                pass_fds = (fd,)
            self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env, cwd=str(self.workdir), start_new_session=True,
                                         pass_fds=pass_fds)
        finally:
            logf.close()
        with _LIVE_LOCK:
            _LIVE.add(self)
        if wait_healthy:
            try:
                self.wait_healthy(self.health_timeout)
            except BaseException:
                self.stop(timeout=5.0)
                raise
        return self

    def wait_healthy(self, timeout: Optional[float] = None, path: str = "/health") -> None:
        """Wait until GET path answers 200. Fails early if the process exits."""
        timeout = self.health_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            rc = self.poll()
            if rc is not None:
                raise GatewayStartError(
                    f"llm-gateway exited with code {rc} before {path} answered 200\n"
                    f"argv: {self.argv}\n--- last log lines ---\n{self.log_tail(50)}")
            try:
                r = http_request(self.host, self.port, "GET", path, timeout=1.0)
                if r.status == 200:
                    return
                last = f"{r.status} {r.body[:200]!r}"
            except (OSError, http.client.HTTPException) as e:
                last = f"{e.__class__.__name__}: {e}"
            time.sleep(0.1)
        raise GatewayStartError(
            f"llm-gateway did not answer 200 on {path} within {timeout}s (last: {last})\n"
            f"argv: {self.argv}\n--- last log lines ---\n{self.log_tail(50)}")

    def wait_ready(self, timeout: float = 20.0) -> None:
        self.wait_healthy(timeout, path="/ready")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def poll(self) -> Optional[int]:
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is not None:
            self.returncode = rc
        return rc

    @property
    def running(self) -> bool:
        return self.proc is not None and self.poll() is None

    def signal(self, sig: int) -> None:
        """Send sig to the supervisor only."""
        assert self.proc is not None
        self._remember_workers()
        os.kill(self.proc.pid, sig)

    def wait(self, timeout: float) -> int:
        """Wait for the supervisor to exit; returns its exit code (negative = killed by signal).
        Raises subprocess.TimeoutExpired after timeout."""
        assert self.proc is not None
        rc = self.proc.wait(timeout)
        self.returncode = rc
        return rc

    def stop(self, timeout: Optional[float] = None) -> Optional[int]:
        """SIGTERM the supervisor, wait up to timeout (default stop_timeout), then SIGKILL the
        process group and every worker seen. Idempotent. Returns the supervisor's exit code."""
        if self.proc is None:
            return None
        timeout = self.stop_timeout if timeout is None else timeout
        self._remember_workers()
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        with _LIVE_LOCK:
            _LIVE.discard(self)
        return self.returncode

    def kill(self) -> None:
        """SIGKILL the supervisor, its process group and every worker seen (no grace)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._remember_workers()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for wpid in list(self._seen_workers):
            if pid_alive(wpid) and is_worker_process(wpid):
                try:
                    os.kill(wpid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            self.returncode = self.proc.wait(5.0)
        except subprocess.TimeoutExpired:
            pass

    def __enter__(self) -> "Gateway":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- workers -------------------------------------------------------------------------
    def worker_pids(self, only_workers: bool = True) -> List[int]:
        """Live direct children of the supervisor (by default only those running
        llm-gateway-worker), sorted."""
        if self.proc is None:
            return []
        kids = children_of(self.proc.pid)
        if only_workers:
            kids = [k for k in kids if is_worker_process(k)]
        self._seen_workers.update(kids)
        return kids

    def _remember_workers(self) -> None:
        try:
            self.worker_pids(only_workers=False)
        except OSError:
            pass

    def wait_for_workers(self, n: int, timeout: float = 20.0, exclude: Iterable[int] = ()) -> List[int]:
        """Wait until exactly n workers run (none of them in exclude); returns their pids."""
        excl = set(exclude)

        def ok():
            pids = self.worker_pids()
            return pids if len(pids) == n and not (set(pids) & excl) else None
        return wait_until(ok, timeout, what=f"{n} workers (excluding {sorted(excl)})")

    def status(self, pid: Optional[int] = None) -> Dict[str, str]:
        """/proc/PID/status fields of the supervisor (or of pid)."""
        return proc_status(self.pid if pid is None else pid)

    # -- logs ------------------------------------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n: int = 50) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def access_lines(self) -> List[Dict[str, Any]]:
        """The workers' JSON access log lines (`"msg": "request"`), oldest first."""
        lines = []
        for raw in self.log_text().splitlines():
            if not raw.startswith("{"):
                continue
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if entry.get("msg") == "request":
                lines.append(entry)
        return lines

    # -- HTTP ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def request(self, method: str, path: str, body: Any = None, headers: Optional[Mapping[str, str]] = None,
                timeout: float = 10.0) -> Response:
        return http_request(self.host, self.port, method, path, body, headers, timeout)

    def get(self, path: str, headers: Optional[Mapping[str, str]] = None, timeout: float = 10.0) -> Response:
        return self.request("GET", path, None, headers, timeout)

    def post(self, path: str, body: Any, headers: Optional[Mapping[str, str]] = None,
             timeout: float = 30.0) -> Response:
        return self.request("POST", path, body, headers, timeout)

    def stream(self, path: str, body: Any, headers: Optional[Mapping[str, str]] = None,
               timeout: float = 30.0) -> Iterator[Tuple[float, str]]:
        return sse_events(self.host, self.port, path, body, headers, timeout)

    def openai_client(self, api_key: str = "sk-no-key", **kw):
        import openai
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 30.0)
        return openai.OpenAI(base_url=self.base_url, api_key=api_key, **kw)

    def metrics_text(self) -> str:
        r = self.get("/metrics")
        assert r.status == 200, r
        return r.text

    def metrics(self) -> List[Tuple[str, Dict[str, str], float]]:
        return parse_metrics(self.metrics_text())

    def __repr__(self) -> str:
        return f"<Gateway pid={self.proc.pid if self.proc else None} url={self.url}>"


def run_cli(bin_dir: Union[str, Path], args: Sequence[str], env: Optional[Mapping[str, Any]] = None,
            timeout: float = 20.0, cwd: Union[str, Path, None] = None,
            binary: str = SUPERVISOR_BIN) -> subprocess.CompletedProcess:
    """Run llm-gateway with args to completion (e.g. --help, or a bad config that must exit 2),
    with the filtered environment; returns CompletedProcess(text stdout/stderr). The process
    group is killed if it outlives timeout (then TimeoutExpired is raised)."""
    cwd = str(cwd) if cwd else tempfile.mkdtemp(prefix="llm-gateway-cli-")
    p = subprocess.Popen([str(Path(bin_dir) / binary), *map(str, args)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=gateway_env(env), cwd=cwd,
                         start_new_session=True, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.communicate()
        raise
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)
