"""Long documents: the model reads overlapping windows; the patterns read the whole text.

Windows of ``size`` characters overlap by ``overlap``, cut at whitespace where one is near, so an
entity shorter than the overlap is whole in at least one window. Spans found in several windows are
merged (``spans.coalesce``). A span touching a window's cut edge may be a cut entity: it is kept only
when no other window's span covers that place (then keeping it is the leak-averse choice).
"""

from __future__ import annotations

from collections.abc import Callable

from loraforge.pii.spans import Span, coalesce, shift

DEFAULT_CHUNK_CHARS = 1000
DEFAULT_OVERLAP_CHARS = 200


def windows(text: str, size: int = DEFAULT_CHUNK_CHARS, overlap: int = DEFAULT_OVERLAP_CHARS) -> list[tuple[int, int]]:
    """(start, end) character windows covering ``text``; consecutive ones overlap by about ``overlap``."""
    if not 0 <= overlap < size // 2:
        raise ValueError(f"overlap ({overlap}) must be at least 0 and under half the chunk size ({size})")
    n = len(text)
    if n <= size:
        return [(0, n)]
    out, start, slack = [], 0, max(1, overlap // 4)
    while True:
        end = min(n, start + size)
        if end < n:  # end just after a whitespace near the end, if any
            ws = max(text.rfind(c, end - slack, end) for c in " \n\t")
            end = ws + 1 if ws > start else end
        out.append((start, end))
        if end >= n:
            return out
        nxt = end - overlap
        ws = min((i for i in (text.find(c, nxt, nxt + slack) for c in " \n\t") if i >= 0), default=-1)
        start = max(start + 1, ws + 1 if ws >= 0 else nxt)


def find_chunked(text: str, find: Callable[[list[str]], list[list[Span]]], size: int = DEFAULT_CHUNK_CHARS,
                 overlap: int = DEFAULT_OVERLAP_CHARS) -> list[Span]:
    """Spans of ``find`` (a batch finder: texts -> spans per text) over ``text``'s windows, in ``text``'s offsets."""
    wins = windows(text, size, overlap)
    found = find([text[a:b] for a, b in wins])
    inner, edge = [], []
    for (a, b), spans in zip(wins, found):
        for s in shift(spans, a):
            (edge if (s.start == a and a > 0) or (s.end == b and b < len(text)) else inner).append(s)
    kept = inner + [e for e in edge if not any(e.start < s.end and s.start < e.end for s in inner)]
    return coalesce(kept)
