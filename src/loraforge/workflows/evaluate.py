"""``loraforge eval`` and ``loraforge report``: score a base model or an adapter on the test split,
and rebuild a finished run's report from its own files."""

from __future__ import annotations

import json
from pathlib import Path

from loraforge.config import RunConfig
from loraforge.data.formats import DataError
from loraforge.data.splits import test_examples
from loraforge.eval.inference import evaluate, load_for_inference
from loraforge.runs import RunDir, atomic_write, resolve_adapter

__all__ = ["eval_run", "evaluate", "rebuild_report"]


def eval_run(cfg: RunConfig, adapter: str | Path | None = None, out_path: str | Path | None = None,
             show_examples: bool = False) -> dict:
    """Evaluate the base model (or an adapter) on the config's test split; returns the metrics.
    The test data and the adapter path are checked before the model loads. A multi-task config
    (data.tasks) scores every task with a test split on its own: {"tasks": {name: metrics}}."""
    if cfg.data.tasks:
        return _eval_tasks(cfg, adapter, out_path, show_examples)
    test = test_examples(cfg)
    loaded, model = load_for_inference(cfg, adapter)
    metrics, hyps = evaluate(loaded, model, cfg, test)
    if cfg.data.task == "pii" and adapter is not None:
        metrics["pii_compare"] = pii_side_by_side(cfg, loaded, model, adapter).model_dump()
    if show_examples:
        for e, h in list(zip(test, hyps))[: cfg.eval.samples_in_report]:
            print(json.dumps({"source": e.source, "reference": e.target, "output": h}, ensure_ascii=False))
    if out_path:
        atomic_write(out_path, json.dumps(metrics, indent=2))
    return metrics


def _eval_tasks(cfg: RunConfig, adapter: str | Path | None, out_path: str | Path | None,
                show_examples: bool) -> dict:
    """``eval_run`` for data.tasks: each task's test split under its own settings and metrics."""
    from loraforge.data.splits import task_tests
    from loraforge.eval.inference import evaluate_tasks

    tests = task_tests(cfg)
    if not any(examples for _, examples in tests.values()):
        raise DataError("no entry of data.tasks has a test split: nothing to evaluate")
    loaded, model = load_for_inference(cfg, adapter)
    results = evaluate_tasks(loaded, model, cfg, tests)
    if show_examples:
        for name, (_, hyps) in results.items():
            for e, h in list(zip(tests[name][1], hyps))[: cfg.eval.samples_in_report]:
                print(json.dumps({"task": name, "source": e.source, "reference": e.target, "output": h},
                                 ensure_ascii=False))
    metrics = {"tasks": {name: m for name, (m, _) in results.items()}}
    if out_path:
        atomic_write(out_path, json.dumps(metrics, indent=2))
    return metrics


def rebuild_report(run_dir: str | Path | RunDir) -> Path:
    """Re-write a finished run's report (and, for PII, its baseline column) from the run's own files."""
    from loraforge.eval.report import write_run_report

    run = RunDir(run_dir)
    metrics = run.metrics()  # a clear error when the run is not finished
    cfg = run.config()
    if cfg.data.tasks:
        from loraforge.data.splits import task_tests

        return write_run_report(run, cfg, metrics, [], [], task_tests=task_tests(cfg))
    test = test_examples(cfg) if cfg.data.test else []
    if cfg.data.task == "pii" and test and metrics.baseline is None:
        from loraforge.eval.pii_baseline import baseline_eval

        metrics.baseline = baseline_eval(cfg)
        run.write_metrics(metrics)
    outputs = run.outputs("after")
    return write_run_report(run, cfg, metrics, test, [outputs.get(e.id, "") for e in test])


def pii_side_by_side(cfg: RunConfig, loaded, model, adapter: str | Path):
    """The PII maskers side by side (``pii.sidebyside``); stored in the adapter's run (metrics.json and
    report) when it is a finished run, so its report shows the table too."""
    import sys

    from loraforge.pii.sidebyside import compare_run

    table = compare_run(cfg, model, loaded.tokenizer)
    run = resolve_adapter(adapter).run
    if run is not None and run.is_finished():
        metrics = run.metrics()
        metrics.pii_compare = table
        run.write_metrics(metrics)
        print(f"loraforge: updated {run.metrics_path} and {rebuild_report(run)}", file=sys.stderr)
    return table
