"""Extra test sets (``eval.extra_tests``) scored beside the test split, and whether training saw them.

A held-out section (``k8s:tutorials``: every page under docs/tutorials/) only measures transfer to
another style of page when the run did not train on those pages (``data.exclude_sources``). Whether
it did is decided from the data, not the config: a training row whose page path (``meta['source']``)
is one of the set's pages makes the set contaminated, and the report says so. Scoring reuses the
per-task evaluation of multi-task runs (``evaluate_tasks``): the same generation and metrics.
"""

from __future__ import annotations

import json

from loraforge.config import RunConfig
from loraforge.data.formats import Example
from loraforge.runs import HeldOutScores, RunDir, RunMetrics, atomic_write

BEFORE_FILE = "metrics_before_extra.json"
"""The base model's scores on the extra tests, kept in the run so a resume does not score them again."""


def _pages(examples: list[Example]) -> set[str]:
    return {e.meta["source"] for e in examples if isinstance(e.meta.get("source"), str)}


def contamination(train: list[Example], test: list[Example]) -> tuple[int, int, int]:
    """(training rows from the test's pages, test pages training saw, test pages)."""
    pages = _pages(test)
    hit = [e.meta["source"] for e in train if e.meta.get("source") in pages]
    return len(hit), len(set(hit)), len(pages)


def score_before(run: RunDir, cfg: RunConfig, loaded, tests: dict[str, tuple], progress: bool = True) -> dict | None:
    """The base model's scores on ``tests`` (``data.splits.extra_tests``), kept in the run: a resumed run
    scores only the sets it has no scores for."""
    from loraforge.eval.inference import evaluate_tasks

    if not (cfg.eval.before and tests):
        return None
    path = run / BEFORE_FILE
    saved = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    todo = {name: t for name, t in tests.items() if name not in saved}
    if todo:
        results = evaluate_tasks(loaded, loaded.model, cfg, todo, progress)
        for name, (scores, hyps) in results.items():
            run.write_outputs(f"before-{name}", [e.id for e in todo[name][1]], hyps)
            saved[name] = scores
        atomic_write(path, json.dumps(saved, indent=2))
    return {name: saved.get(name) for name in tests}


def score_after(cfg: RunConfig, loaded, model, tests: dict[str, tuple], train: list[Example],
                before: dict | None = None, run: RunDir | None = None, progress: bool = True
                ) -> dict[str, HeldOutScores]:
    """The model's scores on ``tests`` with, per set, how much of it ``train`` (the training rows,
    after data.exclude_sources) holds; outputs saved in ``run`` when given."""
    from loraforge.eval.inference import evaluate_tasks

    results = evaluate_tasks(loaded, model, cfg, tests, progress)
    out = {}
    for name, (data, examples) in tests.items():
        after, hyps = results.get(name, ({}, []))
        if run is not None and hyps:
            run.write_outputs(f"after-{name}", [e.id for e in examples], hyps)
        rows, hit, pages = contamination(train, examples)
        out[name] = HeldOutScores(split=cfg.eval.extra_tests[name], before=(before or {}).get(name), after=after,
                                  documents=pages, trained_rows=rows, trained_documents=hit)
    return out


def as_metrics(scores: dict[str, HeldOutScores]) -> dict:
    """The ``extra_tests`` entry of metrics.json ({} when there are none, so nothing is added)."""
    return {"extra_tests": {name: s.model_dump() for name, s in scores.items()}} if scores else {}


def held_out(metrics: RunMetrics) -> dict[str, HeldOutScores]:
    """A run's extra test sets, read back from its metrics.json ({} for runs without)."""
    return metrics.extra_tests or {}
