"""Read user data (jsonl/json/csv/parquet, or a packaged split) into one shape: ``Example``.

Every error names the file and, where there is one, the line: a training run that silently
drops half its data because one line was malformed is worse than one that stops.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable


class DataError(ValueError):
    """Bad input data; the message names the file and line."""


@dataclass
class Example:
    """One supervised pair. ``source`` is what the model reads, ``target`` what it must write."""

    source: str
    target: str
    id: str = ""
    system: str | None = None  # a system message that came with chat-shaped data
    meta: dict[str, Any] = field(default_factory=dict)


# Common field shapes, tried in order when the config names no fields.
FIELD_SHAPES: list[tuple[str, str]] = [
    ("source", "target"),
    ("prompt", "completion"),
    ("input", "output"),
    ("text", "masked"),  # PII records: raw text -> masked text
    ("instruction", "response"),
]

PACKAGED_PREFIX = "k8s:"


def _packaged_split_path(spec: str) -> Path:
    split = spec[len(PACKAGED_PREFIX):]
    base = resources.files("loraforge") / "datasets" / "k8s-en-zh"
    path = Path(str(base)) / f"{split}.jsonl.gz"
    if not path.is_file():
        available = sorted(p.name.split(".")[0] for p in Path(str(base)).glob("*.jsonl.gz")) if Path(str(base)).is_dir() else []
        raise DataError(f"packaged split {spec!r} not found; available: {', '.join('k8s:' + a for a in available) or 'none'}")
    return path


def read_records(path: str | Path) -> Iterable[tuple[int, dict]]:
    """Yield (line_number, record) from jsonl(.gz), json, csv or parquet."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    name = path.name.lower()
    if name.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
        for i, rec in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield i, rec
        return
    raw = path.read_bytes()
    if name.endswith(".gz"):
        raw = gzip.decompress(raw)
        name = name[:-3]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte {e.start})") from None
    if name.endswith(".jsonl"):
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{i}: not valid JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path}:{i}: expected a JSON object, got {type(rec).__name__}")
            yield i, rec
    elif name.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of objects")
        for i, rec in enumerate(data, start=1):
            if not isinstance(rec, dict):
                raise DataError(f"{path}: item {i}: expected a JSON object")
            yield i, rec
    elif name.endswith(".csv") or name.endswith(".tsv"):
        reader = csv.DictReader(io.StringIO(text), delimiter="\t" if name.endswith(".tsv") else ",")
        for rec in reader:
            yield reader.line_num, dict(rec)
    else:
        raise DataError(f"{path}: unknown format; use .jsonl, .json, .csv, .tsv or .parquet (optionally .gz)")


def _from_messages(rec: dict, where: str) -> Example:
    msgs = rec["messages"]
    if not isinstance(msgs, list) or not msgs:
        raise DataError(f"{where}: 'messages' must be a non-empty list")
    system = next((m.get("content") for m in msgs if m.get("role") == "system"), None)
    users = [m for m in msgs if m.get("role") == "user"]
    last = msgs[-1]
    if last.get("role") != "assistant" or not users:
        raise DataError(f"{where}: 'messages' must contain a user turn and end with an assistant turn")
    return Example(source=users[-1].get("content", ""), target=last.get("content", ""), system=system)


def record_to_example(
    rec: dict, where: str, source_field: str | None, target_field: str | None, src_lang: str, tgt_lang: str
) -> Example:
    if source_field or target_field:
        if not (source_field and target_field):
            raise DataError("data.source_field and data.target_field must be set together")
        shape = (source_field, target_field)
    elif "messages" in rec:
        ex = _from_messages(rec, where)
        ex.id = str(rec.get("id", ""))
        return ex
    else:
        shapes = [(src_lang, tgt_lang)] + FIELD_SHAPES
        shape = next((s for s in shapes if s[0] in rec and s[1] in rec), None)
        if shape is None:
            tried = ", ".join(f"{a}/{b}" for a, b in shapes)
            raise DataError(
                f"{where}: no known field pair in record with keys {sorted(rec)}; tried {tried} and 'messages'. "
                "Set data.source_field and data.target_field."
            )
    for key in shape:
        if key not in rec:
            raise DataError(f"{where}: missing field {key!r} (record keys: {sorted(rec)})")
        if not isinstance(rec[key], str):
            raise DataError(f"{where}: field {key!r} must be a string, got {type(rec[key]).__name__}")
    meta = {k: v for k, v in rec.items() if k not in shape and k != "id"}
    return Example(source=rec[shape[0]], target=rec[shape[1]], id=str(rec.get("id", "")), meta=meta)


def load_examples(
    spec: str,
    source_field: str | None = None,
    target_field: str | None = None,
    src_lang: str = "en",
    tgt_lang: str = "zh",
    limit: int | None = None,
) -> list[Example]:
    """Load a file or packaged split ('k8s:train') as Examples. An empty result is an error."""
    path = _packaged_split_path(spec) if spec.startswith(PACKAGED_PREFIX) else Path(spec)
    out: list[Example] = []
    for line, rec in read_records(path):
        out.append(record_to_example(rec, f"{path}:{line}", source_field, target_field, src_lang, tgt_lang))
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise DataError(f"{path}: no examples found (empty file?)")
    return out
