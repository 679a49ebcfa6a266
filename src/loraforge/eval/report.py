"""The run report: a loss-curve PNG, a before/after metrics table and sample outputs, in Markdown
and HTML. Everything in it is read from the run directory's own files, so it can be rebuilt."""

from __future__ import annotations

import html
import io
from pathlib import Path

from loraforge.config import RunConfig
from loraforge.data.formats import Example
from loraforge.eval.metrics import HIGHER_IS_BETTER
from loraforge.runs import PiiComparison, RunDir, RunMetrics
from loraforge.runs import atomic_write
from loraforge.runs.metrics import PiiCurve


def plot_loss(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in history if "loss" in r]
    dev = [(r["step"], r["dev_loss"]) for r in history if "dev_loss" in r]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    if train:
        ax.plot(*zip(*train), label="train loss", linewidth=1)
    if dev:
        ax.plot(*zip(*dev), "o-", label="dev loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (target tokens)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def metrics_rows(before: dict | None, after: dict, baseline: dict | None = None) -> list[list[str]]:
    rows = []
    for key, value in after.items():
        if key == "n" or not isinstance(value, (int, float)):
            continue
        b = before.get(key) if before else None
        delta = "" if not isinstance(b, (int, float)) else f"{value - b:+.2f}"
        row = [key, "" if b is None else f"{b:.2f}", f"{value:.2f}", delta]
        if baseline is not None:
            ref = baseline.get(key)
            row.insert(1, "" if not isinstance(ref, (int, float)) else f"{ref:.2f}")
        rows.append(row)
    return rows


COMPARE_COLUMNS = {"leak_rate": "leak %", "typed_f1": "typed F1", "entity_f1": "entity F1",
                   "over_masking": "over-masking %", "no_pii_unchanged": "no-PII unchanged %",
                   "faithfulness": "faithfulness", "texts_per_s": "texts/s", "n": "n"}


def comparison_table(cmp: PiiComparison) -> tuple[list[str], list[list[str]], str]:
    """(header, rows, note) of the PII side-by-side table: every masker on the same rows of each set."""
    header = ["set", "masker", *COMPARE_COLUMNS.values()]
    rows = [[r.set, r.masker, *("" if getattr(r, k) is None else f"{getattr(r, k):g}" for k in COMPARE_COLUMNS)]
            for r in cmp.rows]
    note = (f"Model operating point: bias {cmp.bias:g} (logits added to starting a placeholder). " if cmp.bias is not
            None else "") + f"Presidio: {cmp.presidio}. Leak and over-masking: lower is better."
    return header, rows, note


def comparison_markdown(cmp: PiiComparison) -> str:
    header, rows, note = comparison_table(cmp)
    return _md_table(header, rows) + "\n\n" + note + "\n"


PII_CURVE_PNG = "pii_curve.png"
CURVE_COLUMNS = {"leak_rate": "leak %", "over_masking": "over-masking %", "typed_f1": "typed F1",
                 "entity_f1": "entity F1", "no_pii_unchanged": "no-PII unchanged %"}


def curve_table(curve: PiiCurve, operating_bias: float | None = None) -> tuple[list[str], list[list[str]], str]:
    """(header, rows, note) of the recall knob's points, and which one the side-by-side table used."""
    header = ["bias", *CURVE_COLUMNS.values()]
    rows = [[f"{p.bias:g}", *("" if getattr(p, k) is None else f"{getattr(p, k):g}" for k in CURVE_COLUMNS)]
            for p in curve.points]
    note = (f"The tuned model alone on {curve.set} ({curve.n} rows): the operating point is picked on dev, never on "
            "test. A higher bias masks more: fewer leaks, more over-masking."
            + (f" The side-by-side table uses bias {operating_bias:g}." if operating_bias is not None else ""))
    return header, rows, note


def curve_markdown(curve: PiiCurve, operating_bias: float | None = None) -> str:
    header, rows, note = curve_table(curve, operating_bias)
    return _md_table(header, rows) + "\n\n" + note + "\n"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in r) + " |" for r in rows]
    return "\n".join(lines)


Section = tuple[str, list[str], list[list[str]]]
"""(heading, table header, table rows): an extra table of the report (multi-task: one per task)."""


def write_report(run_dir: Path | RunDir, title: str, summary: dict, before: dict | None, after: dict,
                 samples: list[dict], history: list[dict], baseline: dict | None = None,
                 sections: list[Section] = (), pii_compare: PiiComparison | None = None,
                 pii_curve: PiiCurve | None = None) -> None:
    """report.md + report.html + loss.png in ``run_dir``. ``samples``: dicts of source/reference/before/after;
    ``baseline``: a non-model reference (the rule-based PII masker) shown as its own column; ``sections``:
    more tables after the metrics (the test-split table is left out when ``after`` is empty and there are);
    ``pii_compare``: the PII maskers side by side (its own section); ``pii_curve``: the recall knob's
    curve (pii_curve.png and its points)."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    plot_loss(history, run.loss_png)
    header = ["metric"] + (["rule baseline"] if baseline is not None else []) + ["base", "tuned", "change"]
    rows = metrics_rows(before, after, baseline)
    tables = ([("Metrics (test split)", header, rows)] if rows or not sections else []) + list(sections)
    md = [f"# {title}", "", _md_table(["setting", "value"], [[k, str(v)] for k, v in summary.items()]), ""]
    for heading, head, body in tables:
        md += [f"## {heading}", "", _md_table(head, body), ""]
    md += ["Higher is better except " + ", ".join(k for k, v in HIGHER_IS_BETTER.items() if not v) + ".", "",
           "## Loss", "", "![loss curve](loss.png)", ""]
    if pii_compare is not None:
        md[-4:-4] = ["## PII maskers side by side (same rows)", "", comparison_markdown(pii_compare)]
    op_bias = pii_compare.bias if pii_compare is not None else None
    if pii_curve is not None:
        plot_pii_curve([p.model_dump() for p in pii_curve.points], run / PII_CURVE_PNG,
                   title=f"PII masking on {pii_curve.set}: leaks vs over-masking")
        md[-4:-4] = ["## PII recall knob: leaks vs over-masking (dev split)", "",
                     f"![leak rate against over-masking]({PII_CURVE_PNG})", "", curve_markdown(pii_curve, op_bias)]
    if samples:
        md += ["## Samples", ""]
        for i, s in enumerate(samples, 1):
            md += [f"### {i}", ""] + [f"- **{k}**: {v}" for k, v in s.items()] + [""]
    atomic_write(run.report_md, "\n".join(md))

    def table(head, body):
        th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
        return f"<table><tr>{th}</tr>{trs}</table>"

    parts = [f"<h1>{html.escape(title)}</h1>", table(["setting", "value"], [[k, str(v)] for k, v in summary.items()])]
    for heading, head, body in tables:
        parts += [f"<h2>{html.escape(heading)}</h2>", table(head, body)]
    if pii_compare is not None:
        c_head, c_rows, note = comparison_table(pii_compare)
        parts += ["<h2>PII maskers side by side (same rows)</h2>", table(c_head, c_rows), f"<p>{html.escape(note)}</p>"]
    if pii_curve is not None:
        k_head, k_rows, note = curve_table(pii_curve, op_bias)
        parts += ["<h2>PII recall knob: leaks vs over-masking (dev split)</h2>",
                  f'<img src="{PII_CURVE_PNG}" alt="leak rate against over-masking">', table(k_head, k_rows),
                  f"<p>{html.escape(note)}</p>"]
    parts += ["<h2>Loss</h2>", '<img src="loss.png" alt="loss curve">']
    if samples:
        parts.append("<h2>Samples</h2>")
        parts += ["<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>" for k, v in s.items())
                  + "</dl><hr>" for s in samples]
    style = "body{font-family:sans-serif;max-width:60em;margin:auto}td,th{border:1px solid #ccc;padding:2px 6px}"
    doc = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head><body>{''.join(parts)}</body></html>"
    atomic_write(run.report_html, doc)


def task_sections(metrics: RunMetrics) -> list[Section]:
    """Multi-task: one metrics table per task (its own metrics), then the mix: configured probability
    and the examples actually drawn from each task."""
    sections: list[Section] = []
    for name, t in (metrics.tasks or {}).items():
        header = ["metric"] + (["rule baseline"] if t.baseline is not None else []) + ["base", "tuned", "change"]
        rows = metrics_rows(t.before, t.after, t.baseline)
        sections.append((f"Task {name} ({t.task}, its test split)", header, rows))
    total = sum(t.sampled or 0 for t in (metrics.tasks or {}).values())
    mix = [[name, str(t.train_examples), f"{t.probability:.3f}" if t.probability is not None else "",
            str(t.sampled if t.sampled is not None else ""), f"{(t.sampled or 0) / total:.3f}" if total else ""]
           for name, t in (metrics.tasks or {}).items()]
    if mix:
        sections.append(("Task mix (training)", ["task", "train examples", "probability", "sampled", "sampled share"],
                         mix))
    return sections


def extra_test_sections(metrics: RunMetrics) -> tuple[list[Section], dict[str, str]]:
    """eval.extra_tests: one metrics table per set, headed CONTAMINATED when training saw its pages,
    and a summary line per set saying whether it is held out (``eval.heldout``)."""
    from loraforge.eval.heldout import held_out

    sections: list[Section] = []
    notes: dict[str, str] = {}
    for name, t in held_out(metrics).items():
        flag = " - CONTAMINATED: training saw its pages" if t.contaminated else ""
        rows = metrics_rows(t.before, t.after)
        sections.append((f"Extra test {name} ({t.split}){flag}", ["metric", "base", "tuned", "change"], rows))
        notes[f"test {name}"] = t.note()
    return sections, notes


def _task_samples(run: RunDir, cfg: RunConfig, task_tests: dict) -> list[dict]:
    """A few samples per non-PII task, from the run's saved outputs."""
    names = [n for n, (d, _) in task_tests.items() if d.task != "pii"]
    per_task = -(-cfg.eval.samples_in_report // max(len(names), 1))
    samples = []
    for name in names:
        before, after = run.outputs(f"before-{name}"), run.outputs(f"after-{name}")
        for e in task_tests[name][1][:per_task]:
            samples.append({"task": name, "source": e.source, "reference": e.target, "base": before.get(e.id, ""),
                            "tuned": after.get(e.id, "")})
    return samples


def write_run_report(run: RunDir, cfg: RunConfig, metrics: RunMetrics, test: list[Example],
                     hyps_after: list[str], task_tests: dict | None = None) -> Path:
    """A training run's report from its config, metrics, history and the base model's saved outputs.
    Multi-task (``task_tests``: {name: (DataConfig, test examples)}): a table per task and the mix."""
    before_out = run.outputs("before")
    samples = []
    if task_tests:
        samples = _task_samples(run, cfg, task_tests)
    elif cfg.data.task != "pii":  # never print raw personal data into a report by default
        for e, h in list(zip(test, hyps_after))[: cfg.eval.samples_in_report]:
            samples.append({"source": e.source, "reference": e.target, "base": before_out.get(e.id, ""), "tuned": h})
    t = metrics.train
    batch = f"{cfg.train.batch_size} x {cfg.train.grad_accum} accum"
    data = cfg.data.train if not cfg.data.tasks else ", ".join(f"{n}: {d.train}" for n, d in cfg.data.task_configs())
    summary = {"model": cfg.model.name, "method": cfg.adapter.method, "data": data}
    if t is None:
        summary["batch"] = batch
    else:
        steps = t.steps if t.steps_asked is None else f"{t.steps} of {t.steps_asked} (train.max_minutes)"
        summary.update({"steps": steps, "batch": batch,
                        "trainable params": f"{t.trainable_params:,} ({t.trainable_pct:.3f}%)",
                        "train time": f"{t.seconds} s", "tokens/s": t.tokens_per_s,
                        "peak RSS": f"{t.peak_rss_mb:g} MB", "dtype": t.dtype})
    if cfg.data.exclude_sources:
        summary["excluded sources"] = ", ".join(cfg.data.exclude_sources)
    extra, notes = extra_test_sections(metrics)
    summary.update(notes)
    if metrics.tasks:  # the per-task tables say it all; the first task's would be shown twice
        write_report(run, f"loraforge run: {run.name}", summary, None, {}, samples, run.history(),
                     sections=task_sections(metrics) + extra)
        return run.report_md
    write_report(run, f"loraforge run: {run.name}", summary, metrics.before, metrics.after, samples, run.history(),
                 baseline=metrics.baseline, sections=extra, pii_compare=metrics.pii_compare,
                 pii_curve=metrics.pii_curve)
    return run.report_md


def plot_pii_curve(points: list[dict], path: str | Path, title: str = "PII masking: leaks vs over-masking") -> Path:
    """Leak rate (y) against over-masking (x), each point labelled with its bias, as a PNG (here, beside
    the loss plot, because ``pii`` imports ``eval`` and not the other way round)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(points, key=lambda p: p["bias"])  # the line follows the knob
    fig, ax = plt.subplots(figsize=(5, 4))
    xs, ys = [p["over_masking"] for p in points], [p["leak_rate"] for p in points]
    ax.plot(xs, ys, marker="o")
    for p, x, y in zip(points, xs, ys):
        ax.annotate(f"bias {p['bias']:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("over-masking (% of predicted spans covering no PII)")
    ax.set_ylabel("leak rate (% of PII values left)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return atomic_write(path, buf.getvalue())
