"""Bottleneck adapters (Houlsby et al., 2019): a small residual MLP after each attention and each
feed-forward block. PEFT has no such method, so this is our own small module.

    h  ->  h + up(act(down(LayerNorm(h))))

``up`` starts at zero, so a freshly adapted model computes exactly what the base model computes.
The adapters hang off the sub-layers they follow (``<layer>.self_attn.loraforge_adapter``) and run
as forward hooks on them: the base model's code is untouched, so the same function adapts Gemma 3,
Qwen2, Llama (``self_attn``, ``mlp``) and Marian/mBART encoder and decoder layers (``self_attn``,
``fc2``). The saved folder is ``bottleneck_config.json`` + ``adapter_model.safetensors`` (only the
adapter weights). The extra layers are non-linear, so unlike LoRA they cannot be merged into the
base weights: serving needs the base model plus this module.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from loraforge.config import AdapterConfig, ConfigError

CONFIG_NAME = "bottleneck_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
ATTR = "loraforge_adapter"  # the child module name under each adapted sub-layer
# Sub-layers an adapter follows: attention and feed-forward of decoder-only (self_attn or attn, mlp) and
# Marian/mBART (self_attn, fc2: their FFN is fc1 -> act -> fc2, with no module around it) layers.
SUBLAYERS = ("self_attn", "attn", "mlp", "fc2")


class Bottleneck(torch.nn.Module):
    def __init__(self, hidden: int, size: int, activation: str = "gelu"):
        super().__init__()
        self.norm = torch.nn.LayerNorm(hidden)
        self.down = torch.nn.Linear(hidden, size)
        self.act = {"gelu": torch.nn.GELU(), "relu": torch.nn.ReLU(), "silu": torch.nn.SiLU()}[activation]
        self.up = torch.nn.Linear(size, hidden)
        torch.nn.init.zeros_(self.up.weight)  # identity at the start: training begins from the base model
        torch.nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.act(self.down(self.norm(h))))


def _hook(module: torch.nn.Module, args, output):
    adapter = getattr(module, ATTR)
    if isinstance(output, tuple):  # attention returns (hidden, weights, ...)
        return (adapter(output[0]),) + tuple(output[1:])
    return adapter(output)


def _hidden_size(config) -> int:
    for key in ("hidden_size", "d_model"):
        if isinstance(getattr(config, key, None), int):
            return getattr(config, key)
    text = getattr(config, "get_text_config", lambda: None)()
    if text is not None and text is not config:
        return _hidden_size(text)
    raise ConfigError(f"adapter.method=adapter: cannot find the hidden size of {type(config).__name__}")


def target_sublayers(model: torch.nn.Module) -> list[str]:
    """Names of the attention and feed-forward sub-layers of every transformer layer (encoder and decoder)."""
    names = []
    for name, module in model.named_modules():
        parts = name.split(".")
        # a sub-layer of a layer that sits in a ModuleList: '...layers.3.self_attn'
        if len(parts) >= 3 and parts[-1] in SUBLAYERS and parts[-2].isdigit():
            names.append(name)
    return names


def _attach(model: torch.nn.Module, names: list[str], hidden: int, size: int, activation: str) -> None:
    modules = dict(model.named_modules())
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    for name in names:
        sub = modules[name]
        if hasattr(sub, ATTR):
            raise ConfigError(f"{name} already has a bottleneck adapter")
        sub.add_module(ATTR, Bottleneck(hidden, size, activation).to(device=device, dtype=dtype))
        sub.register_forward_hook(_hook)
    model.loraforge_bottleneck = True
    model.loraforge_method = "adapter"  # the registry's name for it (registry.spec_for_model)
    model.loraforge_bottleneck_config = {"method": "adapter", "bottleneck_size": size, "activation": activation,
                                         "hidden_size": hidden, "sublayers": names}


def build(model, cfg: AdapterConfig, family: str = "causal"):
    """The registry's build function for method ``adapter`` (named by string, so the registry that
    ``config`` imports never imports this torch module)."""
    return add_bottleneck_adapters(model, cfg)


def add_bottleneck_adapters(model: torch.nn.Module, cfg: AdapterConfig, activation: str = "gelu") -> torch.nn.Module:
    """Freeze ``model`` and add a trainable bottleneck adapter after every attention and FFN sub-layer."""
    names = target_sublayers(model)
    if not names:
        raise ConfigError(
            f"adapter.method=adapter: found no attention/feed-forward sub-layers ({', '.join(SUBLAYERS)}) in "
            f"{type(model).__name__}; supported: Gemma 3, Qwen2, Llama, Marian, mBART and similar layouts"
        )
    for p in model.parameters():
        p.requires_grad_(False)
    _attach(model, names, _hidden_size(model.config), cfg.bottleneck_size, activation)
    return model


def adapter_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous() for n, p in model.named_parameters() if f".{ATTR}." in n}


def save_bottleneck(model: torch.nn.Module, out_dir: str | Path) -> Path:
    """Write bottleneck_config.json and adapter_model.safetensors (adapter weights only) into ``out_dir``,
    each file atomically and 0644."""
    from loraforge.runs import atomic_write

    out_dir = Path(out_dir)
    config = dict(model.loraforge_bottleneck_config)
    config["base_model"] = getattr(model.config, "_name_or_path", None)
    atomic_write(out_dir / WEIGHTS_NAME, save(adapter_state(model), metadata={"format": "pt"}))
    atomic_write(out_dir / CONFIG_NAME, json.dumps(config, indent=2))
    return out_dir


def load_bottleneck_adapters(model: torch.nn.Module, adapter_dir: str | Path, trainable: bool = False) -> torch.nn.Module:
    """Attach a saved bottleneck adapter to a (fresh) base model; frozen unless ``trainable``."""
    adapter_dir = Path(adapter_dir)
    config = json.loads((adapter_dir / CONFIG_NAME).read_text())
    available = set(dict(model.named_modules()))
    missing = [n for n in config["sublayers"] if n not in available]
    if missing:
        raise ConfigError(f"{adapter_dir}: adapter was trained on another architecture; this model lacks {missing[:3]}")
    hidden = _hidden_size(model.config)
    if hidden != config["hidden_size"]:
        raise ConfigError(f"{adapter_dir}: adapter hidden size {config['hidden_size']} != model's {hidden}")
    for p in model.parameters():
        p.requires_grad_(False)
    _attach(model, config["sublayers"], hidden, config["bottleneck_size"], config["activation"])
    weights = load_file(str(adapter_dir / WEIGHTS_NAME))
    params = dict(model.named_parameters())
    if set(weights) != set(adapter_state(model)):
        raise ConfigError(f"{adapter_dir}: {WEIGHTS_NAME} does not match {CONFIG_NAME}")
    with torch.no_grad():
        for name, w in weights.items():
            params[name].copy_(w)
            params[name].requires_grad_(trainable)
    return model
