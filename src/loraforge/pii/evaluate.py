"""Maskers side by side on the same labelled rows, scored by ``eval.pii.pii_metrics``, plus the
operating-point curve of the recall knob.

A finder is anything ``texts -> spans per text``: the tuned model, the model with patterns merged,
the rule baseline, Presidio. Each is rendered with plain ``[TYPE]`` placeholders (what the metrics
and the references use), timed (texts/s), and given the three numbers the issue targets: leak rate,
typed F1, and no-PII texts returned unchanged. Faithfulness of a span finder is 100% by
construction (the output is the input with spans replaced); ``faithfulness`` is the metric's own
character similarity, which also drops when words are over-masked.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from loraforge.eval.pii import pii_metrics
from loraforge.pii.spans import Span, render

Finder = Callable[[list[str]], list[list[Span]]]


def rule_finder(texts: list[str]) -> list[list[Span]]:
    """The rule baseline (``eval.pii_baseline.find_pii``) as a finder."""
    from loraforge.eval.pii_baseline import find_pii

    return [[Span(a, b, t, 1.0, "rules") for a, b, t in find_pii(text)] for text in texts]


def timed(find: Finder, texts: list[str], batch_size: int = 32) -> tuple[list[list[Span]], float]:
    """(spans per text, seconds) of one finder over ``texts``, ``batch_size`` texts per call."""
    start = time.perf_counter()
    spans: list[list[Span]] = []
    for i in range(0, len(texts), batch_size):
        spans += find(texts[i:i + batch_size])
    return spans, time.perf_counter() - start


def score_spans(records: list[dict], spans: list[list[Span]], seconds: float | None = None) -> dict:
    """Metrics of spans found in records ``{"text", "masked", "spans"?}`` (+ texts/s over ``seconds``)."""
    texts = [r["text"] for r in records]
    hyps = [render(t, s) for t, s in zip(texts, spans)]
    gold = [r["spans"] for r in records] if all("spans" in r for r in records) else None
    m = pii_metrics(texts, hyps, [r["masked"] for r in records], gold)
    negatives = [(t, h) for r, t, h in zip(records, texts, hyps) if t == r["masked"]]
    m["no_pii_unchanged"] = round(100 * sum(t == h for t, h in negatives) / len(negatives), 2) if negatives else None
    m["texts_per_s"] = round(len(texts) / seconds, 2) if seconds else None
    return m


def score(find: Finder, records: list[dict], batch_size: int = 32) -> dict:
    """Metrics of one finder over records ``{"text", "masked", "spans"?}`` and its throughput."""
    spans, seconds = timed(find, [r["text"] for r in records], batch_size)
    return score_spans(records, spans, seconds)


def compare(records: list[dict], finders: dict[str, Finder], batch_size: int = 32) -> dict[str, dict]:
    """name -> metrics, every finder on the same rows."""
    return {name: score(find, records, batch_size) for name, find in finders.items()}


COLUMNS = ("leak_rate", "typed_f1", "entity_f1", "over_masking", "no_pii_unchanged", "faithfulness", "texts_per_s")


def markdown_table(results: dict[str, dict], columns: tuple[str, ...] = COLUMNS) -> str:
    head = "| masker | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns) + "\n"
    rows = ["| " + name + " | " + " | ".join("" if m.get(c) is None else f"{m[c]}" for c in columns) + " |"
            for name, m in results.items()]
    return head + "\n".join(rows) + "\n"


CURVE_KEYS = ("leak_rate", "over_masking", "typed_f1", "entity_f1", "no_pii_unchanged")


def sweep_bias(masker, records: list[dict], biases: list[float], batch_size: int = 32,
               progress: bool = False) -> list[dict]:
    """(bias, leak rate, over-masking, ...) per bias: the recall knob's curve. ``masker``: a
    ``Masker`` (or ``ConstrainedMasker``) whose ``bias`` is set in turn and restored afterwards.
    ``progress``: a bar per bias point, since each one decodes the whole set."""
    from tqdm.auto import tqdm

    old = masker.bias
    points = []
    try:
        for b in biases:
            masker.bias = b
            with tqdm(total=len(records), desc=f"PII curve, bias {b:g}", unit="text", disable=not progress,
                      dynamic_ncols=True) as bar:
                def find(texts: list[str]) -> list[list[Span]]:
                    spans = masker.find_spans(texts)
                    bar.update(len(texts))
                    return spans

                m = score(find, records, batch_size)
            points.append({"bias": b, **{k: m[k] for k in CURVE_KEYS}})
    finally:
        masker.bias = old
    return points
