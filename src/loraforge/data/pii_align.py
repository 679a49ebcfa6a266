"""Entity spans recovered from a text and its masked copy: which stretches of the source each
``[TYPE]`` placeholder replaced. Training a tagger needs them for data that carries no offsets, and
the PII metrics (``eval.pii``) read both gold and predicted entities this way. A placeholder that was
already in the source ("[EMAIL]" in a template) is read as text, not as a mask.
"""

from __future__ import annotations

import difflib
import re

PLACEHOLDER = re.compile(r"\[([A-Z][A-Z_]*[A-Z])\]")
_MAX_ALIGN_PLACEHOLDERS = 40  # regex alignment backtracks; beyond this use the diff alignment

Span = tuple[int, int, str]  # (start, end, type) in source coordinates


def _regex_align(source: str, masked: str) -> list[Span] | None:
    parts = PLACEHOLDER.split(masked)  # literal, TYPE, literal, TYPE, ...
    literals, types = parts[0::2], parts[1::2]
    if len(types) > _MAX_ALIGN_PLACEHOLDERS:
        return None
    pos = 0  # cheap precheck: every literal must occur in order, else the regex cannot match
    for lit in literals:
        pos = source.find(lit, pos)
        if pos < 0:
            return None
        pos += len(lit)
    pattern = re.escape(literals[0]) + "".join(
        f"({re.escape('[' + t + ']')}|.+?){re.escape(lit)}" for t, lit in zip(types, literals[1:]))
    m = re.fullmatch(pattern, source, flags=re.DOTALL)
    if m is None:
        return None
    return [(m.start(g), m.end(g), t) for g, t in enumerate(types, start=1) if m.group(g) != f"[{t}]"]


def _diff_align(source: str, masked: str) -> list[Span]:
    """Best effort when the output also changed other text: replaced regions holding placeholders."""
    spans = []
    sm = difflib.SequenceMatcher(None, source, masked, autojunk=False)
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op == "equal":
            continue
        new = masked[j1:j2]
        found = PLACEHOLDER.findall(new)
        if found and i2 > i1 and source[i1:i2] != new:
            spans.append((i1, i2, found[0]))
    return spans


def align(source: str, masked: str) -> list[Span]:
    """Entity spans (in ``source``) that turn ``source`` into ``masked``."""
    spans = _regex_align(source, masked)
    return spans if spans is not None else _diff_align(source, masked)


def replace_spans(source: str, replacements: list[tuple[int, int, str]]) -> str:
    """The inverse of ``align``: ``source`` with each (start, end, text) stretch replaced, e.g. by
    ``[TYPE]``. The stretches must not overlap (merge them first)."""
    out, last = [], 0
    for start, end, text in sorted(replacements, key=lambda r: r[0]):
        if start < last:
            raise ValueError(f"overlapping spans at {start}: merge them first")
        out += [source[last:start], text]
        last = end
    return "".join(out) + source[last:]
