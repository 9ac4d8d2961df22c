#!/usr/bin/env python3
"""Runs several `vllm bench serve` invocations in one process (importing vLLM costs ~15 s
on 2 cores; the benchmarks themselves take a second or two each).

    VENV/bin/python bench_serve.py JOBS.json

JOBS.json: [{"name": "...", "argv": [<arguments after `vllm bench serve`>], "log": "path",
"env": {"OPENAI_API_KEY": "..."}}]. Each job is parsed by the same argument parser as
`vllm bench serve` and run by the same `main`, so `--save-result --result-dir D
--result-filename F` writes the same JSON. The job's stdout/stderr go to its "log"; a job
that raises gets an "exception" entry in its log's .status.json, and the next job runs.
Needs the `vllm` dist-info alias on PYTHONPATH (serve.py's dist_alias), like `vllm serve`.
"""
import contextlib
import json
import os
import sys
import traceback


def main():
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    from vllm.benchmarks.serve import add_cli_args, main as bench_main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    for job in jobs:
        status = {"name": job["name"], "ok": False}
        saved_env = {k: os.environ.get(k) for k in job.get("env", {})}
        os.environ.update(job.get("env", {}))
        with open(job["log"], "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            try:
                parser = FlexibleArgumentParser(prog="vllm bench serve")
                add_cli_args(parser)
                args = parser.parse_args(job["argv"])
                bench_main(args)
                status["ok"] = True
            except BaseException as e:  # SystemExit from argparse too
                traceback.print_exc()
                status["exception"] = f"{e.__class__.__name__}: {e}"
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        with open(job["log"] + ".status.json", "w") as f:
            json.dump(status, f)
    sys.stdout.flush()
    # vLLM's import leaves non-daemon threads and nanobind leak reports at exit: skip them.
    os._exit(0)


if __name__ == "__main__":
    main()
