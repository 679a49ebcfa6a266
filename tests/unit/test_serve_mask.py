"""POST /v1/mask: patterns only without a PII adapter, the served PII adapter's model with one; the
server's body limit, API key and 400 contract apply to it like to every /v1 route."""

from __future__ import annotations

import json

import pytest
import torch
from fastapi.testclient import TestClient

from loraforge.config import RunConfig
from loraforge.pii.spans import Span, render
from loraforge.runs import RunDir

KEY = "k3y"
TEXT = "Write to ann.lee@example.com or call from 203.0.113.7 today."


def make_lora(model_dir, out, seed: int):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                           LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=16, target_modules="all-linear",
                                      init_lora_weights=False))
    model.save_pretrained(out)


def pii_run(path, model_dir, task: str = "pii") -> str:
    """A run directory as training leaves it: config (data.task) + adapter/."""
    run = RunDir(path)
    run.write_config(RunConfig.model_validate({"model": {"name": str(model_dir)},
                                               "data": {"task": task, "train": "pii:train"}}))
    make_lora(model_dir, run.adapter_dir, seed=1)
    return str(run)



@pytest.fixture(scope="module")
def plain(tiny_model_dir):
    """No adapter, no key, a small body limit."""
    from loraforge.serve.app import build_app

    app = build_app(str(tiny_model_dir), [], dtype="fp32", max_body_bytes=4000)
    with TestClient(app) as c:
        yield c
    app.state.engine.close()


@pytest.fixture(scope="module")
def keyed(tiny_model_dir, tmp_path_factory):
    """A PII adapter and an unrelated (translate) adapter, with an API key."""
    from loraforge.serve.app import build_app

    root = tmp_path_factory.mktemp("mask-runs")
    other = pii_run(root / "translate-run", tiny_model_dir, task="translate")
    pii = pii_run(root / "pii-run", tiny_model_dir)
    app = build_app(str(tiny_model_dir), [f"kube={other}", f"masker={pii}"], dtype="fp32", api_key=KEY)
    with TestClient(app, headers={"Authorization": f"Bearer {KEY}"}) as c:
        yield c
    app.state.engine.close()


def spans_of(item: dict) -> list[Span]:
    return [Span(s["start"], s["end"], s["type"]) for s in item["spans"]]


def test_patterns_only_without_a_pii_adapter(plain):
    r = plain.post("/v1/mask", json={"text": [TEXT, "Nothing personal in version 1.2.3."], "format": "both"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["engine"], out["model"], out["merge"]) == ("patterns", None, "patterns")
    first, second = out["data"]
    assert first["masked"] == "Write to [EMAIL] or call from [IP_ADDRESS] today."
    assert [(TEXT[s.start:s.end], s.type) for s in spans_of(first)] == [("ann.lee@example.com", "EMAIL"),
                                                                          ("203.0.113.7", "IP_ADDRESS")]
    assert second == {"index": 1, "masked": "Nothing personal in version 1.2.3.", "spans": []}
    assert "ann.lee" not in r.text  # spans carry offsets, never values


def test_formats_styles_and_batch_consistency(plain):
    texts = ["Mail ann@example.com", "Again ann@example.com, and bob@example.org"]
    only = plain.post("/v1/mask", json={"text": texts[0], "format": "spans"}).json()["data"][0]
    assert set(only) == {"index", "spans"}
    only = plain.post("/v1/mask", json={"text": texts[0], "format": "text"}).json()["data"][0]
    assert only == {"index": 0, "masked": "Mail [EMAIL]"}
    body = {"text": texts, "format": "text", "style": "numbered"}
    per_text = [d["masked"] for d in plain.post("/v1/mask", json=body).json()["data"]]
    assert per_text == ["Mail [EMAIL_1]", "Again [EMAIL_1], and [EMAIL_2]"]
    shared = plain.post("/v1/mask", json={**body, "consistent_across_batch": True}).json()["data"]
    assert [d["masked"] for d in shared] == ["Mail [EMAIL_1]", "Again [EMAIL_1], and [EMAIL_2]"]
    body = {"text": ["Mail bob@example.org", "Again ann@example.com"], "format": "text", "style": "numbered"}
    assert plain.post("/v1/mask", json=body).json()["data"][1]["masked"] == "Again [EMAIL_1]"
    shared = plain.post("/v1/mask", json={**body, "consistent_across_batch": True}).json()["data"]
    assert shared[1]["masked"] == "Again [EMAIL_2]"
    fake = plain.post("/v1/mask", json={"text": texts, "pseudonymize": True, "consistent_across_batch": True}).json()
    assert fake["style"] == "pseudonym"
    a, b = fake["data"]
    assert "ann@example.com" not in a["masked"] + b["masked"]
    value = a["masked"][5:]
    assert "@" in value and b["masked"].startswith(f"Again {value},")  # same person, same fake value


def test_an_oversized_body_is_413_before_parsing(plain):
    body = json.dumps({"text": "ann@example.com " * 400}).encode()
    r = plain.post("/v1/mask", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


@pytest.mark.parametrize("body, param, words", [
    ({"text": ""}, "text", "empty text"),
    ({"text": "   \n"}, "text", "empty text"),
    ({"text": []}, "text", "non-empty list"),
    ({"text": ["ok text", "bad\x00binary"]}, "text", "text[1]: binary"),
    ({"text": "x", "format": "xml"}, "format", "'text', 'spans' or 'both'"),
    ({"text": "x", "formt": "spans"}, "formt", "Extra inputs"),
    ({"text": "x", "merge": "model"}, "merge", "serves no PII adapter"),
    ({"text": "x", "bias": 1.0}, "bias", "bias tunes the model"),
    ({"text": "x", "pseudonymize": True, "style": "numbered"}, "pseudonymize", "conflicts"),
    ({"text": "x", "pseudonymize": True, "locale": "xx_YY"}, "locale", "not a Faker locale"),
    ({"text": 42}, "text", "valid string"),
])
def test_bad_fields_are_400_with_a_clear_message(plain, body, param, words):
    r = plain.post("/v1/mask", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and words in err["message"], err
    assert (err["param"] or "").startswith(param)


def test_errors_never_echo_the_text(plain):
    r = plain.post("/v1/mask", json={"text": ["ann@example.com", ""], "style": "bogus"})
    assert r.status_code == 400 and "ann@example.com" not in r.text


def test_the_api_key_guards_mask_like_every_v1_route(keyed):
    for path, body in (("/v1/mask", {"text": TEXT, "merge": "patterns"}),
                       ("/v1/completions", {"model": "base", "prompt": "Pod", "max_tokens": 1})):
        r = keyed.post(path, json=body, headers={"Authorization": ""})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", path
        assert keyed.post(path, json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert keyed.post(path, json=body).status_code == 200, path
    assert keyed.get("/v1/models", headers={"Authorization": ""}).status_code == 401
    assert keyed.get("/health", headers={"Authorization": ""}).status_code == 200


def test_the_served_pii_adapter_masks_with_patterns_merged(keyed):
    r = keyed.post("/v1/mask", json={"text": TEXT, "bias": 50})  # a random model: the bias makes it mask
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["engine"], out["model"], out["merge"]) == ("model+patterns", "masker", "union")
    item = out["data"][0]
    spans = spans_of(item)
    assert render(TEXT, spans) == item["masked"]  # faithful: only the spans changed
    assert any("model" in s["source"] for s in item["spans"])
    covered = lambda a, b: any(s.start <= a and b <= s.end for s in spans)  # noqa: E731
    assert covered(9, 28) and covered(42, 53)  # the e-mail and the IP, whatever the model did
    model_only = keyed.post("/v1/mask", json={"text": TEXT, "merge": "model", "bias": -50}).json()
    assert model_only["engine"] == "model" and model_only["data"][0]["masked"] == TEXT  # never opens a span


def test_a_named_adapter_must_be_a_pii_run(keyed):
    r = keyed.post("/v1/mask", json={"text": TEXT, "model": "kube"})
    assert r.status_code == 400 and "not a PII adapter" in r.json()["error"]["message"]
    r = keyed.post("/v1/mask", json={"text": TEXT, "model": "nope"})
    assert r.status_code == 404 and "masker" in r.json()["error"]["message"]
