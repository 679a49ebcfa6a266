"""``loraforge train``: fine-tune, evaluate before and after, and write the run directory (``RunDir``).

The steps, in order: open the run (refusing to overwrite, or checking what ``--resume`` may
change), read every data file (a bad line fails before the model loads), load the model, score the
base model, train, save the adapter, score the tuned model, write metrics and the report. A
multi-task run (``data.tasks``) scores each task on its own test split with its own settings.
"""

from __future__ import annotations

import sys
import time

from loraforge.config import ConfigError, RunConfig, load_config
from loraforge.data.splits import Datasets, encode_splits, load_splits
from loraforge.data.splits import extra_tests as load_extra_tests
from loraforge.eval import heldout
from loraforge.runs import RunDir, RunMetrics, TaskMetrics, TrainStats

MAY_CHANGE_ON_RESUME = ("output.*", "eval.*", "train.steps", "train.save_every", "train.eval_every")
"""Settings a resumed run may take from the new command: where and how it is evaluated and saved,
and how long it trains (``train.steps`` may only grow). Any other change would make the resumed
run a different run than the checkpoints it continues."""


def _flat(cfg: RunConfig) -> dict[str, object]:
    return {f"{section}.{key}": value for section, fields in cfg.model_dump(mode="json").items()
            for key, value in fields.items()}


def _may_change(key: str) -> bool:
    return key in MAY_CHANGE_ON_RESUME or f"{key.split('.')[0]}.*" in MAY_CHANGE_ON_RESUME


def check_resume_changes(saved: RunConfig, given: RunConfig, source: str = "the run's config.yaml") -> RunConfig:
    """``given`` when it differs from ``saved`` only where a resume may differ, else a ``ConfigError``
    naming each other change and the keys that may change."""
    old, new = _flat(saved), _flat(given)
    bad = [f"{k}: {old[k]!r} -> {new[k]!r}" for k in new if new[k] != old[k] and not _may_change(k)]
    if given.train.steps < saved.train.steps:
        bad.append(f"train.steps: {saved.train.steps} -> {given.train.steps} (it may only grow)")
    if bad:
        raise ConfigError(f"--resume continues the run as {source} describes it; these settings differ and cannot "
                          f"change mid-run: {'; '.join(bad)}. On resume only {', '.join(MAY_CHANGE_ON_RESUME)} may "
                          "change (train.steps only grow). Drop those overrides, or start a new run (another --out, "
                          "or --overwrite)")
    return given


def config_for_resume(run_dir: str, overrides: list[str] | None = None) -> RunConfig:
    """The saved config of the run in ``run_dir`` with ``overrides`` applied, for ``--resume`` given no
    config file; an override outside ``MAY_CHANGE_ON_RESUME`` is a ``ConfigError``."""
    run = RunDir(run_dir)
    saved = run.config()
    given = load_config(run.config_path, [*(overrides or []), f"output.dir={run_dir}"])
    return check_resume_changes(saved, given)


def _log(msg: str) -> None:
    print(f"[loraforge] {msg}", file=sys.stderr, flush=True)


def _open_run(cfg: RunConfig, resume: bool, is_main: bool) -> tuple[RunDir, RunConfig]:
    """Prepare the run directory (every rank checks a resume; rank 0 creates or clears) and write the
    config the run will use."""
    from loraforge.train import distributed as dist

    run = RunDir(cfg.output.dir)
    if resume:
        run.prepare(resume=True, overwrite=False)  # refuses a finished run and one with no checkpoint
        cfg = check_resume_changes(run.config(), cfg, str(run.config_path))
    elif is_main:
        run.prepare(resume=False, overwrite=cfg.output.overwrite)
    dist.barrier()
    if is_main:
        run.write_config(cfg)
    return run, cfg


def _load_base(cfg: RunConfig):
    from loraforge.models.load import load_model

    from loraforge.methods import registry

    quantize = registry.get(cfg.adapter.method).quantize  # qlora: nf4 on CUDA; on a CPU a clear error
    extra = {"device": "cuda", "quantize": quantize} if quantize else {}
    return load_model(cfg.model.name, cfg.model.dtype, cfg.model.family, **extra)


def _score_base(run: RunDir, cfg: RunConfig, loaded, data: Datasets, progress: bool) -> dict | None:
    """The base model's test scores; kept in the run so a resume does not score it again."""
    from loraforge.eval.inference import evaluate

    if not (cfg.eval.before and data.test):
        return None
    if cfg.model.head == "tagger":
        _log("eval.before skipped: the base model has no tagging head until it is trained")
        return None
    saved = run.metrics_before()
    if saved is not None:
        return saved
    _log("evaluating the base model")
    before, hyps = evaluate(loaded, loaded.model, cfg, data.test, progress)
    run.write_outputs("before", [e.id for e in data.test], hyps)
    run.write_metrics_before(before)
    return before


def _fit(run: RunDir, cfg: RunConfig, loaded, data: Datasets, resume: bool, progress: bool):
    """(model with its trained adapter, the loop's result)."""
    import torch

    from loraforge.adapters import apply_adapter, trainable_parameters
    from loraforge.train.loop import train

    torch.manual_seed(cfg.train.seed)  # the adapter's initial weights depend on the seed only
    family, base = cfg.model.trained_family(loaded.family), loaded.model
    if family == "tagger":
        from loraforge.models.tagger import build_tagger
        from loraforge.data.pii_tags import LABELS

        base = build_tagger(loaded.model, LABELS, cfg.model.bidirectional, cfg.model.tagger_lookahead)
    model = apply_adapter(base, cfg.adapter, family)
    n_trainable, n_total = trainable_parameters(model)
    _log(f"{cfg.adapter.method}: {n_trainable:,} trainable of {n_total:,} parameters "
         f"({100 * n_trainable / n_total:.3f}%)")
    result = train(model, data.train, data.dev, cfg.train, run.path, loaded.tokenizer.pad_token_id,
                   family, resume=resume, progress=progress)
    return model, result


def _train_stats(model, loaded, result, identical: bool, steps_asked: int) -> TrainStats:
    from loraforge.adapters import trainable_parameters
    from loraforge.train import distributed as dist

    n_trainable, n_total = trainable_parameters(model)
    dev_losses = [r["dev_loss"] for r in result.history if "dev_loss" in r]
    return TrainStats(
        steps=result.steps, seconds=round(result.train_seconds, 1), tokens_per_s=round(result.tokens_per_second, 1),
        target_tokens_per_s=round(result.target_tokens / max(result.train_seconds, 1e-9), 1),
        final_dev_loss=dev_losses[-1] if dev_losses else None, trainable_params=n_trainable, total_params=n_total,
        peak_rss_mb=round(result.peak_rss_mb), dtype=str(next(loaded.model.parameters()).dtype).replace("torch.", ""),
        world_size=dist.world_size(), ranks_identical=identical,
        steps_asked=steps_asked if result.steps != steps_asked else None, tokens=int(result.tokens))


def _score_tuned(run: RunDir, cfg: RunConfig, loaded, model, data: Datasets, progress: bool) -> tuple[dict, list[str]]:
    from loraforge.eval.inference import evaluate

    if not data.test:
        return {}, []
    _log("evaluating the tuned model")
    after, hyps = evaluate(loaded, model, cfg, data.test, progress)
    run.write_outputs("after", [e.id for e in data.test], hyps)
    return after, hyps


def _write_results(run: RunDir, cfg: RunConfig, metrics: RunMetrics, data: Datasets, hyps_after: list[str]) -> None:
    """metrics.json (with, for PII, the rule-based baseline on the same rows) and the report."""
    from loraforge.eval.report import write_run_report

    if cfg.data.task == "pii" and data.test:  # the bar to beat: regexes with checksums, same test rows
        from loraforge.eval.pii_baseline import baseline_eval

        metrics.baseline = baseline_eval(cfg)
    run.write_metrics(metrics)
    write_run_report(run, cfg, metrics, data.test, hyps_after)


def _task_tests(data: Datasets) -> dict[str, tuple]:
    """{task: (its data settings, its test examples)} for the tasks that have a test split."""
    return {name: (t.data, t.test) for name, t in (data.tasks or {}).items() if t.test}


def _score_base_tasks(run: RunDir, cfg: RunConfig, loaded, data: Datasets, progress: bool) -> dict | None:
    """Multi-task ``_score_base``: {task: the base model's scores}, kept in the run for a resume."""
    from loraforge.eval.inference import evaluate_tasks

    tests = _task_tests(data)
    if not (cfg.eval.before and tests):
        return None
    saved = run.metrics_before()
    if saved is not None:
        return saved.get("tasks")
    _log(f"evaluating the base model on {len(tests)} tasks")
    results = evaluate_tasks(loaded, loaded.model, cfg, tests, progress)
    for name, (_, hyps) in results.items():
        run.write_outputs(f"before-{name}", [e.id for e in tests[name][1]], hyps)
    scores = {name: m for name, (m, _) in results.items()}
    run.write_metrics_before({"tasks": scores})
    return scores


def _finish_tasks(run: RunDir, cfg: RunConfig, loaded, model, data: Datasets, before: dict | None, result,
                  stats: TrainStats, t_start: float, progress: bool, extra: dict | None = None) -> RunMetrics:
    """Multi-task: score every task with its own settings and metrics, record the mix each task got,
    write metrics.json (per task under ``tasks``; before/after = the first task's) and the report."""
    from loraforge.eval.inference import evaluate_tasks, task_run_config
    from loraforge.eval.report import write_run_report

    tests = _task_tests(data)
    _log(f"evaluating the tuned model on {len(tests)} tasks")
    results = evaluate_tasks(loaded, model, cfg, tests, progress)
    tasks = {}
    for name, t in data.tasks.items():
        after, hyps = results.get(name, ({}, []))
        if hyps:
            run.write_outputs(f"after-{name}", [e.id for e in t.test], hyps)
        baseline = None
        if t.data.task == "pii" and t.test:  # the bar to beat, as in a single-task PII run
            from loraforge.eval.pii_baseline import baseline_eval

            baseline = baseline_eval(task_run_config(cfg, t.data))
        tasks[name] = TaskMetrics(task=t.data.task, before=(before or {}).get(name), after=after, baseline=baseline,
                                  train_examples=len(t.train), probability=round(data.train.probabilities[name], 6),
                                  sampled=(result.task_counts or {}).get(name))
    first = next(iter(tasks.values()))
    metrics = RunMetrics(task="multi", before=first.before, after=first.after, train=stats, tasks=tasks,
                         wall_seconds=round(time.perf_counter() - t_start, 1), **(extra or {}))
    run.write_metrics(metrics)
    write_run_report(run, cfg, metrics, data.test, [], task_tests=tests)
    return metrics


def train_run(cfg: RunConfig, resume: bool = False, progress: bool = True) -> RunDir:
    """Fine-tune, evaluate before and after, and write the run directory; returns it."""
    from loraforge.train import distributed as dist

    with dist.process_group():
        return _train_run(cfg, resume, progress)


def _train_run(cfg: RunConfig, resume: bool, progress: bool) -> RunDir:
    from loraforge.adapters.build import save_adapter
    from loraforge.train import distributed as dist

    is_main = dist.rank() == 0
    run, cfg = _open_run(cfg, resume, is_main)
    t_start = time.perf_counter()
    splits = load_splits(cfg)  # every data file parsed before the model loads: a bad line costs a second
    extra_tests = load_extra_tests(cfg)
    loaded = _load_base(cfg)
    data = encode_splits(cfg, splits, loaded.tokenizer, cfg.model.trained_family(loaded.family))
    mix = "" if not data.tasks else " (tasks: " + ", ".join(
        f"{k} {len(t.train)} p={data.train.probabilities[k]:.2f}" for k, t in data.tasks.items()) + ")"
    _log(f"model {cfg.model.name} ({loaded.family}, {next(loaded.model.parameters()).dtype}); "
         f"{len(data.train)} train / {len(data.dev)} dev examples, {len(data.test)} test{mix}; "
         f"dropped over max_length: {data.dropped_too_long}")
    if any(splits.excluded.get(k) for k in ("train", "dev")):
        _log("dropped by data.exclude_sources: " + "; ".join(
            f"{k} " + ", ".join(f"{p} {n}" for p, n in c.items()) for k, c in splits.excluded.items() if c))
    score_base = _score_base_tasks if data.tasks else _score_base
    before = score_base(run, cfg, loaded, data, progress) if is_main else None
    extra_before = heldout.score_before(run, cfg, loaded, extra_tests, progress) if is_main else None
    model, result = _fit(run, cfg, loaded, data, resume, progress)
    identical = dist.same_on_all_ranks([p.detach() for p in model.parameters() if p.requires_grad])
    if not is_main:
        return run
    save_adapter(model, run.adapter_dir)
    run.write_history(result.history)
    stats = _train_stats(model, loaded, result, identical, cfg.train.steps)
    if extra_tests:
        _log(f"evaluating the tuned model on eval.extra_tests: {', '.join(extra_tests)}")
    extra = heldout.as_metrics(heldout.score_after(cfg, loaded, model, extra_tests, splits.train, extra_before, run,
                                                   progress))
    if data.tasks:
        metrics = _finish_tasks(run, cfg, loaded, model, data, before, result, stats, t_start, progress, extra)
        _log(f"done: {run}  " + "  ".join(f"{name}: " + " ".join(f"{k}={v}" for k, v in t.after.items() if k != "n")
                                          for name, t in metrics.tasks.items()))
        return run
    after, hyps_after = _score_tuned(run, cfg, loaded, model, data, progress)
    metrics = RunMetrics(task=cfg.data.task, before=before, after=after, train=stats,
                         wall_seconds=round(time.perf_counter() - t_start, 1), **extra)
    if cfg.data.task == "pii" and data.test:  # every masker on the same rows, hand-written set too
        from loraforge.pii.sidebyside import compare_run

        _log("scoring the PII maskers side by side (tuned, + patterns, rules, Presidio)")
        try:  # never lose a finished run to the extra table (e.g. a method decoding cannot drive)
            metrics.pii_compare = compare_run(cfg, model, loaded.tokenizer)
        except Exception as e:  # noqa: BLE001
            _log(f"PII side-by-side table skipped: {type(e).__name__}: {str(e)[:200]}")
    _write_results(run, cfg, metrics, data, hyps_after)
    _log(f"done: {run}  " + "  ".join(f"{k}={v}" for k, v in after.items() if k != "n"))
    return run


def train_config_file(config_path: str, progress: bool = False) -> None:
    """``train_run`` on a config file: the entry point ``compare`` runs in a fresh process."""
    train_run(load_config(config_path), progress=progress)
