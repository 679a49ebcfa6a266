"""``loraforge bench train``: the same LoRA job with TRL's SFTTrainer + PEFT and with loraforge.

Same model, LoRA (r=16, alpha=32, all linear layers), the same token sequences (one epoch of
``steps * batch_size`` Kubernetes en->zh examples after a fixed seeded shuffle), the same batch,
learning rate, schedule and number of steps. TRL keeps its own defaults otherwise (gradient
checkpointing on, full logits, completion-only loss from a ``completion_mask``) and loads the way a
plain transformers script does: PyTorch's kernel-cache sizes and the tokenizer as transformers builds
it. With ``ablation`` a second TRL bf16 job (``trl-bf16-lean-loading``, CPU only) loads through
loraforge's ``load_model`` instead (bounded oneDNN caches, no Python copy of the vocabulary), to show
how much of the memory gap that loading alone closes; ratios stay against TRL as it comes. Each job
runs in its own subprocess, so peak RSS is that job's. Throughput skips the first ``WARMUP`` steps;
dev loss is computed the same way for both (``loraforge.train.loop.dev_loss`` on the final model).

TRL sees the batches loraforge would form with ``train.length_grouping=false`` (sequential sampler);
with grouping on (loraforge's default) loraforge batches the same examples by length instead.

On a CUDA GPU the jobs run there (TRL in bf16 with and without Liger kernels, no fp32 TRL), peak VRAM
is reported, and the matmul peak is the GPU's. ``random_weights`` builds the model from its
config.json alone, for a machine the weights cannot be copied to: throughput and memory do not depend
on the weights' values; dev loss then only compares the jobs with each other.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

WARMUP = 2  # steps excluded from throughput (first calls allocate and pick kernels)
PER_JOB_FIELDS = ("job", "kind", "dtype", "trl_bf16", "trl_liger", "lean_loading", "overrides", "env")


@dataclass
class BenchSpec:
    model: str = "gemma3-270m"
    steps: int = 20
    batch_size: int = 8
    max_length: int = 256
    n_dev: int = 32
    seed: int = 0
    lr: float = 2e-4
    warmup_steps: int = 2
    data: str = "k8s:train"
    dev_data: str = "k8s:dev"
    matmul_size: int = 2048
    # per job (filled in by ``jobs``)
    job: str = "loraforge"
    kind: str = "loraforge"  # "loraforge" | "trl"
    dtype: str = "auto"  # loraforge: model.dtype; TRL: weights fp32, bf16 autocast when trl_bf16
    trl_bf16: bool = False
    trl_liger: bool = False  # TRL with use_liger_kernel (Triton kernels: CUDA only)
    lean_loading: bool = True  # load_model(lean=...); TRL as it comes loads with False
    random_weights: bool = False
    overrides: dict = field(default_factory=dict)  # TrainConfig fields (the ablation levers)
    env: dict = field(default_factory=dict)  # environment of the job's process (process-wide levers)


def jobs(spec: BenchSpec, only: str = "both", ablation: bool = False, bf16_steps: int | None = None,
         cuda: bool | None = None, select: list[str] | None = None) -> list[BenchSpec]:
    """The jobs of one invocation: TRL bf16 (the issue's baseline) and fp32 (CPU) or with Liger (CUDA),
    loraforge, its ablations; ``select`` keeps the named jobs only.

    ``bf16_steps`` shortens the TRL bf16 job alone (0 skips it): on a CPU without AMX/AVX512-BF16,
    bf16 is emulated and a step takes minutes; its throughput after warm-up is still measured, its dev
    loss is not comparable at unequal steps (the table says so).
    """
    from dataclasses import replace

    import torch

    from loraforge.models.load import KERNEL_CACHE_VARS

    torch_caches = {var: "1024" for var in KERNEL_CACHE_VARS}  # PyTorch's own kernel-cache sizes
    cuda = torch.cuda.is_available() if cuda is None else cuda
    out = []
    if only in ("trl", "both"):
        trl = replace(spec, kind="trl", dtype="fp32", lean_loading=False, env=torch_caches)
        if bf16_steps != 0:
            out.append(replace(trl, job="trl-bf16", trl_bf16=True, steps=bf16_steps or spec.steps))
            if ablation and not cuda:
                out.append(replace(out[-1], job="trl-bf16-lean-loading", lean_loading=True, env={}))
        if cuda:
            out.append(replace(trl, job="trl-bf16-liger", trl_bf16=True, trl_liger=True))
        else:
            out.append(replace(trl, job="trl-fp32", trl_bf16=False))
    if only in ("loraforge", "both"):
        out.append(replace(spec, job="loraforge", kind="loraforge"))
        if ablation:
            out += [replace(spec, job=f"loraforge-no-{lever.replace('_', '-')}", overrides={lever: False})
                    for lever in ("compile", "target_only_logits", "length_grouping", "matmul_attention")]
            out.append(replace(spec, job="loraforge-freed-memory-default", overrides={"freed_memory": "default"}))
            out.append(replace(spec, job="loraforge-kernel-caches-default", env=torch_caches))
            # train.packing=auto packs on CUDA only: the row flips it the other way
            out.append(replace(spec, job="loraforge-no-packing", overrides={"packing": False}) if cuda
                       else replace(spec, job="loraforge-packing", overrides={"packing": True}))
            from loraforge.models.load import has_fast_bf16

            if spec.dtype == "auto" and has_fast_bf16("cuda" if cuda else "cpu"):  # elsewhere auto already means fp32
                out.append(replace(spec, job="loraforge-fp32-weights", dtype="fp32"))
            # not one lever: the memory-lean setting (recompute layers, smaller logits chunks, two
            # micro-batches of half the batch each, so the optimizer steps on the same number of examples)
            halves = 2 if spec.batch_size % 2 == 0 else 1
            out.append(replace(spec, job="loraforge-low-memory",
                               overrides={"activation_checkpointing": True, "logits_chunk": 32, "packing": True,
                                          "freed_memory": "release", "batch_size": spec.batch_size // halves,
                                          "grad_accum": halves}))
            out.append(replace(spec, job="loraforge-compile-model", overrides={"compile_model": True}))
    if select:
        unknown = set(select) - {j.job for j in out}
        if unknown:
            raise ValueError(f"--jobs: no such job {sorted(unknown)}; this run has {[j.job for j in out]}")
        out = [j for j in out if j.job in select]
    return out


def train_config(spec: BenchSpec):
    from loraforge.config import TrainConfig

    return TrainConfig(**{"steps": spec.steps, "batch_size": spec.batch_size, "lr": spec.lr,
                          "warmup_steps": spec.warmup_steps, "eval_every": 0, "save_every": 0, "seed": spec.seed,
                          **spec.overrides})


def bench_examples(spec: BenchSpec, tokenizer):
    """(train, dev) encoded examples: the first steps*batch_size that fit max_length after a seeded shuffle."""
    from loraforge.config import DataConfig
    from loraforge.data.formats import DataError, load_examples
    from loraforge.data.templates import encode_examples

    data_cfg = DataConfig(max_length=spec.max_length)
    need = spec.steps * spec.batch_size
    examples = load_examples(spec.data, None, None, data_cfg.src_lang, data_cfg.tgt_lang)
    random.Random(spec.seed).shuffle(examples)
    train = []
    for s in range(0, len(examples), 4 * need):  # encode in slices: the split has 30k+ pairs
        train += [e for e in encode_examples(tokenizer, examples[s:s + 4 * need], data_cfg) if not e.too_long]
        if len(train) >= need:
            break
    if len(train) < need:
        raise DataError(f"{spec.data}: only {len(train)} examples fit max_length={spec.max_length}; need {need}")
    dev = load_examples(spec.dev_data, None, None, data_cfg.src_lang, data_cfg.tgt_lang)
    dev = [e for e in encode_examples(tokenizer, dev[:4 * spec.n_dev], data_cfg) if not e.too_long][:spec.n_dev]
    return train[:need], dev


def _targets(e) -> int:
    return sum(1 for y in e.labels[1:] if y != -100)


# --- the jobs (run in a child process) ------------------------------------------------------------


def _run_loraforge(spec: BenchSpec, loaded, train_set, dev_set, work: Path) -> tuple[list, list[float], object]:
    import torch

    from loraforge.adapters import apply_adapter
    from loraforge.config import AdapterConfig
    from loraforge.train.loop import train

    cfg = train_config(spec)
    torch.manual_seed(spec.seed)
    model = apply_adapter(loaded.model, AdapterConfig(r=16, alpha=32), "causal")
    result = train(model, train_set, [], cfg, work, loaded.tokenizer.pad_token_id, "causal", progress=True)
    batches = step_batches(train_set, cfg)
    seconds = [sum(len(e.input_ids) for e in b) / row["tokens_per_s"] for b, row in zip(batches, result.history)]
    return batches, seconds, model


def step_batches(train_set, cfg) -> list[list]:
    """The examples of each optimizer step of ``train()`` (all its micro-batches), on one process."""
    from loraforge.train.batching import BatchStream

    stream = BatchStream(train_set, cfg.batch_size, cfg.seed, cfg.length_grouping)
    return [[train_set[i] for a in range(cfg.grad_accum) for i in stream.indices(step * cfg.grad_accum + a)]
            for step in range(cfg.steps)]


def _run_trl(spec: BenchSpec, loaded, train_set, dev_set, work: Path) -> tuple[list, list[float], object]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from loraforge.train.batching import epoch_batches

    order = [i for b in epoch_batches([len(e.input_ids) for e in train_set], spec.batch_size, spec.seed, 0, False)
             for i in b]
    ordered = [train_set[i] for i in order]
    ds = Dataset.from_list([{"input_ids": e.input_ids, "completion_mask": [int(y != -100) for y in e.labels]}
                            for e in ordered])
    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            stamps.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())
            print(f"{spec.job}: step {state.global_step}/{spec.steps} {stamps[-1] - stamps[-2]:.1f} s",
                  file=sys.stderr, flush=True)

    args = SFTConfig(output_dir=str(work), max_steps=spec.steps, per_device_train_batch_size=spec.batch_size,
                     gradient_accumulation_steps=1, learning_rate=spec.lr, lr_scheduler_type="cosine",
                     warmup_steps=spec.warmup_steps, weight_decay=0.0, max_grad_norm=1.0, seed=spec.seed,
                     bf16=spec.trl_bf16, completion_only_loss=True, train_sampling_strategy="sequential",
                     report_to="none", save_strategy="no", eval_strategy="no", disable_tqdm=True,
                     use_cpu=not torch.cuda.is_available(), use_liger_kernel=spec.trl_liger)
    peft_cfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    torch.manual_seed(spec.seed)
    trainer = SFTTrainer(model=loaded.model, args=args, train_dataset=ds, processing_class=loaded.tokenizer,
                         peft_config=peft_cfg, callbacks=[Clock()])
    trainer.train()
    batches = [ordered[s:s + spec.batch_size] for s in range(0, spec.steps * spec.batch_size, spec.batch_size)]
    seconds = [b - a for a, b in zip(stamps, stamps[1:])]
    return batches, seconds, trainer.model


def run_job(spec: BenchSpec) -> dict:
    """One job in this process: train, then measure; returns the result row."""
    import torch

    from loraforge.bench.flops import model_shape, train_flops
    from loraforge.models.load import load_model
    from loraforge.train.loop import TrainStep, dev_loss, peak_rss_mb
    from loraforge.train.packing import attention_paths

    attention_paths.clear()  # counts this job's packed attention calls only
    loaded = load_model(spec.model, spec.dtype, random_weights=spec.random_weights, lean=spec.lean_loading)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    train_set, dev_set = bench_examples(spec, loaded.tokenizer)
    with tempfile.TemporaryDirectory(prefix="loraforge-bench-") as work:
        runner = _run_trl if spec.kind == "trl" else _run_loraforge
        batches, seconds, model = runner(spec, loaded, train_set, dev_set, Path(work))
    if len(seconds) != spec.steps:
        raise RuntimeError(f"{spec.job}: timed {len(seconds)} steps, expected {spec.steps}")
    target_only = spec.kind == "loraforge" and spec.overrides.get("target_only_logits", True)
    shape = model_shape(model)
    measured = slice(WARMUP if spec.steps > WARMUP else 0, None)
    tokens = sum(len(e.input_ids) for b in batches[measured] for e in b)
    targets = sum(_targets(e) for b in batches[measured] for e in b)
    flops = sum(train_flops(shape, [len(e.input_ids) for e in b], sum(_targets(e) for e in b) if target_only
                            else sum(len(e.input_ids) for e in b)) for b in batches[measured])
    secs = sum(seconds[measured])
    from loraforge.config import TrainConfig

    cfg = train_config(spec) if spec.kind == "loraforge" else TrainConfig(batch_size=spec.batch_size)
    # the job's memory levers apply, its micro-batch size included
    dev = dev_loss(TrainStep(model, "causal", cfg), dev_set, loaded.tokenizer.pad_token_id,
                   cfg.batch_size) if dev_set else None
    weights = str(next(loaded.model.parameters()).dtype).replace("torch.", "")
    return {
        "job": spec.job, "kind": spec.kind, "lean_loading": spec.lean_loading,
        "precision": f"{weights} weights, bf16 autocast" if spec.trl_bf16 else weights,
        "overrides": spec.overrides, "steps": spec.steps, "measured_steps": len(seconds[measured]),
        "seconds": round(secs, 3), "step_seconds": [round(x, 3) for x in seconds], "tokens": tokens, "target_tokens": targets,
        "tokens_per_s": tokens / secs, "target_tokens_per_s": targets / secs,
        "peak_rss_mb": round(peak_rss_mb(), 1), "dev_loss": dev, "dev_examples": len(dev_set),
        "flops": flops, "flops_per_s": flops / secs, "lm_head_positions": "target" if target_only else "all",
        "model_shape": shape.as_dict(), "torch_threads": torch.get_num_threads(),
        "peak_vram_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
        "attention": dict(attention_paths) or None,  # packed runs: which kernel attended
    }


# --- the invocation ------------------------------------------------------------------------------


def _child(spec: BenchSpec, log) -> dict:
    with tempfile.TemporaryDirectory(prefix="loraforge-bench-job-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(asdict(spec)))
        t0 = time.perf_counter()
        # stderr (progress, errors) passes through
        proc = subprocess.run([sys.executable, "-m", "loraforge.bench.train", str(spec_path), str(out_path)],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, **spec.env})
        if proc.returncode != 0:
            raise RuntimeError(f"bench job {spec.job} failed (exit {proc.returncode}); its error is above")
        row = json.loads(out_path.read_text())
        row["wall_seconds"] = round(time.perf_counter() - t0, 1)
        log(f"{spec.job}: {row['target_tokens_per_s']:.1f} target tok/s, {row['tokens_per_s']:.1f} tok/s, "
            f"peak RSS {row['peak_rss_mb']:.0f} MB, dev loss {row['dev_loss']}, {row['wall_seconds']} s")
        return row


def bench_train(spec: BenchSpec, out: str | Path = "bench/results", only: str = "both", ablation: bool = False,
                bf16_steps: int | None = None, select: list[str] | None = None, name: str = "train",
                log=print) -> dict:
    """Run the jobs, add MFU against the measured matmul peaks, write ``<name>.json`` and ``<name>.md``."""
    import platform

    import torch

    from loraforge.bench.flops import matmul_peak
    from loraforge.bench.report import train_markdown, write_results

    device = "cuda" if torch.cuda.is_available() else "cpu"
    peaks = {"fp32": matmul_peak(torch.float32, spec.matmul_size, device=device),
             "bf16": matmul_peak(torch.bfloat16, spec.matmul_size, device=device)}
    log(f"matmul peak ({spec.matmul_size}^2, {device}): fp32 {peaks['fp32'] / 1e12:.3f} TFLOP/s, "
        f"bf16 {peaks['bf16'] / 1e12:.3f} TFLOP/s")
    selected = jobs(spec, only, ablation, bf16_steps, select=select)
    from loraforge.models.load import has_fast_bf16

    results = {
        "bench": "train", "settings": {k: v for k, v in asdict(spec).items() if k not in PER_JOB_FIELDS},
        "trl_baseline": None, "trl_bf16_steps": bf16_steps, "warmup_steps_skipped": WARMUP,
        "matmul_peak_flops": peaks, "fast_bf16": has_fast_bf16(device),
        "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
                    "python": platform.python_version(), "threads": torch.get_num_threads(),
                    "gpu": torch.cuda.get_device_name() if device == "cuda" else None},
        "jobs": [], "failed": [],
    }
    for job in selected:  # results are rewritten after every job: a cut-short run keeps what it measured
        try:
            row = _child(job, log)
        except RuntimeError as e:
            log(str(e))
            results["failed"].append(job.job)
        else:
            row["mfu_fp32"] = row["flops_per_s"] / peaks["fp32"]
            row["mfu_bf16"] = row["flops_per_s"] / peaks["bf16"]
            row["mfu"] = row["flops_per_s"] / max(peaks.values())  # bf16 peak on AMX/GPU, fp32 where emulated
            results["jobs"].append(row)
        _compare_with_trl(results)
        write_results(out, name, results, train_markdown(results))
    return results


def _compare_with_trl(results: dict) -> None:
    """Ratios against TRL as it comes at its best on this machine (the fastest such TRL row)."""
    rows = results["jobs"]
    trl = [r for r in rows if r["kind"] == "trl" and not r.get("lean_loading")]
    if not trl:
        return
    base = max(trl, key=lambda r: r["target_tokens_per_s"])
    results["trl_baseline"] = base["job"]
    for row in rows:
        row["speedup_vs_trl"] = row["target_tokens_per_s"] / base["target_tokens_per_s"]
        row["rss_vs_trl"] = row["peak_rss_mb"] / base["peak_rss_mb"]
        if row.get("peak_vram_mb") and base.get("peak_vram_mb"):
            row["vram_vs_trl"] = row["peak_vram_mb"] / base["peak_vram_mb"]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def _main(argv: list[str]) -> int:
    """Child entry point: ``python -m loraforge.bench.train SPEC.json RESULT.json``."""
    spec = BenchSpec(**json.loads(Path(argv[0]).read_text()))
    from loraforge.runs import atomic_write

    row = run_job(spec)
    atomic_write(argv[1], json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
