"""IA3 (Liu et al., 2022): a learned scale per output feature of the targeted layers, built by PEFT.
A diagonal weight delta, so it merges."""

from __future__ import annotations

from loraforge.methods.spec import MethodSpec, ModelShape


def count(shape: ModelShape, a) -> int:
    return shape.layers * sum(o for _, o in shape.targets.values())


def build(model, cfg, family: str = "causal"):
    import peft

    from loraforge.methods._peft import check_targets, task_type, wrap

    check_targets(model, cfg.target_modules)
    config = peft.IA3Config(task_type=task_type(family), target_modules=cfg.target_modules, feedforward_modules=[])
    return wrap(model, cfg.method, config)


SPECS = [MethodSpec("ia3", "a learned scale per output feature of the targeted layers", ("target_modules",),
                    f"{__name__}:build", count, merges=True, peft_types=("IA3",))]
