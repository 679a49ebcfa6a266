"""``loraforge ablate SPEC``: rows of training recipes, each trained with several seeds on the same
budget, scored on the test split, reported as mean ± sd so a row's gain can be told from seed noise.

The spec (``configs/ablations/k8s-en-zh.yaml``) names a base config, overrides every row shares (the
step budget, the test rows), the seeds, and the rows: a list of ``section.key=value`` overrides on
the base config, ``{config: FILE, overrides: [...]}`` for a row with its own recipe, or
``{tasks_from: FILE}`` for a multi-task row on the base recipe.
Every row and seed is an ordinary ``train_run`` under ``<out>/<row>/seed-<n>``, in its own process
like ``compare``'s; a finished run of the same config is reused, so an interrupted ablation resumes.
Every row's config is loaded and checked before the first training starts.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from loraforge.config import (TASK_NAME, ConfigError, DataConfig, RunConfig, config_from, load_config,
                              read_config_file)
from loraforge.eval.heldout import held_out
from loraforge.runs import RunDir, atomic_write
from loraforge.runs.isolated import train_isolated

METRIC_NAMES = {"chrf": "chrF", "bleu": "BLEU", "markup": "markup kept", "term_accuracy": "term acc.",
                "pii.leak_rate": "PII leak %", "pii.typed_f1": "PII typed F1"}


class Row(BaseModel):
    model_config = ConfigDict(extra="forbid")
    config: str | None = None
    """The row's own base config (default: the spec's)."""
    tasks_from: str | None = None
    """A multi-task config whose ``data.tasks`` (and task_temperature/weights) this row trains, on the
    recipe of its base config: the base's single-task data keys (task, train, dev, test) give way,
    its other data keys (max_length, protect_markup, ...) reach every task. So a multi-task row at the
    demo's size need not repeat demo.yaml's keys."""
    overrides: list[str] = []


class AblationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    config: str
    """The base recipe every row starts from (path relative to the spec's folder or the working directory)."""
    overrides: list[str] = []
    """Applied to every row first: the shared step budget, eval.max_examples, ..."""
    seeds: list[int] = Field([0, 1, 2], min_length=1)
    """Each seed sets train.seed and data.seed."""
    task: str | None = None
    """Multi-task rows: the task whose metrics the table shows (default: the run's first)."""
    metrics: list[str] = ["chrf", "bleu", "markup"]
    rows: dict[str, list[str] | Row] = Field(min_length=1)
    """Row name -> overrides (or a Row); the name is also the row's folder."""

    @field_validator("rows")
    @classmethod
    def _folder_names(cls, rows: dict) -> dict:
        bad = [name for name in rows if not re.fullmatch(TASK_NAME, name)]
        if bad:
            raise ValueError(f"row names {bad} are folder names: letters, digits, '.', '_', '-'")
        return rows


def load_spec(path: str | Path) -> AblationSpec:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such ablation spec") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    try:
        return AblationSpec.model_validate(data or {})
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {where}: {first['msg']}") from None


def _resolve(spec_path: Path, name: str) -> str:
    """A config path relative to the spec's folder, else as written (relative to the working directory)."""
    beside = spec_path.parent / name
    return str(beside) if beside.exists() else name


def _with_tasks(base: str, tasks_from: str) -> dict:
    """``base``'s sections with the multi-task keys of ``tasks_from``'s data in place of its single-task ones."""
    data, multi = read_config_file(base), read_config_file(tasks_from).get("data") or {}
    if not multi.get("tasks"):
        raise ConfigError(f"{tasks_from}: tasks_from names a config without data.tasks")
    own = {k: v for k, v in (data.get("data") or {}).items() if k not in DataConfig.SINGLE_ONLY}
    return {**data, "data": {**own, **{k: multi[k] for k in DataConfig.MULTI_ONLY if k in multi}}}


def row_configs(spec: AblationSpec, spec_path: str | Path, out: Path, rows: list[str] | None = None,
                seeds: list[int] | None = None, check_files: bool = True) -> dict[str, dict[int, RunConfig]]:
    """{row: {seed: config}} for the chosen rows and seeds, every one loaded (so validated) now;
    ``check_files``: also that the back-translation caches the rows name exist."""
    spec_path = Path(spec_path)
    unknown = sorted(set(rows or []) - set(spec.rows))
    if unknown:
        raise ConfigError(f"--rows: {unknown} not in the spec; its rows: {', '.join(spec.rows)}")
    out_configs: dict[str, dict[int, RunConfig]] = {}
    for name in rows or list(spec.rows):
        entry = spec.rows[name]
        row = entry if isinstance(entry, Row) else Row(overrides=entry)
        base = _resolve(spec_path, row.config or spec.config)
        out_configs[name] = {}
        for seed in seeds or spec.seeds:
            items = [*spec.overrides, *row.overrides, f"train.seed={seed}", f"data.seed={seed}",
                     f"output.dir={out / name / f'seed-{seed}'}", "output.overwrite=true"]
            try:
                cfg = (load_config(base, items) if row.tasks_from is None
                       else config_from(_with_tasks(base, _resolve(spec_path, row.tasks_from)), items,
                                        f"{base} with the tasks of {row.tasks_from}"))
            except ConfigError as e:
                raise ConfigError(f"ablation row {name!r}: {e}") from None
            bt = cfg.data.augment.back_translation
            if check_files and bt is not None and not Path(bt.file).exists():
                raise ConfigError(f"ablation row {name!r}: data.augment.back_translation.file {bt.file} does not "
                                  "exist; make it first with `loraforge data augment CONFIG --back-translate ...`")
            out_configs[name][seed] = cfg
    return out_configs


def _scores(run: RunDir, task: str | None) -> dict:
    """The row's metrics: the chosen task's (``task``, else the run's first) by plain name, and every
    task's as ``<task>.<metric>`` (a single-task run's task is ``data.task``: ``pii.leak_rate``), so one
    table can hold a two-task adapter beside the two single-task ones; each eval.extra_tests set's as
    ``<name>.<metric>`` (``tutorials.chrf``), and ``<name>.contaminated`` (1 when training saw its pages)."""
    metrics = run.metrics()
    extra = {f"{name}.{m}": v for name, t in held_out(metrics).items()
             for m, v in {**t.after, "contaminated": int(t.contaminated)}.items()}
    if metrics.tasks:
        by_task = {name: dict(t.after) for name, t in metrics.tasks.items()}
        plain = by_task.get(task or next(iter(by_task)), {})  # a run without that task: prefixed names only
    else:
        by_task = {metrics.task: dict(metrics.after)}
        plain = dict(metrics.after)
    return {**plain, **{f"{t}.{m}": v for t, scores in by_task.items() for m, v in scores.items()}, **extra}


def contaminated_sets(scores: list[dict]) -> list[str]:
    """The eval.extra_tests sets whose pages some seed of a row trained on (``<name>.contaminated``)."""
    return sorted({k.rsplit(".", 1)[0] for s in scores for k, v in s.items() if k.endswith(".contaminated") and v})


def summarize(values: list[float]) -> dict:
    """mean, sample sd (None for one seed) and n of a metric over seeds."""
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values), "values": values}


def ablate(spec_path: str, out: str | None = None, rows: str | None = None, seeds: str | None = None) -> Path:
    """Train every row x seed (reusing finished runs), write ablation.json and ablation.md under ``out``
    (default: runs/ablation-<spec name>); returns the .md path."""
    spec = load_spec(spec_path)
    root = Path(out or f"runs/ablation-{Path(spec_path).stem}")
    chosen_rows = [r.strip() for r in rows.split(",") if r.strip()] if rows else None
    try:
        chosen_seeds = [int(s) for s in seeds.split(",") if s.strip()] if seeds else None
    except ValueError:
        raise ConfigError(f"--seeds {seeds!r}: expected comma-separated integers such as 0,1,2") from None
    configs = row_configs(spec, spec_path, root, chosen_rows, chosen_seeds)
    results = {}
    for name, by_seed in configs.items():
        errors, scores = {}, []
        for seed, cfg in by_seed.items():
            error = train_isolated(cfg, root / "configs" / f"{name}-seed-{seed}.yaml", f"ablate {name} seed {seed}")
            if error:
                errors[seed] = error
            else:
                scores.append(_scores(RunDir(cfg.output.dir), spec.task))
        results[name] = {"seeds": list(by_seed), "errors": errors, "metrics": {
            m: summarize([s[m] for s in scores if s.get(m) is not None]) for m in spec.metrics
            if any(s.get(m) is not None for s in scores)}, "contaminated": contaminated_sets(scores)}
    command = f"loraforge ablate {spec_path}" + (f" --out {out}" if out else "") + (
        f" --rows {rows}" if rows else "") + (f" --seeds {seeds}" if seeds else "")
    atomic_write(root / "ablation.json", json.dumps({"spec": spec.model_dump(), "command": command,
                                                     "rows": results}, indent=2))
    md = to_markdown(spec, results, command)
    atomic_write(root / "ablation.md", md)
    print(md)
    return root / "ablation.md"


def _cell(stats: dict | None, base: dict | None) -> str:
    if not stats:
        return "-"
    text = f"{stats['mean']:.2f}" + (f" ± {stats['sd']:.2f}" if stats["sd"] is not None else "")
    if base and base is not stats:
        text += f" ({stats['mean'] - base['mean']:+.2f})"
    return text


def metric_name(metric: str) -> str:
    """The column heading: 'chrf' -> 'chrF', 'tutorials.chrf' -> 'tutorials chrF'."""
    if metric in METRIC_NAMES:
        return METRIC_NAMES[metric]
    prefix, _, name = metric.rpartition(".")
    return f"{prefix} {METRIC_NAMES[name]}" if prefix and name in METRIC_NAMES else metric


def to_markdown(spec: AblationSpec, results: dict, command: str) -> str:
    names = list(results)
    base = results[names[0]]["metrics"] if names else {}
    header = "| row | " + " | ".join(metric_name(m) for m in spec.metrics) + " | seeds |"
    lines = [f"# Ablation: {Path(spec.config).name}", "",
             f"Every row: the base config plus `{' '.join(spec.overrides) or '(no shared overrides)'}`; mean ± sd "
             f"over seeds; in brackets, the difference of the mean from the first row ({names[0] if names else '-'}).",
             "", header, "|---|" + "---|" * (len(spec.metrics) + 1)]
    for name, r in results.items():
        cells = [_cell(r["metrics"].get(m), base.get(m)) for m in spec.metrics]
        done = len(r["seeds"]) - len(r["errors"])
        seeds = f"{done}/{len(r['seeds'])}" + (f" (failed: {', '.join(map(str, r['errors']))})" if r["errors"] else "")
        flag = f" (trained on {', '.join(r['contaminated'])}: not held out)" if r.get("contaminated") else ""
        lines.append(f"| {name}{flag} | " + " | ".join(cells) + f" | {seeds} |")
    lines += ["", f"Reproduce: `{command}`", ""]
    return "\n".join(lines)
