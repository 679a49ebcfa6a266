"""train.matmul_attention: attention as batched matmuls gives SDPA's numbers, and falls back to it."""

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from conftest import tiny_causal
from loraforge.adapters import apply_adapter
from loraforge.config import AdapterConfig, TrainConfig
from loraforge.train import attention
from loraforge.train.batching import collate
from loraforge.train.loop import TrainStep
from loraforge.train.packing import attention_paths
from test_train import _nonzero_lora, encoded


class Layer(torch.nn.Module):
    """What SDPA's interface reads of an attention layer: 4 query heads over 2 KV heads."""
    is_causal = True
    num_key_value_groups = 2


def _qkv(b=3, h=4, hkv=2, lq=9, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, n, lq, d, generator=g, dtype=torch.float64, requires_grad=True) for n in (h, hkv, hkv)]


def _mask(b, lq, lengths, window=None):
    i = torch.arange(lq)
    keep = i[None, :] <= i[:, None]
    if window:
        keep &= i[None, :] > i[:, None] - window
    return (keep[None] & (i[None, :] < torch.tensor(lengths)[:, None])[:, None, :])[:, None]


@pytest.mark.parametrize("window", [None, 4])
def test_matches_sdpa_values_and_gradients(window):
    """Grouped KV heads, right padding, a sliding window; pad query rows are ignored (no loss reads them)."""
    q, k, v = _qkv()
    mask = _mask(3, 9, [9, 6, 3], window)
    real = mask[:, 0].any(-1)  # query rows that see a real key
    outs, grads = [], []
    for fn in (attention.matmul_attention_forward, sdpa_attention_forward):
        out, _ = fn(Layer(), q, k, v, mask, scaling=0.3)
        weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out) * real[:, :, None, None]
        (out * weight).sum().backward()
        outs.append(out.detach().clone())
        grads.append([t.grad.clone() for t in (q, k, v)])
        for t in (q, k, v):
            t.grad = None
    assert outs[0].shape == (3, 9, 4, 8) and bool(real.all()) is (window is None)  # the window leaves pad rows keyless
    torch.testing.assert_close(outs[0][real], outs[1][real])
    for mine, ref in zip(*grads):
        torch.testing.assert_close(mine, ref)


def test_a_query_row_without_visible_keys_stays_finite():
    q, k, v = _qkv(b=1)
    mask = _mask(1, 9, [9])
    mask[..., 0, :] = False  # e.g. a left-padded row's first position
    out, _ = attention.matmul_attention_forward(Layer(), q, k, v, mask)
    assert torch.isfinite(out).all()


def test_sdpa_takes_what_the_matmuls_do_not(monkeypatch):
    q, k, v = _qkv()
    attention_paths.clear()
    attention.matmul_attention_forward(Layer(), q, k, v, None)  # no mask: SDPA's is_causal
    attention.matmul_attention_forward(Layer(), q, k, v, _mask(3, 9, [9, 9, 9]), dropout=0.1)
    monkeypatch.setattr(attention, "MAX_SCORES", 3 * 4 * 9 * 9 - 1)
    attention.matmul_attention_forward(Layer(), q, k, v, _mask(3, 9, [9, 9, 9]))
    assert attention_paths == {"sdpa": 3}


@pytest.mark.parametrize("arch", ["gemma3", "qwen2"])
def test_training_step_is_the_sdpa_one(arch, tiny_tokenizer):
    extra = {"sliding_window": 8, "layer_types": ["sliding_attention", "full_attention"]} if arch == "gemma3" else {}
    model = _nonzero_lora(apply_adapter(tiny_causal(arch, vocab_size=len(tiny_tokenizer), **extra), AdapterConfig(r=4)))
    batch = collate(encoded(tiny_tokenizer)[:4], tiny_tokenizer.pad_token_id)
    assert batch["input_ids"].shape[1] > 8 and not batch["attention_mask"].all()  # padding, past the window
    results = []
    for on in (False, True):
        model.zero_grad()
        attention_paths.clear()
        with attention.matmul_attention(model, on):
            loss, n = TrainStep(model, "causal", TrainConfig(logits_chunk=16))(**batch)
            loss.backward()
        assert attention_paths["matmul"] == (2 if on else 0)
        results.append((float(loss), {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}))
    assert model.get_base_model().config._attn_implementation != attention.ATTENTION  # restored
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-5)
    for k, ref in results[0][1].items():
        torch.testing.assert_close(results[1][1][k], ref, rtol=1e-3, atol=1e-4 * float(ref.abs().max()))


def test_the_mask_is_materialized_for_cpu_tensors_only(monkeypatch):
    """On the CPU the matmuls need the mask; elsewhere SDPA keeps its is_causal skip."""
    import transformers.masking_utils as masking

    seen = []
    monkeypatch.setattr(masking, "sdpa_mask", lambda *a, **kw: seen.append(kw.get("allow_is_causal_skip", True)))
    for device in (torch.device("cpu"), None, torch.device("cuda")):
        attention._materialized_mask(batch_size=1, device=device, allow_is_causal_skip=True)
    assert seen == [False, False, True]
