"""How much of a run's corpus chrF rides on its longest rows: ``k8s:test``'s longest source (a 1,713-character list
of controller names) weighs as much as dozens of short segments, and whether a run translates it whole, cuts it or
falls back to its English swings the whole set's chrF by up to three points between seeds of one recipe.

    python -m loraforge.bench.chrf_rows runs/lift-today runs/lift-mem2 [--test k8s:test] [--drop 1]
        [--min-output-ratio 0.5] [--out bench/results] [--name chrf-rows]

Reads each run's ``outputs_after.jsonl`` (what ``loraforge train``/``eval`` wrote) and scores it with sacrebleu
against the test split's references: the corpus chrF, the chrF without the ``--drop`` longest rows (by source
length), and each dropped row's own chrF and length. ``--min-output-ratio``: also the chrF after evaluation's
short-translation check (``eval.inference.keep_source_if_unfit``, ``eval.min_output_ratio``) on the stored
outputs, for runs evaluated before the check existed, and which rows it kept in English.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

from loraforge.bench.report import publish, table


@functools.cache
def _tokenizer(model_name: str, revision: str | None):
    """One load per model: the runs compared are usually several seeds of one base model."""
    from loraforge.config import ModelConfig
    from loraforge.models.load import load_tokenizer

    return load_tokenizer(ModelConfig(name=model_name, revision=revision))[0]


def _guard(run: str, ratio: float):
    """Evaluation's short-translation check with the run's own tokenizer: (sources, outputs) -> Generated."""
    from loraforge.config import load_config
    from loraforge.eval.inference import Generated, keep_source_if_unfit

    cfg = load_config(Path(run) / "config.yaml", [f"eval.min_output_ratio={ratio}"])
    tokenizer = _tokenizer(cfg.model.name, cfg.model.revision)
    return lambda sources, outputs: keep_source_if_unfit(tokenizer, sources, Generated(list(outputs), []), cfg)


def score(runs: list[str], test: str = "k8s:test", drop: int = 1, min_output_ratio: float | None = None) -> dict:
    import sacrebleu

    from loraforge.data.formats import read_records, resolve_spec

    rows = [r for _, r in read_records(resolve_spec(test))]
    reference = {r["id"]: r["zh"] for r in rows}
    source = {r["id"]: r["en"] for r in rows}
    longest = {r["id"] for r in sorted(rows, key=lambda r: len(r["en"]), reverse=True)[:drop]}
    results = {"test": test, "drop": drop, "runs": {}}
    for run in runs:
        outputs = [json.loads(line) for line in (Path(run) / "outputs_after.jsonl").read_text(encoding="utf-8").splitlines()]
        hyps, refs = [o["output"] for o in outputs], [reference[o["id"]] for o in outputs]
        kept = [i for i, o in enumerate(outputs) if o["id"] not in longest]
        results["runs"][run] = {
            "n": len(outputs),
            "chrf": round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2),
            "chrf_without_longest": round(sacrebleu.corpus_chrf([hyps[i] for i in kept], [[refs[i] for i in kept]]).score, 2),
            "longest": [{"id": o["id"], "output_chars": len(o["output"]), "reference_chars": len(reference[o["id"]]),
                         "chrf": round(sacrebleu.sentence_chrf(o["output"], [reference[o["id"]]]).score, 1)}
                        for o in outputs if o["id"] in longest],
        }
        if min_output_ratio is not None:
            guarded = _guard(run, min_output_ratio)([source[o["id"]] for o in outputs], hyps)
            results["runs"][run].update(
                chrf_short_kept_in_english=round(sacrebleu.corpus_chrf(guarded.texts, [refs]).score, 2),
                short_rows=[outputs[i]["id"] for i in guarded.short])
    results["min_output_ratio"] = min_output_ratio
    return results


def markdown(results: dict) -> str:
    guarded = results.get("min_output_ratio") is not None
    rows = [[run, r["n"], r["chrf"], r["chrf_without_longest"],
             "; ".join(f"{x['output_chars']}/{x['reference_chars']} chars, chrF {x['chrf']}" for x in r["longest"]),
             *([r["chrf_short_kept_in_english"], ", ".join(r["short_rows"]) or "none"] if guarded else [])]
            for run, r in results["runs"].items()]
    head = ["run", "rows", "chrF", f"chrF without the {results['drop']} longest", "longest: output/reference length, its chrF"]
    if guarded:
        head += [f"chrF, short kept in English (ratio {results['min_output_ratio']})", "rows kept in English"]
    option = f" --min-output-ratio {results['min_output_ratio']}" if guarded else ""
    return (f"# Corpus chrF with and without the {results['drop']} longest row(s) of `{results['test']}`\n\n"
            + table(head, rows)
            + "\n\nReproduce: `python -m loraforge.bench.chrf_rows " + " ".join(results["runs"])
            + f" --test {results['test']} --drop {results['drop']}{option}`\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories holding outputs_after.jsonl")
    parser.add_argument("--test", default="k8s:test")
    parser.add_argument("--drop", type=int, default=1, help="how many of the longest rows to leave out")
    parser.add_argument("--min-output-ratio", type=float, default=None,
                        help="also score with evaluation's short-translation check at this ratio")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--name", default="chrf-rows")
    args = parser.parse_args(argv)
    results = score(args.runs, args.test, args.drop, args.min_output_ratio)
    publish(args.out, args.name, results, markdown(results), [markdown(results)])


if __name__ == "__main__":
    main()
