"""A method added the way a contributor would add one: this module plus one ``registry.register`` call.

LayerNorm tuning (Zhao et al., 2023): only the normalisation weights train. Not shipped; the test
in test_registry.py registers it and trains, estimates and exports through the registry alone.
"""

from __future__ import annotations

from loraforge.methods.registry import MethodSpec, ModelShape


def count(shape: ModelShape, a) -> int:
    # Gemma 3: four norms per layer (hidden) and q/k norms (head_dim), plus the final norm
    return shape.layers * (4 * shape.hidden + 2 * shape.head_dim) + shape.hidden


def build(model, cfg, family: str = "causal"):
    for name, p in model.named_parameters():
        p.requires_grad_("norm" in name.rsplit(".", 2)[-2])
    model.loraforge_method = "lnorm"
    return model


SPEC = MethodSpec("lnorm", "only the normalisation weights train", (), f"{__name__}:build", count, merges=True)
