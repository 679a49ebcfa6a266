"""After merging: a person named once in a text is masked wherever the text names them again.

A tagger reads each mention in its own context and misses some (``Pak ⟦Agus⟧ ... Pak Agus WA nya 0812...``,
a chat speaker in one line but not the next); a reader of the masked text would learn the name from the
mention left. So each NAME the merged spans hold, and each word of four letters or more of a name of several
words (the surname said alone later: ``Il sig. Gallo``), is masked at its other whole-word mentions with the
same case. Not where the mention is part of a company's name (``Hausverwaltung Lindner & Partner GmbH``,
``Solano-Travel``): RULES.md leaves those unmasked.
"""

from __future__ import annotations

import re

from loraforge.pii.conform import LEGAL_FORM
from loraforge.pii.spans import Span

_MIN_PART = 4  # a name's word said alone: shorter ones (``Li``, ``Ana``) are too often other words or parts of them
# a company's name goes on past the mention: ``& Partner``, ``Sanitär & Heizung``, a legal form within a few words
_COMPANY_AFTER = re.compile(r"(?:[ \t]+[^\W\d_][\w.'’-]*){0,3}(?:[ \t]*[&+]|[ \t]+" + LEGAL_FORM + r"(?![\w]))")


def _mentions(name: str) -> set[str]:
    """What to look for of one NAME: the whole (each word capitalized, three letters or more), and its words of
    ``_MIN_PART`` letters or more when it has several."""
    words = name.split()
    if not words or not all(w[:1].isupper() and len(w) >= 3 for w in words):
        return set()
    return {name} | ({w for w in words if len(w) >= _MIN_PART and w.isalpha()} if len(words) > 1 else set())


def names_everywhere(text: str, spans: list[Span]) -> list[Span]:
    """``spans`` with every other mention of a NAME they hold masked too (longest mentions first)."""
    mentions = set().union(*(_mentions(text[s.start:s.end]) for s in spans if s.type == "NAME"))
    added: list[Span] = []
    taken = sorted((s.start, s.end) for s in spans)
    for value in sorted(mentions, key=len, reverse=True):
        for m in re.finditer(r"(?<![\w-])" + re.escape(value) + r"(?![\w-])", text):
            a, b = m.span()
            if any(x < b and a < y for x, y in taken) or _COMPANY_AFTER.match(text, b):
                continue
            added.append(Span(a, b, "NAME", 1.0, "recurring"))  # source: found again, by this pass
            taken.append((a, b))
    return sorted(spans + added, key=lambda s: (s.start, s.end)) if added else spans
