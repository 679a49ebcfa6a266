"""The hand-written PII evaluation set: ``datasets/pii-handwritten/cases.txt`` (written by a person,
annotated inline as ``⟦TYPE|value⟧``, rules in RULES.md) -> ``eval.jsonl.gz`` in pii:test's record format.

Kept out of training by name: its split is ``eval`` in its own folder, and no training config or
generator reads it. Rebuild with ``python -m loraforge.pii.handwritten``; a test checks the shipped
file equals a rebuild and that every span's offsets hold its value.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from loraforge.pii.spans import TYPES

MARK = re.compile(r"⟦([A-Z_]+)\|([^⟦⟧]+)⟧")
HEADER = re.compile(r"^=== (\S+) (\S+)$")


def folder() -> Path:
    return Path(str(resources.files("loraforge") / "datasets" / "pii-handwritten"))


def parse_cases(source: str, where: str = "cases.txt") -> list[dict]:
    """Records ``{"id", "text", "masked", "spans", "family", "template", "locale"}`` from the annotated file."""
    records, current, lines = [], None, []

    def flush():
        if current is not None:
            records.append(_record(current[0], current[1], "\n".join(lines).rstrip("\n"), where))

    for n, line in enumerate(source.split("\n"), start=1):
        m = HEADER.match(line)
        if m:
            flush()
            current, lines = (m.group(1), m.group(2), n), []
        elif current is None:
            if line.strip() and not line.startswith("#"):
                raise ValueError(f"{where}:{n}: text before the first '=== id kind' header")
        else:
            lines.append(line)
    flush()
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{where}: duplicate case ids")
    return records


def _record(case_id: str, kind: str, annotated: str, where: str) -> dict:
    text, masked, spans, last = [], [], [], 0
    pos = 0
    for m in MARK.finditer(annotated):
        ptype, value = m.groups()
        if ptype not in TYPES:
            raise ValueError(f"{where}: case {case_id}: unknown type {ptype!r} (known: {', '.join(TYPES)})")
        if value != value.strip():
            raise ValueError(f"{where}: case {case_id}: value {value!r} has surrounding whitespace")
        lit = annotated[last:m.start()]
        text.append(lit)
        masked.append(lit)
        pos += len(lit)
        spans.append({"start": pos, "end": pos + len(value), "type": ptype, "value": value})
        text.append(value)
        masked.append(f"[{ptype}]")
        pos += len(value)
        last = m.end()
    text.append(annotated[last:])
    masked.append(annotated[last:])
    full = "".join(text)
    if "⟦" in full or "⟧" in full:
        raise ValueError(f"{where}: case {case_id}: unbalanced ⟦ ⟧ marker")
    return {"id": f"pii-handwritten-{case_id}", "text": full, "masked": "".join(masked), "spans": spans,
            "family": "handwritten", "template": kind, "locale": None}


def build(out: Path | None = None) -> Path:
    from loraforge.data.pii import write_jsonl

    base = folder()
    records = parse_cases((base / "cases.txt").read_text(encoding="utf-8"), str(base / "cases.txt"))
    return write_jsonl(records, out or base / "eval.jsonl.gz")


if __name__ == "__main__":
    print(build())
