"""Levers A/B in one process: each variant trains on the 12 batches of `loraforge bench train`
(Gemma 3 270M, batch 8) in turn, cycle after cycle, and the cycles after the first are averaged.
Interleaving cancels the drift between processes that makes separate bench rows noisy here.

    python -m loraforge.bench.interleaved_ab "{'sdpa': {'matmul_attention': False}, 'matmul': {}}" 3

Each variant is a dict of TrainConfig fields. Every cycle runs ``loraforge.train.loop.train`` itself
(the loop's own step, optimizer and levers), so a variant measures exactly what ``loraforge train``
would run. All variants train one adapter on in turn: throughput does not depend on its values.
"""

from __future__ import annotations

import argparse
import ast
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class VariantRates:
    rates: list[float] = field(default_factory=list)  # tokens/s of each measured cycle
    attention: dict = field(default_factory=dict)  # which attention path its steps took (all cycles)

    @property
    def mean(self) -> float:
        return sum(self.rates) / len(self.rates) if self.rates else 0.0


def interleaved_ab(variants: dict[str, dict], cycles: int, model: str = "gemma3-270m", steps: int = 12,
                   batch_size: int = 8, max_length: int = 256, log=print) -> dict[str, VariantRates]:
    """Train each variant for ``steps`` steps in turn, ``cycles + 1`` times (cycle 0 warms every shape up)."""
    from loraforge.adapters import apply_adapter
    from loraforge.bench.train import BenchSpec, bench_examples
    from loraforge.config import AdapterConfig, TrainConfig
    from loraforge.models.load import load_model
    from loraforge.train.loop import train
    from loraforge.train.packing import attention_paths

    configs = {name: TrainConfig(**{"steps": steps, "batch_size": batch_size, "lr": 1e-5, "eval_every": 0,
                                    "save_every": 0, "warmup_steps": 0, **fields})
               for name, fields in variants.items()}  # a bad field fails here, before the model loads
    spec = BenchSpec(model=model, steps=steps, batch_size=batch_size, max_length=max_length, n_dev=0)
    loaded = load_model(spec.model, spec.dtype)
    train_set, _ = bench_examples(spec, loaded.tokenizer)
    peft_model = apply_adapter(loaded.model, AdapterConfig(r=16, alpha=32), "causal")
    out = {name: VariantRates() for name in variants}
    with tempfile.TemporaryDirectory(prefix="loraforge-ab-") as work:
        for cycle in range(cycles + 1):
            for name, cfg in configs.items():
                attention_paths.clear()
                result = train(peft_model, train_set, [], cfg, Path(work), loaded.tokenizer.pad_token_id,
                               "causal", progress=False)
                rate = result.tokens / result.train_seconds
                for path, n in attention_paths.items():
                    out[name].attention[path] = out[name].attention.get(path, 0) + n
                if cycle:
                    out[name].rates.append(rate)
                log(f"cycle {cycle} {name}: {rate:.1f} tok/s")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loraforge.bench.interleaved_ab", description=__doc__.split("\n\n")[0])
    p.add_argument("variants", type=ast.literal_eval, help="{name: {TrainConfig field: value}}, a Python literal")
    p.add_argument("cycles", type=int, help="measured cycles (one more warms up)")
    p.add_argument("--model", default="gemma3-270m")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256)
    a = p.parse_args(argv)
    results = interleaved_ab(a.variants, a.cycles, a.model, a.steps, a.batch_size, a.max_length,
                             log=lambda s: print(s, flush=True))
    for name, r in results.items():
        print(f"{name}: {r.mean:.1f} tok/s (cycles: {', '.join(f'{x:.0f}' for x in r.rates)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
