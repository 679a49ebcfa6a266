"""Prefix tuning (Li & Liang, 2021) and prompt tuning (Lester et al., 2021): learned virtual tokens,
built by PEFT. They change the inputs (a key/value prefix per layer, or input embeddings), not the
layers: nothing to merge, and rows cannot be packed."""

from __future__ import annotations

from loraforge.methods.spec import MethodSpec, ModelShape


def count_prefix(shape: ModelShape, a) -> int:
    return a.num_virtual_tokens * shape.layers * 2 * shape.kv_dim  # a key and a value per layer


def count_prompt(shape: ModelShape, a) -> int:
    return a.num_virtual_tokens * shape.hidden


def build(model, cfg, family: str = "causal"):
    import peft

    from loraforge.methods._peft import task_type, wrap

    cls = peft.PrefixTuningConfig if cfg.method == "prefix" else peft.PromptTuningConfig
    return wrap(model, cfg.method, cls(task_type=task_type(family), num_virtual_tokens=cfg.num_virtual_tokens))


SPECS = [
    MethodSpec("prefix", "learned key/value vectors prepended in every attention layer", ("num_virtual_tokens",),
               f"{__name__}:build", count_prefix, merges=False, prompt_learning=True, peft_types=("PREFIX_TUNING",)),
    MethodSpec("prompt", "learned input embeddings prepended to every prompt", ("num_virtual_tokens",),
               f"{__name__}:build", count_prompt, merges=False, prompt_learning=True, peft_types=("PROMPT_TUNING",)),
]
