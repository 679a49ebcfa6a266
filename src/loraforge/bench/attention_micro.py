"""One attention layer, forward + backward: SDPA's CPU kernel against train/attention.py's two
batched matmuls. The defaults are a Gemma 3 270M layer (4 query heads of 256 dims, 1 KV head),
batch 8 x 256, bf16, causal with right padding.

    python -m loraforge.bench.attention_micro [--batch 8] [--length 256] [--repeats 10]

Both kernels run on the same inputs; the largest difference between their outputs is printed too,
so a faster kernel that computes something else shows up.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass


@dataclass
class AttentionResult:
    name: str
    ms: float  # per layer, forward + backward
    max_abs_diff: float  # largest |output - SDPA's output|


def padded_causal_inputs(batch: int, heads: int, kv_heads: int, length: int, head_dim: int, dtype, seed: int = 0):
    """q, k, v and a causal mask over right-padded rows (lengths drawn from [100, length] for 256)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, length, head_dim, generator=g).to(dtype).requires_grad_()
    k, v = (torch.randn(batch, kv_heads, length, head_dim, generator=g).to(dtype).requires_grad_() for _ in range(2))
    lengths = torch.randint(max(1, length * 100 // 256), length + 1, (batch,), generator=g)
    i = torch.arange(length)
    mask = ((i[None, :] <= i[:, None])[None] & (i[None, :] < lengths[:, None])[:, None, :])[:, None]
    return q, k, v, mask


def time_attention(batch: int = 8, heads: int = 4, kv_heads: int = 1, length: int = 256, head_dim: int = 256,
                   dtype: str = "bf16", repeats: int = 10, warmup: int = 2) -> list[AttentionResult]:
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from loraforge.train.attention import matmul_attention_forward

    class Layer(torch.nn.Module):  # what the attention functions read from the calling layer
        is_causal = True
        num_key_value_groups = heads // kv_heads

    torch_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    q, k, v, mask = padded_causal_inputs(batch, heads, kv_heads, length, head_dim, torch_dtype)
    results, reference = [], None
    for name, fn in (("sdpa", sdpa_attention_forward), ("matmul", matmul_attention_forward)):
        def run():
            out, _ = fn(Layer(), q, k, v, mask, scaling=head_dim ** -0.5)
            out.float().sum().backward()
            return out.detach().float()

        for _ in range(warmup):
            out = run()
        t0 = time.perf_counter()
        for _ in range(repeats):
            out = run()
        ms = (time.perf_counter() - t0) / repeats * 1e3
        reference = out if reference is None else reference
        diff = float((out - reference).abs().max())
        results.append(AttentionResult(name, ms, diff))
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loraforge.bench.attention_micro", description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=1)
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--head-dim", type=int, default=256)
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--repeats", type=int, default=10)
    a = p.parse_args(argv)
    for r in time_attention(a.batch, a.heads, a.kv_heads, a.length, a.head_dim, a.dtype, a.repeats):
        print(f"{r.name}: {r.ms:.1f} ms per layer, forward + backward (max |diff| vs sdpa {r.max_abs_diff:.2g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
