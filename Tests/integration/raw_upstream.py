"""A hand-written, misbehaving HTTP/1.1 upstream for the llm-gateway integration tests.

``fake_vllm.py`` is a well-behaved aiohttp server: it cannot send bytes nobody asked for,
1xx heads, an SSE event that never ends, or a 60 MB answer framed exactly as a test wants.
``RawUpstream`` can: it listens on 127.0.0.1 (port 0), reads each request itself and hands
every ``POST`` to the test's ``on_post(conn, request)``, which writes whatever bytes it
likes with ``conn.sendall`` and returns True to keep the connection for the next request
(keep-alive) or False to close it. ``GET`` requests (the supervisor's health checks,
metrics scrapes, model listings) get a plain, well-formed answer and keep-alive::

    with RawUpstream(on_post) as up:
        config = up.config("m")            # YAML: one upstream, one model `m` on it
        ...
    up.posts                               # [(connection index, path, parsed JSON body)]

Everything is bounded: each connection thread gives up after ``max_seconds`` (default 30)
from the server's start, ``stop()`` closes every socket it accepted and joins the threads.
Standard library only; loopback only.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

LOOPBACK = "127.0.0.1"


class RawRequest:
    """One request as read off the wire: method, path, version, headers (lower-case names,
    last value wins), body bytes."""

    def __init__(self, method: str, path: str, version: str, headers: Dict[str, str], body: bytes):
        self.method = method
        self.path = path
        self.version = version
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None

    def __repr__(self) -> str:
        return f"<RawRequest {self.method} {self.path} {len(self.body)} bytes>"


class RawConnection:
    """One accepted connection: ``index`` (0, 1, ... in accept order), ``requests`` handled
    on it so far, ``sendall`` that returns False instead of raising once the peer is gone,
    and ``expired()`` / ``stopped`` for the handler's own loops."""

    def __init__(self, server: "RawUpstream", sock: socket.socket, index: int):
        self.server = server
        self.sock = sock
        self.index = index
        self.requests = 0
        self.buffer = b""
        self.closed = False

    def sendall(self, data: bytes) -> bool:
        if self.closed:
            return False
        try:
            self.sock.sendall(data)
            return True
        except OSError:  # reset, broken pipe, or a send stalled past the socket timeout
            self.closed = True
            return False

    @property
    def stopped(self) -> bool:
        return self.server.stop_event.is_set()

    def expired(self) -> bool:
        return self.stopped or time.monotonic() >= self.server.deadline

    def read_request(self) -> Optional[RawRequest]:
        """The next request (content-length bodies only), or None at EOF / error / deadline."""
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                return None
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, path, version = lines[0].split(" ", 2)
        except ValueError:
            return None
        headers: Dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        self.buffer = rest
        while len(self.buffer) < length:
            if not self._fill():
                return None
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        self.requests += 1
        return RawRequest(method, path, version, headers, body)

    def _fill(self) -> bool:
        while not self.expired():
            try:
                data = self.sock.recv(1 << 16)
            except socket.timeout:
                continue
            except OSError:
                return False
            if not data:
                return False
            self.buffer += data
            return True
        return False


def http_response(body: bytes, status: str = "200 OK", content_type: str = "application/json",
                  extra: str = "") -> bytes:
    """A complete keep-alive response with a content-length."""
    return (f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
            .encode("latin-1") + body)


def chat_answer(model: str, content: str = "ok", prompt_tokens: int = 1, completion_tokens: int = 1) -> bytes:
    """A vLLM-shaped non-streamed chat completion (compact JSON, as pydantic writes it)."""
    return json.dumps({
        "id": "chatcmpl-raw", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": None,
                     "finish_reason": "stop", "stop_reason": None}],
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + completion_tokens,
                  "completion_tokens": completion_tokens},
    }, separators=(",", ":")).encode()


def chunked(data: bytes, size: int = 1 << 16) -> bytes:
    """data in chunked transfer coding (chunks of `size`), with the last chunk."""
    out = [b"%x\r\n%s\r\n" % (len(data[i:i + size]), data[i:i + size]) for i in range(0, len(data), size)]
    return b"".join(out) + b"0\r\n\r\n"


class RawUpstream:
    """See the module docstring. ``on_post(conn, request) -> bool`` (keep the connection?)."""

    def __init__(self, on_post: Callable[[RawConnection, RawRequest], bool], *, models: Tuple[str, ...] = ("m",),
                 max_seconds: float = 30.0, send_timeout: float = 5.0):
        self.on_post = on_post
        self.models = models
        self.max_seconds = max_seconds
        self.send_timeout = send_timeout
        self.listener = socket.create_server((LOOPBACK, 0))
        self.listener.settimeout(0.2)
        self.port: int = self.listener.getsockname()[1]
        self.stop_event = threading.Event()
        self.deadline = time.monotonic() + max_seconds
        self.lock = threading.Lock()
        self.connections: List[RawConnection] = []
        self.posts: List[Tuple[int, str, Any]] = []
        self.errors: List[str] = []
        self.threads: List[threading.Thread] = []
        self.accept_thread = threading.Thread(target=self._accept, daemon=True, name="raw-upstream-accept")
        self.accept_thread.start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def config(self, model: str = "m", upstream: str = "raw", extra_model: str = "") -> str:
        """YAML with this upstream and one model on it (same name upstream, so no renaming)."""
        return (f"upstreams:\n  {upstream}: {{ url: \"{self.url}\", health: /health }}\n"
                f"models:\n  {model}: {{ upstreams: [{upstream}]{extra_model} }}\n")

    def _accept(self) -> None:
        while not self.stop_event.is_set() and time.monotonic() < self.deadline:
            try:
                sock, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            sock.settimeout(self.send_timeout)
            with self.lock:
                conn = RawConnection(self, sock, len(self.connections))
                self.connections.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True, name=f"raw-upstream-{conn.index}")
            self.threads.append(t)
            t.start()

    def _serve(self, conn: RawConnection) -> None:
        conn.sock.settimeout(0.2)  # reads poll so the deadline and stop() are noticed
        try:
            while not conn.expired():
                request = conn.read_request()
                if request is None:
                    return
                if request.method == "POST":
                    with self.lock:
                        self.posts.append((conn.index, request.path, request.json()))
                    conn.sock.settimeout(self.send_timeout)
                    try:
                        keep = self.on_post(conn, request)
                    except Exception as e:  # noqa: BLE001 - recorded for the test to see
                        self.errors.append(f"{type(e).__name__}: {e}")
                        return
                    conn.sock.settimeout(0.2)
                    if not keep:
                        return
                else:
                    if not conn.sendall(self._get_answer(request)):
                        return
        finally:
            conn.closed = True
            try:
                conn.sock.close()
            except OSError:
                pass

    def _get_answer(self, request: RawRequest) -> bytes:
        if request.path.startswith("/v1/models"):
            data = [{"id": m, "object": "model", "created": 1, "owned_by": "vllm", "root": m, "parent": None,
                     "max_model_len": 4096} for m in self.models]
            return http_response(json.dumps({"object": "list", "data": data}).encode())
        if request.path.startswith("/metrics"):
            return http_response(b"", content_type="text/plain; version=0.0.4")
        return http_response(b"", content_type="text/plain")  # /health and anything else

    def stop(self) -> None:
        self.stop_event.set()
        with self.lock:
            conns = list(self.connections)
        for c in conns:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.accept_thread.join(timeout=5)
        for t in self.threads:
            t.join(timeout=5)
        self.listener.close()

    def __enter__(self) -> "RawUpstream":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
