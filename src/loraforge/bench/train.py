"""``loraforge bench train``: the same LoRA job with TRL's SFTTrainer + PEFT and with loraforge.

Same model, LoRA (r=16, alpha=32, all linear layers), the same token sequences (one epoch of
``steps * batch_size`` Kubernetes en->zh examples after a fixed seeded shuffle), the same batch,
learning rate, schedule and number of steps. TRL loads the way a plain transformers script does
(PyTorch's kernel-cache sizes, the tokenizer as transformers builds it) and runs twice over:

- as it comes: fp32 weights (``trl-fp32``) or fp32 weights with bf16 autocast (``trl-bf16``), TRL's
  defaults otherwise (gradient checkpointing on, LM head at every position, completion-only loss);
- at its best: bf16 weights (``trl-bf16-weights``) and TRL's own speed options (``trl_job.TRL_LEVERS``:
  packing, padding-free, no gradient checkpointing; Liger kernels on CUDA), all together in the
  ``...-packing-no-checkpointing`` row, each alone under ``ablation``. Where bf16 is emulated (CPUs
  without AMX/AVX512-BF16) a speed-minded user stays in fp32: the options then also run on fp32.

The headline ratios ("speed vs TRL", "RSS vs TRL") are against the fastest TRL row of the run, named
in the table; the ratios against the fastest as-it-comes row are kept beside them. With ``ablation``
``trl-bf16-lean-loading`` (CPU only) loads through loraforge's ``load_model`` instead (bounded oneDNN
caches, no Python copy of the vocabulary), to show how much of the memory gap that loading alone
closes; it is never a baseline. Each job runs in its own subprocess, so peak RSS is that job's, and a
job that fails is listed with its error while the others run on. Throughput skips the first
``WARMUP`` steps; dev loss is computed the same way for all (``loraforge.train.loop.dev_loss`` on the
final model). Packing rows train on as many examples as their packed rows hold (more per step).

TRL sees the batches loraforge would form with ``train.length_grouping=false`` (sequential sampler);
with grouping on (loraforge's default) loraforge batches the same examples by length instead.

On a CUDA GPU the jobs run there (TRL in bf16 only, with and without Liger kernels), peak VRAM
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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from loraforge.bench.report import cpu_name

WARMUP = 2  # steps excluded from throughput (first calls allocate and pick kernels)
PER_JOB_FIELDS = ("job", "kind", "dtype", "trl_bf16", "trl_liger", "trl_args", "lean_loading", "overrides", "env")


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
    dtype: str = "auto"  # the weights' dtype (loraforge: model.dtype); TRL: fp32 as it comes, bf16 at its best
    trl_bf16: bool = False  # TRL with bf16 autocast (SFTConfig bf16=True)
    trl_liger: bool = False  # TRL with use_liger_kernel (Triton kernels: CUDA only)
    trl_args: dict = field(default_factory=dict)  # further SFTConfig options (trl_job.TRL_LEVERS)
    lean_loading: bool = True  # load_model(lean=...); TRL as it comes loads with False
    random_weights: bool = False
    overrides: dict = field(default_factory=dict)  # TrainConfig fields (the ablation levers)
    env: dict = field(default_factory=dict)  # environment of the job's process (process-wide levers)


def jobs(spec: BenchSpec, only: str = "both", ablation: bool = False, bf16_steps: int | None = None,
         cuda: bool | None = None, select: list[str] | None = None, fast_bf16: bool | None = None) -> list[BenchSpec]:
    """The jobs of one invocation: TRL as it comes and at its best, loraforge, and with ``ablation``
    each lever alone; ``select`` keeps the named jobs only (and may name any of them: it implies
    ``ablation``; an unknown name is a ``ConfigError`` listing the valid ones).

    ``bf16_steps`` shortens every TRL bf16 job (0 skips them): on a CPU without AMX/AVX512-BF16,
    bf16 is emulated and a step takes minutes; its throughput after warm-up is still measured, its dev
    loss is not comparable at unequal steps (the table says so).
    """
    import torch

    from loraforge.models.load import KERNEL_CACHE_VARS, has_fast_bf16

    torch_caches = {var: "1024" for var in KERNEL_CACHE_VARS}  # PyTorch's own kernel-cache sizes
    cuda = torch.cuda.is_available() if cuda is None else cuda
    fast_bf16 = has_fast_bf16("cuda" if cuda else "cpu") if fast_bf16 is None else fast_bf16
    ablation = ablation or bool(select)
    out = []
    if only in ("trl", "both"):
        out += _trl_jobs(spec, ablation, bf16_steps, cuda, fast_bf16, torch_caches)
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
            if spec.dtype == "auto" and fast_bf16:  # elsewhere auto already means fp32
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
        unknown = [name for name in select if name not in {j.job for j in out}]
        if unknown:
            from loraforge.config import ConfigError

            raise ConfigError(f"--jobs: no such job {', '.join(unknown)}"
                              f"{f' with --only {only}' if only != 'both' else ''}; "
                              f"choose from {', '.join(j.job for j in out)}")
        out = [j for j in out if j.job in select]
    return out


def _trl_jobs(spec: BenchSpec, ablation: bool, bf16_steps: int | None, cuda: bool, fast_bf16: bool,
              torch_caches: dict) -> list[BenchSpec]:
    """TRL as it comes (fp32 weights; bf16 autocast or none), then at its best: bf16 weights, its speed
    options; on fp32 too where bf16 is emulated. ``bf16_steps`` shortens (0 skips) every bf16 row."""
    trl = replace(spec, kind="trl", dtype="fp32", lean_loading=False, env=torch_caches)
    out = []
    if bf16_steps != 0:
        bf16 = replace(trl, job="trl-bf16", trl_bf16=True, steps=bf16_steps or spec.steps)
        out.append(bf16)
        if ablation and not cuda:
            out.append(replace(bf16, job="trl-bf16-lean-loading", lean_loading=True, env={}))
        if cuda:
            out.append(replace(bf16, job="trl-bf16-liger", trl_liger=True))
        out += _tuned(replace(bf16, job="trl-bf16-weights", dtype="bf16"), ablation, cuda)
    if not cuda:
        fp32 = replace(trl, job="trl-fp32")
        out.append(fp32)
        if not fast_bf16:
            out += _tuned(fp32, ablation, cuda)[1:]  # [0] is trl-fp32 itself
    return out


def _tuned(base: BenchSpec, ablation: bool, cuda: bool) -> list[BenchSpec]:
    """``base``, each TRL speed option alone (ablation) and all of them together."""
    from loraforge.bench.trl_job import BEST_LEVERS, TRL_LEVERS

    out = [base]
    if ablation:
        out += [replace(base, job=f"{base.job}-{name}", trl_args=args) for name, args in TRL_LEVERS.items()]
        if cuda:
            out.append(replace(base, job=f"{base.job}-liger", trl_liger=True))
    best = {k: v for name in BEST_LEVERS for k, v in TRL_LEVERS[name].items()}
    out.append(replace(base, job=f"{base.job}{'-liger' if cuda else ''}-{'-'.join(BEST_LEVERS)}", trl_liger=cuda,
                       trl_args=best))
    return out


def train_config(spec: BenchSpec):
    from loraforge.config import TrainConfig

    return TrainConfig(**{"steps": spec.steps, "batch_size": spec.batch_size, "lr": spec.lr,
                          "warmup_steps": spec.warmup_steps, "eval_every": 0, "save_every": 0, "seed": spec.seed,
                          **spec.overrides})


def bench_examples(spec: BenchSpec, tokenizer, min_tokens: int = 0):
    """(train, dev) encoded examples: the first steps*batch_size that fit max_length after a seeded shuffle
    (more, up to ``min_tokens`` tokens in all where the data has them: for rows that pack)."""
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
        if len(train) >= need and sum(len(e.input_ids) for e in train) >= min_tokens:
            break
    if len(train) < need:
        raise DataError(f"{spec.data}: only {len(train)} examples fit max_length={spec.max_length}; need {need}")
    if min_tokens:
        total, keep = 0, 0
        while keep < len(train) and (keep < need or total < min_tokens):
            total, keep = total + len(train[keep].input_ids), keep + 1
        need = keep
    dev = load_examples(spec.dev_data, None, None, data_cfg.src_lang, data_cfg.tgt_lang)
    dev = [e for e in encode_examples(tokenizer, dev[:4 * spec.n_dev], data_cfg) if not e.too_long][:spec.n_dev]
    return train[:need], dev


def _targets(e) -> int:
    return sum(1 for y in e.labels[1:] if y != -100)


# --- the jobs (run in a child process) ------------------------------------------------------------


def _run_loraforge(spec: BenchSpec, loaded, train_set, work: Path) -> tuple[list, list[float], object]:
    import torch

    from loraforge.adapters import apply_adapter
    from loraforge.bench.trl_job import StepTokens
    from loraforge.config import AdapterConfig
    from loraforge.train.loop import train

    cfg = train_config(spec)
    torch.manual_seed(spec.seed)
    model = apply_adapter(loaded.model, AdapterConfig(r=16, alpha=32), "causal")
    result = train(model, train_set, [], cfg, work, loaded.tokenizer.pad_token_id, "causal", progress=True)
    steps = [StepTokens([len(e.input_ids) for e in b], sum(_targets(e) for e in b))
             for b in step_batches(train_set, cfg)]
    seconds = [sum(s.lengths) / row["tokens_per_s"] for s, row in zip(steps, result.history)]
    return steps, seconds, model


def step_batches(train_set, cfg) -> list[list]:
    """The examples of each optimizer step of ``train()`` (all its micro-batches), on one process."""
    from loraforge.train.batching import BatchStream

    stream = BatchStream(train_set, cfg.batch_size, cfg.seed, cfg.length_grouping)
    return [[train_set[i] for a in range(cfg.grad_accum) for i in stream.indices(step * cfg.grad_accum + a)]
            for step in range(cfg.steps)]


def run_job(spec: BenchSpec) -> dict:
    """One job in this process: train, then measure; returns the result row."""
    import torch

    from loraforge.bench.flops import model_shape, train_flops
    from loraforge.bench.trl_job import packing_tokens, run_trl
    from loraforge.config import TrainConfig
    from loraforge.models.load import load_model
    from loraforge.train.loop import TrainStep, dev_loss, peak_rss_mb
    from loraforge.train.packing import attention_paths

    attention_paths.clear()  # counts this job's packed attention calls only
    loaded = load_model(spec.model, spec.dtype, random_weights=spec.random_weights, lean=spec.lean_loading)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    train_set, dev_set = bench_examples(spec, loaded.tokenizer, packing_tokens(spec))
    with tempfile.TemporaryDirectory(prefix="loraforge-bench-") as work:
        if spec.kind == "trl":
            steps, seconds, model, trl_ran_with = run_trl(spec, loaded, train_set, Path(work))
        else:
            (steps, seconds, model), trl_ran_with = _run_loraforge(spec, loaded, train_set, Path(work)), None
    if len(seconds) != spec.steps or len(steps) != spec.steps:
        raise RuntimeError(f"{spec.job}: timed {len(seconds)} and counted {len(steps)} steps, expected {spec.steps}")
    target_only = spec.kind == "loraforge" and spec.overrides.get("target_only_logits", True)
    shape = model_shape(model)
    measured = slice(WARMUP if spec.steps > WARMUP else 0, None)
    tokens = sum(sum(s.lengths) for s in steps[measured])
    targets = sum(s.targets for s in steps[measured])
    flops = sum(train_flops(shape, s.lengths, s.targets if target_only else sum(s.lengths)) for s in steps[measured])
    secs = sum(seconds[measured])
    cfg = train_config(spec) if spec.kind == "loraforge" else TrainConfig(batch_size=spec.batch_size)
    # the job's memory levers apply, its micro-batch size included
    dev = dev_loss(TrainStep(model, "causal", cfg), dev_set, loaded.tokenizer.pad_token_id,
                   cfg.batch_size) if dev_set else None
    weights = str(next(loaded.model.parameters()).dtype).replace("torch.", "")
    return {
        "job": spec.job, "kind": spec.kind, "lean_loading": spec.lean_loading,
        "precision": f"{weights} weights, bf16 autocast" if spec.trl_bf16 else weights,
        "overrides": spec.overrides, "trl_options": trl_options(spec), "trl_as_it_comes": trl_as_it_comes(spec),
        "trl_ran_with": trl_ran_with,
        "steps": spec.steps, "measured_steps": len(seconds[measured]), "train_examples": len(train_set),
        "seconds": round(secs, 3), "step_seconds": [round(x, 3) for x in seconds], "tokens": tokens, "target_tokens": targets,
        "tokens_per_s": tokens / secs, "target_tokens_per_s": targets / secs,
        "peak_rss_mb": round(peak_rss_mb(), 1), "dev_loss": dev, "dev_examples": len(dev_set),
        "flops": flops, "flops_per_s": flops / secs, "lm_head_positions": "target" if target_only else "all",
        "model_shape": shape.as_dict(), "torch_threads": torch.get_num_threads(),
        "peak_vram_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
        "attention": dict(attention_paths) or None,  # packed runs: which kernel attended
    }


def trl_options(spec: BenchSpec) -> dict | None:
    """The SFTConfig options of a TRL row beyond the settings every row shares (None for loraforge)."""
    if spec.kind != "trl":
        return None
    return {**({"bf16": True} if spec.trl_bf16 else {}), **({"use_liger_kernel": True} if spec.trl_liger else {}),
            **spec.trl_args}


def trl_as_it_comes(spec: BenchSpec) -> bool:
    """TRL as a plain script runs it: fp32 weights, its default options (bf16 autocast or not), its loading."""
    return spec.kind == "trl" and spec.dtype == "fp32" and not (spec.trl_liger or spec.trl_args or spec.lean_loading)


# --- the invocation ------------------------------------------------------------------------------


class JobFailed(RuntimeError):
    """A bench job's process failed: which job, and its error (or how the process ended)."""

    def __init__(self, job: str, reason: str):
        super().__init__(f"bench job {job} failed: {reason}")
        self.job, self.reason = job, reason


def _child(spec: BenchSpec, log) -> dict:
    with tempfile.TemporaryDirectory(prefix="loraforge-bench-job-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(asdict(spec)))
        t0 = time.perf_counter()
        # stderr (progress, the traceback of a failure) passes through
        proc = subprocess.run([sys.executable, "-m", "loraforge.bench.train", str(spec_path), str(out_path)],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, **spec.env})
        row = json.loads(out_path.read_text()) if out_path.exists() else {}
        if proc.returncode != 0 or "error" in row:
            if "error" in row:
                reason = row["error"]
            elif proc.returncode < 0:
                reason = f"killed by signal {-proc.returncode} (out of memory?)"
            else:
                reason = f"exit {proc.returncode}; its error is above"
            raise JobFailed(spec.job, reason)
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
    from loraforge.models.load import has_fast_bf16

    selected = jobs(spec, only, ablation, bf16_steps, select=select)  # a bad --jobs fails before measuring
    device = "cuda" if torch.cuda.is_available() else "cpu"
    peaks = {"fp32": matmul_peak(torch.float32, spec.matmul_size, device=device),
             "bf16": matmul_peak(torch.bfloat16, spec.matmul_size, device=device)}
    log(f"matmul peak ({spec.matmul_size}^2, {device}): fp32 {peaks['fp32'] / 1e12:.3f} TFLOP/s, "
        f"bf16 {peaks['bf16'] / 1e12:.3f} TFLOP/s")
    results = {
        "bench": "train", "settings": {k: v for k, v in asdict(spec).items() if k not in PER_JOB_FIELDS},
        "trl_baseline": None, "trl_as_it_comes": None, "trl_bf16_steps": bf16_steps, "warmup_steps_skipped": WARMUP,
        "matmul_peak_flops": peaks, "fast_bf16": has_fast_bf16(device),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
                    "python": platform.python_version(), "threads": torch.get_num_threads(),
                    "gpu": torch.cuda.get_device_name() if device == "cuda" else None},
        "jobs": [], "failed": [], "failures": {},
    }
    for job in selected:  # results are rewritten after every job: a cut-short run keeps what it measured
        try:
            row = _child(job, log)
        except JobFailed as e:
            log(str(e))
            results["failed"].append(job.job)
            results["failures"][job.job] = e.reason
        else:
            row["mfu_fp32"] = row["flops_per_s"] / peaks["fp32"]
            row["mfu_bf16"] = row["flops_per_s"] / peaks["bf16"]
            row["mfu"] = row["flops_per_s"] / max(peaks.values())  # bf16 peak on AMX/GPU, fp32 where emulated
            results["jobs"].append(row)
        _compare_with_trl(results)
        write_results(out, name, results, train_markdown(results))
    return results


def _compare_with_trl(results: dict) -> None:
    """Ratios against the fastest TRL row of the run (TRL at its best: the headline) and against the
    fastest TRL row as it comes. A TRL row that loads through loraforge's load_model is never a baseline."""
    rows = results["jobs"]
    trl = [r for r in rows if r["kind"] == "trl" and not r.get("lean_loading")]
    if not trl:
        return
    for key, suffix, candidates in (("trl_baseline", "", trl),
                                    ("trl_as_it_comes", "_as_it_comes", [r for r in trl if r.get("trl_as_it_comes")])):
        if not candidates:
            results[key] = None
            for row in rows:
                for ratio in ("speedup", "rss", "vram"):
                    row.pop(f"{ratio}_vs_trl{suffix}", None)
            continue
        base = max(candidates, key=lambda r: r["target_tokens_per_s"])
        results[key] = base["job"]
        for row in rows:
            row[f"speedup_vs_trl{suffix}"] = row["target_tokens_per_s"] / base["target_tokens_per_s"]
            row[f"rss_vs_trl{suffix}"] = row["peak_rss_mb"] / base["peak_rss_mb"]
            if row.get("peak_vram_mb") and base.get("peak_vram_mb"):
                row[f"vram_vs_trl{suffix}"] = row["peak_vram_mb"] / base["peak_vram_mb"]




def _main(argv: list[str]) -> int:
    """Child entry point: ``python -m loraforge.bench.train SPEC.json RESULT.json``."""
    spec = BenchSpec(**json.loads(Path(argv[0]).read_text()))
    import traceback

    from loraforge.runs import atomic_write

    try:
        row = run_job(spec)
    except Exception as e:  # the parent reports the reason and runs the other jobs
        traceback.print_exc()
        atomic_write(argv[1], json.dumps({"error": " ".join(f"{type(e).__name__}: {e}".split())[:500]}))
        return 1
    atomic_write(argv[1], json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
