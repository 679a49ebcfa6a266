"""Requests are bounded before any work: 413 for big bodies (declared or streamed), 400 for long prompts."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def client(tiny_model_dir):
    from loraforge.serve.app import build_app

    app = build_app(str(tiny_model_dir), [], dtype="fp32", max_body_bytes=2000, max_prompt_tokens=16)
    calls = []
    codec = app.state.server.codec
    encode = codec.encode
    codec.encode = lambda prompt: calls.append(prompt) or encode(prompt)  # counts tokenizations
    with TestClient(app) as c:
        c.encode_calls = calls
        yield c
    app.state.engine.close()


def test_a_declared_body_over_the_limit_is_413_before_parsing(client):
    body = json.dumps({"model": "base", "prompt": "Pod " * 1000, "max_tokens": 2}).encode()
    before = len(client.encode_calls)
    r = client.post("/v1/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert len(client.encode_calls) == before, "the prompt was tokenized"
    r = client.post("/v1/completions", content=b"{" + b" " * 5000, headers={"content-type": "application/json"})
    assert r.status_code == 413, "size comes before JSON validity"


def test_a_streamed_body_over_the_limit_is_413(client):
    body = json.dumps({"model": "base", "prompt": "Pod " * 1000, "max_tokens": 2}).encode()

    def chunks():  # no Content-Length: transfer-encoding chunked
        for i in range(0, len(body), 500):
            yield body[i:i + 500]

    before = len(client.encode_calls)
    r = client.post("/v1/completions", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "--max-body-bytes" in r.json()["error"]["message"]
    assert len(client.encode_calls) == before


def test_a_prompt_over_max_prompt_tokens_is_400_and_small_ones_pass(client):
    r = client.post("/v1/completions", json={"model": "base", "prompt": "Pod " * 40, "max_tokens": 2})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "context_length_exceeded" and "--max-prompt-tokens" in err["message"]
    assert err["param"] == "prompt"
    r = client.post("/v1/completions", json={"model": "base", "prompt": "Pod", "max_tokens": 2})
    assert r.status_code == 200, r.text
    assert client.get("/metrics").text.count('status="413"') >= 1
