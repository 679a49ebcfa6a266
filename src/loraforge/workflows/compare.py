"""``loraforge compare``: every fine-tuning method on the same data and budget, as one table.

Each method is an ordinary ``train_run`` with ``adapter.method`` changed and its run directory under
``<output.dir>/compare/<method>``, so every row can be inspected, evaluated or exported like any run.
Each runs in its own process (``runs.isolated``): peak RSS is a per-process high-water mark, and one
process for all methods would report the largest so far on every later row. A method whose run directory already
has metrics.json from the same config is reused (not retrained) unless output.overwrite is set, so
an interrupted comparison continues where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

from loraforge.config import ConfigError, RunConfig
from loraforge.methods import registry
from loraforge.runs import RunDir, RunDirError, atomic_write
from loraforge.runs.isolated import train_isolated

METHODS = ("lora", "dora", "ia3", "prefix", "prompt", "adapter", "full")


def parse_methods(text: str) -> list[str]:
    allowed = registry.names()
    methods = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in methods if m not in allowed]
    if bad or not methods:
        raise ConfigError(f"--methods {text!r}: unknown {bad}; allowed: {', '.join(allowed)}")
    return methods


def parse_lrs(text: str | None, methods: list[str]) -> dict[str, float]:
    """'full=5e-5,prompt=3e-2' -> per-method learning rates (the others keep train.lr)."""
    lrs = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        method, _, value = item.partition("=")
        try:
            lrs[method.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--lr {text!r}: expected method=value pairs such as full=5e-5,prompt=3e-2") from None
    unknown = set(lrs) - set(methods)
    if unknown:
        raise ConfigError(f"--lr names {sorted(unknown)}, which are not in --methods {','.join(methods)}")
    return lrs


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def _method_config(cfg: RunConfig, method: str, run: RunDir, first: bool, lr: float | None) -> RunConfig:
    c = cfg.model_copy(deep=True)
    c.adapter = cfg.adapter.for_method(method)  # keys the new method does not read are dropped, not errors
    c.output.dir, c.output.overwrite = str(run), True
    c.train.lr = lr or cfg.train.lr
    c.eval.before = cfg.eval.before and first  # the base model is the same for every method: score it once
    return c


def _row(method: str, lr: float, run: RunDir) -> dict:
    metrics = run.metrics()
    t = metrics.train
    if t is None:
        raise RunDirError(f"{run.metrics_path}: no training statistics (not written by loraforge train)")
    return {
        "method": method, "lr": lr, "trainable_params": t.trainable_params, "trainable_pct": t.trainable_pct,
        "adapter_mb": _dir_bytes(run.adapter_dir) / 2**20, "tokens_per_s": t.tokens_per_s,
        "peak_rss_mb": t.peak_rss_mb, "dev_loss": t.final_dev_loss, "train_seconds": t.seconds,
        "bleu": metrics.after.get("bleu"), "chrf": metrics.after.get("chrf"), "before": metrics.before,
    }


def _run_method(cfg: RunConfig, method: str, root: Path, first: bool, lr: float | None) -> dict:
    run = RunDir(root / method)
    c = _method_config(cfg, method, run, first, lr)
    # eval.before is on for the first method only: a reused run may differ there
    error = train_isolated(c, root / f"{method}.yaml", f"compare {method}", ignore={"eval": {"before"}},
                           force=cfg.output.overwrite)
    if error:
        return {"method": method, "error": error}
    return _row(method, c.train.lr, run)


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown_table(cfg: RunConfig, rows: list[dict]) -> str:
    head = (f"# Methods compared: {cfg.model.name} on {cfg.data.split_names('train')}\n\n"
            f"Same data and budget for every method: {cfg.train.steps} steps x batch {cfg.train.batch_size}"
            f" x {cfg.train.grad_accum} accum, lr {cfg.train.lr}, seed {cfg.train.seed}; "
            f"dev loss on {cfg.data.split_names('dev')}, BLEU/chrF on {cfg.eval.max_examples} examples of "
            f"{cfg.data.split_names('test')}.\n\n")
    lines = ["| method | lr | trainable params | % of total | adapter on disk (MB) | train tokens/s | peak RSS (MB) "
             "| dev loss | BLEU | chrF |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base = next((r["before"] for r in rows if r.get("before")), None)
    if base:
        lines.append(f"| base model (no training) | - | 0 | 0 | - | - | - | - | {_fmt(base.get('bleu'), '.2f')} "
                     f"| {_fmt(base.get('chrf'), '.2f')} |")
    for r in rows:
        if "error" in r:
            error = r["error"].replace("|", "/")
            lines.append(f"| {r['method']} | failed: {error} |" + " |" * 8)
            continue
        lines.append(
            f"| {r['method']} | {r['lr']:g} | {r['trainable_params']:,} | {r['trainable_pct']:.3f} "
            f"| {r['adapter_mb']:.2f} | {r['tokens_per_s']:.0f} | {r['peak_rss_mb']:.0f} | {_fmt(r['dev_loss'], '.3f')} "
            f"| {_fmt(r['bleu'], '.2f')} | {_fmt(r['chrf'], '.2f')} |")
    return head + "\n".join(lines) + "\n"


def compare_run(cfg: RunConfig, methods: list[str], lrs: dict[str, float] | None = None) -> Path:
    """Train every method (same data, steps and batch; ``lrs`` may set a method's learning rate, since
    full fine-tuning and prompt tuning want very different ones); write compare.md and compare.json
    under ``<output.dir>/compare``; return the .md path."""
    root = Path(cfg.output.dir) / "compare"
    lrs = lrs or {}
    rows = [_run_method(cfg, m, root, i == 0, lrs.get(m)) for i, m in enumerate(methods)]
    atomic_write(root / "compare.json", json.dumps({"config": cfg.model_dump(mode="json"), "rows": rows}, indent=2))
    md = markdown_table(cfg, rows)
    atomic_write(root / "compare.md", md)
    print(md)
    return root / "compare.md"
