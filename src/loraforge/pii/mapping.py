"""Reversible masking: a mapping from what replaced each span back to the original value.

The mapping IS personal data (it holds every value that was masked). It is built only when asked,
carries ``MAPPING_WARNING`` in the file itself, and should be written with ``MAPPING_FILE_MODE``.

Two ways back:
- ``strict`` (default): the text must be exactly the masked text the mapping was made for (its
  SHA-256 is stored); every replacement is spliced back by offset, so even plain ``[NAME]``
  placeholders round-trip: ``unmask(mask(x).text, mapping) == x``.
- not strict: for text derived from the masked one (an LLM's answer about it); each numbered
  placeholder or pseudonym is replaced by its value. Plain placeholders are ambiguous then, and a
  numbered placeholder the mapping does not know is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from loraforge.data.formats import DataError

MAPPING_WARNING = ("This mapping contains the original personal data that was masked. Treat it like the data "
                   "itself: keep it encrypted and access-controlled, never next to the masked text, and delete it "
                   "when no longer needed.")
MAPPING_FILE_MODE = 0o600
MAPPING_VERSION = 1
_NUMBERED = re.compile(r"\[([A-Z][A-Z_]*[A-Z])_(\d+)\]")


class MappingError(DataError):
    """A mapping that does not belong to the text, or is not a loraforge mapping."""


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Mapping:
    masked_sha256: str
    # {"start", "end" (offsets in the masked text), "type", "replacement", "value"}
    entries: list[dict] = field(default_factory=list)
    style: str = "placeholder"

    def to_dict(self) -> dict:
        return {"warning": MAPPING_WARNING, "version": MAPPING_VERSION, "style": self.style,
                "masked_sha256": self.masked_sha256, "entries": self.entries}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=1)

    @classmethod
    def from_dict(cls, data: dict, where: str = "mapping") -> "Mapping":
        if not isinstance(data, dict) or data.get("version") != MAPPING_VERSION or "entries" not in data:
            raise MappingError(f"{where}: not a loraforge PII mapping (version {MAPPING_VERSION} with 'entries')")
        for i, e in enumerate(data["entries"]):
            if not isinstance(e, dict) or not {"start", "end", "replacement", "value"} <= set(e):
                raise MappingError(f"{where}: entry {i} lacks start/end/replacement/value")
        return cls(data.get("masked_sha256", ""), list(data["entries"]), data.get("style", "placeholder"))


def build_mapping(original: str, spans, replacements: list[str], style: str) -> tuple[str, Mapping]:
    """The masked text and its mapping (entries in masked-text offsets)."""
    out, entries, last, pos = [], [], 0, 0
    for s, r in sorted(zip(spans, replacements), key=lambda x: x[0].start):
        out.append(original[last:s.start])
        pos += s.start - last
        entries.append({"start": pos, "end": pos + len(r), "type": s.type, "replacement": r,
                        "value": original[s.start:s.end]})
        out.append(r)
        pos += len(r)
        last = s.end
    out.append(original[last:])
    masked = "".join(out)
    return masked, Mapping(sha256(masked), entries, style)


def unmask(text: str, mapping: Mapping | dict, strict: bool = True, where: str = "mapping") -> str:
    """The original text back (see the module docstring); a mapping for another text is refused."""
    m = mapping if isinstance(mapping, Mapping) else Mapping.from_dict(mapping, where)
    if strict:
        if sha256(text) != m.masked_sha256:
            raise MappingError(f"{where}: this mapping was made for another text (SHA-256 differs); "
                               "use the mapping written with this masked text, or strict=False for derived text")
        out, last = [], 0
        for e in sorted(m.entries, key=lambda e: e["start"]):
            if text[e["start"]:e["end"]] != e["replacement"]:
                raise MappingError(f"{where}: entry at {e['start']} does not match the text")
            out += [text[last:e["start"]], e["value"]]
            last = e["end"]
        return "".join(out) + text[last:]
    from loraforge.pii.identities import normalize

    values: dict[str, str] = {}
    for e in m.entries:  # one replacement may stand for spellings of one identity, never two identities
        first = values.setdefault(e["replacement"], e["value"])
        if normalize(first, e.get("type", "")) != normalize(e["value"], e.get("type", "")):
            raise MappingError(f"{where}: {e['replacement']!r} stands for several values; only text masked with "
                               "style 'numbered' or 'pseudonym' can be restored without strict mode")
    unknown = sorted({p.group(0) for p in _NUMBERED.finditer(text)} - set(values))
    if unknown:
        raise MappingError(f"{where}: the text has placeholders the mapping does not know: {', '.join(unknown[:5])}")
    if values and not any(r in text for r in values):
        raise MappingError(f"{where}: none of the mapping's replacements occur in the text: wrong mapping?")
    keys = sorted(values, key=len, reverse=True)
    if not keys:
        return text
    return re.sub("|".join(map(re.escape, keys)), lambda x: values[x.group(0)], text)
