"""The real embedded model, briefly: load (and cache), train a few steps, save, reload, generate."""

import json
from pathlib import Path

import pytest
import torch

from loraforge.config import load_config

pytestmark = pytest.mark.integration


def test_second_load_comes_from_the_safetensors_cache(monkeypatch):
    import transformers

    from loraforge.models.load import load_model, resolve_model_path

    cached = Path(resolve_model_path("gemma3-270m"))  # builds the cache on a fresh machine
    assert list(cached.glob("*.safetensors"))

    def dequantize(*args, **kwargs):
        raise AssertionError("the second load dequantized the GGUF again instead of reading the cache")

    monkeypatch.setattr(transformers, "GgufConfig", dequantize)  # what materialize_gguf builds to dequantize
    loaded = load_model("gemma3-270m")
    assert loaded.model.name_or_path == str(cached)
    assert loaded.family == "causal" and type(loaded.model).__name__ == "Gemma3ForCausalLM"
    assert (loaded.tokenizer.pad_token_id, loaded.tokenizer.eos_token_id) == (0, 1)


def test_train_save_reload_generate(tmp_path):
    from loraforge.workflows import load_for_inference, train_run, translate_texts

    cfg = load_config(None, [
        "train.steps=3", "train.batch_size=2", "train.eval_every=0", "train.save_every=0", "data.max_length=64",
        "data.max_train_examples=64", "data.max_dev_examples=4", "eval.max_examples=2", "eval.before=false",
        "eval.max_new_tokens=16", f"output.dir={tmp_path / 'run'}",
    ])
    run = train_run(cfg, progress=False)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 3 and metrics["after"]["n"] == 2

    loaded, model = load_for_inference(cfg, run)
    ids = loaded.tokenizer("Kubernetes Pods", return_tensors="pt")
    with torch.no_grad():
        tuned = model(**ids).logits
        with model.disable_adapter():
            base = model(**ids).logits
    assert not torch.allclose(tuned, base)  # the saved adapter was trained and reloaded

    out = translate_texts(["A Pod is the smallest deployable unit."], adapter=str(run), max_new_tokens=16)
    assert len(out) == 1 and out[0].strip()
