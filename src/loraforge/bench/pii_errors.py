"""A PII masker's scores and errors on a hand-annotated development set: where rules and training data
are tuned, so the hand-written evaluation set (``datasets/pii-handwritten``) and ``pii:test`` are never read
to find errors.

    python -m loraforge.bench.pii_errors [--adapter runs/pii-tagger-v4] [--cases bench/data/pii-handwritten-dev/cases.txt[,cases-2.txt]]
        [--bias 0] [--curve=-1,0,1,2] [--show-values] [--out bench/results] [--name pii-handdev]

The set is written like the evaluation set (``⟦TYPE|value⟧`` inline, ``RULES.md``) but by other hands and
kept apart from it. Writes ``<name>.json`` / ``<name>.md`` with the scores and the error counts by kind;
``--show-values`` also prints every error with its text (personal data of the development set: asked for).
``--curve`` adds the scores at more biases (the recall knob), from the same tagging pass.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from loraforge.bench.report import cpu_name, publish, table

KEYS = ("leak_rate", "typed_f1", "entity_f1", "over_masking", "no_pii_unchanged")
DEV_CASES = "bench/data/pii-handwritten-dev/cases.txt"
DEV_FILES = (DEV_CASES, "bench/data/pii-handwritten-dev/cases-2.txt",  # round 1, round 2 (written later, apart)
             "bench/data/pii-handwritten-dev/cases-3.txt",  # round 3: mostly texts without personal data
             "bench/data/pii-handwritten-dev/cases-4.txt",  # round 4: values that leak (names, IDs, dates of birth)
             "bench/data/pii-handwritten-dev/cases-5.txt",  # round 5: from RULES.md alone, no rule written from it; chooses between taggers
             "bench/data/pii-handwritten-dev/cases-6.txt")  # round 6: structured look-alikes, for the validated patterns' rules


def errors(record: dict, spans) -> list[dict]:
    """The masker's errors on one record: a gold value left partly or wholly visible (``leak``), masked
    with another type (``type``) or with other bounds (``bounds``), and a span over no gold value (``over``).
    ``found``: the spans involved, as (start, end, type, which finder)."""
    gold = [(s["start"], s["end"], s["type"]) for s in record["spans"]]
    pred = [(s.start, s.end, s.type, s.source) for s in spans]
    out = []
    for a, b, t in gold:
        covered = [p for p in pred if p[0] < b and a < p[1]]
        hidden = sum(1 for i in range(a, b) if any(p[0] <= i < p[1] for p in covered))
        if hidden < b - a:
            out.append({"kind": "leak", "type": t, "start": a, "end": b, "found": covered})
        elif not any(p[2] == t for p in covered):
            out.append({"kind": "type", "type": t, "start": a, "end": b, "found": covered})
        elif (a, b, t) not in [p[:3] for p in pred]:
            out.append({"kind": "bounds", "type": t, "start": a, "end": b, "found": covered})
    for p in pred:
        if not any(p[0] < b and a < p[1] for a, b, _ in gold):
            out.append({"kind": "over", "type": p[2], "start": p[0], "end": p[1], "found": [p]})
    return out


def describe(record: dict, err: dict) -> str:
    """One error as a line: kind, type, the value in its line's context, what was found instead."""
    text = record["text"]
    a, b = err["start"], err["end"]
    left = text.rfind("\n", 0, a) + 1
    right = text.find("\n", b)
    right = len(text) if right < 0 else right
    context = f"{text[max(left, a - 60):a]}⟦{text[a:b]}⟧{text[b:min(right, b + 60)]}"
    found = ", ".join(f"{pt}:{text[pa:pb]!r} ({source})" for pa, pb, pt, source in err["found"])
    return f"{record['id']} {err['kind']} {err['type']}: {context!r}" + (f" -> {found}" if found else "")


def run(adapter: str, cases: str, bias: float | None, show_values: bool,
        curve: list[float] = ()) -> tuple[dict, list[str]]:
    from loraforge.pii.evaluate import score_spans, sweep_bias, timed
    from loraforge.pii.handwritten import parse_cases
    from loraforge.workflows.mask import build_masker

    records = [r for path in cases.split(",") for r in parse_cases(Path(path).read_text(encoding="utf-8"), path)]
    masker = build_masker(adapter, merge="union", bias=bias)
    texts = [r["text"] for r in records]
    points = []
    if curve:
        masker.model.memo = {}  # the tagger reads each text once; every bias decodes the same probabilities
        points = sweep_bias(masker, records, curve, batch_size=max(1, len(records)))
        masker.model.memo = None
    spans, seconds = timed(masker.find_spans, texts, max(1, len(records)))  # timed without the memo
    scores = score_spans(records, spans, seconds)
    errs = [(r, e) for r, s in zip(records, spans) for e in errors(r, s)]
    kinds = Counter(f"{e['kind']} {e['type']}" for _, e in errs)
    results = {"adapter": adapter, "cases": cases, "bias": masker.bias, "cpu": cpu_name(), "n": len(records),
               "no_pii_cases": sum(1 for r in records if not r["spans"]), "scores": {k: scores[k] for k in KEYS},
               "texts_per_s": scores.get("texts_per_s"), "errors": dict(sorted(kinds.items())), "curve": points}
    return results, [describe(r, e) for r, e in errs] if show_values else []


def markdown(results: dict) -> str:
    scores = table(["set", "bias", *KEYS], [[results["cases"], results["bias"], *(results["scores"][k] for k in KEYS)]])
    errs = table(["error", "count"], [[k, v] for k, v in results["errors"].items()])
    curve, biases = "", ",".join(format(p["bias"], "g") for p in results.get("curve", []))
    if results.get("curve"):
        rows = [[p["bias"], *(p[k] for k in KEYS)] for p in results["curve"]]
        curve = "\n\nAt each bias (`--curve`):\n\n" + table(["bias", *KEYS], rows)
    return (f"# PII masker on the hand-written development set\n\n{results['n']} cases ({results['no_pii_cases']} "
            f"without personal data), model + validated patterns, adapter `{results['adapter']}`. CPU: "
            f"{results['cpu']}.\n\n{scores}\n\nErrors by kind and gold (or found) type:\n\n{errs}{curve}\n\n"
            f"Reproduce: `python -m loraforge.bench.pii_errors --adapter {results['adapter']} --cases {results['cases']}"
            f" --bias {results['bias']:g}" + (f" --curve={biases}" if biases else "") + "`\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", default="runs/pii-tagger-v4")
    parser.add_argument("--cases", default=DEV_CASES, help="a cases file, or several comma-separated")
    parser.add_argument("--bias", type=float, default=None, help="the recall knob (default: the run's own)")
    parser.add_argument("--curve", default="", help="also score at these biases, e.g. --curve=-1,0,1,2")
    parser.add_argument("--show-values", action="store_true", help="print each error with its text")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--name", default="pii-handdev")
    args = parser.parse_args(argv)
    curve = [float(b) for b in args.curve.split(",") if b.strip()]
    results, lines = run(args.adapter, args.cases, args.bias, args.show_values, curve)
    publish(args.out, args.name, results, markdown(results), lines)


if __name__ == "__main__":
    main()
