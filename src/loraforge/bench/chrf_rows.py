"""How much of a run's corpus chrF rides on its longest rows: ``k8s:test``'s longest source (a 1,713-character list
of controller names) weighs as much as dozens of short segments, and whether a run translates it whole, cuts it or
falls back to its English swings the whole set's chrF by up to three points between seeds of one recipe.

    python -m loraforge.bench.chrf_rows runs/lift-today runs/lift-mem2 [--test k8s:test] [--drop 1]
        [--out bench/results] [--name chrf-rows]

Reads each run's ``outputs_after.jsonl`` (what ``loraforge train``/``eval`` wrote) and scores it with sacrebleu
against the test split's references: the corpus chrF, the chrF without the ``--drop`` longest rows (by source
length), and each dropped row's own chrF and length.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from loraforge.bench.report import publish, table


def score(runs: list[str], test: str = "k8s:test", drop: int = 1) -> dict:
    import sacrebleu

    from loraforge.data.formats import read_records, resolve_spec

    rows = [r for _, r in read_records(resolve_spec(test))]
    reference = {r["id"]: r["zh"] for r in rows}
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
    return results


def markdown(results: dict) -> str:
    rows = [[run, r["n"], r["chrf"], r["chrf_without_longest"],
             "; ".join(f"{x['output_chars']}/{x['reference_chars']} chars, chrF {x['chrf']}" for x in r["longest"])]
            for run, r in results["runs"].items()]
    return (f"# Corpus chrF with and without the {results['drop']} longest row(s) of `{results['test']}`\n\n"
            + table(["run", "rows", "chrF", f"chrF without the {results['drop']} longest",
                     "longest: output/reference length, its chrF"], rows)
            + "\n\nReproduce: `python -m loraforge.bench.chrf_rows " + " ".join(results["runs"])
            + f" --test {results['test']} --drop {results['drop']}`\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories holding outputs_after.jsonl")
    parser.add_argument("--test", default="k8s:test")
    parser.add_argument("--drop", type=int, default=1, help="how many of the longest rows to leave out")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--name", default="chrf-rows")
    args = parser.parse_args(argv)
    results = score(args.runs, args.test, args.drop)
    publish(args.out, args.name, results, markdown(results), [markdown(results)])


if __name__ == "__main__":
    main()
