"""Inputs and outputs of masking: text files, folders, jsonl streams; errors that name the file and line.

Streaming reads one line at a time (``iter_jsonl``), so memory stays bounded whatever the file size.
Output formats: ``text`` (the masked text), ``spans`` (jsonl: type, start, end in the input's
character offsets, no values), ``both`` (jsonl with the masked text and the spans).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from loraforge.data.formats import DataError, decode_utf8, json_record

FORMATS = ("text", "spans", "both")


def check_text(text: str, where: str) -> str:
    """The text itself, or a DataError saying why it cannot be masked."""
    if not isinstance(text, str):
        raise DataError(f"{where}: expected text, got {type(text).__name__}")
    if "\x00" in text:
        raise DataError(f"{where}: binary data (NUL byte at offset {text.index(chr(0))}); mask text only")
    if not text.strip():
        raise DataError(f"{where}: empty text: nothing to mask")
    return text


def read_text(path: str | Path) -> str:
    """A whole UTF-8 text file (binary, non-UTF-8 and empty files are refused, naming the file)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    raw = path.read_bytes()
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise DataError(f"{path}: binary file (NUL byte at offset {nul}); mask text files only")
    return check_text(decode_utf8(raw, path), str(path))


def iter_files(folder: str | Path) -> Iterator[Path]:
    """Files under ``folder`` (recursively, sorted, hidden ones skipped)."""
    folder = Path(folder)
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts):
            yield p


def iter_jsonl(path: str | Path, field: str = "text", progress: bool = False) -> Iterator[tuple[str, dict]]:
    """(``file:line``, record) per non-blank line, checked: valid UTF-8 and JSON, an object whose
    ``field`` is non-empty text. Reads line by line (bounded memory); ``.gz`` is decompressed on the fly."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    opener = gzip.open if path.name.endswith(".gz") else open
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=None if path.name.endswith(".gz") else path.stat().st_size, unit="B", unit_scale=True,
                   desc=f"mask {path.name}", dynamic_ncols=True)
    try:
        with opener(path, "rb") as f:
            for i, raw in enumerate(f, start=1):
                if bar is not None:
                    bar.update(len(raw))
                where = f"{path}:{i}"
                try:
                    line = raw.decode("utf-8-sig" if i == 1 else "utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{where}: not valid UTF-8 (byte {e.start} of the line)") from None
                if not line.strip():
                    continue
                rec = json_record(line, where)
                if field not in rec:
                    raise DataError(f"{where}: no {field!r} field (choose the text field with --field)")
                check_text(rec[field], f"{where}: field {field!r}")
                yield where, rec
    except (OSError, EOFError) as e:
        if isinstance(e, gzip.BadGzipFile) or isinstance(e, EOFError):
            raise DataError(f"{path}: not a valid gzip file ({e})") from None
        raise
    finally:
        if bar is not None:
            bar.close()


def output_record(result, fmt: str, record: dict | None = None, field: str = "text") -> str:
    """One output item: the masked text (``text``) or a jsonl line (``spans`` / ``both``)."""
    if fmt not in FORMATS:
        raise ValueError(f"output format must be one of {FORMATS}, got {fmt!r}")
    if fmt == "text":
        return result.text
    rec = result.to_record()
    if fmt == "spans":
        rec.pop("masked")
    out = {k: v for k, v in (record or {}).items() if k != field}
    if fmt == "both":
        out[field] = rec.pop("masked")
    out["spans"] = rec["spans"]
    return json.dumps(out, ensure_ascii=False)
