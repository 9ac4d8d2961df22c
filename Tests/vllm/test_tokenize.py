"""vLLM's /tokenize and /detokenize (no /v1 prefix, no SDK: plain HTTP)."""
from __future__ import annotations

import pytest

TEXT = "hello world, the weather in paris"


@pytest.mark.routes("/tokenize", "/detokenize")
def test_tokenize_detokenize_round_trip(target):
    r = target.post("/tokenize", {"model": target.model, "prompt": TEXT})
    assert r.status == 200, r
    body = r.json()
    assert body["count"] == len(body["tokens"]) > 0
    assert body["max_model_len"] == 4096
    assert all(isinstance(t, int) for t in body["tokens"])

    r = target.post("/detokenize", {"model": target.model, "tokens": body["tokens"]})
    assert r.status == 200, r
    assert r.json() == {"prompt": TEXT}


@pytest.mark.routes("/tokenize")
def test_tokenize_chat_messages(target):
    """The chat form renders the model's template (ChatML) before counting."""
    plain = target.post("/tokenize", {"model": target.model, "prompt": "hi"}).json()
    r = target.post("/tokenize", {"model": target.model, "messages": [{"role": "user", "content": "hi"}],
                                  "add_generation_prompt": True, "return_token_strs": True})
    assert r.status == 200, r
    body = r.json()
    assert body["count"] > plain["count"]
    assert "<|im_start|>" in body["token_strs"]


@pytest.mark.routes("/tokenize")
def test_tokenize_unknown_model_is_404(target):
    r = target.post("/tokenize", {"model": "no-such-model", "prompt": "hi"})
    assert r.status == 404, r
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    # The answer is about the model (not the gateway's "Unknown route" 404).
    assert "no-such-model" in err["message"], err
