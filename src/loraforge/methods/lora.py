"""LoRA (Hu et al., 2021), DoRA (Liu et al., 2024) and QLoRA (Dettmers et al., 2023): low-rank weight
deltas ``W + (alpha/r) B A`` on the targeted linear layers, built by PEFT. DoRA also learns a
magnitude per output row; QLoRA trains LoRA on a 4-bit (nf4) base and saves a plain LoRA adapter."""

from __future__ import annotations

from loraforge.methods.spec import MethodSpec, ModelShape

FIELDS = ("r", "alpha", "dropout", "target_modules")


def _count(dora: bool):
    def count(shape: ModelShape, a) -> int:
        return shape.layers * sum(a.r * (i + o) + (o if dora else 0) for i, o in shape.targets.values())
    return count


def build(model, cfg, family: str = "causal"):
    import peft
    import torch

    from loraforge.errors import AdapterError
    from loraforge.methods._peft import check_targets, head_kwargs, task_type, wrap

    if cfg.method == "qlora":
        if not torch.cuda.is_available():
            raise AdapterError("adapter.method=qlora needs a CUDA GPU (bitsandbytes 4-bit); use lora on this machine")
        if not getattr(model, "is_loaded_in_4bit", False):
            raise AdapterError("adapter.method=qlora needs the base model loaded in 4 bits: "
                               "load_model(..., quantize='nf4') (train_run does this for qlora)")
    check_targets(model, cfg.target_modules)
    if cfg.method == "qlora":
        model = peft.prepare_model_for_kbit_training(model)
    config = peft.LoraConfig(task_type=task_type(family), r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                             target_modules=cfg.target_modules, use_dora=cfg.method == "dora", **head_kwargs(family))
    return wrap(model, cfg.method, config)


SPECS = [
    MethodSpec("lora", "low-rank weight deltas on the targeted linear layers", FIELDS, f"{__name__}:build",
               _count(False), merges=True, kaito="lora", serves_as_adapter=True, peft_types=("LORA",), low_rank_pairs=True,
               saved_match=lambda c: not c.get("use_dora")),
    MethodSpec("dora", "LoRA plus a learned magnitude per output row (weight-decomposed)", FIELDS,
               f"{__name__}:build", _count(True), merges=True, peft_types=("LORA",), low_rank_pairs=True,
               saved_match=lambda c: bool(c.get("use_dora"))),
    MethodSpec("qlora", "LoRA on a 4-bit (nf4) base model; CUDA only; saves a LoRA adapter", FIELDS,
               f"{__name__}:build", _count(False), merges=True, kaito="qlora", serves_as_adapter=True,
               quantize="nf4", low_rank_pairs=True),
]
