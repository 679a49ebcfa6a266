"""Mean ± sd over seeds of the metrics that ``loraforge eval --metrics-out`` wrote, one row per recipe and set, so a
recipe's gain can be told from the spread between its seeds (issue 20's ablation rule: three seeds per row).

    python -m loraforge.bench.seed_table --row "today, k8s:test=runs/guard/lift-today-test.json,..." \
        --row "preset, k8s:test=..." [--metrics chrf,bleu,segments_unfinished] [--name seed-table]

Each ``--row`` is ``LABEL=FILE,FILE,...`` (one metrics file per seed, in seed order): what ``eval --metrics-out``
wrote, or a training run's ``metrics.json`` (its tuned model's test scores, ``after``). The table gives each metric's
mean ± sample sd and its values; a metric a file lacks is left out of that row.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from loraforge.bench.report import publish, table


def summarize(rows: dict[str, list[str]], metrics: list[str]) -> dict:
    out = {"metrics": metrics, "rows": {}}
    for label, files in rows.items():
        loaded = [_scores(json.loads(Path(f).read_text(encoding="utf-8"))) for f in files]
        row = {"files": files}
        for metric in metrics:
            values = [m[metric] for m in loaded if metric in m]
            if len(values) == len(loaded) and values:
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                row[metric] = {"mean": round(float(statistics.mean(values)), 2), "sd": round(sd, 2), "values": values}
        out["rows"][label] = row
    return out


def _scores(metrics: dict) -> dict:
    """The scores of a metrics file: a training run's keeps its tuned model's under ``after``."""
    return metrics["after"] if isinstance(metrics.get("after"), dict) and "task" in metrics else metrics


def markdown(results: dict) -> str:
    head = ["row", *results["metrics"], "seeds"]
    body = [[label, *(f"{r[m]['mean']} ± {r[m]['sd']}" if m in r else "-" for m in results["metrics"]), len(r["files"])]
            for label, r in results["rows"].items()]
    args = " ".join(f'--row "{label}={",".join(r["files"])}"' for label, r in results["rows"].items())
    return ("# Mean ± sd over seeds\n\n" + table(head, body)
            + f"\n\nReproduce: `python -m loraforge.bench.seed_table {args} --metrics {','.join(results['metrics'])}`\n")


def _row(value: str) -> tuple[str, list[str]]:
    label, sep, files = value.partition("=")
    if not sep or not files:
        raise argparse.ArgumentTypeError(f"--row {value!r}: give LABEL=FILE,FILE,...")
    missing = [f for f in files.split(",") if not Path(f).is_file()]
    if missing:
        raise argparse.ArgumentTypeError(f"--row {label}: no such file: {', '.join(missing)}")
    return label, files.split(",")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--row", type=_row, action="append", required=True, help="LABEL=FILE,FILE,... (one per seed)")
    parser.add_argument("--metrics", default="chrf,bleu,markup", help="comma-separated metric keys")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--name", default="seed-table")
    args = parser.parse_args(argv)
    results = summarize(dict(args.row), args.metrics.split(","))
    publish(args.out, args.name, results, markdown(results), [markdown(results)])


if __name__ == "__main__":
    main()
