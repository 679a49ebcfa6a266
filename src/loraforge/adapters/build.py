"""Apply, save, load and merge adapters. What each method is and how it is built lives in the
registry (``methods/registry.py``) and its module under ``methods/``; this module only
dispatches and handles the saved folders."""

from __future__ import annotations

from pathlib import Path

import torch

from loraforge.methods import registry
from loraforge.errors import AdapterError
from loraforge.methods._peft import linear_module_names
from loraforge.config import AdapterConfig

__all__ = ["AdapterError", "apply_adapter", "linear_module_names", "load_adapter", "merge_adapter",
           "save_adapter", "trainable_parameters"]


def apply_adapter(model: torch.nn.Module, cfg: AdapterConfig, family: str = "causal") -> torch.nn.Module:
    """Wrap ``model`` for training with the configured method (the registry says how); only the
    adapter's weights stay trainable."""
    return registry.get(cfg.method).builder()(model, cfg, family)


def load_adapter(model: torch.nn.Module, adapter_dir: str | Path, trainable: bool = False) -> torch.nn.Module:
    """Attach a saved adapter (a run directory or an adapter folder: PEFT, bottleneck or a whole
    fine-tuned model) to a base model."""
    from loraforge.runs import resolve_adapter

    ref = resolve_adapter(adapter_dir)
    if ref.kind == "bottleneck":
        from loraforge.adapters.bottleneck import load_bottleneck_adapters

        return load_bottleneck_adapters(model, ref.dir, trainable=trainable)
    if ref.kind == "full":  # full fine-tuning saved a complete model: same architecture, new weights
        return type(model).from_pretrained(str(ref.dir), dtype=next(model.parameters()).dtype).to(model.device)
    import peft

    from loraforge.runs import tagger_meta

    if (meta := tagger_meta(ref.dir)) is not None:  # a tagging head: rebuild it, then PEFT loads its weights
        from loraforge.models.tagger import build_tagger

        model = build_tagger(model, tuple(meta["labels"]), meta["bidirectional"], meta.get("lookahead", 0))
    return peft.PeftModel.from_pretrained(model, str(ref.dir), is_trainable=trainable)


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
    """Write the trained weights atomically, files 0644 (a serving container under another uid can
    read them): a PEFT adapter folder, our bottleneck folder, or (full fine-tuning) a whole model."""
    from loraforge.runs import atomic_dir

    with atomic_dir(out_dir) as tmp:
        if getattr(model, "loraforge_bottleneck", False):  # set by adapters.bottleneck
            from loraforge.adapters.bottleneck import save_bottleneck

            save_bottleneck(model, tmp)
        else:
            model.save_pretrained(tmp, safe_serialization=True)
            if getattr(model, "is_token_tagger", False):
                import json

                from loraforge.runs import TAGGER_FILE

                (tmp / TAGGER_FILE).write_text(json.dumps(model.meta(), indent=1) + "\n")
    return Path(out_dir)


def merge_adapter(model: torch.nn.Module) -> torch.nn.Module:
    """Fold the adapter into the base weights and return a plain transformers model.

    LoRA/DoRA/IA3 are (scaled) weight deltas, so the merged model computes the same function; full
    fine-tuning is already a plain model. A 4-bit (QLoRA) base is dequantized by PEFT during the merge,
    so the result is a dense model at the compute dtype. Prefix/prompt tuning (virtual tokens) and
    bottleneck adapters (extra non-linear layers) have no weight delta and cannot be merged.
    """
    spec = registry.spec_for_model(model)
    if spec is None or spec.trains_base:
        return model  # full fine-tuning (or a bare model): the weights are already the model
    if not spec.merges:
        why = "add virtual tokens, not weight deltas" if spec.prompt_learning else "add non-linear layers"
        raise AdapterError(f"{spec.name} adapters (adapter.method={spec.name}) {why}: they cannot be merged into "
                           "the base weights; serve the base model with the adapter folder instead")
    if getattr(model.get_base_model(), "is_loaded_in_4bit", False):
        import warnings

        warnings.warn("merging into a 4-bit base: the base weights are dequantized first (the result is dense)")
    return model.merge_and_unload()
