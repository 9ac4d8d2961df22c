"""vLLM's own benchmark client, through the gateway and straight to vLLM. Each case is

    OPENAI_API_KEY=<key> vllm bench serve --backend openai-chat --base-url http://127.0.0.1:8000 \\
        --endpoint /v1/chat/completions --model <model> --tokenizer <model dir> \\
        --dataset-name random --random-input-len 16 --random-output-len 4 --num-prompts 8 \\
        --max-concurrency 4 --seed 7 --disable-tqdm \\
        --save-result --result-dir DIR --result-filename result.json
    (and --backend openai-responses --endpoint /v1/responses)

and passes when the saved result says all 8 prompts completed and 0 failed. All cases run
in one process (bench_serve.py: the same parser and `main` as `vllm bench serve`), because
importing vLLM takes ~15 s on 2 cores and the benchmarks a second or two each.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import API_KEY, GATEWAY_MODEL, HERE, VLLM_MODEL, _selected_targets

NUM_PROMPTS = 8
ENDPOINTS = {"openai-chat": "/v1/chat/completions", "openai-responses": "/v1/responses"}


def bench_argv(backend: str, url: str, model: str, tokenizer: Path, out_dir: Path) -> list:
    return [
        "--backend", backend, "--base-url", url, "--endpoint", ENDPOINTS[backend],
        "--model", model, "--tokenizer", str(tokenizer),
        "--dataset-name", "random", "--random-input-len", "16", "--random-output-len", "4",
        "--num-prompts", str(NUM_PROMPTS), "--max-concurrency", "4", "--seed", "7", "--disable-tqdm",
        "--save-result", "--result-dir", str(out_dir), "--result-filename", "result.json",
    ]


@pytest.fixture(scope="module")
def bench_runs(request, vllm_server, vllm_cli, tmp_path_factory) -> Path:
    """Runs every (target, backend) case once; returns the directory with one subdirectory
    per case: result.json (vLLM's --save-result), bench.log, bench.log.status.json."""
    root = tmp_path_factory.mktemp("bench")
    urls = {"vllm": (vllm_server.url, VLLM_MODEL)}
    if "gateway" in _selected_targets():
        gw = request.getfixturevalue("gateway_server")
        urls["gateway"] = (gw.url, GATEWAY_MODEL)
    jobs = []
    for name, (url, model) in urls.items():
        for backend in ENDPOINTS:
            d = root / f"{name}-{backend}"
            d.mkdir()
            jobs.append({"name": d.name, "argv": bench_argv(backend, url, model, vllm_server.model_dir, d),
                         "log": str(d / "bench.log"), "env": {"OPENAI_API_KEY": API_KEY}})
    (root / "jobs.json").write_text(json.dumps(jobs, indent=1))
    argv, env = vllm_cli
    python = argv[0]
    p = subprocess.run([python, str(HERE / "bench_serve.py"), str(root / "jobs.json")], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, env=env, timeout=300, stdin=subprocess.DEVNULL,
                       cwd=str(root))
    assert p.returncode == 0, f"bench_serve.py exit {p.returncode}:\n{p.stdout[-4000:]}"
    return root


@pytest.mark.parametrize("backend", [
    pytest.param("openai-chat", marks=pytest.mark.routes("/v1/chat/completions")),
    pytest.param("openai-responses", marks=pytest.mark.routes("/v1/responses")),
])
def test_vllm_bench_serve(target, backend, bench_runs):
    d = bench_runs / f"{target.name}-{backend}"
    log = (d / "bench.log").read_text(errors="replace")
    status = json.loads((d / "bench.log.status.json").read_text())
    assert status["ok"], f"{status.get('exception')}\n{log[-4000:]}"
    result = json.loads((d / "result.json").read_text())
    summary = {k: result.get(k) for k in ("completed", "failed", "total_input_tokens", "total_output_tokens")}
    errors = [e for e in result.get("errors", []) if e][:3]
    assert result["failed"] == 0, f"{summary} {errors}\n{log[-3000:]}"
    assert result["completed"] == NUM_PROMPTS, f"{summary} {errors}"
    assert result["total_output_tokens"] > 0, summary
