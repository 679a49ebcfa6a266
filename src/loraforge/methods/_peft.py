"""What the PEFT-backed methods share: the task type, the target-module check, and PEFT's errors
turned into ones that say what the model offers."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Distinct suffixes of the linear layers: what ``adapter.target_modules`` may name."""
    import torch

    names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    return sorted(names)


def check_targets(model: torch.nn.Module, targets) -> None:
    from loraforge.errors import AdapterError

    if targets == "all-linear":
        return
    available = linear_module_names(model)
    missing = [t for t in ([targets] if isinstance(targets, str) else targets) if t not in available]
    if missing:
        raise AdapterError(
            f"adapter.target_modules {missing} match no layer of this model; linear layers: {', '.join(available)} "
            "(or 'all-linear')"
        )


def task_type(family: str):
    """PEFT's task type; None for a tagger (``models/tagger.py``), which PEFT wraps as a plain module."""
    from peft import TaskType

    if family == "tagger":
        return None
    return TaskType.SEQ_2_SEQ_LM if family == "seq2seq" else TaskType.CAUSAL_LM


def head_kwargs(family: str) -> dict:
    """A tagger's head is trained whole and saved with the adapter (PEFT's ``modules_to_save``), and is
    no LoRA target (``all-linear`` would otherwise take it for one more layer)."""
    return {"modules_to_save": ["score"], "exclude_modules": ["score"]} if family == "tagger" else {}


def wrap(model: torch.nn.Module, method: str, peft_config) -> torch.nn.Module:
    """``peft.get_peft_model``, its ValueErrors as AdapterErrors naming the method."""
    import peft

    from loraforge.errors import AdapterError

    try:
        return peft.get_peft_model(model, peft_config)
    except ValueError as e:
        raise AdapterError(f"adapter.method={method}: {e}") from None
