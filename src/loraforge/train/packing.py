"""Padding-free packing: a micro-batch as one row of concatenated examples, attended per sequence.

Why our own: a padded batch spends matmul work on pad tokens; a packed row does not, but the
attention must not cross example boundaries. transformers can do that through a block-diagonal mask
(SDPA then scores every pair in the row, most of them masked) or through the ``flash-attn`` package
(a separate CUDA build). Here the boundaries travel as ``cu_seq_lens`` (the FlashAttention
convention, which transformers passes down to each attention layer) and each sequence is attended
on its own: PyTorch's own FlashAttention varlen kernel on CUDA, elsewhere one call per sequence
(batched matmuls with ``train.matmul_attention``, else SDPA). ``attention_paths`` counts which ran,
so a benchmark can say so.
"""

from __future__ import annotations

import functools
import inspect
import warnings

import torch

from loraforge.data.templates import IGNORE, Encoded
from loraforge.train.attention import MAX_SCORES, attend_by_matmuls, attention_implementation, attention_paths

ATTENTION = "loraforge_packed"


def collate_packed(examples: list[Encoded]) -> dict:
    """One row holding every example, positions restarting at each; no padding anywhere.

    The first label of each example is IGNORE: in a padded batch nothing predicts position 0, and in
    a packed row the previous example's last token must not learn to predict it either.
    """
    ids, labels, positions, bounds = [], [], [], [0]
    for e in examples:
        n = len(e.input_ids)
        ids += e.input_ids
        labels += [IGNORE] + (list(e.labels) + [IGNORE] * n)[1:n]
        positions += range(n)
        bounds.append(bounds[-1] + n)
    cu = torch.tensor(bounds, dtype=torch.int32)
    longest = max(len(e.input_ids) for e in examples)
    return {"input_ids": torch.tensor([ids]), "attention_mask": None, "labels": torch.tensor([labels]),
            "position_ids": torch.tensor([positions]), "cu_seq_lens_q": cu, "cu_seq_lens_k": cu,
            "max_length_q": longest, "max_length_k": longest}


@torch.compiler.disable  # per-sequence Python over cu_seq_lens: compiled layers call it eagerly
def packed_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                             scaling: float | None = None, sliding_window: int | None = None,
                             matmul: bool = False, **kwargs):
    """transformers' attention interface: (1, H, T, D) query, (1, Hkv, T, D) key/value -> (1, T, H, D).
    ``matmul``: on the CPU, each sequence attends through batched matmuls (``train.matmul_attention``)."""
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None:  # an ordinary padded batch (dev loss inside a packed run): plain SDPA
        if attention_mask is None and query.shape[2] > 1:
            raise RuntimeError("packed attention got neither a mask nor sequence boundaries (cu_seq_lens_q)")
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        attention_paths["sdpa-padded"] += 1
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, sliding_window=sliding_window, **kwargs)
    if query.shape[0] != 1:
        raise ValueError(f"packed attention expects one packed row, got a batch of {query.shape[0]}")
    if dropout:
        raise NotImplementedError("packed attention has no attention dropout")
    out = None
    if query.is_cuda and query.dtype in (torch.float16, torch.bfloat16):
        out = _cuda_varlen(query, key, value, cu, int(kwargs["max_length_q"]), scaling, sliding_window)
    if out is None:
        use_matmul = matmul and not query.is_cuda
        out = _attend_per_sequence(query, key, value, cu, scaling, sliding_window, use_matmul)
        attention_paths["matmul-per-sequence" if use_matmul else "sdpa-per-sequence"] += 1
    else:
        attention_paths["varlen"] += 1
    return out, None


def _attend_per_sequence(query, key, value, cu, scaling, sliding_window, matmul: bool = False):
    """One causal attention call per sequence: exact, no masked pairs across sequences; the CPU path.
    ``matmul``: batched matmuls (``train/attention.py``) for sequences whose scores are small, else SDPA."""
    bounds = cu.tolist()
    gqa = query.shape[1] != key.shape[1]
    parts = []
    for s, e in zip(bounds, bounds[1:]):
        q, k, v = query[:, :, s:e], key[:, :, s:e], value[:, :, s:e]
        n = e - s
        windowed = bool(sliding_window) and n > sliding_window
        by_matmul = matmul and q.shape[1] * n * n <= MAX_SCORES
        if not (windowed or by_matmul):
            o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling, enable_gqa=gqa)
            parts.append(o.transpose(1, 2))
            continue
        i = torch.arange(n, device=q.device)
        band = i[None, :] <= i[:, None]
        if windowed:  # causal band of `sliding_window` keys, self included
            band &= i[None, :] > i[:, None] - sliding_window
        if by_matmul:
            parts.append(attend_by_matmuls(q, k, v, band[None, None], scaling))
        else:
            o = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=band, scale=scaling, enable_gqa=gqa)
            parts.append(o.transpose(1, 2))
    return torch.cat(parts, dim=1).contiguous()


_varlen_state = {"usable": None}


@functools.lru_cache(maxsize=None)
def _parameters(fn) -> frozenset:
    """Once per process, not once per layer call: the names ``fn`` accepts."""
    return frozenset(inspect.signature(fn).parameters)  # None: not tried yet; then True/False for this process


def _cuda_varlen(query, key, value, cu, max_len, scaling, sliding_window):
    """PyTorch's FlashAttention varlen kernel (torch.nn.attention.varlen), or None where it is missing.

    Its signature changed between PyTorch releases (2.10: ``is_causal``; later: ``window_size``,
    ``scale``, ``enable_gqa``), so the call adapts to what is there, and its first result in a
    process is checked against the per-sequence SDPA reference before it is trusted.
    """
    if _varlen_state["usable"] is False:
        return None
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        _varlen_state["usable"] = False
        return None
    params = _parameters(varlen_attn)
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (T, heads, D)
    if q.shape[1] != k.shape[1] and "enable_gqa" not in params:
        k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
    extra = {"enable_gqa": True} if q.shape[1] != k.shape[1] else {}
    if "window_size" in params:
        extra["window_size"] = (sliding_window - 1 if sliding_window else -1, 0)
    elif sliding_window and max_len > sliding_window:
        return None  # an older varlen_attn without windows: the per-sequence path keeps the band
    else:
        extra["is_causal"] = True
    if "scale" in params:
        extra["scale"] = scaling
    elif scaling is not None:  # the default scale is 1/sqrt(D): fold the model's into the query
        q = q * (scaling * q.shape[-1] ** 0.5)
    try:
        out = varlen_attn(q.contiguous(), k.contiguous(), v.contiguous(), cu.to(q.device), cu.to(q.device),
                          max_len, max_len, **extra).unsqueeze(0)
    except (RuntimeError, TypeError, NotImplementedError, ValueError) as e:
        warnings.warn(f"FlashAttention varlen failed ({type(e).__name__}: {str(e)[:200]}); "
                      "packed attention runs per sequence with SDPA instead", stacklevel=2)
        _varlen_state["usable"] = False
        return None
    if _varlen_state["usable"] is None:
        with torch.no_grad():
            ref = _attend_per_sequence(query, key, value, cu, scaling, sliding_window)
            err = float((out.float() - ref.float()).abs().max())
            scale = float(ref.float().abs().max()) + 1e-6
        _varlen_state["usable"] = err <= 2e-2 * scale  # bf16 rounding is ~4e-3 relative
        if not _varlen_state["usable"]:
            warnings.warn(f"FlashAttention varlen disagrees with SDPA (max error {err:.3g} of {scale:.3g}); "
                          "packed attention runs per sequence with SDPA instead", stacklevel=2)
            return None
    return out


def _packed_mask(*args, attention_mask=None, **kwargs):
    """Packed rows need no mask (boundaries come as cu_seq_lens); padded batches get SDPA's."""
    if attention_mask is None:
        return None
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def packed_attention(model: torch.nn.Module, enabled: bool, matmul: bool = False):
    """Switch the model's attention to the packed implementation for a training run, then back;
    ``matmul``: sequences attend through batched matmuls on the CPU.

    For the whole run, not per step: activation checkpointing re-runs attention in the backward pass.
    """
    forward = functools.partial(packed_attention_forward, matmul=matmul)
    return attention_implementation(model, ATTENTION, forward, _packed_mask, enabled)
