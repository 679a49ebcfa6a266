"""What a fine-tuning method declares about itself (``MethodSpec``) and what the estimate knows of a
model without loading it (``ModelShape``). Imports nothing of ours: method modules and the registry
both build on it, so neither imports the other at module level."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from loraforge.config import AdapterConfig


@dataclass(frozen=True)
class ModelShape:
    """What the estimate knows of a decoder model without loading it (from config.json)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    base_params: int
    targets: dict[str, tuple[int, int]]
    """(in, out) of each linear layer of one block that ``adapter.target_modules`` selects."""

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim


@dataclass(frozen=True)
class MethodSpec:
    name: str
    summary: str
    """One line for help texts and the README's method table."""
    fields: tuple[str, ...]
    """The ``adapter.*`` keys this method reads (besides ``method``); any other key set is an error."""
    build: str | Callable[..., Any]
    """Takes (model, AdapterConfig, family) and returns the model to train; a 'module:function'
    string is imported on first use (keeps this registry torch-free)."""
    count: Callable[[ModelShape, AdapterConfig], int]
    """Trainable parameters it adds (the estimate; a test checks it against the built model)."""
    merges: bool
    """Its weights fold into the base weights (export merged/gguf, merged evaluation)."""
    prompt_learning: bool = False
    """It changes the inputs (virtual tokens), not the layers: padded batches only, nothing to merge."""
    kaito: str | None = None
    """KAITO's tuning method for it ('lora', 'qlora'); None: KAITO cannot tune it."""
    serves_as_adapter: bool = False
    """vLLM/KAITO (and loraforge serve's shared batches) serve its saved adapter: export oci takes it."""
    peft_types: tuple[str, ...] = ()
    """``peft_type`` values of the adapter_config.json it saves ('FULL'/'BOTTLENECK' for our own kinds)."""
    saved_match: Callable[[dict], bool] | None = None
    """Tells it apart from another method saved under the same peft_type (dora: ``use_dora``)."""
    peft_format: bool = True
    """Saved as a PEFT adapter folder that PEFT (and export --format adapter) can load."""
    trains_base: bool = False
    """Every base weight is trained (full fine-tuning): the saved result is a whole model."""
    quantize: str | None = None
    """How the base model is loaded for it ('nf4' for QLoRA); None: at the configured dtype."""
    low_rank_pairs: bool = False
    """It trains LoRA's A and B matrices: ``train.loraplus_lr_ratio`` (LoRA+) can set B's lr apart."""

    @property
    def packs(self) -> bool:
        """Can train on packed rows: the adapter lives inside the layers, the inputs are untouched."""
        return not self.prompt_learning

    def builder(self) -> Callable[..., Any]:
        if callable(self.build):
            return self.build
        module, _, func = self.build.partition(":")
        return getattr(importlib.import_module(module), func)
