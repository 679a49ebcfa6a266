"""PII-masking metrics from (source, output, reference) triples, never printing the data.

Only the texts are passed around (the eval loop knows sources and references, not spans), so the
gold entities are recovered by aligning the source with its masked reference, and the predicted
ones by aligning the source with the model output. A placeholder that was already in the source
("[EMAIL]" in a template) is read as text, not as a mask.

- ``exact_match``: output identical to the reference (whitespace at the ends ignored).
- ``leak_rate``: gold PII values still present in the output (beyond their count in the reference).
- ``entity_p/r/f1``: predicted vs gold entity boundaries, any type; ``typed_*``: type must agree too.
- ``over_masking``: predicted placeholders that cover no PII at all.
- ``faithfulness``: character similarity of the non-PII text (placeholders and leaked values removed).
All are percentages.
"""

from __future__ import annotations

import difflib
from collections import Counter

from loraforge.data.pii_align import PLACEHOLDER, Span, align


def _strip_ws(text: str, s: Span) -> Span:
    start, end, t = s
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end, t


def _prf(tp: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    p = tp / n_pred if n_pred else 1.0
    r = tp / n_gold if n_gold else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def _non_pii(text: str, values: list[str]) -> str:
    text = PLACEHOLDER.sub("", text)
    for v in sorted(values, key=len, reverse=True):
        text = text.replace(v, "")
    return text


def pii_metrics(sources: list[str], hyps: list[str], refs: list[str],
                gold_spans: list[list[dict]] | None = None) -> dict[str, float]:
    """Masking quality over a test set (see the module docstring). ``gold_spans`` (per record,
    ``{"start", "end", "type"}``) replaces the alignment of source and reference when given."""
    if not len(sources) == len(hyps) == len(refs):
        raise ValueError(f"sources, hyps and refs differ in length: {len(sources)}, {len(hyps)}, {len(refs)}")
    exact = leaked = n_gold = n_pred = tp = tp_typed = spurious = 0
    faith = 0.0
    for i, (src, hyp, ref) in enumerate(zip(sources, hyps, refs)):
        if gold_spans is not None:
            gold = [(s["start"], s["end"], s["type"]) for s in gold_spans[i]]
        else:
            gold = align(src, ref)
        gold = [_strip_ws(src, s) for s in gold]
        pred = [_strip_ws(src, s) for s in align(src, hyp)]
        exact += hyp.strip() == ref.strip()
        values = [src[a:b] for a, b, _ in gold]
        for v, k in Counter(v for v in values if v).items():  # each gold occurrence leaks at most once
            leaked += min(k, max(0, hyp.count(v) - ref.count(v)))
        gold_bounds = {(a, b) for a, b, _ in gold}
        tp += len({(a, b) for a, b, _ in pred} & gold_bounds)
        tp_typed += len(set(pred) & set(gold))
        spurious += sum(not any(a < gb and ga < b for ga, gb, _ in gold) for a, b, _ in pred)
        n_gold += len(gold)
        n_pred += len(pred)
        faith += difflib.SequenceMatcher(None, _non_pii(ref, values), _non_pii(hyp, values), autojunk=False).ratio()
    n = len(sources)
    p, r, f1 = _prf(tp, n_pred, n_gold)
    tp_, tr_, tf1 = _prf(tp_typed, n_pred, n_gold)
    pct = lambda x: round(100 * x, 2)  # noqa: E731
    return {
        "exact_match": pct(exact / n) if n else 0.0,
        "leak_rate": pct(leaked / n_gold) if n_gold else 0.0,
        "entity_f1": pct(f1), "entity_p": pct(p), "entity_r": pct(r),
        "typed_f1": pct(tf1), "typed_p": pct(tp_), "typed_r": pct(tr_),
        "over_masking": pct(spurious / n_pred) if n_pred else 0.0,
        "faithfulness": pct(faith / n) if n else 0.0,
        "n": n,
    }
