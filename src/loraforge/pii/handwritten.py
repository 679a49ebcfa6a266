"""The hand-written PII evaluation set: ``datasets/pii-handwritten/cases.txt`` (written by a person,
annotated inline as ``⟦TYPE|value⟧``, rules in RULES.md) -> ``eval.jsonl.gz`` in pii:test's record format.

Kept out of training by name: its split is ``eval`` in its own folder, and no training config or
generator reads it. Rebuild with ``python -m loraforge.pii.handwritten``; a test checks the shipped
file equals a rebuild and that every span's offsets hold its value. ``--train`` instead rewrites
``pii:train`` with the hand-written training cases (``datasets/pii-handwritten-train``, ``data/pii_cases.py``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from loraforge.data.pii_cases import parse_cases

__all__ = ["build", "folder", "parse_cases"]  # parse_cases lives with the data (the training cases use it too)


def folder() -> Path:
    return Path(str(resources.files("loraforge") / "datasets" / "pii-handwritten"))


def build(out: Path | None = None) -> Path:
    from loraforge.data.pii import write_jsonl

    base = folder()
    records = parse_cases((base / "cases.txt").read_text(encoding="utf-8"), str(base / "cases.txt"))
    return write_jsonl(records, out or base / "eval.jsonl.gz")


if __name__ == "__main__":  # --train: rewrite pii:train with the current hand-written training cases
    import argparse

    parser = argparse.ArgumentParser(description="rebuild eval.jsonl.gz, or (--train) pii:train's hand-written part")
    parser.add_argument("--train", action="store_true")
    parser.add_argument("--with-cases", default="", help="--train: comma-separated case files trained on too")
    parser.add_argument("--out", help="--train: write the split here instead of over pii:train")
    args = parser.parse_args()
    if args.train:
        from loraforge.data.formats import resolve_spec
        from loraforge.data.pii import refresh_training_split

        extra = tuple(f for f in args.with_cases.split(",") if f)
        print(refresh_training_split(resolve_spec("pii:train"), extra=extra, out=args.out))
    elif args.with_cases or args.out:
        parser.error("--with-cases and --out go with --train")
    else:
        print(build())
