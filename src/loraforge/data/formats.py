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
from typing import Any, Iterable, Iterator


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


def example_problems(example: Example) -> list[str]:
    """What makes an example bad whatever the model: the one definition ``data check`` and ``data
    stats`` share (an empty target trains the model to say nothing; an empty source, to answer nothing)."""
    problems = []
    if not example.source.strip():
        problems.append("empty source")
    if not example.target.strip():
        problems.append("empty target")
    return problems


PII_FIELDS = ("text", "masked")  # PII records: raw text -> masked text

# Common field shapes, tried in order when the config names no fields.
FIELD_SHAPES: list[tuple[str, str]] = [
    ("source", "target"),
    ("prompt", "completion"),
    ("input", "output"),
    PII_FIELDS,
    ("instruction", "response"),
]

FIELD_HINT = "data.source_field and data.target_field"
"""How a caller names the field settings in errors: config keys here, flags for ``data stats``."""

PACKAGED_PREFIX = "k8s:"
PACKAGED = {"k8s:": "k8s-en-zh", "k8s-ja:": "k8s-en-ja", "k8s-ko:": "k8s-en-ko", "pii:": "pii"}  # prefix -> folder under loraforge/datasets


def _packaged_split_path(spec: str) -> Path:
    prefix = spec[: spec.index(":") + 1]
    split = spec[len(prefix):]
    base = resources.files("loraforge") / "datasets" / PACKAGED[prefix]
    path = Path(str(base)) / f"{split}.jsonl.gz"
    if not path.is_file():
        available = sorted(p.name.split(".")[0] for p in Path(str(base)).glob("*.jsonl.gz")) if Path(str(base)).is_dir() else []
        raise DataError(f"packaged split {spec!r} not found; available: {', '.join(prefix + a for a in available) or 'none'}")
    return path


def decode_utf8(raw: bytes, path: str | Path) -> str:
    """UTF-8 text (a leading BOM, common in spreadsheet exports, is dropped); bad bytes name the line."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte {e.start})") from None


def read_records(path: str | Path) -> Iterator[tuple[str, dict]]:
    """Yield (where, record) from jsonl(.gz), json, csv or parquet; ``where`` is ``file:line``
    (or ``file: item N`` / ``file: row N`` where a format has no lines) for error messages."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    name = path.name.lower()
    if name.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises ArrowInvalid/OSError subclasses for corrupt files
            raise DataError(f"{path}: not a readable parquet file ({e})") from None
        for i, rec in enumerate(rows, start=1):
            yield f"{path}: row {i}", rec
        return
    raw = path.read_bytes()
    if name.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: not a valid gzip file ({e})") from None
        name = name[:-3]
    text = decode_utf8(raw, path)
    if name.endswith(".jsonl"):
        # split on "\n" only: str.splitlines() would also split on U+2028 etc. inside JSON strings
        for i, line in enumerate(text.split("\n"), start=1):
            if line.strip():
                yield f"{path}:{i}", json_record(line, f"{path}:{i}")
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
                raise DataError(f"{path}: item {i}: expected a JSON object, got {type(rec).__name__}")
            yield f"{path}: item {i}", rec
    elif name.endswith(".csv") or name.endswith(".tsv"):
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if name.endswith(".tsv") else ",")
        try:
            for rec in reader:
                # a short row leaves the missing columns None; treat as absent so errors say so
                yield f"{path}:{reader.line_num}", {k: v for k, v in rec.items() if v is not None and k is not None}
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num}: bad CSV ({e})") from None
    else:
        raise DataError(f"{path}: unknown format; use .jsonl, .json, .csv, .tsv or .parquet (optionally .gz)")


def _from_messages(rec: dict, where: str) -> Example:
    msgs = rec["messages"]
    if not isinstance(msgs, list) or not msgs:
        raise DataError(f"{where}: 'messages' must be a non-empty list")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: messages[{i}] must be an object with string 'role' and 'content'")
    system = next((m.get("content") for m in msgs if m.get("role") == "system"), None)
    users = [m for m in msgs if m.get("role") == "user"]
    last = msgs[-1]
    if last.get("role") != "assistant" or not users:
        raise DataError(f"{where}: 'messages' must contain a user turn and end with an assistant turn")
    return Example(source=users[-1].get("content", ""), target=last.get("content", ""), system=system)


def record_to_example(
    rec: dict, where: str, source_field: str | None, target_field: str | None, src_lang: str, tgt_lang: str,
    field_hint: str = FIELD_HINT,
) -> Example:
    """``field_hint`` names the settings that choose the fields, as the caller's user sets them."""
    if source_field or target_field:
        if not (source_field and target_field):
            raise DataError(f"{field_hint} must be set together")
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
                f"Set {field_hint}."
            )
    for key in shape:
        if key not in rec:
            raise DataError(f"{where}: missing field {key!r} (record keys: {sorted(rec)})")
        if not isinstance(rec[key], str):
            raise DataError(f"{where}: field {key!r} must be a string, got {type(rec[key]).__name__}")
    meta = {k: v for k, v in rec.items() if k not in shape and k != "id"}
    return Example(source=rec[shape[0]], target=rec[shape[1]], id=str(rec.get("id", "")), meta=meta)


def json_record(line: str, where: str) -> dict:
    """One jsonl line as a JSON object; errors name ``where`` (file:line)."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON ({e.msg})") from None
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    return rec


def resolve_spec(spec: str | Path) -> Path:
    """A file path, or the file behind a packaged split name ('k8s:train')."""
    spec = str(spec)
    return _packaged_split_path(spec) if spec.startswith(tuple(PACKAGED)) else Path(spec)


def iter_examples(
    spec: str | Path,
    source_field: str | None = None,
    target_field: str | None = None,
    src_lang: str = "en",
    tgt_lang: str = "zh",
    field_hint: str = FIELD_HINT,
) -> Iterator[tuple[str, Example]]:
    """Yield (where, Example) from a file or packaged split; ``where`` names file and line."""
    for where, rec in read_records(resolve_spec(spec)):
        yield where, record_to_example(rec, where, source_field, target_field, src_lang, tgt_lang, field_hint)


def load_examples(
    spec: str,
    source_field: str | None = None,
    target_field: str | None = None,
    src_lang: str = "en",
    tgt_lang: str = "zh",
    limit: int | None = None,
) -> list[Example]:
    """Load a file or packaged split ('k8s:train') as Examples. An empty result is an error."""
    out: list[Example] = []
    for _, ex in iter_examples(spec, source_field, target_field, src_lang, tgt_lang):
        out.append(ex)
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise DataError(f"{resolve_spec(spec)}: no examples found (empty file?)")
    return out
