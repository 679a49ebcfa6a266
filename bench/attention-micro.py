"""One Gemma 3 270M attention layer (4 query heads of 256 dims, 1 KV head), batch 8 x 256, bf16,
forward + backward: SDPA's CPU kernel against train/attention.py's two batched matmuls.

    .venv/bin/python bench/attention-micro.py
"""

import time

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from loraforge.train.attention import matmul_attention_forward


class Layer(torch.nn.Module):
    is_causal = True
    num_key_value_groups = 4


B, H, L, D = 8, 4, 256, 256
torch.manual_seed(0)
q = torch.randn(B, H, L, D, dtype=torch.bfloat16, requires_grad=True)
k, v = (torch.randn(B, 1, L, D, dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
lengths = torch.randint(100, L + 1, (B,))
i = torch.arange(L)
mask = ((i[None, :] <= i[:, None])[None] & (i[None, :] < lengths[:, None])[:, None, :])[:, None]
for name, fn in (("sdpa", sdpa_attention_forward), ("matmul", matmul_attention_forward)):
    def run():
        out, _ = fn(Layer(), q, k, v, mask, scaling=D**-0.5)
        out.float().sum().backward()
    for _ in range(2):
        run()
    t0 = time.perf_counter()
    for _ in range(10):
        run()
    print(f"{name}: {(time.perf_counter() - t0) / 10 * 1e3:.1f} ms per layer, forward + backward")
