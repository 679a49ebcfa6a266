"""Parameter-efficient methods behind one call: ``apply_adapter(model, cfg.adapter, family)``."""

from loraforge.adapters.build import AdapterError, apply_adapter, load_adapter, trainable_parameters

__all__ = ["AdapterError", "apply_adapter", "load_adapter", "trainable_parameters"]
