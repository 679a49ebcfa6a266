"""Numbered identities: ``[NAME_1]`` is the same person everywhere in a document (or a batch, when
one table is shared), ``[NAME_2]`` another. Values are matched after normalization, so "John Smith",
"john  smith" and "Dr. John Smith" are one person and "+49 30 123" equals "+49-30-123"."""

from __future__ import annotations

import re
import unicodedata

_TITLES = re.compile(r"^(?:mr|mrs|ms|miss|dr|prof|herr|frau|mme|m)\.?\s+")
_COMPACT_TYPES = {"PHONE", "CREDIT_CARD", "IBAN", "SSN", "IP_ADDRESS"}


def normalize(value: str, ptype: str) -> str:
    """The key two mentions of one identity share: case, width, whitespace and separators ignored."""
    v = " ".join(unicodedata.normalize("NFKC", value).casefold().split())
    if ptype == "NAME":
        v = _TITLES.sub("", v)
    elif ptype in _COMPACT_TYPES:
        v = re.sub(r"[^0-9a-z:.+]" if ptype == "IP_ADDRESS" else r"[^0-9a-z+]", "", v)
        if ptype == "PHONE" and v.startswith("00"):
            v = "+" + v[2:]
    return v


class IdentityTable:
    """type -> normalized value -> number (1, 2, ... in order of first mention)."""

    def __init__(self) -> None:
        self.numbers: dict[str, dict[str, int]] = {}

    def number(self, ptype: str, value: str) -> int:
        per_type = self.numbers.setdefault(ptype, {})
        key = normalize(value, ptype)
        if key not in per_type:
            per_type[key] = len(per_type) + 1
        return per_type[key]

    def placeholder(self, ptype: str, value: str) -> str:
        return f"[{ptype}_{self.number(ptype, value)}]"
