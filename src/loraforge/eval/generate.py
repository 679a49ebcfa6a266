"""Batched greedy (or beam-search) generation for evaluation and translation.

Prompts are sorted by length so each batch pads little, left-padded so every row's next token sits at
the same position, and decoded with the KV cache: causal models by ``shrinking_greedy``, where a row
leaves the batch once it has its stop token or its own budget; seq2seq models by ``model.generate``,
each row cut at its budget afterwards. A base model that never stops would otherwise cost
``max_new_tokens`` on every row.

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
# It must exceed how far batch-shape rounding moves that gap: ``loraforge bench generate`` measures
# this ("gap noise") and the README shows it. In fp32 the noise is far below 1e-3. In bf16 it is as
# large as common gaps, so no margin makes bf16 exact cheaply: "auto" re-decodes nothing there, and
# exactness needs fp32 (``full_precision``).
TIE_MARGINS = {torch.float32: 1e-3}
TIE_MARGIN = "auto"  # by the model's weight dtype, from TIE_MARGINS
PREFILL_ROWS = 8  # rows prefilled together (``_prefill``)


class Sampler:
    """Temperature and nucleus (top-p) sampling for the batched decoder, from its own seeded generator:
    the same prompts, batch size and seed give the same tokens (back-translation by sampling)."""

    def __init__(self, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0):
        if temperature <= 0 or not 0 < top_p <= 1:
            raise ValueError(f"sampling needs temperature > 0 and 0 < top_p <= 1 (got {temperature}, {top_p})")
        self.temperature, self.top_p = temperature, top_p
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(logits.float() / self.temperature, dim=-1).cpu()
        sorted_p, order = probs.sort(dim=-1, descending=True)
        outside = sorted_p.cumsum(-1) - sorted_p >= self.top_p  # the nucleus: the top tokens up to mass top_p
        sorted_p = sorted_p.masked_fill(outside, 0.0)
        pick = torch.multinomial(sorted_p, 1, generator=self.generator)
        return order.gather(-1, pick).squeeze(-1).to(logits.device)


class TieTracker:
    """A logits processor that records, per row and step, the top-1 vs top-2 logit gap, and the
    smallest gap while the row is still generating (before its stop token, within its budget).
    It changes no scores."""

    def __init__(self, budgets: list[int], stop_ids: list[int] | None):
        self.budgets = torch.tensor(budgets)
        self.stops = torch.tensor(stop_ids or [], dtype=torch.long)
        self.gap = torch.full((len(budgets),), float("inf"))
        self.done = torch.zeros(len(budgets), dtype=torch.bool)
        self.steps: list[torch.Tensor] = []  # per step: every row's gap

    def __call__(self, input_ids, scores):
        self.update(torch.arange(len(self.budgets)), scores)
        return scores

    def update(self, rows: torch.Tensor, scores: torch.Tensor) -> None:
        """Scores of the batch rows ``rows`` (the others have left the batch: their gap is NaN)."""
        top = scores.topk(2, dim=-1)
        values, best = top.values.float().cpu(), top.indices[:, 0].cpu()  # best = the greedy pick
        gap = torch.full((len(self.budgets),), float("nan"))
        gap[rows] = values[:, 0] - values[:, 1]
        live = ~self.done & (len(self.steps) < self.budgets) & ~gap.isnan()
        self.gap = torch.where(live, torch.minimum(self.gap, gap), self.gap)
        self.done[rows] |= torch.isin(best, self.stops)
        self.steps.append(gap)

    def row_gaps(self, row: int) -> list[float]:
        return [float(g[row]) for g in self.steps]


@contextmanager
def full_precision(model, enabled: bool = True):
    """fp32 weights while generating, each parameter and buffer back to its own dtype afterwards.

    Why: bf16 logits are coarse, so near ties are common and batch-shape rounding decides
    them; in fp32 they are rare, and the few are re-decoded (``eval.exact``). Enter it before merging
    an adapter, so the merge and unmerge also happen in fp32 and restore the base weights exactly.
    """
    tensors = list(model.parameters()) + list(model.buffers()) if enabled else []
    half = [(t, t.dtype) for t in tensors if t.dtype in (torch.bfloat16, torch.float16)]
    for t, _ in half:
        t.data = t.data.float()
    try:
        yield model
    finally:
        for t, dtype in half:
            t.data = t.data.to(dtype)


def decode_alone(model, tokenizer, prompt: str, budget: int, stop_ids: list[int] | None, family: str = "causal",
                 logits_processor: list | None = None, **kwargs) -> list[int]:
    """One prompt, batch 1, no padding: the reference a batched greedy result must equal."""
    enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=family == "seq2seq").to(model.device)
    if stop_ids:
        kwargs["eos_token_id"] = stop_ids
    out = model.generate(**enc, max_new_tokens=budget, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                         **({"logits_processor": logits_processor} if logits_processor else {}), **kwargs)[0]
    new = out[enc["input_ids"].shape[1]:] if family == "causal" else out[1:]  # seq2seq: after the start token
    return _cut(new.tolist(), budget, stop_ids)


@torch.no_grad()
def shrinking_greedy(model, input_ids, attention_mask, budgets: list[int], stop_ids: list[int] | None,
                     ties: TieTracker | None = None, sampler: Sampler | None = None) -> list[list[int]]:
    """Greedy decoding (or, with ``sampler``, sampling) of a left-padded causal batch in which each row
    leaves the batch (and the KV cache) as soon as it has its stop token or its budget.

    Why not ``model.generate``: it keeps finished rows to the end of the batch's longest row, and on
    a CPU the LM head's matmul costs more per step the more rows it carries. The result is the same
    tokens as ``generate``; rows are cut exactly where ``_cut`` would cut them.
    """
    stops = torch.tensor(stop_ids or [], dtype=torch.long, device=input_ids.device)
    budget = torch.tensor(budgets, device=input_ids.device)
    rows = torch.arange(len(budgets), device=input_ids.device)  # original row of each live row
    out: list[list[int]] = [[] for _ in budgets]
    made = 0  # tokens each live row has: rows start together and leave when done
    mask = attention_mask
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    logits, cache = _prefill(model, input_ids, mask, positions)
    positions = positions[:, -1:]
    while True:
        if ties is not None:
            ties.update(rows.cpu(), logits)
        nxt = logits.argmax(-1) if sampler is None else sampler(logits)
        for r, t in zip(rows.tolist(), nxt.tolist()):
            out[r].append(t)
        made += 1
        keep = ~torch.isin(nxt, stops) & (made < budget[rows])
        if not keep.any():
            return out
        if not keep.all():
            kept = keep.nonzero().squeeze(1)
            cache.batch_select_indices(kept)
            rows, nxt, mask, positions = rows[kept], nxt[kept], mask[kept], positions[kept]
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
        positions = positions + 1
        logits = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=positions, past_key_values=cache,
                       use_cache=True).logits[:, -1]


def _prefill(model, input_ids, mask, positions):
    """The last position's logits and the KV cache of a left-padded batch, prefilled ``PREFILL_ROWS``
    rows at a time, each group cut to its own longest prompt.

    Why: a batch is as wide as its longest prompt, so one prefill call spends FLOPs on every pad
    column. Rows arrive sorted by length (``generate_ids``), so groups pad little. Their caches are
    padded back to the batch's width with zeros, in slots the attention mask hides, as pad slots
    always were. One call where the batch is small, where a sliding-window layer would crop a group's
    cache, where a layer's cache is not plain keys and values, or where PEFT's prompt learning
    (prefix/prompt tuning) builds the inputs and cache itself.
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    def run(rows: slice, width: int):
        cache = DynamicCache(config=model.config)
        logits = model(input_ids=input_ids[rows, -width:], attention_mask=mask[rows, -width:],
                       position_ids=positions[rows, -width:], past_key_values=cache, use_cache=True,
                       logits_to_keep=1).logits[:, -1]
        return logits, cache

    width = input_ids.shape[1]
    window = getattr(model.config, "sliding_window", None)
    prompt_learning = getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False)
    if (len(input_ids) <= PREFILL_ROWS or (window and width >= window - 1) or prompt_learning
            or not all(isinstance(layer, DynamicLayer) for layer in DynamicCache(config=model.config).layers)):
        return run(slice(None), width)
    groups = [run(slice(s, s + PREFILL_ROWS), int(mask[s:s + PREFILL_ROWS].sum(1).max()))
              for s in range(0, len(input_ids), PREFILL_ROWS)]
    cache = DynamicCache(config=model.config)
    for i in range(len(cache.layers)):
        keys, values = (torch.cat([_left_pad(getattr(c.layers[i], part), width) for _, c in groups])
                        for part in ("keys", "values"))
        cache.update(keys, values, i)
    return torch.cat([logits for logits, _ in groups]), cache


def _left_pad(states: torch.Tensor, width: int) -> torch.Tensor:
    """(batch, heads, length, dim) KV states with zeros in front, to ``width`` positions."""
    return torch.nn.functional.pad(states, (0, 0, width - states.shape[-2], 0))


def loop_end(ids: list[int], max_period: int = 32, min_repeats: int = 3, min_span: int = 24) -> int | None:
    """Where to cut ``ids`` if they end in a repetition loop: the end of the loop's first pass.

    Why: a small model can fall into repeating one phrase until its budget runs out (seen: Gemma 3
    270M on long doc paragraphs). Widening such a row's budget only buys more repeats, and the repeats
    are never a translation. A loop here is the last ``period`` tokens repeated at least
    ``min_repeats`` times back to back, covering at least ``min_span`` tokens; None when there is none.
    """
    n = len(ids)
    for period in range(1, min(max_period, n // min_repeats) + 1):
        start = n - period
        while start - period >= 0 and ids[start - period:start] == ids[start:start + period]:
            start -= period
        if (n - start) // period >= min_repeats and n - start >= min_span:
            while start > 0 and ids[start - 1] == ids[start - 1 + period]:  # a loop may begin mid-pass
                start -= 1
            return start + period
    return None


def _cut(ids: list[int], budget: int, stop_ids: list[int] | None) -> list[int]:
    """A row's new tokens up to its own budget and its first stop token (as batch 1 would end)."""
    ids = ids[:budget]
    for i, t in enumerate(ids):
        if stop_ids and t in stop_ids:
            return ids[:i + 1]
    return ids


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 256, batch_size: int = 32,
             family: str = "causal", stop_ids: list[int] | None = None, budgets: list[int] | None = None,
             progress: bool = True, forced_bos_token_id: int | None = None,
             tie_margin: float | str | None = TIE_MARGIN) -> list[str]:
    """Greedy continuations of ``prompts`` (in the input order), as text; see ``generate_ids``."""
    ids = generate_ids(model, tokenizer, prompts, max_new_tokens, batch_size, family, stop_ids, budgets, progress,
                       forced_bos_token_id, tie_margin)
    return [tokenizer.decode(x, skip_special_tokens=True).strip() for x in ids]


@torch.no_grad()
def generate_ids(model, tokenizer, prompts: list[str], max_new_tokens: int = 256, batch_size: int = 32,
                 family: str = "causal", stop_ids: list[int] | None = None, budgets: list[int] | None = None,
                 progress: bool = True, forced_bos_token_id: int | None = None,
                 tie_margin: float | str | None = TIE_MARGIN, stats: dict | None = None,
                 sampler: Sampler | None = None, num_beams: int = 1) -> list[list[int]]:
    """Generated token ids per prompt, up to and including the first stop token; greedy, drawn by
    ``sampler``, or the best of ``num_beams`` beams (``model.generate``'s beam search, to the batch's
    largest budget, each row then cut at its own). Sampled and beam rows are not re-decoded: there
    is no batch-1 greedy result to match. Beam search decodes ``batch_size // num_beams`` prompts at a
    time, so a batch holds ``batch_size`` sequences either way: ``generate`` runs a beam batch to its
    longest row's end (32 prompts x 4 beams: 2.67 s a row on 100 ``k8s:dev`` rows; this way 1.71 s,
    the same rows; docs/training.md).

    ``budgets`` caps new tokens per prompt (e.g. twice the source length). ``tie_margin``: "auto"
    (by dtype; none in bf16), a number of logits, or None to skip re-decoding near ties (faster,
    not always identical to batch 1).
    ``stats``, when given, receives how many rows were re-decoded and, where ties were tracked, each
    row's per-step gaps of the batched run (``loraforge bench generate`` measures rounding noise).
    """
    if not prompts:
        return []
    model.eval()
    budgets = [min(b, max_new_tokens) for b in (budgets or [max_new_tokens] * len(prompts))]
    add_special = family == "seq2seq"
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=add_special)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    new_ids: list[list[int]] = [[] for _ in prompts]
    extra = {} if forced_bos_token_id is None else {"forced_bos_token_id": forced_bos_token_id}
    kwargs = dict(do_sample=False, pad_token_id=tokenizer.pad_token_id, **extra)
    if stop_ids:
        kwargs["eos_token_id"] = stop_ids
    if sampler is not None:
        kwargs.update(do_sample=True, temperature=sampler.temperature, top_p=sampler.top_p, top_k=0)
        if family != "causal":  # model.generate draws from the global generator: seed it from the sampler's
            torch.manual_seed(int(torch.randint(2**31, (1,), generator=sampler.generator)))
        tie_margin = None
    if num_beams > 1:
        if sampler is not None:
            raise ValueError("beam search and sampling are exclusive: num_beams > 1 with a sampler")
        kwargs.update(num_beams=num_beams, early_stopping=True)
        tie_margin = None
    if tie_margin == "auto":
        tie_margin = TIE_MARGINS.get(next(model.parameters()).dtype)
    redo: list[int] = []
    gaps: dict[int, list[float]] = {}
    side = tokenizer.padding_side
    tokenizer.padding_side = "left" if family == "causal" else "right"
    try:
        bar = tqdm(total=len(prompts), desc="generate", unit="ex", disable=not progress, dynamic_ncols=True)
        rows = batch_size if num_beams == 1 else max(1, batch_size // num_beams)
        for s in range(0, len(order), rows):
            idx = order[s:s + rows]
            batch = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                              add_special_tokens=add_special).to(model.device)
            ties = TieTracker([budgets[i] for i in idx], stop_ids) if tie_margin is not None and len(idx) > 1 else None
            if family == "causal" and num_beams == 1:
                out = shrinking_greedy(model, batch["input_ids"], batch["attention_mask"], [budgets[i] for i in idx],
                                       stop_ids, ties, sampler)
            else:  # seq2seq, or beam search: new tokens after the prompt (causal) or the start token
                start = batch["input_ids"].shape[1] if family == "causal" else 1
                out = model.generate(**batch, max_new_tokens=max(budgets[i] for i in idx), **kwargs,
                                     **({"logits_processor": [ties]} if ties else {}))[:, start:].tolist()
            for row, i in enumerate(idx):
                new_ids[i] = _cut(out[row], budgets[i], stop_ids)
                if ties is not None and ties.gap[row] < tie_margin:
                    redo.append(i)
                if ties is not None and stats is not None:
                    gaps[i] = ties.row_gaps(row)
            bar.update(len(idx))
        bar.close()
    finally:
        tokenizer.padding_side = side
    for i in tqdm(redo, desc="re-decode near ties", unit="ex", disable=not progress or not redo, dynamic_ncols=True):
        new_ids[i] = decode_alone(model, tokenizer, prompts[i], budgets[i], stop_ids, family, **extra)
    if stats is not None:
        stats.update(redecoded=len(redo), gaps=gaps)
    return new_ids
