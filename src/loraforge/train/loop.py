"""The training loop: one file, readable top to bottom (in the spirit of nanoGPT's train.py).

Runs unchanged on one process or many (torchrun / accelerate launch set WORLD_SIZE; DDP averages
the gradients). Each optimizer step consumes a fixed, computed set of micro-batches, so a resumed
run continues on exactly the data the interrupted one would have seen.
"""

from __future__ import annotations

import resource
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from tqdm.auto import tqdm

from loraforge.config import ConfigError, TrainConfig
from loraforge.data.templates import Encoded
from loraforge.train import distributed as dist
from loraforge.train.attention import matmul_attention
from loraforge.train.batching import collate, make_stream
from loraforge.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from loraforge.train.heap import freed_memory_policy
from loraforge.train.loss import full_logits_ce, target_only_ce
from loraforge.train.packing import packed_attention


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: a checkpoint was saved first; ``--resume`` continues from it."""


class TrainStep(torch.nn.Module):
    """Summed target-token loss of one batch. A module, so DDP can wrap it and sync its gradients."""

    def __init__(self, model: torch.nn.Module, family: str, cfg: TrainConfig):
        super().__init__()
        self.model, self.family, self.cfg = model, family, cfg
        self.fast = family == "causal" and cfg.target_only_logits and _backbone(model) is not None
        self.compute_dtype = mixed_precision_dtype(model)
        self.device_type = next(model.parameters()).device.type
        # Training steps only: evaluation (no grad) would compile a second graph for little use.
        self.compiled_layers = compiled_layers(_backbone(model)) if self.fast and cfg.compile_model else None

    def forward(self, input_ids, attention_mask, labels, **packed):
        """``packed``: position_ids and sequence boundaries of a packed row (``collate_packed``)."""
        if self.compute_dtype is None:
            return self._loss(input_ids, attention_mask, labels, packed)
        # bf16 base weights, fp32 adapter weights (PEFT upcasts them so AdamW updates are not lost):
        # compute in bf16. PEFT would otherwise cast every LoRA input to fp32 and run those matmuls
        # at fp32 speed; autocast casts the small adapter weights instead (once per forward).
        from peft.helpers import disable_input_dtype_casting

        with torch.autocast(self.device_type, dtype=self.compute_dtype), disable_input_dtype_casting(self.model):
            return self._loss(input_ids, attention_mask, labels, packed)

    def _loss(self, input_ids, attention_mask, labels, packed):
        training = self.training and torch.is_grad_enabled()
        smoothing = self.cfg.label_smoothing if training else 0.0  # dev loss: plain CE
        if self.fast:
            stack = _backbone(self.model)
            use_compiled = self.compiled_layers is not None and training
            with swapped_layers(stack, self.compiled_layers if use_compiled else None):
                hidden = stack(input_ids=input_ids, attention_mask=attention_mask, **packed).last_hidden_state
            lm_head = self.model.get_output_embeddings()
            softcap = getattr(self.model.config, "final_logit_softcapping", None)
            loss, n = target_only_ce(hidden, lm_head, labels, self.cfg.logits_chunk, softcap, self.cfg.compile,
                                     smoothing)
            return loss, torch.tensor(n)
        if self.family in ("seq2seq", "tagger"):  # a label per decoder / input position, no shift
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).logits
            flat = labels.reshape(-1)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), flat,
                                                     ignore_index=-100, reduction="sum", label_smoothing=smoothing)
            return loss, (flat != -100).sum()
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, **packed).logits
        logits = logits[:, -labels.shape[1]:]  # prompt tuning prepends virtual-token positions
        loss, n = full_logits_ce(logits, labels, smoothing)
        return loss, torch.tensor(n)


def compiled_layers(stack: torch.nn.Module) -> list[torch.nn.Module]:
    """``torch.compile`` of each decoder layer (regional compilation): the layers share one compiled
    graph per layer type instead of the whole stack unrolled, and the fused elementwise work (RMSNorm
    in fp32, GELU, residuals) is most of what compiling the stack gained."""
    return [torch.compile(layer, dynamic=True) for layer in stack.layers]


@contextmanager
def swapped_layers(stack: torch.nn.Module, layers: list[torch.nn.Module] | None):
    """The stack runs ``layers`` (the compiled wrappers) for one forward, then its own again, so
    evaluation, generation and saved state never see the wrappers."""
    if layers is None:
        yield
        return
    own = list(stack.layers)
    for i, layer in enumerate(layers):
        stack.layers[i] = layer
    try:
        yield
    finally:
        for i, layer in enumerate(own):
            stack.layers[i] = layer


def packs(model: torch.nn.Module, family: str, packing: bool | str, device_type: str = "cpu") -> bool:
    """Whether this run trains on packed rows (``train.packing``); an explicit true that cannot be honoured
    is an error, not a silent fallback. ``auto`` packs on CUDA only: on the CPU, length-grouped padded
    batches measured faster than per-sequence attention over packed rows."""
    possible = family == "causal" and _backbone(model) is not None
    if packing is True and not possible:
        raise ConfigError("train.packing needs a causal model with adapters inside its layers (LoRA, DoRA, IA3, "
                          "bottleneck, full); seq2seq models and prefix/prompt tuning take padded batches "
                          "(train.packing=auto chooses)")
    if packing == "auto":
        return possible and device_type == "cuda"
    return bool(packing)


def mixed_precision_dtype(model: torch.nn.Module) -> torch.dtype | None:
    """The half-precision dtype of frozen weights when trainable ones are fp32 (else None)."""
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    trainable = {p.dtype for p in model.parameters() if p.requires_grad}
    half = frozen & {torch.bfloat16, torch.float16}
    return next(iter(half)) if len(half) == 1 and torch.float32 in trainable else None


def _backbone(model: torch.nn.Module):
    """The decoder stack under the LM head, when adapters live inside its layers (LoRA, DoRA, IA3,
    bottleneck, full); prefix/prompt tuning change the inputs, so they take the plain forward."""
    from loraforge.methods.registry import spec_for_model

    spec = spec_for_model(model)
    if spec is not None and spec.prompt_learning:
        return None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(base, "model", None)
    return inner if isinstance(inner, torch.nn.Module) and base.get_output_embeddings() is not None else None


BUDGET_PROBE_STEPS = 20
"""Steps timed before ``train.max_minutes`` fixes a run's length. Their pace includes the first, slowest
steps (allocations, compiling), so the length it gives errs short."""


def budgeted_steps(cfg: TrainConfig, seconds: float, done: int, work=lambda step: 1) -> int:
    """The step count that fits ``cfg.max_minutes``, given that the first ``done`` steps took ``seconds``:
    at most ``cfg.steps``, at least ``done``. ``work(step)`` (the token positions a step computes) turns
    the probe's pace into seconds per token position, so the forecast follows the batches the run will
    actually see: with length grouping, 20 steps of long batches would otherwise cut a run of mostly
    short ones (and 20 short ones overrun the budget, to be stopped there with its schedule unfinished).
    The default, one unit a step, is the pace per step."""
    if seconds <= 0:
        return cfg.steps
    pace = seconds / max(sum(work(s) for s in range(1, done + 1)), 1)
    spent, step, budget = seconds, done, cfg.max_minutes * 60 * (1 + 1e-9)  # float sums may not land exactly
    while step < cfg.steps and spent + (cost := work(step + 1) * pace) <= budget:
        step, spent = step + 1, spent + cost
    return step


def set_schedule_length(scheduler, total: int) -> None:
    """End the learning-rate schedule at ``total`` steps. The transformers schedules are LambdaLR over a
    ``partial`` that holds ``num_training_steps``; a constant schedule has none and needs no change."""
    lambdas = []
    for fn in scheduler.lr_lambdas:
        if isinstance(fn, partial) and "num_training_steps" in fn.keywords:
            fn = partial(fn.func, *fn.args, **{**fn.keywords, "num_training_steps": total})
        lambdas.append(fn)
    scheduler.lr_lambdas = lambdas


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # one row per optimizer step (+ dev_loss rows)
    steps: int = 0
    train_seconds: float = 0.0
    tokens: int = 0
    target_tokens: int = 0
    peak_rss_mb: float = 0.0
    task_counts: dict[str, int] | None = None
    """Multi-task: examples drawn per task over the whole run (all ranks, all micro-batches)."""

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds else 0.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, total_steps: int):
    from transformers import get_scheduler

    if cfg.loraplus_lr_ratio is not None:
        from peft.optimizers import create_loraplus_optimizer

        optimizer = create_loraplus_optimizer(model, torch.optim.AdamW, lr=cfg.lr, loraplus_lr_ratio=cfg.loraplus_lr_ratio,
                                              loraplus_weight_decay=cfg.weight_decay, foreach=True)
    else:
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    scheduler = get_scheduler(cfg.schedule if cfg.schedule != "constant" else "constant_with_warmup", optimizer,
                              num_warmup_steps=cfg.warmup_steps, num_training_steps=total_steps)
    return optimizer, scheduler


@torch.no_grad()
def dev_loss(step_fn: TrainStep, dev: list[Encoded], pad_id: int, batch_size: int) -> float:
    total, n = 0.0, 0
    was_training = step_fn.training
    step_fn.eval()
    for s in range(0, len(dev), batch_size):
        batch = to_model_device(collate(dev[s:s + batch_size], pad_id, step_fn.family), step_fn.model)
        loss, count = step_fn(**batch)
        total, n = total + float(loss), n + int(count)
    step_fn.train(was_training)
    return total / max(n, 1)


def train(model, train_set, dev_set: list[Encoded], cfg: TrainConfig, run_dir: Path,
          pad_id: int, family: str = "causal", resume: bool = False, progress: bool = True) -> TrainResult:
    """``train_set``: encoded examples, ``TrainExamples`` (per-epoch noise) or ``TaskMix`` (multi-task)."""
    rank, world = dist.rank(), dist.world_size()
    torch.manual_seed(cfg.seed)
    step_fn = TrainStep(model, family, cfg)
    packed = packs(model, family, cfg.packing, step_fn.device_type)
    # matmul attention on the CPU (elsewhere it would only hand over to SDPA, in place of the model's
    # own attention implementation), where the model's own layers attend their own tokens: no
    # prefix/prompt KV, no encoder
    matmul = (cfg.matmul_attention and step_fn.device_type == "cpu" and family == "causal"
              and _backbone(model) is not None)
    ddp_step = dist.wrap(step_fn)
    optimizer, scheduler = build_optimizer(model, cfg, cfg.steps)
    stream = make_stream(train_set, cfg.batch_size, cfg.seed, cfg.length_grouping, packed)
    result, start = TrainResult(), 0
    total = cfg.steps  # train.max_minutes may shorten it once, after BUDGET_PROBE_STEPS
    if resume and (ckpt := latest_checkpoint(run_dir)) is not None:
        state = load_checkpoint(ckpt, model, optimizer, scheduler)
        start, result.history = state["step"], state["history"]
        result.tokens, result.target_tokens, result.train_seconds = state["tokens"], state["target_tokens"], state["seconds"]
        if state.get("budgeted_steps"):  # the length the budget fixed before the interruption, not a new guess
            total = state["budgeted_steps"]
            set_schedule_length(scheduler, total)
    fixed = total != cfg.steps or start >= BUDGET_PROBE_STEPS

    def step_work(s: int) -> int:  # every rank's micro-batches of step s: all ranks forecast alike
        return sum(stream.work(((s - 1) * cfg.grad_accum + a) * world + r)
                   for a in range(cfg.grad_accum) for r in range(world))

    def checkpoint(step: int) -> None:
        if rank == 0:
            meta = {"history": result.history, "tokens": result.tokens, "target_tokens": result.target_tokens,
                    "seconds": result.train_seconds, **({"budgeted_steps": total} if cfg.max_minutes else {})}
            save_checkpoint(run_dir, step, model, optimizer, scheduler, meta)
        dist.barrier()

    bar = tqdm(total=cfg.steps, initial=start, desc="train", unit="step", disable=not progress or rank != 0,
               dynamic_ncols=True)
    step_fn.train()
    with (dist.graceful_interrupt() as stop, activation_checkpointing(model, cfg.activation_checkpointing),
          packed_attention(model, packed, matmul), matmul_attention(model, matmul and not packed),
          freed_memory_policy(cfg.freed_memory) as after_step):
        step = start
        while step < total:
            step += 1
            t0 = time.perf_counter()
            micro = [to_model_device(stream.batch(((step - 1) * cfg.grad_accum + a) * world + rank, pad_id, family),
                                     model) for a in range(cfg.grad_accum)]
            # Normalise by the target tokens of the whole global batch (all ranks, all micro-batches),
            # so N processes compute exactly the step one process with N-fold accumulation would.
            n_target = dist.all_reduce_sum(sum(_count_targets(b, family) for b in micro))
            loss_sum = 0.0
            for a, batch in enumerate(micro):
                with dist.no_sync(ddp_step, last=a == len(micro) - 1):
                    loss, _ = ddp_step(**batch)
                    (loss * world / max(n_target, 1)).backward()  # DDP averages over ranks
                loss_sum += float(loss.detach())
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            after_step()

            if step_fn.device_type == "cuda":
                torch.cuda.synchronize()  # GPU work is asynchronous: time the step, not its launch
            seconds = time.perf_counter() - t0
            tokens = dist.all_reduce_sum(sum(count_tokens(b) for b in micro))
            loss_sum = dist.all_reduce_sum(loss_sum)
            result.tokens += tokens
            result.target_tokens += n_target
            result.train_seconds += seconds
            row = {"step": step, "loss": loss_sum / max(n_target, 1), "lr": scheduler.get_last_lr()[0],
                   "tokens_per_s": tokens / seconds}
            if cfg.max_minutes:  # every rank decides on the same (averaged) clock
                elapsed = dist.all_reduce_sum(result.train_seconds) / world
                if not fixed and step >= BUDGET_PROBE_STEPS:
                    total, fixed = budgeted_steps(cfg, elapsed, step, step_work), True
                    set_schedule_length(scheduler, total)
                    bar.total, row["budgeted_steps"] = total, total
                elif elapsed >= cfg.max_minutes * 60 and step < total:
                    total = step  # the pace slowed after the probe: stop at the budget, the schedule not ended
                    row["budget_stop"] = True
            if cfg.eval_every and step % cfg.eval_every == 0 and step < total and dev_set:
                row["dev_loss"] = dev_loss(step_fn, dev_set, pad_id, cfg.batch_size)
            result.history.append(row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tokens_per_s']:.0f}",
                            **({"dev": f"{row['dev_loss']:.3f}"} if "dev_loss" in row else {}))
            if stop.requested():  # Ctrl-C: finish the step, save, then stop (a second Ctrl-C kills)
                bar.close()
                checkpoint(step)
                raise TrainingInterrupted(f"interrupted after step {step}; checkpoint saved in "
                                          f"{run_dir / 'checkpoints'}; continue with --resume")
            if cfg.save_every and step % cfg.save_every == 0 and step < total:
                checkpoint(step)
    bar.close()
    if dev_set:
        result.history.append({"step": total, "dev_loss": dev_loss(step_fn, dev_set, pad_id, cfg.batch_size)})
    result.steps = total
    result.peak_rss_mb = peak_rss_mb()
    if hasattr(stream, "task_counts"):
        result.task_counts = stream.task_counts(total * cfg.grad_accum * world)
    return result


@contextmanager
def activation_checkpointing(model: torch.nn.Module, enabled: bool):
    """Keep only each decoder layer's input for the backward pass and recompute the rest (the
    transformers implementation; non-reentrant, so frozen embeddings need no grad hooks)."""
    if not enabled:
        yield
        return
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise ConfigError(f"train.activation_checkpointing: {type(base).__name__} does not support it")
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    try:
        yield
    finally:
        base.gradient_checkpointing_disable()


def to_model_device(batch: dict, model: torch.nn.Module) -> dict:
    device = next(model.parameters()).device
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def count_tokens(batch: dict) -> int:
    """Real (non-pad) tokens; a packed row has no padding."""
    mask = batch["attention_mask"]
    return int(mask.sum()) if mask is not None else batch["input_ids"].numel()


def _count_targets(batch: dict, family: str) -> int:
    """Labelled positions that produce a loss term (causal: the first label has no predecessor)."""
    labels = batch["labels"]
    if family == "causal":
        return int((labels[:, 1:] != -100).sum())
    return int((labels != -100).sum())

