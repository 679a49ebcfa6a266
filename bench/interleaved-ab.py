"""Levers A/B in one process: each variant trains on the 12 batches of `loraforge bench train`
(Gemma 3 270M, batch 8) in turn, cycle after cycle, and the cycles after the first are averaged.
Interleaving cancels the drift between processes that makes separate bench rows noisy here.

    .venv/bin/python bench/interleaved-ab.py "{'sdpa': {'matmul_attention': False}, 'matmul': {}}" 3
"""

import ast
import sys
import time

import torch

from loraforge.adapters import apply_adapter
from loraforge.bench.train import BenchSpec, bench_examples
from loraforge.config import AdapterConfig, TrainConfig
from loraforge.models.load import load_model
from loraforge.train.attention import matmul_attention
from loraforge.train.batching import BatchStream
from loraforge.train.heap import freed_memory_policy
from loraforge.train.loop import TrainStep

variants, cycles = ast.literal_eval(sys.argv[1]), int(sys.argv[2])  # {name: TrainConfig fields}, cycles measured
spec = BenchSpec(steps=12, batch_size=8)
loaded = load_model(spec.model, spec.dtype)
train_set, _ = bench_examples(spec, loaded.tokenizer)
model = apply_adapter(loaded.model, AdapterConfig(r=16, alpha=32), "causal")
# one adapter and optimizer for all variants: they train on in turn (throughput does not depend on the values)
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
steps = {name: TrainStep(model, "causal", TrainConfig(**kw)) for name, kw in variants.items()}
rates = {name: [] for name in variants}
with freed_memory_policy("keep"):
    for cycle in range(cycles + 1):  # cycle 0 warms up every shape
        for name, step in steps.items():
            step.train()
            stream = BatchStream(train_set, 8, 0, True, False)
            with matmul_attention(model, step.cfg.matmul_attention):
                t0, tokens = time.perf_counter(), 0
                for g in range(12):
                    loss, n = step(**stream.batch(g, loaded.tokenizer.pad_token_id, "causal"))
                    (loss / n).backward()
                    optimizer.step()
                    optimizer.zero_grad()
                    tokens += sum(stream.lengths[i] for i in stream.indices(g))
                rate = tokens / (time.perf_counter() - t0)
            if cycle:
                rates[name].append(rate)
            print(f"cycle {cycle} {name}: {rate:.1f} tok/s", flush=True)
for name, r in rates.items():
    print(f"{name}: {sum(r) / len(r):.1f} tok/s (cycles: {', '.join(f'{x:.0f}' for x in r)})")
