"""The Gemma integration test's "did the adapter reach the GGUF" check (tests/gguf_checks.py), on the
tiny Gemma: it passes the exported q8_0 GGUF and fails GGUFs written without the adapter or with half of it."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from gguf_checks import assert_adapter_merged, lora_weights


@pytest.fixture(scope="module")
def tuned(tiny_model_dir, tmp_path_factory):
    """A run directory with a small LoRA adapter (q/v/down_proj), as the integration test builds one."""
    import peft
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = peft.get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                peft.LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, init_lora_weights=False,
                                                target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    run = tmp_path_factory.mktemp("gguf-check-run")
    model.save_pretrained(run / "adapter")
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"name": str(tiny_model_dir)}}))
    (run / "metrics.json").write_text(json.dumps({"after": {"bleu": 1.0}}))
    return {"dir": run, "model": model, "weights": lora_weights(model)}


def read_gguf(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)


def write(model, tokenizer, path):
    from loraforge.export.gguf import write_gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_gguf(model, tokenizer, path, gguf_type="q8_0")


def test_the_exported_gguf_carries_the_adapter(tuned, tmp_path):
    from pathlib import Path

    from loraforge.export.run import export_run

    path = Path(export_run(tuned["dir"], "gguf", tmp_path / "gguf", gguf_type="q8_0")["path"])
    assert_adapter_merged(read_gguf(path), tuned["weights"])


def test_a_gguf_without_the_adapter_fails(tuned, tiny_model_dir, tiny_tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    path = write(base, tiny_tokenizer, tmp_path / "base" / "m.gguf")
    with pytest.raises(AssertionError, match="not the merged adapter's"):
        assert_adapter_merged(read_gguf(path), tuned["weights"])


def test_a_gguf_with_half_the_adapter_fails(tuned, tiny_tokenizer, tmp_path):
    import copy

    half = copy.deepcopy(tuned["model"])
    with torch.no_grad():
        for name, p in half.named_parameters():
            if "lora_B" in name:
                p.mul_(0.5)
    path = write(half.merge_and_unload(), tiny_tokenizer, tmp_path / "half" / "m.gguf")
    with pytest.raises(AssertionError, match="not the merged adapter's"):
        assert_adapter_merged(read_gguf(path), tuned["weights"])
