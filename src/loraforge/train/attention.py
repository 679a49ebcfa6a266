"""Attention as two batched matmuls, for short sequences on the CPU (``train.matmul_attention``).

Why our own: PyTorch's CPU SDPA kernels (flash and math) run bf16 attention far below matmul speed,
while here the query heads that share a KV head form one large matmul (Gemma 3 270M: 4 heads of 256
dims over one KV head; `python -m loraforge.bench.attention_micro` times one layer both ways, `python -m loraforge.bench.interleaved_ab`
whole steps). The scores are materialized in fp32 (and the probabilities kept for the backward
pass), so this path is taken only while they are small; longer sequences, CUDA, dropout and logit
softcapping go to SDPA.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager

import torch

ATTENTION = "loraforge_matmul"
# per layer call: "matmul" | "sdpa" here; "varlen" | "matmul-per-sequence" | "sdpa-per-sequence" |
# "sdpa-padded" in train/packing.py
attention_paths: Counter = Counter()
MAX_SCORES = 2**24  # batch x heads x queries x keys of one call: 64 MiB of fp32 scores


@torch.compiler.disable  # inside compiled layers (train.compile_model) it runs eagerly: tracing it costs minutes
def matmul_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                             scaling: float | None = None, **kwargs):
    """transformers' attention interface: (B, H, Lq, D) query, (B, Hkv, Lk, D) key/value, a boolean
    mask (B, 1, Lq, Lk) where True attends -> (B, Lq, H, D)."""
    b, h, lq, d = query.shape
    hkv, lk = key.shape[1], key.shape[2]
    if (query.is_cuda or dropout or kwargs.get("softcap") or attention_mask is None
            or attention_mask.dtype != torch.bool or attention_mask.shape[1] != 1 or b * h * lq * lk > MAX_SCORES):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        attention_paths["sdpa"] += 1
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    attention_paths["matmul"] += 1
    return attend_by_matmuls(query, key, value, attention_mask, scaling), None


def attend_by_matmuls(query, key, value, mask, scaling: float | None = None) -> torch.Tensor:
    """(B, H, Lq, D) query, (B, Hkv, Lk, D) key/value, boolean mask (B or 1, 1, Lq, Lk) -> (B, Lq, H, D)."""
    b, h, lq, d = query.shape
    hkv, lk = key.shape[1], key.shape[2]
    g = h // hkv  # query heads [j*g, (j+1)*g) read KV head j (transformers' repeat_kv order)
    scale = scaling if scaling is not None else d**-0.5
    q = query.reshape(b * hkv, g * lq, d)
    k, v = key.reshape(b * hkv, lk, d), value.reshape(b * hkv, lk, d)
    wide = torch.promote_types(query.dtype, torch.float32)  # softmax in fp32 or wider
    scores = torch.bmm(q, k.transpose(1, 2)).view(b, hkv, g, lq, lk).to(wide) * scale
    # a finite floor, not -inf: a query row with no visible key (left padding) gets uniform weights, not NaN
    scores = scores.masked_fill(~mask[:, :, None], torch.finfo(wide).min)
    probs = torch.softmax(scores, dim=-1).to(value.dtype).view(b * hkv, g * lq, lk)
    out = torch.bmm(probs, v).view(b, h, lq, d)
    return out.transpose(1, 2).contiguous()


def _materialized_mask(*args, **kwargs):
    """SDPA's boolean mask, always built on the CPU (SDPA may skip it for is_causal; the matmuls need
    it). Elsewhere SDPA attends, and keeps the skip that lets it run its causal kernels."""
    from transformers.masking_utils import sdpa_mask

    if torch.device(kwargs.get("device") or "cpu").type == "cpu":
        kwargs["allow_is_causal_skip"] = False
    return sdpa_mask(*args, **kwargs)


@contextmanager
def attention_implementation(model: torch.nn.Module, name: str, forward, mask, enabled: bool = True):
    """Register ``forward`` and its ``mask`` builder with transformers as ``name`` and switch the
    model's attention to it for the block (a training run), then back."""
    if not enabled:
        yield
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(name, forward)
    AttentionMaskInterface.register(name, mask)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    before = base.config._attn_implementation
    base.set_attn_implementation(name)
    try:
        yield
    finally:
        base.set_attn_implementation(before)


def matmul_attention(model: torch.nn.Module, enabled: bool):
    """The model attends through ``matmul_attention_forward`` for a training run."""
    return attention_implementation(model, ATTENTION, matmul_attention_forward, _materialized_mask, enabled)
