"""Bottleneck adapters (Houlsby et al., 2019), our own module (``adapters/bottleneck.py``): a small
residual MLP after each attention and feed-forward block. Non-linear, so it cannot merge; only
loraforge loads it."""

from __future__ import annotations

from loraforge.methods.spec import MethodSpec, ModelShape


def count(shape: ModelShape, a) -> int:
    # per sub-layer (attention and FFN of every layer): LayerNorm (2h) + down (h*b + b) + up (b*h + h)
    return shape.layers * 2 * (2 * shape.hidden * a.bottleneck_size + a.bottleneck_size + 3 * shape.hidden)


SPECS = [MethodSpec("adapter", "bottleneck MLPs after every attention and feed-forward block (Houlsby)",
                    ("bottleneck_size",), "loraforge.adapters.bottleneck:build", count, merges=False, peft_types=("BOTTLENECK",),
                    peft_format=False)]
