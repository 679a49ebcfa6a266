"""Batched greedy generation for evaluation and translation.

Prompts are sorted by length so each batch pads little, left-padded so every row's next token sits at
the same position, and decoded with the KV cache by ``model.generate``. Each batch stops as soon as
all its rows have produced a stop token, and every row is cut at its own budget: a base model that
never stops would otherwise cost ``max_new_tokens`` on every row.

Exactness: a batched matmul rounds differently from a batch-1 one, so where the two best logits of a
step are nearly tied, batched greedy decoding can pick another token than a batch-1 loop would, and
the texts diverge from there. ``tie_margin`` makes the result the batch-1 result: each row's
smallest best-vs-second logit gap is tracked while it generates, and rows that came closer than the
margin are decoded again on their own (``loraforge bench generate`` counts them and checks the result).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from tqdm.auto import tqdm

# How close (in logits) the two best tokens of a step may come before a row is re-decoded alone.
# Measured on the tuned demo model (782 decode steps, batch 16 vs batch 1, same prefixes): fp32
# logits moved by at most 1.4e-4, so a gap moves by at most ~3e-4; the margin leaves 3x headroom.
# In bf16 they moved by up to 1.25 (median 0.375), as much as common gaps: no margin makes bf16
# exact cheaply, so "auto" re-decodes nothing there; exactness needs fp32 (``full_precision``).
TIE_MARGINS = {torch.float32: 1e-3}
TIE_MARGIN = "auto"  # by the model's weight dtype, from TIE_MARGINS


class _TieTracker:
    """A logits processor that records, per row, the smallest top-1 vs top-2 logit gap while the row
    is still generating (before its stop token and within its budget). It changes no scores."""

    def __init__(self, budgets: list[int], stop_ids: list[int] | None):
        self.budgets = torch.tensor(budgets)
        self.stops = torch.tensor(stop_ids or [], dtype=torch.long)
        self.gap = torch.full((len(budgets),), float("inf"))
        self.done = torch.zeros(len(budgets), dtype=torch.bool)
        self.step = 0

    def __call__(self, input_ids, scores):
        top = scores.float().topk(2, dim=-1).values.cpu()
        live = ~self.done & (self.step < self.budgets)
        self.gap = torch.where(live, torch.minimum(self.gap, top[:, 0] - top[:, 1]), self.gap)
        if self.stops.numel():
            self.done |= torch.isin(scores.argmax(-1).cpu(), self.stops)
        self.step += 1
        return scores


@contextmanager
def full_precision(model, enabled: bool = True):
    """fp32 weights while generating, each parameter and buffer back to its own dtype afterwards.

    Why: bf16 logits are spaced ~0.1 apart, so near ties are common and batch-shape rounding decides
    them; in fp32 they are rare, and the few are re-decoded (``eval.exact``). Enter it before merging
    an adapter, so the merge and unmerge also happen in fp32 and restore the base weights exactly.
    """
    tensors = list(model.parameters()) + list(model.buffers())
    dtypes = [t.dtype for t in tensors]
    if not enabled or all(d in (torch.float32, torch.float64) or not d.is_floating_point for d in dtypes):
        yield model
        return
    for t in tensors:
        if t.dtype.is_floating_point:
            t.data = t.data.float()
    try:
        yield model
    finally:
        for t, d in zip(tensors, dtypes):
            t.data = t.data.to(d)


def _cut(ids: list[int], budget: int, stop_ids: list[int] | None) -> list[int]:
    """A row's new tokens up to its own budget and its first stop token (as batch 1 would end)."""
    ids = ids[:budget]
    for i, t in enumerate(ids):
        if stop_ids and t in stop_ids:
            return ids[:i + 1]
    return ids


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 256, batch_size: int = 16,
             family: str = "causal", stop_ids: list[int] | None = None, budgets: list[int] | None = None,
             progress: bool = True, forced_bos_token_id: int | None = None,
             tie_margin: float | str | None = TIE_MARGIN) -> list[str]:
    """Greedy continuations of ``prompts`` (in the input order), as text; see ``generate_ids``."""
    ids = generate_ids(model, tokenizer, prompts, max_new_tokens, batch_size, family, stop_ids, budgets, progress,
                       forced_bos_token_id, tie_margin)
    return [tokenizer.decode(x, skip_special_tokens=True).strip() for x in ids]


@torch.no_grad()
def generate_ids(model, tokenizer, prompts: list[str], max_new_tokens: int = 256, batch_size: int = 16,
                 family: str = "causal", stop_ids: list[int] | None = None, budgets: list[int] | None = None,
                 progress: bool = True, forced_bos_token_id: int | None = None,
                 tie_margin: float | str | None = TIE_MARGIN, stats: dict | None = None) -> list[list[int]]:
    """Generated token ids per prompt, up to and including the first stop token.

    ``budgets`` caps new tokens per prompt (e.g. twice the source length). ``tie_margin``: "auto"
    (by dtype; none in bf16), a number of logits, or None to skip re-decoding near ties (faster,
    not always identical to batch 1).
    ``stats``, when given, receives how many rows were re-decoded.
    """
    if not prompts:
        return []
    model.eval()
    budgets = [min(b, max_new_tokens) for b in (budgets or [max_new_tokens] * len(prompts))]
    add_special = family == "seq2seq"
    start = 0 if family == "causal" else 1  # seq2seq outputs begin with the decoder start token
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=add_special)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    new_ids: list[list[int]] = [[] for _ in prompts]
    kwargs = dict(do_sample=False, pad_token_id=tokenizer.pad_token_id)
    if stop_ids:
        kwargs["eos_token_id"] = stop_ids
    if forced_bos_token_id is not None:
        kwargs["forced_bos_token_id"] = forced_bos_token_id
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    if tie_margin == "auto":
        tie_margin = TIE_MARGINS.get(dtype)
    redo: list[int] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left" if family == "causal" else "right"
    try:
        bar = tqdm(total=len(prompts), desc="generate", unit="ex", disable=not progress, dynamic_ncols=True)
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            batch = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                              add_special_tokens=add_special).to(device)
            ties = _TieTracker([budgets[i] for i in idx], stop_ids) if tie_margin is not None and len(idx) > 1 else None
            out = model.generate(**batch, max_new_tokens=max(budgets[i] for i in idx), **kwargs,
                                 **({"logits_processor": [ties]} if ties else {}))
            out = out[:, batch["input_ids"].shape[1]:] if family == "causal" else out[:, start:]
            for row, i in enumerate(idx):
                new_ids[i] = _cut(out[row].tolist(), budgets[i], stop_ids)
                if ties is not None and ties.gap[row] < tie_margin:
                    redo.append(i)
            bar.update(len(idx))
        bar.close()
    finally:
        tokenizer.padding_side = side
    for i in tqdm(redo, desc="re-decode near ties", unit="ex", disable=not progress or not redo,
                  dynamic_ncols=True):  # decode alone, exactly as a batch-1 loop does
        enc = tokenizer(prompts[i], return_tensors="pt", add_special_tokens=add_special).to(device)
        out = model.generate(**enc, max_new_tokens=budgets[i], **kwargs)[0]
        new_ids[i] = _cut((out[enc["input_ids"].shape[1]:] if family == "causal" else out[start:]).tolist(),
                          budgets[i], stop_ids)
    if stats is not None:
        stats["redecoded"] = len(redo)
    return new_ids
