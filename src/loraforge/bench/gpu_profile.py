"""Where a loraforge training step spends its time on a GPU: host (Python, kernel launches) or device.

Run beside bench/gpu-run.sh (same .gpu/model folder, random weights):
    PYTHONPATH=src python3 -m loraforge.bench.gpu_profile [batch] [steps] [--model .gpu/model]
For each variant (padded, packed, padded with train.compile_model) it prints the wall time of a
step, the GPU's busy time within it (the sum of its kernels' durations) and the number of kernels
launched, then the top host-side operators. A step whose GPU busy time is a small part of its wall
time is bound by the host, not by the GPU's arithmetic. Without CUDA it runs on the CPU and profiles
the host side only (GPU busy 0, no kernels).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

VARIANTS = {"padded": {}, "packed": {"packing": True}, "padded+compile_model": {"compile_model": True}}


@dataclass
class StepProfile:
    variant: str
    warmup_s: float  # the warm-up steps together: allocation, kernel choice, compiling
    step_s: float  # wall time of one profiled step
    tokens: float  # tokens per profiled step
    gpu_busy_s: float  # sum of the step's CUDA kernel durations (0 without CUDA)
    kernels: float  # CUDA kernels launched per step
    table: str  # the profiler's top host-side operators


def profile_steps(model: str = ".gpu/model", batch: int = 16, steps: int = 5, max_length: int = 512,
                  variants: dict[str, dict] | None = None, random_weights: bool = True, warmup: int = 3,
                  log=print) -> list[StepProfile]:
    """Profile ``steps`` training steps (after ``warmup``) of each variant (name -> TrainConfig fields)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from loraforge.adapters import apply_adapter
    from loraforge.bench.train import BenchSpec, bench_examples
    from loraforge.config import AdapterConfig, TrainConfig
    from loraforge.models.load import load_model
    from loraforge.train.batching import BatchStream
    from loraforge.train.loop import TrainStep, to_model_device
    from loraforge.train.packing import packed_attention

    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    loaded = load_model(model, "auto", random_weights=random_weights)
    spec = BenchSpec(model=model, steps=warmup + steps, batch_size=batch, max_length=max_length, n_dev=0)
    train_set, _ = bench_examples(spec, loaded.tokenizer)
    peft_model = apply_adapter(loaded.model, AdapterConfig(r=16, alpha=32), "causal")
    peft_model.train()
    results = []
    for name, fields in (variants if variants is not None else VARIANTS).items():
        cfg = TrainConfig(**fields)
        step = TrainStep(peft_model, "causal", cfg)
        stream = BatchStream(train_set, batch, 0, True, cfg.packing)

        def run(g):
            loss, _ = step(**to_model_device(stream.batch(g, 0, "causal"), peft_model))
            loss.backward()
            peft_model.zero_grad(set_to_none=True)

        with packed_attention(peft_model, cfg.packing):
            t0 = time.perf_counter()
            for g in range(warmup):
                run(g)
            sync()
            warm = time.perf_counter() - t0
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
            with profile(activities=activities) as prof:
                t0 = time.perf_counter()
                for g in range(warmup, warmup + steps):
                    run(g)
                sync()
                wall = (time.perf_counter() - t0) / steps
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        busy = sum(e.device_time for e in kernels) / 1e6 / steps  # µs -> s
        tokens = sum(len(train_set[i].input_ids) for g in range(warmup, warmup + steps)
                     for i in stream.indices(g)) / steps
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8, max_name_column_width=50)
        r = StepProfile(name, warm, wall, tokens, busy, len(kernels) / steps, table)
        log(f"{name}: warm-up {r.warmup_s:.1f} s; step {r.step_s * 1e3:.1f} ms for {r.tokens:.0f} tokens, GPU busy "
            f"{r.gpu_busy_s * 1e3:.1f} ms ({100 * r.gpu_busy_s / r.step_s:.0f}%), {r.kernels:.0f} kernels/step")
        log(r.table)
        results.append(r)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loraforge.bench.gpu_profile", description=__doc__.split("\n\n")[0])
    p.add_argument("batch", type=int, nargs="?", default=16)
    p.add_argument("steps", type=int, nargs="?", default=5, help="profiled steps (after 3 warm-up steps)")
    p.add_argument("--model", default=".gpu/model", help="model folder (default: %(default)s)")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--variants", help=f"comma-separated subset of {','.join(VARIANTS)} (default: all)")
    p.add_argument("--real-weights", action="store_true", help="load the weights (default: random, from config.json)")
    a = p.parse_args(argv)
    names = a.variants.split(",") if a.variants else list(VARIANTS)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        p.error(f"--variants: no such variant {unknown}; choose from {list(VARIANTS)}")
    profile_steps(a.model, a.batch, a.steps, a.max_length, {n: VARIANTS[n] for n in names},
                  random_weights=not a.real_weights, log=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
