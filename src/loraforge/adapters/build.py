"""Build and load adapters. PEFT does the work for LoRA, DoRA, QLoRA, IA3, prefix and prompt tuning;
we only translate our config, and turn PEFT's errors into ones that list what the model offers."""

from __future__ import annotations

from pathlib import Path

import torch

from loraforge.config import AdapterConfig, ConfigError


class AdapterError(ConfigError):
    """An adapter setting that cannot apply to this model or machine, with the reason."""


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Distinct suffixes of the linear layers: what ``adapter.target_modules`` may name."""
    names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    return sorted(names)


def _task_type(family: str):
    from peft import TaskType

    return TaskType.SEQ_2_SEQ_LM if family == "seq2seq" else TaskType.CAUSAL_LM


def _peft_config(cfg: AdapterConfig, family: str):
    import peft

    targets = cfg.target_modules
    if cfg.method in ("lora", "dora", "qlora"):
        return peft.LoraConfig(
            task_type=_task_type(family), r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
            target_modules=targets, use_dora=cfg.method == "dora",
        )
    if cfg.method == "ia3":
        return peft.IA3Config(task_type=_task_type(family), target_modules=targets, feedforward_modules=[])
    if cfg.method == "prefix":
        return peft.PrefixTuningConfig(task_type=_task_type(family), num_virtual_tokens=cfg.num_virtual_tokens)
    if cfg.method == "prompt":
        return peft.PromptTuningConfig(task_type=_task_type(family), num_virtual_tokens=cfg.num_virtual_tokens)
    raise AdapterError(f"adapter.method={cfg.method!r} is not a PEFT method")


def _check_targets(model: torch.nn.Module, targets) -> None:
    if targets == "all-linear":
        return
    available = linear_module_names(model)
    missing = [t for t in ([targets] if isinstance(targets, str) else targets) if t not in available]
    if missing:
        raise AdapterError(
            f"adapter.target_modules {missing} match no layer of this model; linear layers: {', '.join(available)} "
            "(or 'all-linear')"
        )


def apply_adapter(model: torch.nn.Module, cfg: AdapterConfig, family: str = "causal") -> torch.nn.Module:
    """Wrap ``model`` for training with the configured method; only the adapter's weights stay trainable."""
    if cfg.method == "qlora" and not torch.cuda.is_available():
        raise AdapterError("adapter.method=qlora needs a CUDA GPU (bitsandbytes 4-bit); use lora on this machine")
    if cfg.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if cfg.method == "adapter":
        from loraforge.adapters.bottleneck import add_bottleneck_adapters

        return add_bottleneck_adapters(model, cfg)
    import peft

    if cfg.method in ("lora", "dora", "qlora", "ia3"):
        _check_targets(model, cfg.target_modules)
    if cfg.method == "qlora":
        if not getattr(model, "is_loaded_in_4bit", False):
            raise AdapterError("adapter.method=qlora needs the base model loaded in 4 bits: "
                               "load_model(..., quantize='nf4') (train_run does this for qlora)")
        model = peft.prepare_model_for_kbit_training(model)
    try:
        return peft.get_peft_model(model, _peft_config(cfg, family))
    except ValueError as e:
        raise AdapterError(f"adapter.method={cfg.method}: {e}") from None


def load_adapter(model: torch.nn.Module, adapter_dir: str | Path, trainable: bool = False) -> torch.nn.Module:
    """Attach a saved adapter folder (PEFT format, or our bottleneck format) to a base model."""
    adapter_dir = Path(adapter_dir)
    if (adapter_dir / "adapter").is_dir():  # a run directory
        adapter_dir = adapter_dir / "adapter"
    if (adapter_dir / "bottleneck_config.json").is_file():
        from loraforge.adapters.bottleneck import load_bottleneck_adapters

        return load_bottleneck_adapters(model, adapter_dir)
    if (adapter_dir / "config.json").is_file() and not (adapter_dir / "adapter_config.json").is_file():
        # full fine-tuning saved a complete model: same architecture, new weights
        return type(model).from_pretrained(str(adapter_dir), dtype=next(model.parameters()).dtype).to(model.device)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter_dir}: no adapter_config.json (not an adapter folder or run directory)")
    import peft

    return peft.PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)


def trainable_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights counted once."""
    seen, trainable, total = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def save_adapter(model: torch.nn.Module, out_dir: str | Path) -> Path:
    """Write the trained weights atomically: a PEFT adapter folder, our bottleneck folder, or (full
    fine-tuning) a complete transformers model."""
    import os
    import shutil

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    if getattr(model, "loraforge_bottleneck", False):  # set by adapters.bottleneck
        from loraforge.adapters.bottleneck import save_bottleneck

        save_bottleneck(model, tmp)
    else:
        model.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir


MERGEABLE_METHODS = ("lora", "dora", "qlora", "ia3", "full")


def merge_adapter(model: torch.nn.Module) -> torch.nn.Module:
    """Fold the adapter into the base weights and return a plain transformers model.

    LoRA/DoRA/IA3 are (scaled) weight deltas, so the merged model computes the same function; full
    fine-tuning is already a plain model. A 4-bit (QLoRA) base is dequantized by PEFT during the merge,
    so the result is a dense model at the compute dtype. Prefix/prompt tuning (virtual tokens) and
    bottleneck adapters (extra non-linear layers) have no weight delta and cannot be merged.
    """
    if getattr(model, "loraforge_bottleneck", False):
        raise AdapterError("bottleneck adapters (adapter.method=adapter) add non-linear layers and cannot be merged "
                           "into the base weights; serve the base model with the adapter folder instead")
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is None:
        return model  # full fine-tuning (or a bare model): the weights are already the model
    if getattr(peft_config, "is_prompt_learning", False):
        raise AdapterError(f"{peft_config.peft_type.value.lower()} adapters add virtual tokens, not weight deltas: "
                           "they cannot be merged into the base weights")
    if getattr(model.get_base_model(), "is_loaded_in_4bit", False):
        import warnings

        warnings.warn("merging into a 4-bit base: the base weights are dequantized first (the result is dense)")
    return model.merge_and_unload()
