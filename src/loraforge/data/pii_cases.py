"""PII texts annotated by hand: ``⟦TYPE|value⟧`` inline, a case per ``=== <id> <kind>`` header (RULES.md of
``datasets/pii-handwritten``) -> records in pii:test's format (``text``, ``masked``, ``spans`` with offsets).

Three sets are written this way, by different hands, and kept apart (tests check no text or value is shared):
- ``datasets/pii-handwritten/cases.txt``: the evaluation set; never trained or tuned on.
- ``bench/data/pii-handwritten-dev/cases-*.txt``: the development rounds in use (``bench.pii_errors.DEV_FILES``),
  where rules and taggers are chosen; a round used up moves into training.
- ``datasets/pii-handwritten-train/part-*.txt``: realistic texts for training, added to ``pii:train``
  ``HANDWRITTEN_REPEAT`` times (``python -m loraforge.pii.handwritten --train`` refreshes it after an edit);
  the generator's templates cannot write text this varied.
"""

from __future__ import annotations

import re
from collections import Counter
from importlib import resources
from pathlib import Path

from loraforge.data.pii_templates import PLACEHOLDER_TYPES

MARK = re.compile(r"⟦([A-Z_]+)\|([^⟦⟧]+)⟧")
HEADER = re.compile(r"^=== (\S+) (\S+)$")
TRAINING_FAMILY = "handwritten-train"
HANDWRITTEN_REPEAT = 2
"""Copies of each hand-written training case in pii:train, beside its 4,000 generated texts (not tuned)."""


def training_folder() -> Path:
    return Path(str(resources.files("loraforge") / "datasets" / "pii-handwritten-train"))


def parse_cases(source: str, where: str = "cases.txt", family: str = "handwritten") -> list[dict]:
    """Records ``{"id", "text", "masked", "spans", "family", "template", "locale"}`` from the annotated file."""
    records, current, lines = [], None, []

    def flush():
        if current is not None:
            records.append(_record(current[0], current[1], "\n".join(lines).rstrip("\n"), where, family))

    for n, line in enumerate(source.split("\n"), start=1):
        m = HEADER.match(line)
        if m:
            flush()
            current, lines = (m.group(1), m.group(2)), []
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


def training_cases(folder: Path | None = None) -> list[dict]:
    """Every case of ``part-*.txt`` in the training folder, in file order."""
    folder = folder or training_folder()
    records = []
    for path in sorted(folder.glob("part-*.txt")):
        records += parse_cases(path.read_text(encoding="utf-8"), str(path), family=TRAINING_FAMILY)
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{folder}: a case id is used in two files")
    return records


def training_records(repeat: int = HANDWRITTEN_REPEAT, folder: Path | None = None,
                     extra: tuple[str | Path, ...] = ()) -> list[dict]:
    """``repeat`` copies of every training case, ids suffixed ``#k``: the share they take in pii:train.
    ``extra``: more case files trained on as training cases after them (used-up development rounds); their
    records keep their own ids, which say where they came from."""
    if repeat <= 0:
        return []  # the files are not read: held-out context runs ask for none by default
    cases = training_cases(folder) + [{**r, "family": TRAINING_FAMILY} for f in extra
                                      for r in parse_cases(Path(f).read_text(encoding="utf-8"), str(f))]
    return [{**r, "id": f"{r['id']}#{k}"} for k in range(repeat) for r in cases]


def _record(case_id: str, kind: str, annotated: str, where: str, family: str) -> dict:
    text, masked, spans, last = [], [], [], 0
    pos = 0
    for m in MARK.finditer(annotated):
        ptype, value = m.groups()
        if ptype not in PLACEHOLDER_TYPES:
            raise ValueError(f"{where}: case {case_id}: unknown type {ptype!r} (known: {', '.join(PLACEHOLDER_TYPES)})")
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
    prefix = "pii-handwritten" if family == "handwritten" else f"pii-{family}"
    return {"id": f"{prefix}-{case_id}", "text": full, "masked": "".join(masked), "spans": spans,
            "family": family, "template": kind, "locale": None}


def summary(records: list[dict]) -> dict:
    """What a set of annotated cases holds (the counts its README and docs quote)."""
    return {"cases": len(records), "without_pii": sum(not r["spans"] for r in records),
            "values": sum(len(r["spans"]) for r in records), "kinds": len({r["template"] for r in records}),
            "by_type": dict(Counter(s["type"] for r in records for s in r["spans"]).most_common())}


if __name__ == "__main__":  # python -m loraforge.data.pii_cases: the training cases' counts
    print(summary(training_cases()))
