"""Smallest end-to-end checks of the real gateway in front of the fake vLLM (skipped until the
binaries are built; set LLM_GATEWAY_BIN_DIR to use another build directory)."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.gateway


def test_health_body_is_exact(gateway):
    r = gateway.get("/health")
    assert r.status == 200
    assert r.body == b'{"status":"ok"}'


def test_unknown_route_is_404_in_openai_shape(gateway):
    r = gateway.get("/v1/does-not-exist")
    assert r.status == 404
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}


def test_metrics_parse(gateway):
    gateway.get("/health")
    names = {name for name, _, _ in gateway.metrics()}
    assert "llm_gateway_http_requests_total" in names
