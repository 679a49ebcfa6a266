"""Convert public PII datasets a user already has into loraforge PII records.

``ai4privacy`` (pii-masking-200k/300k/400k): each row has ``source_text`` and ``privacy_mask``, a
list (or its JSON text) of ``{"value", "start", "end", "label"}``. Its labels are finer than our
placeholders: first/middle/last names (and a title next to them) become one ``[NAME]``, street,
building number and postcode (with the city or state next to them) one ``[ADDRESS]``; a city on its
own stays, as do labels with no placeholder of ours (dates, companies, job titles, amounts, ...),
which the report counts.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from pathlib import Path

from loraforge.data.formats import DataError, read_records
from loraforge.data.pii import apply_spans

DIRECT = {
    "EMAIL": "EMAIL",
    "PHONENUMBER": "PHONE", "TELEPHONENUM": "PHONE", "PHONE": "PHONE",
    "DOB": "DATE_OF_BIRTH", "DATEOFBIRTH": "DATE_OF_BIRTH",
    "SSN": "SSN", "SOCIALNUM": "SSN", "IDCARDNUM": "SSN", "PASSPORTNUM": "SSN", "DRIVERLICENSENUM": "SSN",
    "TAXNUM": "SSN",
    "CREDITCARDNUMBER": "CREDIT_CARD", "CREDITCARD": "CREDIT_CARD",
    "IBAN": "IBAN",
    "IP": "IP_ADDRESS", "IPV4": "IP_ADDRESS", "IPV6": "IP_ADDRESS", "IPADDRESS": "IP_ADDRESS",
    "USERNAME": "USERNAME",
    "PASSWORD": "PASSWORD", "PIN": "PASSWORD",
}
NAME_PARTS = {"FIRSTNAME", "MIDDLENAME", "LASTNAME", "GIVENNAME", "SURNAME", "FULLNAME", "NAME"}
TITLES = {"PREFIX", "TITLE"}
ADDRESS_PARTS = {"STREET", "STREETADDRESS", "BUILDINGNUMBER", "BUILDINGNUM", "SECONDARYADDRESS", "ZIPCODE",
                 "POSTCODE"}
PLACES = {"CITY", "STATE", "COUNTY"}  # PII only as part of an address
KNOWN = set(DIRECT) | NAME_PARTS | TITLES | ADDRESS_PARTS | PLACES


def _label(raw: str) -> str:
    """'FIRSTNAME_1' / 'givenname1' -> 'FIRSTNAME' / 'GIVENNAME'; 'IPV4' stays 'IPV4'."""
    label = re.sub(r"_\d+$", "", str(raw).upper())
    bare = label.rstrip("0123456789")
    return bare if label not in KNOWN and bare in KNOWN else label


def _group(label: str) -> str | None:
    return "name" if label in NAME_PARTS | TITLES else "address" if label in ADDRESS_PARTS | PLACES else None


def convert_mask(text: str, mask: list[dict], where: str = "") -> tuple[list[dict], Counter]:
    """Our spans for one ai4privacy row, and a count of the labels left unmasked."""
    kept: Counter = Counter()
    items = []
    for m in sorted(mask, key=lambda m: (int(m["start"]), -int(m["end"]))):
        start, end, label = int(m["start"]), int(m["end"]), _label(m["label"])
        if not 0 <= start < end <= len(text) or ("value" in m and text[start:end] != m["value"]):
            raise DataError(f"{where}: privacy_mask entry {m} does not match source_text")
        if items and start < items[-1][1]:
            continue  # overlapping annotation: the first (longest) wins
        items.append((start, end, label))
    spans: list[dict] = []
    i = 0
    while i < len(items):
        start, end, label = items[i]
        group, labels, j = _group(label), {label}, i + 1
        gap = r"[\s.]*" if group == "name" else r"[\s,.\-/]*"
        while group and j < len(items) and _group(items[j][2]) == group \
                and re.fullmatch(gap, text[end:items[j][0]]):
            end, labels = items[j][1], labels | {items[j][2]}
            j += 1
        if group == "name":
            ptype = "NAME" if labels & NAME_PARTS else None
        elif group == "address":
            ptype = "ADDRESS" if labels & ADDRESS_PARTS else None
        else:
            ptype = DIRECT.get(label)
        if ptype is None:
            kept.update(labels)
        else:
            spans.append({"start": start, "end": end, "type": ptype, "value": text[start:end]})
        i = j
    return spans, kept


def _parse_mask(raw, where: str) -> list[dict]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            try:
                raw = ast.literal_eval(raw)  # some dumps hold the Python repr of the list
            except (ValueError, SyntaxError):
                raise DataError(f"{where}: privacy_mask is neither a list nor JSON text") from None
    if not isinstance(raw, list) or not all(isinstance(m, dict) and {"start", "end", "label"} <= set(m) for m in raw):
        raise DataError(f"{where}: privacy_mask must be a list of objects with start, end and label")
    return raw


def import_ai4privacy(path: str | Path, split: str = "train", language: str | None = None) -> tuple[list[dict], dict]:
    """Records in our format from an ai4privacy file (jsonl/json/csv/parquet), and a report of what
    was converted. ``language`` keeps only rows whose ``language`` field matches (e.g. 'en')."""
    records, types, kept = [], Counter(), Counter()
    for i, (where, rec) in enumerate(read_records(path)):
        if "source_text" not in rec or "privacy_mask" not in rec:
            raise DataError(f"{where}: expected fields 'source_text' and 'privacy_mask' (got {sorted(rec)})")
        if language and rec.get("language") not in (None, language):
            continue
        text = rec["source_text"]
        spans, left = convert_mask(text, _parse_mask(rec["privacy_mask"], where), where)
        kept.update(left)
        types.update(s["type"] for s in spans)
        records.append({"id": f"ai4privacy-{rec.get('id', i)}", "text": text, "masked": apply_spans(text, spans),
                        "spans": spans, "family": split, "template": "ai4privacy", "locale": rec.get("language")})
    if not records:
        raise DataError(f"{path}: no rows converted")
    return records, {"records": len(records), "entities": dict(types), "labels_left_unmasked": dict(kept)}
