"""After merging: what a text's tables and lines say about the spans in them, which no single span's rule can
tell: the type a column's header names, and the phones and premises on organisations' contact lines.

A phone's own text says nothing about whose line it is; its line and paragraph do (a company's legal form, a role
mailbox, opening hours, a row of a table of stores) together with the people the model found there, so this pass
runs on the merged spans of model and patterns (``Masker.combine``), after ``conform`` put each span to the rules.
"""

from __future__ import annotations

import re
from dataclasses import replace

from loraforge.pii.labels import ORGANISATION_PHONE_LABEL
from loraforge.pii.never_personal import LEGAL_FORM, ORGANISATION_NOUN, role_mailbox
from loraforge.pii.patterns import EMAIL, Table, code_cells, organisation_phone_cells, organisation_rows, typed_cells
from loraforge.pii.spans import Span, line_bounds, paragraph_bounds
from loraforge.pii.wordlists import unaccented

_LEGAL_FORM_WORD = re.compile(r"(?<![\w.])" + LEGAL_FORM + r"(?![\w/])")
_PERSONAL_TYPES = {"NAME", "EMAIL", "USERNAME"}
_BRACKET_OPEN = re.compile(r"[ \t]*[(\[][ \t]*")


def _switchboard_after(text: str, end: int) -> bool:
    """A switchboard's label in brackets right after the number (``+49 89 2019 5500 (Zentrale)``); a label before
    it is the number's own (``conform``), and one elsewhere on the line may be another number's (``vår växel på
    090-13 42 00 eller mig direkt på 070-...``)."""
    m = _BRACKET_OPEN.match(text, end)
    return bool(m and ORGANISATION_PHONE_LABEL.match(text, m.end()))


# a shop or branch by its number (``Store #0217``, ``Filiale Nr. 12``): its line is the shop's
_STORE_NUMBER = re.compile(r"(?i)\b(?:store|branch|shop|filiale|sucursal|tienda|magasin|loja|negozio)\s*(?:#|no\.?|nr\.?)\s*\d+")
# opening hours (``Mo–Fr 6:00–18:30``, ``9h–18h``, ``de 8 h à 19 h``, ``8:00〜22:00``): a shop's or an office's line
_OPENING_HOURS = re.compile(r"(?<![\d:.])\d{1,2}(?:[:.]\d{2}|\s?h(?:\s?\d{2})?)\s*(?:[–—~〜-]|à|a|to|bis|tot|till)\s*"
                            r"\d{1,2}(?:[:.]\d{2}|\s?h\b)(?![\d:.])")


def typed_by_header(spans: list[Span], found_tables: tuple[Table, ...]) -> list[Span]:
    """``spans`` with the type their table column's header names (``patterns.typed_cells``), for a span
    found in such a cell: the header says what a value's shape cannot."""
    cells = typed_cells(found_tables)
    return [replace(s, type=next((t for a, b, t in cells if a <= s.start and s.end <= b), s.type)) for s in spans]


def organisation_lines(text: str, spans: list[Span], found_tables: tuple[Table, ...],
                       people_found: bool = True) -> list[Span]:
    """``spans`` without the phones and addresses on an organisation's contact line (RULES.md: PHONE and ADDRESS
    are a person's; a company's premises are not): a line that
    names an organisation (a role mailbox such as ``events@``, a company's legal form such as ``GmbH``, a row of a
    table of stores or branches: ``patterns.organisation_rows``, opening hours; an office or a body,
    ``never_personal.ORGANISATION_NOUN``, where the whole text names no one: ``call me at the office`` is often a
    signed letter's) in a paragraph (a table's row: the row) that holds no person (no name, personal mailbox or login found in it). Why after merging: the
    patterns find the phone, the model the person that would make it theirs (``Jan Nowak, ACME Sp. z o.o.,
    +48 601 ...`` keeps its phone, as does a signature's ``ACME GmbH | +49 170 ...`` under its person's name).
    Without a model (``people_found=False``: patterns alone find no names) only what a table's header says
    applies: any span in a product-code column (``patterns.code_cells``), any phone under an organisation's
    phone column (``patterns.organisation_phone_cells``). ``found_tables``: ``patterns.tables(text)``."""
    if not spans:
        return []
    out, codes = [], code_cells(found_tables)
    nobody = not any(o.type in _PERSONAL_TYPES for o in spans)  # an office's line counts only in a text of no one
    has_phone = any(s.type == "PHONE" for s in spans)
    phones = organisation_phone_cells(found_tables) if has_phone else []
    rows = organisation_rows(found_tables) if has_phone and people_found else []
    for s in spans:
        if any(a <= s.start and s.end <= b for a, b in codes):
            continue  # a product code in its column
        if s.type == "PHONE" and any(a <= s.start and s.end <= b for a, b in phones):
            continue  # under ``store_phone`` or ``växel``: the header says whose line it is
        if s.type in ("PHONE", "SSN", "ADDRESS") and people_found:
            lo, hi = line_bounds(text, s.start, s.end)
            line = text[lo:hi]
            row = next(((a, b) for a, b in rows if a <= s.start < b), None) if s.type == "PHONE" else None
            # a signature names its person a line or two above the company's line: look at the whole paragraph,
            # except in a table's row, which is its own record
            plo, phi = row or paragraph_bounds(text, s.start)
            person = any(o.type in _PERSONAL_TYPES and plo <= o.start < phi for o in spans)
            if s.type == "SSN":  # a company's tax number on its own line (``ElektroMax Sp. z o.o., NIP 779-...``)
                organisation = bool(_LEGAL_FORM_WORD.search(line))
            else:
                organisation = row is not None or bool(_LEGAL_FORM_WORD.search(line)) or bool(_OPENING_HOURS.search(line)) \
                    or _switchboard_after(text, s.end) or bool(_STORE_NUMBER.search(line)) \
                    or any(role_mailbox(m.group(0)) for m in EMAIL.finditer(line)) \
                    or (nobody and bool(ORGANISATION_NOUN.search(unaccented(line))))
            if organisation and not person:
                continue
        out.append(s)
    return out
