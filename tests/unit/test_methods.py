"""Every fine-tuning method on tiny models of both families: learns, saves/reloads exactly, merges
where the maths allows, and refuses unsupported combinations with a clear error."""

import json

import pytest
import torch

from loraforge.adapters import AdapterError, apply_adapter, load_adapter, trainable_parameters
from loraforge.methods import registry
from loraforge.adapters.bottleneck import target_sublayers
from loraforge.adapters.build import merge_adapter, save_adapter
from loraforge.config import AdapterConfig, ConfigError, DataConfig, TrainConfig, load_config
from loraforge.data.formats import load_examples
from loraforge.data.templates import encode_examples
from loraforge.models.load import ModelError, load_model
from loraforge.train.batching import collate
from loraforge.train.loop import train
from seq2seq_helpers import FIXTURE

METHODS = ["lora", "dora", "ia3", "prefix", "prompt", "adapter", "full"]
LR = {"prefix": 1.0, "prompt": 1.0, "full": 3e-3}  # virtual tokens need a large lr (Gemma scales real embeddings by sqrt(d), not virtual ones)
ADAPTER = dict(r=4, num_virtual_tokens=4, bottleneck_size=8)


@pytest.fixture(scope="module")
def model_dirs(tiny_model_dir, tiny_seq2seq_dirs):
    return {"gemma3": tiny_model_dir, **tiny_seq2seq_dirs}


def _load(path):
    return load_model(str(path), dtype="fp32")


def _batch(loaded):
    enc = encode_examples(loaded.tokenizer, load_examples(FIXTURE, limit=4), DataConfig(template="chatml"), loaded.family)
    return enc, collate(enc, loaded.tokenizer.pad_token_id, loaded.family)


@torch.no_grad()
def _logits(model, batch):
    model.eval()
    if model.config.is_encoder_decoder:
        return model(**batch).logits
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return logits[:, -batch["input_ids"].shape[1]:]  # prompt tuning prepends virtual positions


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", ["gemma3", "marian", "mbart"])
def test_method_trains_saves_reloads_and_merges(arch, method, model_dirs, tmp_path):
    loaded = _load(model_dirs[arch])
    enc, batch = _batch(loaded)
    base_logits = _logits(loaded.model, batch)
    torch.manual_seed(0)
    model = apply_adapter(loaded.model, AdapterConfig(method=method, **ADAPTER), loaded.family)
    n_trainable, n_total = trainable_parameters(model)
    assert 0 < n_trainable <= n_total and (n_trainable == n_total) == (method == "full")

    cfg = TrainConfig(steps=8, batch_size=4, lr=LR.get(method, 1e-2), warmup_steps=0, eval_every=0, save_every=0)
    result = train(model, enc, [], cfg, tmp_path, loaded.tokenizer.pad_token_id, loaded.family, progress=False)
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < losses[0] - 0.02, losses  # the same batch every step: the loss must go down

    tuned = _logits(model, batch)
    assert not torch.allclose(tuned, base_logits, atol=1e-4)  # training changed what the model computes
    save_adapter(model, tmp_path / "adapter")
    # readable by a serving container under another uid (the serve image runs as uid 1000)
    assert (tmp_path / "adapter").stat().st_mode & 0o777 == 0o755
    assert {f.name: f.stat().st_mode & 0o777 for f in (tmp_path / "adapter").iterdir()} == \
        {f.name: 0o644 for f in (tmp_path / "adapter").iterdir()}
    reloaded = load_adapter(_load(model_dirs[arch]).model, tmp_path / "adapter")
    torch.testing.assert_close(_logits(reloaded, batch), tuned, rtol=0, atol=1e-5)

    if registry.get(method).merges:  # what the registry claims, checked against the maths
        merged = merge_adapter(reloaded)
        assert not hasattr(merged, "peft_config")
        torch.testing.assert_close(_logits(merged, batch), tuned, rtol=1e-4, atol=1e-4)
    else:
        with pytest.raises(AdapterError, match="cannot be merged"):
            merge_adapter(reloaded)


@pytest.mark.parametrize("arch,expected", [("gemma3", 4), ("marian", 8), ("mbart", 8)])
def test_bottleneck_starts_as_the_base_model(arch, expected, model_dirs, tmp_path):
    loaded = _load(model_dirs[arch])
    _, batch = _batch(loaded)
    before = _logits(loaded.model, batch)
    model = apply_adapter(loaded.model, AdapterConfig(method="adapter", bottleneck_size=8), loaded.family)
    assert len(target_sublayers(model)) == expected  # attention + FFN of every layer (encoder and decoder)
    assert all(("loraforge_adapter" in n) == p.requires_grad for n, p in model.named_parameters())
    torch.testing.assert_close(_logits(model, batch), before, rtol=0, atol=0)  # zero-init up-projection
    save_adapter(model, tmp_path / "a")
    config = json.loads((tmp_path / "a" / "bottleneck_config.json").read_text())
    assert config["bottleneck_size"] == 8 and len(config["sublayers"]) == expected
    assert (tmp_path / "a" / "adapter_model.safetensors").is_file()


def test_bottleneck_refuses_other_architectures(model_dirs, tmp_path):
    save_adapter(apply_adapter(_load(model_dirs["marian"]).model, AdapterConfig(method="adapter")), tmp_path / "a")
    with pytest.raises(ConfigError, match="another architecture"):
        load_adapter(_load(model_dirs["gemma3"]).model, tmp_path / "a")

    class NoLayers(torch.nn.Module):
        config = None

        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(4, 4)

    with pytest.raises(ConfigError, match="no attention/feed-forward"):
        apply_adapter(NoLayers(), AdapterConfig(method="adapter"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_qlora_on_cpu_is_a_clear_error(model_dirs):
    with pytest.raises(AdapterError, match="CUDA"):
        apply_adapter(_load(model_dirs["gemma3"]).model, AdapterConfig(method="qlora"))
    with pytest.raises(ModelError, match="CUDA"):
        load_model(str(model_dirs["gemma3"]), quantize="nf4")


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_target_modules_matching_nothing(method, model_dirs):
    with pytest.raises(AdapterError, match=r"match no layer.*fc1"):
        apply_adapter(_load(model_dirs["marian"]).model, AdapterConfig(method=method, target_modules=["q_proj_x"]),
                      "seq2seq")


def test_compare_writes_the_method_table(model_dirs, tmp_path, capsys):
    from loraforge.workflows.compare import compare_run, parse_lrs, parse_methods

    with pytest.raises(ConfigError, match="allowed"):
        parse_methods("lora,lorra")
    cfg = load_config(None, [f"model.name={model_dirs['marian']}", f"data.train={FIXTURE}", f"data.dev={FIXTURE}",
                             f"data.test={FIXTURE}", "train.steps=2", "train.batch_size=4", "eval.max_examples=2",
                             "eval.max_new_tokens=4", "eval.before=false", "model.dtype=fp32", "adapter.r=4",
                             f"output.dir={tmp_path}"])
    with pytest.raises(ConfigError, match="not in --methods"):
        parse_lrs("full=1e-4", ["lora"])
    md = compare_run(cfg, ["lora", "adapter", "qlora"], parse_lrs("adapter=1e-3", ["lora", "adapter", "qlora"]))
    rows = {r["method"]: r for r in json.loads((tmp_path / "compare" / "compare.json").read_text())["rows"]}
    assert set(rows) == {"lora", "adapter", "qlora"} and "CUDA" in rows.pop("qlora")["error"]  # CPU: a clear refusal
    assert (rows["lora"]["lr"], rows["adapter"]["lr"]) == (cfg.train.lr, 1e-3)
    for method, row in rows.items():
        metrics = json.loads((tmp_path / "compare" / method / "metrics.json").read_text())
        assert row["trainable_params"] == metrics["train"]["trainable_params"] > 0
        assert row["adapter_mb"] > 0 and row["tokens_per_s"] > 0 and row["dev_loss"] > 0
        assert "bleu" in metrics["after"]
    assert (tmp_path / "compare" / "adapter" / "adapter" / "bottleneck_config.json").is_file()
    table = md.read_text()
    assert "| lora |" in table and "| adapter |" in table and "| qlora | failed:" in table
    mtime = (tmp_path / "compare" / "lora" / "metrics.json").stat().st_mtime_ns
    compare_run(cfg, ["lora"])  # same config: reused, not retrained
    assert (tmp_path / "compare" / "lora" / "metrics.json").stat().st_mtime_ns == mtime
