"""Every PII masker on the same rows of the test split and of the hand-written set: the table
``loraforge eval`` prints and the run report shows (``runs.PiiComparison`` in metrics.json).

Rows per set: the tuned model alone (copy-or-mask decoding, ``merge=model``), the model with the
validated patterns merged (``union``, what ``loraforge mask`` runs), the validated patterns alone,
the rule baseline (``eval.pii_baseline``) and Presidio's analyzer when it is installed (``presidio``
says whether with a spaCy model or its pattern recognizers only, or why it did not run). The model
decodes each set once: both rows put the same model spans through ``Masker.combine`` (the union row exactly as
``loraforge mask`` does, with the union's own rules), and their texts/s count the decoding plus their own
combining. Scores only, never the texts.

``curve_run``: the recall knob's curve (``runs.PiiCurve``) of the tuned model alone on the dev split,
where an operating point may be picked without looking at the test rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from loraforge.pii.evaluate import rule_finder, score_spans, sweep_bias, timed
from loraforge.pii.masker import Masker, MaskOptions
from loraforge.runs.metrics import MaskerScores, PiiComparison, PiiCurve, PiiCurvePoint

HANDWRITTEN = "pii-handwritten"
MODEL, UNION, PATTERNS, RULES, PRESIDIO = "tuned model", "model + patterns", "validated patterns", "rule baseline", \
    "presidio"


def records(examples) -> list[dict]:
    """``Example``s as scoring records; gold ``spans`` kept when the data has them."""
    return [{"text": e.source, "masked": e.target, **({"spans": e.meta["spans"]} if "spans" in e.meta else {})}
            for e in examples]


def eval_sets(cfg, handwritten_limit: int | None = None) -> dict[str, list[dict]]:
    """name -> records: the config's test split (``eval.max_examples`` rows) and the hand-written set
    (whole unless ``handwritten_limit``)."""
    from loraforge.data.formats import load_examples
    from loraforge.data.splits import test_examples
    from loraforge.pii.handwritten import folder

    return {cfg.data.test: records(test_examples(cfg)),
            HANDWRITTEN: records(load_examples(str(folder() / "eval.jsonl.gz"), limit=handwritten_limit))}


def presidio_finder(enabled: bool = True) -> tuple[Callable | None, str]:
    """(finder or None, how it runs or why not)."""
    from loraforge.pii.presidio import PresidioFinder, unavailable

    reason = "not asked for" if not enabled else unavailable()
    if reason:
        return None, f"not run: {reason}"
    finder = PresidioFinder()
    return finder.find_spans, finder.mode


def _row(name: str, masker: str, scores: dict) -> MaskerScores:
    return MaskerScores(set=name, masker=masker, **{k: v for k, v in scores.items() if k in MaskerScores.model_fields})


def compare_sets(sets: dict[str, list[dict]], model=None, bias: float | None = None,
                 presidio: bool = True) -> PiiComparison:
    """The table over ``sets`` (name -> records). ``model``: a ``ConstrainedMasker`` (anything with
    ``find_spans``) for the two model rows, None to leave them out."""
    find_presidio, mode = presidio_finder(presidio)
    patterns = Masker(options=MaskOptions(merge="patterns")).find_spans
    rows = []
    for name, recs in sets.items():
        texts = [r["text"] for r in recs]
        whole = max(1, len(texts))  # one call: the decoder batches by length itself
        pat_spans, pat_s = timed(patterns, texts, whole)
        if model is not None:
            found, decode_s = timed(Masker(model, MaskOptions(merge="model")).model_spans, texts, whole)  # read once
            for masker_name, merge in ((MODEL, "model"), (UNION, "union")):  # union: what ``loraforge mask`` runs
                masker, start = Masker(model, MaskOptions(merge=merge)), time.perf_counter()
                spans = [masker.combine(t, m) for t, m in zip(texts, found)]
                rows.append(_row(name, masker_name, score_spans(recs, spans, decode_s + time.perf_counter() - start)))
        rows.append(_row(name, PATTERNS, score_spans(recs, pat_spans, pat_s)))
        rows.append(_row(name, RULES, score_spans(recs, *timed(rule_finder, texts, whole))))
        if find_presidio is not None:
            rows.append(_row(name, PRESIDIO, score_spans(recs, *timed(find_presidio, texts, whole))))
    return PiiComparison(rows=rows, bias=bias if model is not None else None, presidio=mode)


def compare_run(cfg, model, tokenizer, bias: float | None = None, handwritten_limit: int | None = None,
                presidio: bool = True, batch_size: int = 8) -> PiiComparison:
    """The table for a tuned PII model (its adapter merged while decoding), prompted as it was trained."""
    from loraforge.eval.inference import merged_for_inference
    from loraforge.pii.masker import model_finder

    sets = eval_sets(cfg, handwritten_limit)
    with merged_for_inference(model):
        masker = model_finder(model, tokenizer, cfg.data, bias=bias, batch_size=batch_size)
        return compare_sets(sets, masker, masker.bias, presidio)


def dev_records(cfg) -> tuple[str, list[dict]]:
    """(split name, records) of the config's dev split, its first ``data.max_dev_examples`` rows."""
    from loraforge.config import ConfigError
    from loraforge.data.splits import split_examples

    if not cfg.data.dev:
        raise ConfigError("the PII curve is scored on the dev split (the operating point is picked there, never on "
                          "test): set data.dev, e.g. data.dev=pii:dev")
    return cfg.data.dev, records(split_examples(cfg, cfg.data.dev, cfg.data.max_dev_examples))


def curve_run(cfg, model, tokenizer, biases: list[float], batch_size: int = 8, progress: bool = True,
              dev: tuple[str, list[dict]] | None = None) -> PiiCurve:
    """Leak rate and over-masking of the tuned model alone (``merge=model``) at each bias, on dev
    (``dev``: ``dev_records(cfg)`` already read, e.g. to check it before the model loaded)."""
    from loraforge.eval.inference import merged_for_inference
    from loraforge.pii.masker import model_finder

    name, recs = dev or dev_records(cfg)
    with merged_for_inference(model):
        masker = model_finder(model, tokenizer, cfg.data, batch_size=batch_size)
        # four batches per call: the decoder sorts each call's texts by length; the bar moves per call
        points = sweep_bias(masker, recs, list(biases), batch_size=max(batch_size * 4, 1), progress=progress)
    return PiiCurve(set=name, n=len(recs), points=[PiiCurvePoint(**p) for p in points])
