"""``loraforge eval`` and ``loraforge report``: score a base model or an adapter on the test split,
and rebuild a finished run's report from its own files."""

from __future__ import annotations

import json
from pathlib import Path

from loraforge.config import RunConfig
from loraforge.data.formats import DataError
from loraforge.data.splits import extra_tests, test_examples
from loraforge.eval.inference import evaluate, load_for_inference
from loraforge.runs import AdapterRef, RunDir, atomic_write, resolve_adapter

__all__ = ["eval_run", "evaluate", "rebuild_report"]


def eval_run(cfg: RunConfig, adapter: str | Path | None = None, out_path: str | Path | None = None,
             show_examples: bool = False, pii_curve: list[float] | None = None, bias: float | None = None,
             worst: int = 0, outputs_dir: str | Path | None = None) -> dict:
    """Evaluate the base model (or an adapter) on the config's test split; returns the metrics.
    The test data and the adapter path are checked before the model loads. A multi-task config
    (data.tasks) scores every task with a test split on its own: {"tasks": {name: metrics}}.
    PII adapter only: ``bias`` is the operating point of the side-by-side table, ``pii_curve`` the
    biases of the recall knob's curve on the dev split. ``worst``: print that many translated segments with
    the lowest sentence chrF (jsonl on stdout, before the metrics). ``outputs_dir``: also keep every
    output there, named as a training run names them (``outputs_after.jsonl``, ``outputs_after-NAME.jsonl``
    per extra test or task), so the ``bench`` scripts read it like a run directory."""
    dev = _check_pii_flags(cfg, adapter, pii_curve, bias)
    _check_worst(cfg, worst)
    outputs = _outputs_dir(outputs_dir)
    ref = None if adapter is None else resolve_adapter(adapter)
    if ref is not None:
        warn_if_not_trained_with(cfg, ref)
    if cfg.data.tasks:
        return _eval_tasks(cfg, ref, out_path, show_examples, worst, outputs)
    test, extra = test_examples(cfg), extra_tests(cfg)
    loaded, model = load_for_inference(cfg, ref)
    metrics, hyps = evaluate(loaded, model, cfg, test)
    if outputs is not None:
        outputs.write_outputs("after", [e.id for e in test], hyps)
    metrics.update(_score_extra(cfg, loaded, model, extra, ref, outputs))
    if cfg.data.task == "pii" and ref is not None:
        table, curve = pii_side_by_side(cfg, loaded, model, ref, bias, pii_curve, dev)
        metrics["pii_compare"] = table.model_dump()
        if curve is not None:
            metrics["pii_curve"] = curve.model_dump()
    if show_examples:
        for e, h in list(zip(test, hyps))[: cfg.eval.samples_in_report]:
            print(json.dumps({"source": e.source, "reference": e.target, "output": h}, ensure_ascii=False))
    _print_worst(test, hyps, worst)
    if out_path:
        atomic_write(out_path, json.dumps(metrics, indent=2))
    return metrics


# the keys that decide what the model sees and how it is read: an adapter scored under others is scored on prompts
# (or a task) it never trained on
PROMPT_KEYS = ("model.name", "model.head", "data.task", "data.template", "data.system_prompt", "data.src_lang",
               "data.tgt_lang", "data.protect_markup", "data.memory", "data.tasks")


def warn_if_not_trained_with(cfg: RunConfig, adapter: AdapterRef | str | Path) -> list[str]:
    """``eval`` scores an adapter under the config it is given (to test it on other data, budgets or decoding);
    where that config's ``PROMPT_KEYS`` differ from the adapter's own run's, say which on stderr (and return
    them), so a wrong config does not pass for the adapter's quality."""
    import sys

    from loraforge.config import load_config

    ref = resolve_adapter(adapter)
    if ref.run is None or not ref.run.config_path.is_file():
        return []
    given, trained = cfg, load_config(ref.run.config_path)

    def value(c: RunConfig, key: str):  # pydantic models compare by value
        section, name = key.split(".")
        return getattr(getattr(c, section), name)

    differ = [k for k in PROMPT_KEYS if value(given, k) != value(trained, k)]
    if differ:
        print(f"[loraforge] warning: {ref.run.path} was trained with other " + ", ".join(
            f"{k} ({value(trained, k)!r}, here {value(given, k)!r})" for k in differ)
              + f"; to score it as trained, pass its own config: loraforge eval {ref.run.config_path} --adapter "
              f"{ref.run.path}", file=sys.stderr, flush=True)
    return differ


def _outputs_dir(path: str | Path | None) -> RunDir | None:
    """Where ``eval --outputs-dir`` keeps outputs, checked before the model loads: never over a run's own
    outputs or an earlier eval's."""
    if path is None:
        return None
    run = RunDir(path)
    if run.path.exists() and (not run.path.is_dir() or any(run.path.glob("outputs_*.jsonl"))):
        raise DataError(f"--outputs-dir {run.path}: " + ("holds outputs already (outputs_*.jsonl); give a new folder"
                                                           if run.path.is_dir() else "is a file, not a folder"))
    run.path.mkdir(parents=True, exist_ok=True)
    return run


def _eval_tasks(cfg: RunConfig, adapter: AdapterRef | None, out_path: str | Path | None,
                show_examples: bool, worst: int = 0, outputs: RunDir | None = None) -> dict:
    """``eval_run`` for data.tasks: each task's test split under its own settings and metrics."""
    from loraforge.data.splits import task_tests
    from loraforge.eval.inference import evaluate_tasks

    tests, extra = task_tests(cfg), extra_tests(cfg)
    if not any(examples for _, examples in tests.values()):
        raise DataError("no entry of data.tasks has a test split: nothing to evaluate")
    loaded, model = load_for_inference(cfg, adapter)
    results = evaluate_tasks(loaded, model, cfg, tests)
    if outputs is not None:
        for name, (_, hyps) in results.items():
            outputs.write_outputs(f"after-{name}", [e.id for e in tests[name][1]], hyps)
    if show_examples:
        for name, (_, hyps) in results.items():
            for e, h in list(zip(tests[name][1], hyps))[: cfg.eval.samples_in_report]:
                print(json.dumps({"task": name, "source": e.source, "reference": e.target, "output": h},
                                 ensure_ascii=False))
    for name, (_, hyps) in results.items():
        if tests[name][0].task == "translate":
            _print_worst(tests[name][1], hyps, worst, task=name)
    metrics = {"tasks": {name: m for name, (m, _) in results.items()},
               **_score_extra(cfg, loaded, model, extra, adapter, outputs)}
    if out_path:
        atomic_write(out_path, json.dumps(metrics, indent=2))
    return metrics


def _score_extra(cfg: RunConfig, loaded, model, tests: dict, adapter: AdapterRef | None,
                 outputs: RunDir | None = None) -> dict:
    """eval.extra_tests beside the test split: {"extra_tests": {name: scores}} ({} without). For an
    adapter, each set says how many of its pages the config's training rows (after
    data.exclude_sources) hold: the config is taken to be the one the adapter was trained with."""
    from loraforge.data.splits import read_split
    from loraforge.eval import heldout

    if not tests:
        return {}
    train = [] if adapter is None else [e for _, d in cfg.data.task_configs() for e in read_split(d, "train")[0]]
    return heldout.as_metrics(heldout.score_after(cfg, loaded, model, tests, train, run=outputs))


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


def _check_worst(cfg: RunConfig, worst: int) -> None:
    """--worst scores translations; refused (before any model loads) where no task translates."""
    from loraforge.config import ConfigError

    if worst < 0:
        raise ConfigError(f"--worst {worst}: give a number of segments >= 0")
    if worst and not any(d.task == "translate" for _, d in cfg.data.task_configs()):
        raise ConfigError("--worst: only for translate tasks (PII outputs are personal data, scored by leaks)")


def _print_worst(examples: list, hyps: list[str], n: int, task: str | None = None) -> None:
    from loraforge.eval.metrics import worst_segments

    for row in worst_segments(examples, hyps, n) if n else []:
        print(json.dumps({"task": task, **row} if task else row, ensure_ascii=False))


def _check_pii_flags(cfg: RunConfig, adapter: str | Path | None, pii_curve: list[float] | None,
                     bias: float | None) -> tuple[str, list[dict]] | None:
    """--pii-curve and --bias act on a tuned PII model: refused otherwise, before any model loads.
    Returns the dev split the curve will use (read now, so a bad one fails before the model loads)."""
    from loraforge.config import ConfigError

    flags = [f for f, v in (("--pii-curve", pii_curve), ("--bias", bias)) if v is not None]
    if not flags:
        return None
    if cfg.data.tasks or cfg.data.task != "pii" or adapter is None:
        raise ConfigError(f"{' and '.join(flags)}: only for a PII config (data.task: pii) evaluated with "
                          "--adapter RUN (the recall knob of a tuned masker)")
    if pii_curve is not None:
        from loraforge.pii.sidebyside import dev_records

        if not pii_curve:
            raise ConfigError("--pii-curve needs at least one bias, e.g. --pii-curve=-2,0,2,4")
        return dev_records(cfg)
    return None


def pii_side_by_side(cfg: RunConfig, loaded, model, adapter: AdapterRef | str | Path, bias: float | None = None,
                     curve_biases: list[float] | None = None, dev: tuple[str, list[dict]] | None = None):
    """The PII maskers side by side at operating point ``bias`` (``pii.sidebyside``) and, given
    ``curve_biases``, the recall knob's curve on the dev split; both stored in the adapter's run
    (metrics.json, report, pii_curve.png) when it is a finished run. Returns (table, curve or None)."""
    import sys

    from loraforge.pii.sidebyside import compare_run, curve_run

    table = compare_run(cfg, model, loaded.tokenizer, bias=bias)
    curve = curve_run(cfg, model, loaded.tokenizer, curve_biases, dev=dev) if curve_biases else None
    ref = resolve_adapter(adapter)
    run = ref.run
    if run is not None and run.is_finished():
        metrics = run.metrics()
        metrics.pii_compare = table
        if curve is not None:
            metrics.pii_curve = curve
        run.write_metrics(metrics)
        print(f"loraforge: updated {run.metrics_path} and {rebuild_report(run)}", file=sys.stderr)
    elif curve is not None:
        print(f"loraforge: {ref.dir} is not a finished run: the curve is printed, not stored or plotted",
              file=sys.stderr)
    return table, curve
