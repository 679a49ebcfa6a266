"""Parameter-efficient methods behind one call: ``apply_adapter(model, cfg.adapter, family)``.

``registry`` says what each method is (config keys, build, merge, packing, KAITO, estimate);
``methods/`` holds one module per method family; ``build`` applies, saves, loads and merges them.
Imports are lazy so ``loraforge.methods.registry`` stays torch-free (config and deploy use it).
"""

from __future__ import annotations

from typing import Any

__all__ = ["AdapterError", "apply_adapter", "load_adapter", "trainable_parameters"]


def __getattr__(name: str) -> Any:
    if name == "AdapterError":
        from loraforge.errors import AdapterError

        return AdapterError
    if name in __all__:
        from loraforge.adapters import build

        return getattr(build, name)
    raise AttributeError(f"module 'loraforge.adapters' has no attribute {name!r}")
