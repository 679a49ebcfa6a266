"""The TRL side of ``loraforge bench train``: SFTTrainer + PEFT on the bench's examples, and the
SFTConfig speed options a performance-minded TRL user would set.

TRL 1.16's own speed options: ``padding_free`` (the batch flattened into one sequence; TRL's docs
pair it with FlashAttention, elsewhere transformers attends through a block-diagonal mask),
``packing`` (best-fit-decreasing packing into rows of ``max_length``, padding-free), turning off
gradient checkpointing (on by default in SFTConfig: it trades speed for memory) and, on CUDA,
``use_liger_kernel``. For the CPU, transformers' docs recommend bf16 mixed precision (``bf16=True``,
``use_cpu=True``), which every bf16 row uses.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

# name -> SFTConfig options; each is one row under --ablation (on top of a base row), all together
# are the "TRL at its best" row of every run
TRL_LEVERS: dict[str, dict] = {
    "no-checkpointing": {"gradient_checkpointing": False},
    # the bench's examples already fit max_length: TRL refuses padding_free without packing unless
    # max_length=None (it would not truncate), which its error message recommends for such inputs
    "padding-free": {"padding_free": True, "max_length": None},
    "packing": {"packing": True, "packing_strategy": "bfd"},  # BFD packing is padding-free too
}
BEST_LEVERS = ("packing", "no-checkpointing")  # padding-free is implied by BFD packing


@dataclass
class StepTokens:
    """What one optimizer step trained on: each sequence's length and the positions with a loss term."""

    lengths: list[int]
    targets: int


def step_tokens(inputs: dict) -> StepTokens:
    """Count a collated TRL batch: padded rows, or one padding-free row with sequence boundaries."""
    labels = inputs["labels"]
    if "cu_seq_lens_q" in inputs:  # padding-free: the collator already masks each sequence's first position
        return StepTokens([int(n) for n in inputs["cu_seq_lens_q"].diff()], int((labels != -100).sum()))
    return StepTokens([int(n) for n in inputs["attention_mask"].sum(1)], int((labels[:, 1:] != -100).sum()))


def packing_tokens(spec) -> int:
    """Tokens to give a packing row so that its ``steps`` packed batches need no second epoch."""
    return int(1.1 * spec.steps * spec.batch_size * spec.max_length) if spec.trl_args.get("packing") else 0


def run_trl(spec, loaded, train_set, work: Path) -> tuple[list[StepTokens], list[float], object, dict]:
    """Train with SFTTrainer; returns each step's tokens (as TRL collated them), seconds, the model and
    the settings it trained with (read from the trainer, so a row shows what TRL really did)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from loraforge.train.batching import epoch_batches

    order = [i for b in epoch_batches([len(e.input_ids) for e in train_set], spec.batch_size, spec.seed, 0, False)
             for i in b]
    ds = Dataset.from_list([{"input_ids": train_set[i].input_ids,
                             "completion_mask": [int(y != -100) for y in train_set[i].labels]} for i in order])
    stamps: list[float] = []
    steps: list[StepTokens] = []
    ran_with: dict = {}

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            ran_with["gradient_checkpointing"] = any(getattr(m, "gradient_checkpointing", False) is True
                                                     for m in model.modules())
            ran_with["attention"] = model.config._attn_implementation
            stamps.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())
            print(f"{spec.job}: step {state.global_step}/{spec.steps} {stamps[-1] - stamps[-2]:.1f} s",
                  file=sys.stderr, flush=True)

    class CountingTrainer(SFTTrainer):
        """Counts what each training step really saw (packing and padding-free change the batches)."""

        def compute_loss(self, model, inputs, *args, **kwargs):
            if model.training:
                steps.append(step_tokens(inputs))
            return super().compute_loss(model, inputs, *args, **kwargs)

    args = SFTConfig(**{
        "output_dir": str(work), "max_steps": spec.steps, "per_device_train_batch_size": spec.batch_size,
        "gradient_accumulation_steps": 1, "learning_rate": spec.lr, "lr_scheduler_type": "cosine",
        "warmup_steps": spec.warmup_steps, "weight_decay": 0.0, "max_grad_norm": 1.0, "seed": spec.seed,
        "bf16": spec.trl_bf16, "completion_only_loss": True, "train_sampling_strategy": "sequential",
        "max_length": spec.max_length, "report_to": "none", "save_strategy": "no", "eval_strategy": "no",
        "disable_tqdm": True, "use_cpu": not torch.cuda.is_available(), "use_liger_kernel": spec.trl_liger,
        **spec.trl_args})
    peft_cfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    torch.manual_seed(spec.seed)
    trainer = CountingTrainer(model=loaded.model, args=args, train_dataset=ds, processing_class=loaded.tokenizer,
                              peft_config=peft_cfg, callbacks=[Clock()])
    ran_with.update(padding_free=trainer.padding_free, packing=args.packing, liger=args.use_liger_kernel)
    trainer.train()
    seconds = [b - a for a, b in zip(stamps, stamps[1:])]
    return steps, seconds, trainer.model, ran_with
