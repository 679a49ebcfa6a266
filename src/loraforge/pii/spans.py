"""Spans: the one currency of masking. Every finder (the model, the patterns, Presidio) returns
spans in the input's character offsets; merging, numbering, pseudonyms and rendering work on spans,
so the output can differ from the input only where a span is replaced (faithful by construction).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import asdict, dataclass, field

from loraforge.data.pii_align import replace_spans
from loraforge.data.pii_templates import PLACEHOLDER_TYPES

TYPES = PLACEHOLDER_TYPES
MERGE_MODES = ("union", "model", "patterns")
BRACKETS = {"(": ")", "[": "]", "{": "}", "<": ">"}  # a value's edges lose them when unmatched inside it, or around all of it


def line_bounds(text: str, a: int, b: int) -> tuple[int, int]:
    """Start and end of the line that holds ``text[a:b]`` (where every field rule's search stops)."""
    end = text.find("\n", b)
    return text.rfind("\n", 0, a) + 1, len(text) if end < 0 else end


def paragraph_bounds(text: str, at: int) -> tuple[int, int]:
    """The lines around ``at`` up to the nearest blank lines."""
    lo = max(text.rfind("\n\n", 0, at), -1) + 1
    hi = text.find("\n\n", at)
    return lo, len(text) if hi < 0 else hi


@dataclass(frozen=True, order=True)
class Span:
    """``text[start:end]`` is personal data of ``type``; ``source`` says who found it."""

    start: int
    end: int
    type: str
    score: float = 1.0
    source: str = field(default="model", compare=False)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MaskResult:
    """The masked text and the spans (in the *input's* offsets) it replaced."""

    text: str
    spans: list[Span]
    replacements: list[str] = field(default_factory=list)  # what each span became, same order
    mapping: object | None = None  # a ``mapping.Mapping`` when reversible masking was asked for

    def to_record(self, **extra) -> dict:
        """A jsonl-ready record: no raw values, only offsets into the input."""
        spans = [{"start": s.start, "end": s.end, "type": s.type, "score": round(s.score, 4), "source": s.source}
                 for s in self.spans]
        return {**extra, "masked": self.text, "spans": spans}


def trim(text: str, span: Span) -> Span | None:
    """The span without surrounding whitespace (None when nothing is left)."""
    start, end = span.start, span.end
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if start >= end:
        return None
    return Span(start, end, span.type, span.score, span.source)


def merge_spans(model: list[Span], patterns: list[Span], mode: str = "union", text: str | None = None) -> list[Span]:
    """One non-overlapping, sorted span list from the model's and the patterns' spans.

    ``union`` keeps both; overlapping spans become one span covering all of them (nothing they
    cover can leak), typed by the longest member (a checksum-validated pattern wins a tie, then the
    type name), scored by the highest. ``model`` / ``patterns`` keep only one side (still merged).
    With ``text``, ``union`` first cuts a model span that joins validated values (``split_joined``).
    """
    if mode not in MERGE_MODES:
        raise ValueError(f"merge mode must be one of {MERGE_MODES}, got {mode!r}")
    if mode == "union" and text is not None:
        ordered = sorted(patterns)
        starts = [p.start for p in ordered]
        model = [piece for s in model
                 for piece in split_joined(text, s, ordered[bisect_left(starts, s.start):bisect_right(starts, s.end)])]
    chosen = (model if mode != "patterns" else []) + (patterns if mode != "model" else [])
    return coalesce(chosen)


def split_joined(text: str, span: Span, patterns: list[Span]) -> list[Span]:
    """A model span that runs several validated values together (``jane@example.com,+61-2-8902-5876``
    in a CSV row, ``deploy@10.0.0.7`` in an ssh command) is cut at them: the patterns' spans hold the
    values, so what is left over is separators (dropped) or, before an address, the login of
    ``user@host`` (a USERNAME). Anything else left over (letters of an address around a number that
    looks like a phone) keeps the span whole, as union always did, and so does a password inside: any character
    may belong to a password (``)zjpf##p1oL!``), so the pattern's edges are no value's edges."""
    inside = sorted(p for p in patterns if span.start <= p.start and p.end <= span.end)  # patterns: any order
    if not inside or any(p.type == "PASSWORD" for p in inside):
        return [span]
    pieces, cursor = [], span.start
    for p in inside:
        pieces.append((cursor, p.start, p))
        cursor = max(cursor, p.end)
    pieces.append((cursor, span.end, None))
    logins = []
    for a, b, after in pieces:
        value = text[a:b]
        if not any(c.isalnum() for c in value):
            continue
        login = value.strip()
        if after is not None and after.type == "IP_ADDRESS" and login.endswith("@") and value.endswith("@") \
                and login[:-1] and all(c.isalnum() or c in "._-" for c in login[:-1]):
            start = a + value.index(login)
            logins.append(Span(start, start + len(login) - 1, "USERNAME", span.score, span.source))
            continue
        return [span]
    return logins


def coalesce(spans: list[Span]) -> list[Span]:
    """Overlapping spans merged into one (see ``merge_spans``); deterministic whatever the input order."""
    groups: list[list[Span]] = []
    for s in sorted(spans, key=lambda s: (s.start, -s.end, s.type, s.source)):
        if groups and s.start < max(g.end for g in groups[-1]):
            groups[-1].append(s)
        else:
            groups.append([s])
    out = []
    for g in groups:
        best = max(g, key=lambda s: (s.end - s.start, s.source == "patterns", s.type))
        out.append(Span(min(s.start for s in g), max(s.end for s in g), best.type, max(s.score for s in g),
                        best.source if len({s.source for s in g}) == 1 else "+".join(sorted({s.source for s in g}))))
    return out


def render(text: str, spans: list[Span], replacements: list[str] | None = None) -> str:
    """``text`` with each span replaced by its replacement (default ``[TYPE]``); spans must not overlap
    (``coalesce`` them first)."""
    reps = replacements if replacements is not None else [f"[{s.type}]" for s in spans]
    return replace_spans(text, [(s.start, s.end, r) for s, r in zip(spans, reps)])


def shift(spans: list[Span], offset: int) -> list[Span]:
    return [Span(s.start + offset, s.end + offset, s.type, s.score, s.source) for s in spans]
