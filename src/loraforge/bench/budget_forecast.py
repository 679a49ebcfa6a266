"""How well ``train.max_minutes`` forecasts a run's length, replayed on finished runs.

    python -m loraforge.bench.budget_forecast runs/pii-tagger-v14 runs/pii-tagger-b14s1 [...] [--out bench/results]
        [--name budget-forecast] [--set data.train=FILE ...]

Each run's stream is rebuilt from its ``config.yaml`` (the batch order is a function of the seed), each step's
seconds from its history (its tokens / its ``tokens_per_s``), and the forecast made after the first
``BUDGET_PROBE_STEPS`` steps is compared with the seconds the run's steps really took: by the pace per step
(before 2026-12-07) and by the pace per token position over the batches still to come (``budgeted_steps``). A
positive error errs short (it would cut a run that fits); a negative one would run into the budget's stop.
The replayed tokens must add up to the run's own count (``train.tokens``; for runs before it was kept,
``train.seconds`` x ``train.tokens_per_s``): a run whose data has changed since (a rewritten ``pii:train``) is
refused; ``--set data.train=<the old split>`` replays it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from loraforge.bench.report import cpu_name, publish, table


def step_seconds(run: Path, overrides: list[str] = ()) -> tuple[list[float], list[int], dict]:
    """Per step of a finished run: its seconds and its ``work``; and its train config's budget settings."""
    from loraforge.config import load_config
    from loraforge.data.splits import encode_splits, load_splits
    from loraforge.models.load import load_model
    from loraforge.train.batching import make_stream
    from loraforge.train.loop import count_tokens, packs

    cfg = load_config(run / "config.yaml", list(overrides))
    stats = json.loads((run / "metrics.json").read_text())["train"]
    if stats.get("world_size", 1) != 1:
        raise SystemExit(f"{run}: {stats['world_size']} ranks; the replay reads one rank's micro-batches")
    if cfg.train.grad_accum != 1:
        raise SystemExit(f"{run}: grad_accum {cfg.train.grad_accum}; the replay reads one micro-batch per step")
    loaded = load_model(cfg.model.name, cfg.model.dtype, cfg.model.family)
    data = encode_splits(cfg, load_splits(cfg), loaded.tokenizer, cfg.model.trained_family(loaded.family))
    packed = packs(loaded.model, loaded.family, cfg.train.packing, "cpu")
    stream = make_stream(data.train, cfg.train.batch_size, cfg.train.seed, cfg.train.length_grouping, packed)
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]
    seconds, work, replayed = [], [], 0
    for row in (r for r in rows if "tokens_per_s" in r):
        batch = stream.batch(row["step"] - 1, loaded.tokenizer.pad_token_id or 0, loaded.family)
        tokens = count_tokens(batch)  # what the run's tokens_per_s counted
        seconds.append(tokens / row["tokens_per_s"])
        work.append(stream.work(row["step"] - 1))
        replayed += tokens
    trained = stats.get("tokens") or stats["seconds"] * stats["tokens_per_s"]  # the product: older runs, rounded
    if abs(replayed / trained - 1) > 0.01:
        raise SystemExit(f"{run}: the replayed batches hold {replayed} tokens, the run trained on "
                         f"{trained:.0f}: its data has changed since; "
                         "replay it with --set data.train=<the split it trained on>")
    return seconds, work, {"steps": cfg.train.steps, "max_minutes": cfg.train.max_minutes}


def forecast_errors(seconds: list[float], work: list[int], probe: int) -> dict:
    """Each forecast of the time the run's own steps took, made from its first ``probe`` steps: by the pace per
    step (every step one unit of work) and by the pace per token position (``work``)."""
    real, spent = sum(seconds), sum(seconds[:probe])

    def error(units: list[int]) -> float:
        forecast = spent + spent / sum(units[:probe]) * sum(units[probe:])
        return round(100 * (forecast / real - 1), 1)

    return {"steps": len(seconds), "seconds": round(real, 1), "probe_seconds": round(spent, 1),
            "per_step_error_pct": error([1] * len(seconds)), "per_token_error_pct": error(work)}


def main(argv: list[str] | None = None) -> None:
    from loraforge.config import TrainConfig
    from loraforge.train.loop import BUDGET_PROBE_STEPS, budgeted_steps

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="finished run directories (config.yaml, history.jsonl)")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--name", default="budget-forecast")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every run replayed (e.g. the data it trained on)")
    args = parser.parse_args(argv)
    results, rows = {"cpu": cpu_name(), "probe_steps": BUDGET_PROBE_STEPS, "runs": {}}, []
    for run in map(Path, args.runs):
        seconds, work, budget = step_seconds(run, args.set)
        row = forecast_errors(seconds, work, BUDGET_PROBE_STEPS)
        if budget["max_minutes"]:  # what each forecast would have fixed; steps past the history at their mean work
            cfg = TrainConfig(steps=budget["steps"], max_minutes=budget["max_minutes"])
            mean = sum(work) / len(work)
            probe = sum(seconds[:BUDGET_PROBE_STEPS])
            row["budgeted_per_step"] = budgeted_steps(cfg, probe, BUDGET_PROBE_STEPS)
            row["budgeted_per_token"] = budgeted_steps(
                cfg, probe, BUDGET_PROBE_STEPS, lambda s: work[s - 1] if s <= len(work) else mean)
        results["runs"][str(run)] = row
        rows.append([run.name, row["steps"], row["seconds"], f"{row['per_step_error_pct']:+.1f}",
                     f"{row['per_token_error_pct']:+.1f}", row.get("budgeted_per_step", "-"),
                     row.get("budgeted_per_token", "-")])
    markdown = (f"# Time-budget forecast, replayed ({results['cpu']})\n\n" + table(
        ["run", "steps", "train s", "per-step forecast error %", "per-token forecast error %",
         "steps fixed (per step)", "steps fixed (per token)"], rows))
    publish(args.out, args.name, results, markdown, [markdown])


if __name__ == "__main__":
    main()
