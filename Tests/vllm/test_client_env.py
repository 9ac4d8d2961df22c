"""The SDKs configured only by environment variables, as a user (or a tool built on them)
sets them up, each in a fresh process with nothing else of ANTHROPIC_*/OPENAI_* set:

    Anthropic SDK:  ANTHROPIC_BASE_URL=http://127.0.0.1:8000  ANTHROPIC_API_KEY=<key>
                    (or ANTHROPIC_AUTH_TOKEN=<key>)  -> anthropic.Anthropic()
    OpenAI SDK:     OPENAI_BASE_URL=http://127.0.0.1:8000/v1  OPENAI_API_KEY=<key>
                    -> openai.OpenAI()  (chat completions and the Responses API, which Codex uses)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ANTHROPIC_SCRIPT = r"""
import json, sys, anthropic
c = anthropic.Anthropic(max_retries=0)
m = c.messages.create(model=sys.argv[1], max_tokens=3, messages=[{"role": "user", "content": "hi"}])
print(json.dumps({"model": m.model, "out": m.usage.output_tokens}))
"""
OPENAI_SCRIPT = r"""
import json, sys, openai
c = openai.OpenAI(max_retries=0)
ch = c.chat.completions.create(model=sys.argv[1], max_tokens=3, messages=[{"role": "user", "content": "hi"}])
out = {"chat": ch.model}
if sys.argv[2] == "responses":
    r = c.responses.create(model=sys.argv[1], input="hi", max_output_tokens=3)
    out["responses"] = r.model
print(json.dumps(out))
"""


def run_with_env(script: str, args, env_vars) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "OPENAI_", "CLAUDE_"))}
    env.update(env_vars)
    p = subprocess.run([sys.executable, "-c", script, *args], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.routes("/v1/messages")
@pytest.mark.parametrize("var", ["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"])
def test_anthropic_sdk_from_env(target, var):
    out = run_with_env(ANTHROPIC_SCRIPT, [target.model], {"ANTHROPIC_BASE_URL": target.url, var: target.api_key})
    assert out["model"] == target.model and out["out"] <= 3


@pytest.mark.routes("/v1/chat/completions")
def test_openai_sdk_from_env_chat(target):
    out = run_with_env(OPENAI_SCRIPT, [target.model, "chat"],
                       {"OPENAI_BASE_URL": target.base_url, "OPENAI_API_KEY": target.api_key})
    assert out == {"chat": target.model}


@pytest.mark.routes("/v1/chat/completions", "/v1/responses")
def test_openai_sdk_from_env_responses(target):
    out = run_with_env(OPENAI_SCRIPT, [target.model, "responses"],
                       {"OPENAI_BASE_URL": target.base_url, "OPENAI_API_KEY": target.api_key})
    assert out == {"chat": target.model, "responses": target.model}
