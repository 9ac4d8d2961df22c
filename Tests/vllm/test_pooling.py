"""vLLM's pooling routes: /pooling, /classify, /v1/score (and /score), /v1/rerank (/rerank,
/v2/rerank), against the second vLLM (the tiny model as a one-label classifier, see
conftest.POOLING_ARGS) and through the gateway.

A generation model does not serve any of them (vLLM 0.32 registers these routes only with
`--runner pooling`: `--convert classify` gives /pooling and /classify, and /score and
/rerank too when num_labels == 1; `--convert embed` gives /pooling, /v1/embeddings,
/v2/embed, /score and /rerank but no /classify). The classifier's head is not in the
checkpoint, so its scores are all 0.0: the tests assert shapes, counts, order and usage.
"""
from __future__ import annotations

import pytest
from gateway import http_request

DOCS = ["the weather in paris", "tokyo is a city", "count to ten"]


@pytest.mark.routes("/pooling")
def test_pooling(pool_target):
    r = pool_target.post("/pooling", {"model": pool_target.model, "input": ["hello world", "paris"]})
    assert r.status == 200, r
    body = r.json()
    assert body["model"] == pool_target.model and body["object"] == "list"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(d["object"] == "pooling" and isinstance(d["data"], list) for d in body["data"])
    assert body["usage"]["prompt_tokens"] > 0


@pytest.mark.routes("/classify")
def test_classify(pool_target):
    r = pool_target.post("/classify", {"model": pool_target.model, "input": ["hello world", "paris"]})
    assert r.status == 200, r
    body = r.json()
    assert body["model"] == pool_target.model and body["id"].startswith("classify-")
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(d["num_classes"] == 1 and len(d["probs"]) == 1 and d["label"] for d in body["data"])
    assert body["usage"]["prompt_tokens"] > 0


def _paths(*paths):
    return pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.routes(p), id=p) for p in paths])


@_paths("/v1/score", "/score")
def test_score(pool_target, path):
    r = pool_target.post(path, {"model": pool_target.model, "text_1": "paris", "text_2": DOCS})
    assert r.status == 200, r
    body = r.json()
    assert body["model"] == pool_target.model and body["id"].startswith("score-")
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    assert all(d["object"] == "score" and isinstance(d["score"], float) for d in body["data"])
    assert body["usage"]["prompt_tokens"] > 0


@_paths("/v1/rerank", "/rerank", "/v2/rerank")
def test_rerank(pool_target, path):
    r = pool_target.post(path, {"model": pool_target.model, "query": "paris", "documents": DOCS, "top_n": 2})
    assert r.status == 200, r
    body = r.json()
    assert body["model"] == pool_target.model
    assert len(body["results"]) == 2
    assert {res["index"] for res in body["results"]} <= {0, 1, 2}
    assert all(res["document"]["text"] == DOCS[res["index"]] for res in body["results"])
    scores = [res["relevance_score"] for res in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert body["usage"]["total_tokens"] > 0


@pytest.mark.routes("/v1/rerank")
def test_rerank_unknown_model_is_404(pool_target):
    r = pool_target.post("/v1/rerank", {"model": "no-such-model", "query": "q", "documents": ["d"]})
    assert r.status == 404, r
    err = r.json()["error"]
    assert "no-such-model" in err["message"], err


def test_generation_model_has_no_pooling_routes(vllm_server):
    """Why the pooling tests need their own vLLM: the generation server answers 404."""
    port = int(vllm_server.url.rsplit(":", 1)[1])
    for path in ("/pooling", "/classify", "/v1/score", "/v1/rerank", "/v1/embeddings"):
        r = http_request("127.0.0.1", port, "POST", path, {"model": "tiny", "input": "hi"})
        assert r.status == 404 and r.json() == {"detail": "Not Found"}, (path, r)
