"""Did the adapter reach the GGUF? Logits that roughly agree with the tuned model also agree with the
base model when the adapter's change is small, so the export tests compare weights instead: where LoRA
applies, a quantized merged weight lies nearer the merged weight than the base weight.

On Gemma 3 270M (layers 0, 8, 17; q/v/down_proj; B ~ N(0, 0.01), r=4, alpha=8, q8_0), the mean
distance to the merged weight is 0.16-0.28 of the distance to the base weight; a GGUF written without
the adapter gives 4-18, one with half the adapter 1.0-1.2. ``MARGIN`` sits between them.
"""

from __future__ import annotations

import torch

MARGIN = 0.5


def lora_weights(peft_model) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{plain model's weight name: (base weight, merged weight)} for every LoRA-adapted linear layer."""
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, module in peft_model.named_modules():
        if isinstance(module, LoraLayer) and module.lora_A:
            base = module.get_base_layer().weight.detach().float().clone()
            delta = module.get_delta_weight(module.active_adapters[0]).detach().float()
            out[name.removeprefix("base_model.model.") + ".weight"] = (base, base + delta)
    assert out, "no LoRA layers: nothing to check"
    return out


def distances(model, weights: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float]:
    """(mean |w - merged|, mean |w - base|) over the LoRA-adapted weights of ``model``."""
    state = model.state_dict()
    to_merged = to_base = 0.0
    for name, (base, merged) in weights.items():
        w = state[name].detach().float()
        to_merged += float((w - merged).abs().sum())
        to_base += float((w - base).abs().sum())
    n = sum(base.numel() for base, _ in weights.values())
    return to_merged / n, to_base / n


def assert_adapter_merged(model, weights: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    to_merged, to_base = distances(model, weights)
    assert to_merged < MARGIN * to_base, (
        f"the weights are not the merged adapter's: mean distance {to_merged:.3g} to the merged weights, "
        f"{to_base:.3g} to the base weights")
