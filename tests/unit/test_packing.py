"""Padding-free packing: a packed row trains exactly like the padded batch of the same examples."""

import pytest
import torch

from conftest import tiny_causal
from loraforge.adapters import apply_adapter
from loraforge.config import AdapterConfig, ConfigError, DataConfig, TrainConfig
from loraforge.data.formats import Example
from loraforge.data.templates import IGNORE, encode_examples
from loraforge.train import packing
from loraforge.train.batching import BatchStream, collate
from loraforge.train.loop import TrainStep, train
from loraforge.train.packing import collate_packed, packed_attention

PAIRS = [("A Pod is the smallest deployable unit of computing.", "Pod 是可以部署的最小计算单元。"),
         ("Use kubectl.", "使用 kubectl。"),
         ("Kubernetes is an open source system for automating deployment.", "Kubernetes 是一个开源系统。"),
         ("A Service exposes Pods.", "Service 公开 Pod。")]


def encoded(tok):
    return encode_examples(tok, [Example(source=s, target=t) for s, t in PAIRS], DataConfig(template="chatml"))


def test_collate_packed_concatenates_without_padding(tiny_tokenizer):
    examples = encoded(tiny_tokenizer)
    batch = collate_packed(examples)
    lengths = [len(e.input_ids) for e in examples]
    assert batch["input_ids"].shape == (1, sum(lengths)) and batch["attention_mask"] is None
    assert batch["cu_seq_lens_q"].tolist() == [0] + torch.tensor(lengths).cumsum(0).tolist()
    assert batch["max_length_q"] == max(lengths)
    for e, s in zip(examples, batch["cu_seq_lens_q"].tolist()):
        n = len(e.input_ids)
        assert batch["input_ids"][0, s:s + n].tolist() == e.input_ids
        assert batch["position_ids"][0, s:s + n].tolist() == list(range(n))
        assert batch["labels"][0, s] == IGNORE  # nothing learns to predict an example's first token
        assert batch["labels"][0, s + 1:s + n].tolist() == e.labels[1:n]


def _step(model, batch, cfg):
    model.zero_grad()
    loss, n = TrainStep(model, "causal", cfg)(**batch)
    loss.backward()
    return float(loss.detach()), int(n), {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("arch", ["gemma3", "qwen2"])
@pytest.mark.parametrize("target_only", [True, False])
@pytest.mark.parametrize("matmul", [False, True])  # per-sequence SDPA, or batched matmuls (train.matmul_attention)
def test_packed_row_matches_padded_batch(arch, target_only, matmul, tiny_tokenizer):
    """Same loss, target count and LoRA gradients; Gemma's sliding window (8 here, shorter than the
    examples) is kept inside each sequence."""
    extra = {"sliding_window": 8, "layer_types": ["sliding_attention", "full_attention"]} if arch == "gemma3" else {}
    model = apply_adapter(tiny_causal(arch, vocab_size=len(tiny_tokenizer), **extra), AdapterConfig(r=4))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    examples = encoded(tiny_tokenizer)
    assert max(len(e.input_ids) for e in examples) > 8
    cfg = TrainConfig(target_only_logits=target_only, logits_chunk=16)
    padded = _step(model, collate(examples, tiny_tokenizer.pad_token_id), cfg)
    packing.attention_paths.clear()
    with packed_attention(model, True, matmul):
        packed = _step(model, collate_packed(examples), cfg)
    assert packing.attention_paths["matmul-per-sequence" if matmul else "sdpa-per-sequence"] == 2  # both layers
    assert model.get_base_model().config._attn_implementation != packing.ATTENTION  # restored
    assert packed[1] == padded[1] > 0
    assert packed[0] == pytest.approx(padded[0], rel=1e-5)
    for k in padded[2]:  # fp32 sums in another order: differences far below a crossed boundary's
        torch.testing.assert_close(packed[2][k], padded[2][k], rtol=1e-3, atol=1e-4 * float(padded[2][k].abs().max()))


def test_a_padded_batch_without_padding_still_attends_in_a_packed_run(tiny_tokenizer):
    """Dev loss in a packed run: a batch of one example has no padding; it attends like the plain model."""
    model = tiny_causal("gemma3", vocab_size=len(tiny_tokenizer))
    batch = collate(encoded(tiny_tokenizer)[:1], tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        plain = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        with packed_attention(model, True):
            packed = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(packed, plain)


def test_packed_attention_without_boundaries_or_mask_is_an_error(tiny_tokenizer):
    model = tiny_causal("gemma3", vocab_size=len(tiny_tokenizer))
    ids = torch.tensor([encoded(tiny_tokenizer)[0].input_ids])
    with packed_attention(model, True), pytest.raises(RuntimeError, match="sequence boundaries"):
        model(input_ids=ids)  # a packed row whose boundaries were lost would otherwise attend across examples


def test_training_with_packing_matches_padded_training_and_checkpointing(tiny_tokenizer, tmp_path):
    """Whole runs: packing changes no number, also with activation checkpointing (which re-runs the
    attention in the backward pass), and dev loss inside a packed run still takes padded batches."""
    examples = encoded(tiny_tokenizer) * 2
    runs = {}
    for name, extra in {"padded": {}, "packed": {"packing": True},  # auto: padded on the CPU
                        "packed+ckpt": {"packing": True, "activation_checkpointing": True}}.items():
        model = apply_adapter(tiny_causal("gemma3", vocab_size=len(tiny_tokenizer)), AdapterConfig(r=4))
        cfg = TrainConfig(steps=3, batch_size=4, eval_every=2, save_every=0, lr=1e-2, **extra)
        packing.attention_paths.clear()
        result = train(model, examples, examples[:2], cfg, tmp_path / name, tiny_tokenizer.pad_token_id, progress=False)
        assert bool(packing.attention_paths["matmul-per-sequence"]) == (name != "padded")  # the CPU default
        runs[name] = [row.get("loss", row.get("dev_loss")) for row in result.history] + [result.tokens]
    assert len(runs["padded"]) == 5  # 3 steps, 2 dev losses, real tokens (padding not counted)
    for name in ("packed", "packed+ckpt"):
        assert runs[name] == pytest.approx(runs["padded"], rel=1e-4)


def test_packing_true_refuses_prompt_tuning_and_auto_pads_it(tiny_tokenizer, tmp_path):
    from loraforge.train.loop import packs

    model = apply_adapter(tiny_causal("gemma3", vocab_size=len(tiny_tokenizer)),
                          AdapterConfig(method="prompt", num_virtual_tokens=4))
    with pytest.raises(ConfigError, match="train.packing"):
        train(model, encoded(tiny_tokenizer), [], TrainConfig(steps=1, batch_size=2, packing=True), tmp_path,
              tiny_tokenizer.pad_token_id, progress=False)
    assert packs(model, "causal", "auto") is False and packs(model, "causal", False) is False
    result = train(model, encoded(tiny_tokenizer), [], TrainConfig(steps=1, batch_size=2), tmp_path / "auto",
                   tiny_tokenizer.pad_token_id, progress=False)
    assert result.steps == 1
    lora = apply_adapter(tiny_causal("gemma3", vocab_size=len(tiny_tokenizer)), AdapterConfig(r=4))
    assert packs(lora, "causal", True) is True and packs(lora, "causal", False) is False
    assert packs(lora, "causal", "auto", "cpu") is False  # packed rows pay on CUDA only
    assert packs(lora, "causal", "auto", "cuda") is True and packs(model, "causal", "auto", "cuda") is False
    with pytest.raises(ConfigError, match="train.packing"):
        packs(lora, "seq2seq", True)


def test_batch_stream_packs_the_same_examples(tiny_tokenizer):
    examples = encoded(tiny_tokenizer) * 3
    padded, packed = (BatchStream(examples, 4, 0, True, p) for p in (False, True))
    for g in range(3):
        assert packed.indices(g) == padded.indices(g)
        want = [t for i in padded.indices(g) for t in examples[i].input_ids]
        assert packed.batch(g, 0, "causal")["input_ids"][0].tolist() == want


def _reference_varlen(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, is_causal=False):
    """PyTorch 2.10's varlen_attn signature (no scale, window or GQA), computed with SDPA on the CPU."""
    b = cu_seq_q.tolist()
    return torch.cat([torch.nn.functional.scaled_dot_product_attention(
        query[s:e].transpose(0, 1), key[s:e].transpose(0, 1), value[s:e].transpose(0, 1),
        is_causal=is_causal).transpose(0, 1) for s, e in zip(b, b[1:])])


@pytest.mark.parametrize("broken", [False, True])
def test_cuda_varlen_adapts_to_an_older_signature_and_is_checked_once(monkeypatch, broken):
    """The call folds the model's scale into the query and repeats grouped KV heads where the kernel
    cannot; a kernel whose first answer disagrees with SDPA is dropped for the process."""
    import torch.nn.attention.varlen as varlen

    calls = []

    def fake(*args, **kwargs):
        calls.append(kwargs)
        out = _reference_varlen(*args, **kwargs)
        return out + 1.0 if broken else out

    monkeypatch.setattr(varlen, "varlen_attn", fake)
    monkeypatch.setitem(packing._varlen_state, "usable", None)
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 12, 8), torch.randn(1, 2, 12, 8), torch.randn(1, 2, 12, 8)
    cu = torch.tensor([0, 5, 12], dtype=torch.int32)
    if broken:
        with pytest.warns(UserWarning, match="disagrees"):
            assert packing._cuda_varlen(q, k, v, cu, 7, 0.2, None) is None
        assert packing._varlen_state["usable"] is False
        assert packing._cuda_varlen(q, k, v, cu, 7, 0.2, None) is None and len(calls) == 1  # not asked again
        return
    out = packing._cuda_varlen(q, k, v, cu, 7, 0.2, None)
    torch.testing.assert_close(out, packing._attend_per_sequence(q, k, v, cu, 0.2, None), rtol=1e-5, atol=1e-5)
    assert calls == [{"is_causal": True}] and packing._varlen_state["usable"] is True
    assert packing._cuda_varlen(q, k, v, cu, 7, 0.2, 4) is None  # a window the old kernel cannot apply
