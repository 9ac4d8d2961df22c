"""A private ``redis-server`` for the integration tests (issue 24: limits shared through Redis).

``RedisServer(workdir).start()`` runs::

    redis-server --port <free port> --bind 127.0.0.1 --save "" --appendonly no --dir WORKDIR ...

in its own process group, with nothing persisted (a restart is an empty Redis), and waits
for ``PING`` (bounded). ``url`` is what the gateway's ``REDIS_URL`` takes. ``pause()`` /
``resume()`` are ``kill -STOP`` / ``kill -CONT``; ``restart()`` kills it (SIGKILL, as a
crash) and starts an empty one on the same port. ``stop()`` (SIGCONT first, so a paused
server can act on the SIGTERM, then SIGKILL after a bound) is idempotent and also runs at
interpreter exit for every server still running. ``command(...)`` is a minimal RESP2
client for the tests' own checks (``DBSIZE``, ``KEYS``, ``INFO``).

redis-server comes from the Debian package of that name (``scripts/test`` installs it).
Missing, it fails the tests that need it unless ``LLM_GATEWAY_SKIP_REDIS=1`` says to skip
(as the Swift RedisTests and RedisLimitsTests do). Standard library only; 127.0.0.1 only.
"""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, List, Optional, Union

LOOPBACK = "127.0.0.1"
SKIP_ENV = "LLM_GATEWAY_SKIP_REDIS"


def redis_server_path() -> Optional[str]:
    return shutil.which("redis-server")


class RedisError(Exception):
    """An error reply (``-ERR ...``)."""


def _encode(args) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class _Reader:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        self.buf += chunk

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self) -> Any:
        line = self.line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise ConnectionError(f"unexpected RESP reply {line[:80]!r}")


_LIVE: "set[RedisServer]" = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _stop_all() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for server in live:
        try:
            server.stop(timeout=2.0)
        except Exception:
            pass


class RedisServer:
    """redis-server on 127.0.0.1 and a free (or given) port; see the module docstring."""

    def __init__(self, workdir: Union[str, Path, None] = None, port: Optional[int] = None):
        path = redis_server_path()
        if path is None:
            raise FileNotFoundError("redis-server is not on PATH: install it (scripts/setup-deps redis-server) "
                                    f"or set {SKIP_ENV}=1 to skip the tests that need it")
        self.binary = path
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="redis-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "redis.log"
        self.port = port if port is not None else _free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.paused = False
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> "RedisServer":
        """Start (an empty server: nothing is saved) and wait for PING to answer PONG."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        argv = [self.binary, "--port", str(self.port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
                "--dir", str(self.workdir), "--logfile", str(self.log_path), "--daemonize", "no",
                "--protected-mode", "yes"]
        deadline = time.monotonic() + timeout
        while True:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, cwd=str(self.workdir), start_new_session=True)
            self.paused = False
            with _LIVE_LOCK:
                _LIVE.add(self)
            if self._wait_ping(deadline):
                self.starts += 1
                return self
            # It exited (the port may still be held a moment after a kill): try again, bounded.
            if self.proc.poll() is None or time.monotonic() >= deadline:
                self.stop(timeout=2.0)
                raise AssertionError(f"redis-server on port {self.port} did not answer PING within {timeout}s\n"
                                     f"--- log ---\n{self.log_tail()}")
            time.sleep(0.1)

    def _wait_ping(self, deadline: float) -> bool:
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                if self.command("PING", timeout=1.0) == "PONG":
                    return True
            except (OSError, ConnectionError):
                pass
            time.sleep(0.05)
        return False

    def pause(self) -> None:
        """kill -STOP: the server keeps its sockets (connections are accepted by the kernel,
        commands get no answer)."""
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """kill -CONT."""
        os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def kill(self) -> None:
        """SIGKILL (a crash: nothing saved), after SIGCONT if paused; waits for the exit."""
        if self.proc is None:
            return
        try:
            os.kill(self.proc.pid, signal.SIGCONT)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.paused = False
        try:
            self.proc.wait(5.0)
        except subprocess.TimeoutExpired:
            pass
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def restart(self, timeout: float = 10.0) -> "RedisServer":
        """Kill it and start an empty server on the same port."""
        self.kill()
        return self.start(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGCONT + SIGTERM, then SIGKILL after timeout. Idempotent."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)  # a stopped process would never see the TERM
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    # -- commands ------------------------------------------------------------------------
    def command(self, *args, timeout: float = 5.0) -> Any:
        """Send one command on a fresh connection; return the decoded reply (bytes for bulk
        strings, str for status replies, int, list, None). An error reply raises RedisError."""
        with socket.create_connection((LOOPBACK, self.port), timeout=timeout) as s:
            s.sendall(_encode(args))
            reply = _Reader(s).reply()
        if isinstance(reply, RedisError):
            raise reply
        return reply

    def keys(self) -> List[str]:
        return sorted(k.decode() for k in self.command("KEYS", "*"))

    def info(self, section: str = "all") -> dict:
        """INFO as {field: value} (values as str)."""
        out = {}
        for line in self.command("INFO", section).decode().splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                out[k] = v
        return out

    def command_calls(self, name: str) -> int:
        """Calls of one command so far (INFO commandstats, e.g. "evalsha", "script|load")."""
        field = self.info("commandstats").get(f"cmdstat_{name}", "")
        for part in field.split(","):
            if part.startswith("calls="):
                return int(part[6:])
        return 0

    # -- logs ------------------------------------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def __repr__(self) -> str:
        return f"<RedisServer pid={self.proc.pid if self.proc else None} url={self.url}>"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]
