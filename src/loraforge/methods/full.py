"""Full fine-tuning: every weight trains; the saved result is a whole transformers model."""

from __future__ import annotations

from loraforge.methods.spec import MethodSpec, ModelShape


def count(shape: ModelShape, a) -> int:
    return shape.base_params


def build(model, cfg, family: str = "causal"):
    for p in model.parameters():
        p.requires_grad_(True)
    model.loraforge_method = "full"
    return model


SPECS = [MethodSpec("full", "every weight of the model (no adapter)", (), f"{__name__}:build", count,
                    merges=True, trains_base=True, peft_types=("FULL",))]
