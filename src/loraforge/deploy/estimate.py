"""Memory and parameter sizing from a model's config.json, without loading weights or torch.

Why: choosing a batch size, a pod's memory request or a KAITO instance type should not need a
trial run that gets OOM-killed. The numbers are an upper-bound model of one training step at
``data.max_length`` (length grouping makes the longest batches full-length): weights, adapter,
gradients and AdamW state, saved activations, and the LM-head logits, which dominate for Gemma's
262,144-token vocabulary unless ``train.target_only_logits`` computes them a chunk at a time.
``compare_with_run`` checks the estimate against the ``peak_rss_mb`` a real run wrote. What each
method trains comes from the method registry (``MethodSpec.count``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loraforge.methods import registry
from loraforge.methods.registry import ModelShape
from loraforge.config import ConfigError, RunConfig
from loraforge.hardware import cpu_has_fast_bf16
from loraforge.runs import RunDir, RunDirError

MB = 1024 * 1024
# Resident memory of a Python process with torch + transformers + tokenizer imported, before weights.
RUNTIME_OVERHEAD_MB = {"cpu": 900, "gpu": 600}  # gpu: the CUDA context on the device
# Fraction of a translation example's tokens that are target (labelled) tokens, for logits sizing.
TARGET_FRACTION = 0.5
# fp32 copies of one logits chunk alive at once in the chunked CE: logits, exp/logsumexp, softmax grad.
LOGIT_COPIES_CHUNKED = 3
# Full logits: bf16/fp32 output, the fp32 upcast for CE, its softmax and the gradient.
LOGIT_COPIES_FULL = 4

# Architectures we can size without a download: config.json fields of known models.
KNOWN_CONFIGS: dict[str, dict] = {
    "gemma3-270m": {
        "model_type": "gemma3_text", "vocab_size": 262144, "hidden_size": 640, "intermediate_size": 2048,
        "num_hidden_layers": 18, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
        "tie_word_embeddings": True,
    },
}

# KAITO instance types (Azure GPU SKUs) with bf16, which KAITO's tuning config uses; smallest first:
# (GPU memory per GPU in GiB, GPUs, SKU, description).
KAITO_INSTANCE_TYPES = [
    (24, 1, "Standard_NV36ads_A10_v5", "1x A10 24 GB"),
    (80, 1, "Standard_NC24ads_A100_v4", "1x A100 80 GB"),
    (80, 2, "Standard_NC48ads_A100_v4", "2x A100 80 GB"),
    (80, 8, "Standard_ND96amsr_A100_v4", "8x A100 80 GB"),
]


@dataclass
class Estimate:
    model: str
    device: str
    dtype: str
    batch_size: int
    seq_len: int
    total_params: int
    trainable_params: int
    weights_mb: float
    adapter_mb: float
    grads_mb: float
    optimizer_mb: float
    activations_mb: float
    logits_mb: float
    runtime_mb: float
    load_mb: float
    peak_mb: float
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def model_config(name: str) -> dict:
    """config.json of ``name``: a local HF folder, the cached embedded model, or a built-in entry."""
    path = Path(name)
    if (path / "config.json").is_file():
        return json.loads((path / "config.json").read_text())
    if name in KNOWN_CONFIGS:
        models = Path(os.environ.get("LORAFORGE_HOME", Path.home() / ".cache" / "loraforge")) / "models"
        stem = name.replace("gemma3-", "gemma-3-")
        for cached in sorted(models.glob(f"{stem}*/config.json")) if models.is_dir() else []:
            return json.loads(cached.read_text())
        return dict(KNOWN_CONFIGS[name])
    raise ConfigError(
        f"cannot size model {name!r}: give a local Hugging Face folder with config.json, "
        f"or one of: {', '.join(KNOWN_CONFIGS)}"
    )


def _text_config(cfg: dict) -> dict:
    return cfg.get("text_config", cfg)  # multimodal wrappers keep the LM under text_config


def linear_shapes(cfg: dict) -> dict[str, tuple[int, int]]:
    """(in, out) of each linear layer of one decoder block, by module-name suffix."""
    c = _text_config(cfg)
    h, inter = c["hidden_size"], c["intermediate_size"]
    heads = c["num_attention_heads"]
    kv = c.get("num_key_value_heads") or heads
    hd = c.get("head_dim") or h // heads
    return {
        "q_proj": (h, heads * hd), "k_proj": (h, kv * hd), "v_proj": (h, kv * hd), "o_proj": (heads * hd, h),
        "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h),
    }


def parameter_counts(cfg: dict, run: RunConfig) -> tuple[int, int]:
    """(total, trainable): total counts the base model plus the adapter, like PEFT does."""
    c = _text_config(cfg)
    h, layers, vocab = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"]
    shapes = linear_shapes(cfg)
    hd = c.get("head_dim") or h // c["num_attention_heads"]
    per_layer = sum(i * o for i, o in shapes.values())
    norms = 4 * h + 2 * hd if c.get("model_type", "").startswith("gemma3") else 2 * h
    embed = vocab * h
    head = 0 if c.get("tie_word_embeddings", True) else vocab * h
    biases = 0
    if c.get("model_type") == "qwen2" or c.get("attention_bias"):  # Qwen2: q/k/v biases; attention_bias: o too
        biases = sum(shapes[k][1] for k in ("q_proj", "k_proj", "v_proj"))
        biases += shapes["o_proj"][1] if c.get("attention_bias") else 0
    base = embed + head + layers * (per_layer + norms + biases) + h
    a = run.adapter
    targets = shapes if a.target_modules == "all-linear" else {
        k: v for k, v in shapes.items() if k in ([a.target_modules] if isinstance(a.target_modules, str) else a.target_modules)}
    kv = c.get("num_key_value_heads") or c["num_attention_heads"]
    shape = ModelShape(hidden=h, layers=layers, heads=c["num_attention_heads"], kv_heads=kv, head_dim=hd,
                       base_params=base, targets=targets)
    spec = registry.get(a.method)
    adapter = spec.count(shape, a)
    if spec.trains_base:
        return base, adapter
    return base + adapter, adapter


def resolved_dtype(run: RunConfig, device: str) -> str:
    """The dtype ``load_model`` will pick: model.dtype, or for 'auto' bf16 on GPUs (Ampere+) and on CPUs
    with native bf16 (AMX, AVX512-BF16), checked on this machine; fp32 elsewhere."""
    if run.model.dtype != "auto":
        return run.model.dtype
    return "bf16" if device == "gpu" or cpu_has_fast_bf16() else "fp32"


def _dtype_bytes(run: RunConfig, device: str) -> tuple[str, int]:
    dtype = resolved_dtype(run, device)
    return dtype, {"fp32": 4, "bf16": 2, "fp16": 2}[dtype]


def estimate(run: RunConfig, device: str = "cpu", batch_size: int | None = None,
             model_cfg: dict | None = None) -> Estimate:
    """Peak memory of one training step of ``run`` on ``device`` ('cpu' or 'gpu'), in MiB."""
    cfg = model_cfg or model_config(run.model.name)
    c = _text_config(cfg)
    dtype, nbytes = _dtype_bytes(run, device)
    b = batch_size or run.train.batch_size
    s = max(d.max_length for _, d in run.data.task_configs())  # the longest task's batches
    total, trainable = parameter_counts(cfg, run)
    spec = registry.get(run.adapter.method)
    full = spec.trains_base
    base = total - (0 if full else trainable)
    weight_bytes = 0.55 if spec.quantize == "nf4" and device == "gpu" else nbytes  # nf4 + scales
    weights = base * weight_bytes / MB
    adapter = 0.0 if full else trainable * 4 / MB  # adapters train in fp32
    grads = trainable * (nbytes if full else 4) / MB
    optimizer = trainable * 8 / MB  # AdamW: two fp32 moments
    h, inter, layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    heads = c["num_attention_heads"]
    hd = c.get("head_dim") or h // heads
    kv = c.get("num_key_value_heads") or heads
    # Tensors autograd keeps per token and layer: norms/residuals (~10 h), q/k/v/attention output and
    # their normed/rotated copies (~2 (heads + 2 kv) hd), the MLP's gate/up/activation/product (4 inter),
    # and the attention probabilities (heads x seq, eager attention on CPU).
    per_token_layer = 10 * h + 2 * (heads + 2 * kv) * hd + 4 * inter + (2 * heads * s if device == "cpu" else 0)
    if run.train.activation_checkpointing:  # each layer's input is kept; one layer at a time is recomputed
        activations = b * s * (layers * h + per_token_layer) * nbytes / MB
    else:
        activations = b * s * layers * per_token_layer * nbytes / MB
    vocab = c["vocab_size"]
    if run.train.target_only_logits:
        rows = min(run.train.logits_chunk, math.ceil(b * s * TARGET_FRACTION))
        logits = rows * vocab * 4 * LOGIT_COPIES_CHUNKED / MB
    else:
        logits = b * s * vocab * (nbytes + 4 * (LOGIT_COPIES_FULL - 1)) / MB
    runtime = RUNTIME_OVERHEAD_MB[device]
    step = runtime + weights + adapter + grads + optimizer + activations + logits
    # Loading: the checkpoint (bf16 safetensors, memory-mapped) is resident while the converted copy is built.
    load = runtime + weights + (base * 2 / MB if nbytes != 2 else 0)
    peak = max(step, load)
    notes = []
    if not run.train.target_only_logits:
        notes.append(f"full logits: {logits:,.0f} MiB; train.target_only_logits=true computes them per chunk")
    return Estimate(run.model.name, device, dtype, b, s, total, trainable, round(weights, 1), round(adapter, 1),
                    round(grads, 1), round(optimizer, 1), round(activations, 1), round(logits, 1), runtime,
                    round(load, 1), round(peak, 1), notes)


def suggest_batch_size(run: RunConfig, budget_gb: float, device: str = "gpu", model_cfg: dict | None = None,
                       headroom: float = 0.9) -> int:
    """Largest power-of-two batch whose estimated peak fits ``headroom`` of ``budget_gb`` (0 if none)."""
    cfg = model_cfg or model_config(run.model.name)
    best = 0
    b = 1
    while b <= 1024 and estimate(run, device, b, cfg).peak_mb <= budget_gb * 1024 * headroom:
        best, b = b, b * 2
    return best


def kaito_instance_type(peak_gpu_mb: float) -> tuple[str, str]:
    """Smallest KAITO (Azure) GPU SKU class whose GPU memory holds the estimated peak."""
    for gb, n, sku, desc in KAITO_INSTANCE_TYPES:
        if peak_gpu_mb <= gb * n * 1024 * 0.9:
            return sku, desc
    gb, n, sku, desc = KAITO_INSTANCE_TYPES[-1]
    return sku, desc + " (estimate exceeds it: lower batch size or use qlora)"


TOLERANCE = 0.25
"""How far the estimate may be from a measured peak and still count as OK (``estimate --check``)."""
_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def compare_with_run(run_dir: str | Path) -> dict:
    """Estimate for a finished run's config.yaml next to the peak RSS its metrics.json recorded.

    Peak RSS is the whole process's high-water mark, so the estimate compared is the larger of the
    training step and the load-time peak (``Estimate.peak_mb``). Parameter counts are compared too.
    """
    run_dir = RunDir(run_dir)
    if not run_dir.is_finished():
        raise RunDirError(f"{run_dir.path}: RUN must be a finished run directory (with metrics.json and "
                          "config.yaml), e.g. runs/demo after `loraforge train`")
    train = run_dir.metrics().train
    if train is None or not train.peak_rss_mb:
        raise RunDirError(f"{run_dir.metrics_path}: no training peak memory recorded (train.peak_rss_mb); "
                          "pass a run that `loraforge train` finished")
    run = run_dir.config()
    if train.dtype in _DTYPES:  # size what the run really used
        run.model.dtype = _DTYPES[train.dtype]
    est = estimate(run, "cpu")
    measured = float(train.peak_rss_mb)
    ratio = round(est.peak_mb / measured, 3)
    return {"run": str(run_dir.path), "estimated_mb": est.peak_mb, "measured_mb": measured, "ratio": ratio,
            "within_tolerance": abs(ratio - 1) <= TOLERANCE,
            "estimated_trainable": est.trainable_params, "measured_trainable": train.trainable_params,
            "estimated_total": est.total_params, "measured_total": train.total_params}


def verdict(res: dict) -> str:
    """One line saying whether the estimate held, for ``estimate --check``."""
    off = 100 * (res["ratio"] - 1)
    direction = "over" if off > 0 else "under"
    line = (f"estimated peak {res['estimated_mb']:,.0f} MiB, measured {res['measured_mb']:,.0f} MiB: "
            f"{abs(off):.0f}% {direction}")
    if res["within_tolerance"]:
        line += f": OK (within {TOLERANCE:.0%})"
    else:
        line += f": OFF by more than {TOLERANCE:.0%}"
    if res["measured_trainable"] and res["estimated_trainable"] != res["measured_trainable"]:
        line += (f"; trainable parameters differ (estimated {res['estimated_trainable']:,}, "
                 f"measured {res['measured_trainable']:,})")
    return line


def format_check(run_dir: str | Path) -> str:
    """The ``loraforge estimate --check RUN`` report: the comparison and its verdict."""
    res = compare_with_run(run_dir)
    return f"{res['run']}: {verdict(res)}"


def format_estimate(run: RunConfig, gpu_gb: float) -> str:
    """The `loraforge estimate` report: both devices, a batch-size suggestion, a KAITO SKU."""
    cfg = model_config(run.model.name)
    cpu, gpu = estimate(run, "cpu", model_cfg=cfg), estimate(run, "gpu", model_cfg=cfg)
    rows = [("weights", "weights_mb"), ("adapter", "adapter_mb"), ("gradients", "grads_mb"),
            ("optimizer (AdamW)", "optimizer_mb"), ("activations", "activations_mb"), ("logits", "logits_mb"),
            ("runtime", "runtime_mb"), ("loading", "load_mb"), ("peak", "peak_mb")]
    auto = run.model.dtype == "auto"
    lines = [f"model {run.model.name}: {cpu.total_params:,} parameters, {cpu.trainable_params:,} trainable "
             f"({100 * cpu.trainable_params / cpu.total_params:.2f}%, {run.adapter.method})",
             f"one step: batch {cpu.batch_size} x {cpu.seq_len} tokens (data.max_length; with data.tasks the longest "
             "task's), "
             f"target_only_logits={run.train.target_only_logits}, logits_chunk={run.train.logits_chunk}",
             f"dtype: model.dtype={run.model.dtype}" + (
                 f" -> {cpu.dtype} on this machine's CPU ({'native bf16' if cpu.dtype == 'bf16' else 'no native bf16'}),"
                 f" {gpu.dtype} on a GPU (Ampere or newer)" if auto else ""),
             "", f"{'MiB':<20}{'CPU, ' + cpu.dtype:>14}{'GPU, ' + gpu.dtype:>14}"]
    for label, key in rows:
        lines.append(f"{label:<20}{getattr(cpu, key):>14,.0f}{getattr(gpu, key):>14,.0f}")
    bs = suggest_batch_size(run, gpu_gb, "gpu", cfg)
    sku, desc = kaito_instance_type(gpu.peak_mb)
    lines += ["", f"GPU with {gpu_gb:g} GB: largest batch that fits ~90%: {bs or 'none (use qlora or shorter max_length)'}",
              f"KAITO instance type class: {sku} ({desc})"]
    lines += [f"note: {n}" for n in cpu.notes]
    return "\n".join(lines)
