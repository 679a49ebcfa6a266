"""Where a loraforge training step spends its time on a GPU: host (Python, kernel launches) or device.

Run beside bench/gpu-run.sh (same .gpu/model folder, random weights):
    PYTHONPATH=src python3 bench/gpu-profile.py [batch] [steps]
For each variant (padded, packed, padded with train.compile_model) it prints the wall time of a
step, the GPU's busy time within it (the sum of its kernels' durations) and the number of kernels
launched, then the top host-side operators. A step whose GPU busy time is a small part of its wall
time is bound by the host, not by the GPU's arithmetic.
"""

import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from loraforge.adapters import apply_adapter
from loraforge.bench.train import BenchSpec, bench_examples
from loraforge.config import AdapterConfig, TrainConfig
from loraforge.models.load import load_model
from loraforge.train.batching import BatchStream
from loraforge.train.loop import TrainStep, to_model_device
from loraforge.train.packing import packed_attention

batch = int(sys.argv[1]) if len(sys.argv) > 1 else 16
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 5
cuda = torch.cuda.is_available()
sync = torch.cuda.synchronize if cuda else (lambda: None)
loaded = load_model(".gpu/model", "auto", random_weights=True)
spec = BenchSpec(model=".gpu/model", steps=3 + steps, batch_size=batch, max_length=512, n_dev=0)
train_set, _ = bench_examples(spec, loaded.tokenizer)
model = apply_adapter(loaded.model, AdapterConfig(r=16, alpha=32), "causal")
model.train()
for name, cfg in [("padded", TrainConfig()), ("packed", TrainConfig(packing=True)),
                  ("padded+compile_model", TrainConfig(compile_model=True))]:
    step = TrainStep(model, "causal", cfg)
    stream = BatchStream(train_set, batch, 0, True, cfg.packing)

    def run(g):
        loss, _ = step(**to_model_device(stream.batch(g, 0, "causal"), model))
        loss.backward()
        model.zero_grad(set_to_none=True)

    with packed_attention(model, cfg.packing):
        t0 = time.perf_counter()
        for g in range(3):  # warm-up: allocation, kernel choice, compiling
            run(g)
        sync()
        warm = time.perf_counter() - t0
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            t0 = time.perf_counter()
            for g in range(3, 3 + steps):
                run(g)
            sync()
            wall = (time.perf_counter() - t0) / steps
    events = prof.key_averages()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(e.device_time for e in kernels) / 1e6 / steps  # µs -> s
    tokens = sum(len(train_set[i].input_ids) for g in range(3, 3 + steps) for i in stream.indices(g)) / steps
    print(f"{name}: warm-up {warm:.1f} s; step {wall * 1e3:.1f} ms for {tokens:.0f} tokens, GPU busy "
          f"{busy * 1e3:.1f} ms ({100 * busy / wall:.0f}%), {len(kernels) / steps:.0f} kernels/step", flush=True)
    print(events.table(sort_by="self_cpu_time_total", row_limit=8, max_name_column_width=50), flush=True)
