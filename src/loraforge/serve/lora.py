"""How one forward treats LoRA: merged into the weights when every row uses one adapter, routed
per row (PEFT ``adapter_names=``) when adapters mix, switched off when every row is the base model.

Merging swaps each targeted layer's weight for a merged copy and keeps the original tensor, so the
base weights come back bit for bit (PEFT's in-place merge/unmerge adds rounding each round trip,
which a long-running server would accumulate; in bf16 it is visible). The cost is one extra copy of
the targeted weights while merged.
"""

from __future__ import annotations

import contextlib

import torch

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch


class AdapterRouter:
    """Owns the (possibly PEFT-wrapped) model and its merge state; used by the generation thread only."""

    def __init__(self, model, merge: bool = True):
        self.model = model
        self.merge = merge
        self.merged: str | None = None
        self._saved: list[tuple[torch.nn.Parameter, torch.Tensor]] = []

    @property
    def is_peft(self) -> bool:
        from peft import PeftModel

        return isinstance(self.model, PeftModel)

    def context(self, adapters: list[str], worth_merging: bool, running: list[str] | None = None):
        """A context for one forward of rows using ``adapters``; returns (context, forward kwargs).
        ``running``: the adapters of every row in the batch this iteration (the merge decision is
        theirs; a prefill forward covers only the new rows)."""
        if not self.is_peft:
            return contextlib.nullcontext(), {}
        names = set(running or adapters)
        if names == {BASE}:
            self.unmerge()
            return self.model.disable_adapter(), {}
        if len(names) == 1 and (self.merged in names or (self.merge and worth_merging and self._mergeable(adapters[0]))):
            self._merge(adapters[0])
            return self.model.disable_adapter(), {}
        self.unmerge()
        return contextlib.nullcontext(), {"adapter_names": list(adapters)}

    def _mergeable(self, name: str) -> bool:
        """A LoRA with its own bias (``lora_bias``) changes more than the weight: route it per row."""
        from peft.tuners.lora import LoraLayer

        return not any(isinstance(m, LoraLayer) and m.lora_bias.get(name) for m in self.model.modules())

    def _merge(self, name: str) -> None:
        if self.merged == name:
            return
        from peft.tuners.lora import LoraLayer

        self.unmerge()
        with torch.no_grad():
            for module in self.model.modules():
                if isinstance(module, LoraLayer) and name in module.lora_A:
                    weight = module.get_base_layer().weight
                    self._saved.append((weight, weight.data))
                    weight.data = weight.data + module.get_delta_weight(name).to(weight.dtype)
        self.merged = name

    def unmerge(self) -> None:
        """Put the original base weights back (exactly)."""
        for weight, original in self._saved:
            weight.data = original
        self._saved.clear()
        self.merged = None
