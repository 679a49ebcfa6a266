"""Where the validated patterns mask what is not personal data, on sets a new rule is not written from: the
generator's ``pii:train`` and ``pii:dev``, the hand-written training texts, and the English Kubernetes docs
(no personal data, apart from a few example passwords). The check a new pattern passes before the test sets
are scored, as a command so its numbers can be published.

    python -m loraforge.bench.pii_pattern_misses [--patterns profile_handle,table_name] [--docs ../shared/data/k8s-zh-cn]
        [--show-values] [--out bench/results] [--name pii-pattern-misses]

A match over no gold value counts as over-masking (``over``), one over a gold value as ``found``; on the docs
every match is listed with ``--show-values`` (they hold no personal data), for a reader to judge.
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import Counter
from importlib.resources import files
from pathlib import Path

from loraforge.bench.report import publish, table

DOCS = "../shared/data/k8s-zh-cn"


def _records(split: str) -> list[dict]:
    if split == "handwritten-train":
        from loraforge.data.pii_cases import training_cases

        return training_cases()
    path = files("loraforge.datasets").joinpath(f"pii/{split}.jsonl.gz")
    with gzip.open(str(path), "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def run(names: list[str] | None, docs: str | None, show_values: bool) -> tuple[dict, list[str]]:
    from loraforge.pii import patterns as pat
    from loraforge.pii.conform import conform

    chosen = pat.select(names)
    rows, lines = {}, []
    for split in ("train", "dev", "handwritten-train"):
        counts: Counter = Counter()
        records = _records(split)
        for r in records:
            text = r["text"]
            matches = _validated_matches(text, chosen)
            for s in conform(text, pat.find(text, chosen)):
                gold = any(s.start < g["end"] and g["start"] < s.end for g in r["spans"])
                counts[("found" if gold else "over", _pattern_of(s, matches))] += 1
                if not gold and show_values:
                    lines.append(f"{split} over {s.type}: {_context(text, s)!r}")
        rows[split] = {"texts": len(records), "found": _by_pattern(counts, "found"), "over": _by_pattern(counts, "over")}
    if docs and (root := Path(docs) / "content/en/docs").is_dir():
        counts = Counter()
        pages = sorted(root.rglob("*.md"))
        for page in pages:
            text = page.read_text(encoding="utf-8")
            matches = _validated_matches(text, chosen)
            for s in conform(text, pat.find(text, chosen)):
                counts[("over", _pattern_of(s, matches))] += 1
                if show_values:
                    lines.append(f"docs {page.relative_to(root)} {s.type}: {_context(text, s)!r}")
        rows["k8s-en-docs"] = {"texts": len(pages), "found": {}, "over": _by_pattern(counts, "over")}
    return {"patterns": [p.name for p in chosen], "docs": docs, "sets": rows}, lines


def _context(text: str, span) -> str:
    return f"{text[max(0, span.start - 40):span.start]}⟦{text[span.start:span.end]}⟧{text[span.end:span.end + 20]}"


def _validated_matches(text: str, chosen) -> list[tuple[str, int, int]]:
    """(pattern name, start, end) of every validated match in ``text``, in the order of ``chosen``: found once per
    text, then looked up for each of its spans."""
    return [(p.name, a, b) for p in chosen for a, b in p.matches(text) if p.check(text, a, text[a:b])]


def _pattern_of(span, matches: list[tuple[str, int, int]]) -> str:
    """The first chosen pattern whose validated match overlaps this span (conform may have trimmed or grown it)."""
    return next((name for name, a, b in matches if a < span.end and span.start < b), "?")


def _by_pattern(counts: Counter, kind: str) -> dict[str, int]:
    return {name: n for (k, name), n in sorted(counts.items()) if k == kind}


def markdown(results: dict) -> str:
    names = results["patterns"]
    rows = [[split, v["texts"], sum(v["over"].values()), sum(v["found"].values()),
             ", ".join(f"{k} {n}" for k, n in v["over"].items()) or "-"] for split, v in results["sets"].items()]
    return ("# Validated patterns' matches over no personal data\n\nPatterns: " + ", ".join(f"`{n}`" for n in names)
            + "\n\n" + table(["set", "texts", "over", "found", "over by pattern"], rows)
            + "\n\n`over`: a match over no gold value (on the docs: every match; they hold no personal data but a few "
              "example passwords). Reproduce: `python -m loraforge.bench.pii_pattern_misses"
            + (f" --patterns {','.join(names)}" if len(names) < 20 else "") + "`\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patterns", default="", help="comma-separated pattern names (default: all)")
    parser.add_argument("--docs", default=DOCS, help="the k8s docs checkout (content/en/docs); '' to skip")
    parser.add_argument("--show-values", action="store_true", help="print every over-masking match with its text")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--name", default="pii-pattern-misses")
    args = parser.parse_args(argv)
    names = [n for n in args.patterns.split(",") if n.strip()] or None
    results, lines = run(names, args.docs or None, args.show_values)
    publish(args.out, args.name, results, markdown(results), lines)


if __name__ == "__main__":
    main()
