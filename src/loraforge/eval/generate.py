"""Batched greedy generation for evaluation and translation.

Prompts are sorted by length so each batch pads little, left-padded so every row's next token sits at
the same position, and decoded with the KV cache by ``model.generate``. Each batch stops as soon as
all its rows have produced a stop token, and never runs past a per-row budget: a base model that
never stops would otherwise cost ``max_new_tokens`` on every row.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 256, batch_size: int = 16,
             family: str = "causal", stop_ids: list[int] | None = None, budgets: list[int] | None = None,
             progress: bool = True, forced_bos_token_id: int | None = None) -> list[str]:
    """Greedy continuations of ``prompts`` (in the input order).

    ``budgets`` caps new tokens per prompt (e.g. twice the source length); a batch runs to its
    largest budget, bounded by ``max_new_tokens``.
    """
    if not prompts:
        return []
    model.eval()
    budgets = budgets or [max_new_tokens] * len(prompts)
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=family == "seq2seq")["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    outputs: list[str] = [""] * len(prompts)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left" if family == "causal" else "right"
    device = next(model.parameters()).device
    try:
        bar = tqdm(total=len(prompts), desc="generate", unit="ex", disable=not progress, dynamic_ncols=True)
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            batch = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                              add_special_tokens=family == "seq2seq").to(device)
            limit = min(max_new_tokens, max(budgets[i] for i in idx))
            kwargs = dict(max_new_tokens=limit, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            if stop_ids:
                kwargs["eos_token_id"] = stop_ids
            if forced_bos_token_id is not None:
                kwargs["forced_bos_token_id"] = forced_bos_token_id
            out = model.generate(**batch, **kwargs)
            if family == "causal":
                out = out[:, batch["input_ids"].shape[1]:]
            for row, i in enumerate(idx):
                outputs[i] = tokenizer.decode(out[row], skip_special_tokens=True).strip()
            bar.update(len(idx))
        bar.close()
    finally:
        tokenizer.padding_side = side
    return outputs
