"""The method registry: one ``MethodSpec`` per fine-tuning method, and the questions every other module
asks about a method (which config keys it reads, how it is built, whether it merges, packs, serves on
KAITO, how many parameters it trains).

Why one place: the answer to "can this method merge?" used to be written in four files; adding a
method meant editing eight. Now a method is one module under ``methods/`` that declares its
``MethodSpec`` and its build function, plus one ``register()`` call (the built-ins are registered
below). Torch-free at import time: ``config`` validates ``adapter.method`` against it and ``deploy``
sizes runs with it, neither of which may import torch. Build functions are named as
``"module:function"`` strings and imported only when a model is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from loraforge.config import AdapterConfig


from loraforge.methods.spec import MethodSpec, ModelShape  # noqa: F401  (re-exported)
from loraforge.errors import ConfigError

_REGISTRY: dict[str, MethodSpec] = {}


def register(spec: MethodSpec, replace: bool = False) -> MethodSpec:
    """Add a method; ``adapter.method=<spec.name>`` then validates, builds, estimates and exports."""
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"method {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get(method: str) -> MethodSpec:
    try:
        return _REGISTRY[method]
    except KeyError:

        raise ConfigError(f"adapter.method={method!r}: unknown method; choose one of: {', '.join(_REGISTRY)}") from None


def _peft_type(value: Any) -> str:
    return str(getattr(value, "value", value) or "").upper()


def spec_for_saved(adapter_config: dict) -> MethodSpec:
    """The method that wrote a saved adapter, from its adapter_config.json (e.g. ``use_dora`` -> dora).

    Our own folder kinds read as ``{"peft_type": "FULL"}`` (a whole model) and
    ``{"peft_type": "BOTTLENECK"}`` (see ``loraforge.runs.AdapterRef.peft_config``).
    """
    ptype = _peft_type(adapter_config.get("peft_type"))
    candidates = [s for s in _REGISTRY.values() if ptype in s.peft_types]
    for spec in candidates:
        if spec.saved_match is not None and spec.saved_match(adapter_config):
            return spec
    plain = [s for s in candidates if s.saved_match is None]
    if plain:
        return plain[0]

    known = sorted({t for s in _REGISTRY.values() for t in s.peft_types})
    raise ConfigError(f"adapter type {ptype or '(none)'!r} was not written by a loraforge method; "
                      f"loraforge reads: {', '.join(known)}")


def spec_for_model(model: Any) -> MethodSpec | None:
    """The method of a loaded model's active adapter; None for a bare model without one."""
    if getattr(model, "loraforge_method", None) in _REGISTRY:  # set by our own (non-PEFT) methods
        return _REGISTRY[model.loraforge_method]
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is None:
        return None
    return spec_for_saved(peft_config.to_dict())


def can_merge_model(model: Any) -> bool:
    """Whether ``model`` carries an adapter whose weights can be folded into the base weights
    (PEFT's ``merge_adapter``/``merge_and_unload``). False for a bare or fully fine-tuned model
    (nothing to merge), prompt learning (virtual tokens) and bottleneck adapters (extra layers)."""
    spec = spec_for_model(model)
    return spec is not None and spec.merges and not spec.trains_base and hasattr(model, "merge_adapter")


def unused_fields(adapter: AdapterConfig) -> list[str]:
    """Keys set explicitly (YAML or override) that the chosen method does not read.

    A key set to its default value is accepted: configs written by loraforge up to 0.1 list every key.
    """
    spec = get(adapter.method)
    defaults = type(adapter).model_fields
    return sorted(k for k in adapter.model_fields_set
                  if k != "method" and k not in spec.fields and getattr(adapter, k) != defaults[k].default)


def _register_builtins() -> None:
    from loraforge.methods import bottleneck, full, ia3, lora, prompt_learning

    for module in (lora, ia3, prompt_learning, bottleneck, full):
        for spec in module.SPECS:
            register(spec)


_register_builtins()
