"""Token tags for the tagging masker (``model.head: tagger``): BIO labels over the placeholder types,
aligned to the tokenizer's character offsets, and decoded back to character spans (start, end, type,
score).

Why tags as well as copy-or-mask decoding: a tagger reads the text once (one forward pass, no
generation), so it trains on the text alone (no system prompt, no copied output: about a third of
the tokens per example) and masks about ten times as many texts per second (docs/benchmarks.md).
Its spans are in the input's offsets, so masking stays faithful by construction. No torch here: the model side is
``models/tagger.py``, the masker's finder ``pii/tagger.py``.
"""

from __future__ import annotations

from loraforge.data.formats import Example
from loraforge.data.pii_templates import PLACEHOLDER_TYPES as TYPES

IGNORE = -100  # special tokens (empty offsets): no loss, no tag
LABELS: tuple[str, ...] = ("O",) + tuple(f"{p}-{t}" for t in TYPES for p in ("B", "I"))
LABEL_IDS = {label: i for i, label in enumerate(LABELS)}


TaggedSpan = tuple[int, int, str, float]  # (start, end, type, score) in character offsets


def token_labels(text: str, spans: list[dict], offsets: list[tuple[int, int]]) -> list[int]:
    """One label id per token: ``B-TYPE`` on the first token that covers a span's non-space text,
    ``I-TYPE`` on the others, ``O`` elsewhere, ``IGNORE`` on special tokens. ``spans``: dicts with
    start/end/type (the data's gold spans); they must not overlap."""
    ordered = sorted((s["start"], s["end"], s["type"]) for s in spans)
    for (a0, a1, _), (b0, _, _) in zip(ordered, ordered[1:]):
        if b0 < a1:
            raise ValueError(f"overlapping PII spans at characters {b0}-{a1}")
    labels, k, started = [], 0, False
    for a, b in offsets:
        if a == b:
            labels.append(IGNORE)
            continue
        while k < len(ordered) and ordered[k][1] <= a:  # spans that end before this token
            k, started = k + 1, False
        label = "O"
        if k < len(ordered):
            s0, s1, typ = ordered[k]
            lo, hi = max(a, s0), min(b, s1)
            if lo < hi and text[lo:hi].strip():
                label = ("I-" if started else "B-") + typ
                started = True
            elif lo < hi and started and b < s1:  # the space between two words of one span
                label = "I-" + typ
        labels.append(LABEL_IDS[label])
    return labels


def decode_spans(text: str, offsets: list[tuple[int, int]], label_ids: list[int],
                 scores: list[float] | None = None) -> list[TaggedSpan]:
    """Character spans from per-token labels: a run of tokens of one type (a ``B-`` starts a new one;
    whitespace-only tokens are skipped), from the first token's start to the last one's end, trimmed of
    whitespace; a span's score is
    the lowest of its tokens' ``scores`` (the probability that the token is not ``O``)."""
    runs: list[list] = []  # [start, end, type, score]
    prev: list | None = None
    for i, ((a, b), lid) in enumerate(zip(offsets, label_ids)):
        if a == b or not text[a:b].strip():  # special tokens and bare spaces neither start nor end a span
            continue
        label = LABELS[lid]
        if label == "O":
            prev = None
            continue
        typ = label[2:]
        score = 1.0 if scores is None else scores[i]
        if prev is not None and prev[2] == typ and label.startswith("I-"):
            prev[1], prev[3] = max(prev[1], b), min(prev[3], score)
        else:
            prev = [a, b, typ, score]
            runs.append(prev)
    out = []
    for a, b, typ, score in runs:
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if a < b:
            out.append((a, b, typ, score))
    return _disjoint(out)


def spaceless(ch: str) -> bool:
    """A character of a script written without spaces between words (CJK, kana, Thai, Lao, Khmer...)."""
    o = ord(ch)
    return (0x2E80 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF or 0xFF00 <= o <= 0xFFEF or 0x20000 <= o <= 0x3FFFF
            or 0x0E00 <= o <= 0x0EFF or 0x1780 <= o <= 0x17FF or 0x1000 <= o <= 0x109F)


# separators inside one value of a type, which growth to whole words crosses (``223.212.28.30``)
_SEPARATORS = {"NAME": "-'’", "IP_ADDRESS": ".:", "DATE_OF_BIRTH": "/.-", "EMAIL": "._%+-@", "USERNAME": "._-", "PHONE": "-",
               "CREDIT_CARD": "-", "SSN": "-", "PASSWORD": "!@#$%^&*_+-.~?/|"}


def _word(ch: str) -> bool:
    """A letter or digit that growth to whole words may cross (not one of a spaceless script)."""
    return ch.isalnum() and not spaceless(ch)


def _grown(text: str, a: int, b: int, typ: str, floor: int) -> tuple[int, int]:
    """``text[a:b]`` grown to whole words of a ``typ`` value: over letters and digits, and over the
    type's separators where a letter or digit follows them (a sentence's final dot stays out)."""
    seps = _SEPARATORS.get(typ, "")
    while a > floor and (_word(text[a]) or text[a] in seps):
        if _word(text[a - 1]):
            a -= 1
        elif text[a - 1] in seps and a - 2 >= floor and _word(text[a - 2]):
            a -= 2
        else:
            break
    while b < len(text) and (_word(text[b - 1]) or text[b - 1] in seps):
        if _word(text[b]):
            b += 1
        elif text[b] in seps and b + 1 < len(text) and _word(text[b + 1]):
            b += 2
        else:
            break
    return a, b


def _disjoint(spans: list[TaggedSpan]) -> list[TaggedSpan]:
    """Overlapping spans joined (byte-level tokens of one character share its offsets, so two runs can
    meet inside a character); the joined span keeps the first one's type and the lower score."""
    out: list[TaggedSpan] = []
    for a, b, typ, score in sorted(spans):
        if out and a < out[-1][1]:
            pa, pb, ptyp, pscore = out.pop()
            a, b, typ, score = pa, max(pb, b), ptyp, min(pscore, score)
        out.append((a, b, typ, score))
    return out


def example_spans(example: Example) -> list[dict]:
    """A PII ``Example``'s gold spans: the data's own (``meta["spans"]``), else read off its masked target."""
    if "spans" in example.meta:
        return example.meta["spans"]
    from loraforge.data.pii_align import align

    return [{"start": a, "end": b, "type": t} for a, b, t in align(example.source, example.target)]


def decode_entities(text: str, offsets: list[tuple[int, int]], probs: list[list[float]],
                    bias: float = 0.0) -> list[TaggedSpan]:
    """Spans from per-token label probabilities (rows over ``LABELS``), read entity by entity rather
    than token by token, so one value is never cut into pieces of different types:

    - a token is personal data when ``log p(O) - bias < log p(best other label)``;
    - a run of such tokens is one entity (bare-space tokens neither break nor end it), split only
      where a token after a space is more likely a ``B-`` than an ``I-`` label (``18/05/2000`` is
      one value, not ``18/`` and ``05/2000``);
    - the entity's type has the most probability (B + I) summed over its tokens;
    - its edges grow to whole words (letters and digits, and the separators of its type: dots of an
      IP address, slashes of a date): a value never ends inside a word. Not in scripts written
      without spaces (Chinese, Japanese, Thai), where the tokens are the best word edges there are:
      ``我叫许欣`` must not become one name;
    - entities that touch (no space between) are one value, typed by their summed probability.

    A span's score is its least confident token's ``1 - p(O)``."""
    import math

    runs: list[list] = []  # [start, end, type mass per type, score]
    open_run: list | None = None
    for (a, b), p in zip(offsets, probs):
        if a == b or not text[a:b].strip():
            continue
        if not math.log(max(p[0], 1e-30)) - bias < math.log(max(max(p[1:]), 1e-30)):
            open_run = None
            continue
        after_space = a == 0 or text[a].isspace() or text[a - 1].isspace()
        if open_run is None or (after_space and sum(p[1::2]) > sum(p[2::2])):
            open_run = [a, b, [0.0] * len(TYPES), 1.0]
            runs.append(open_run)
        open_run[1] = max(open_run[1], b)
        for k in range(len(TYPES)):
            open_run[2][k] += p[1 + 2 * k] + p[2 + 2 * k]
        open_run[3] = min(open_run[3], 1.0 - p[0])
    merged: list[list] = []  # [start, end, type mass, score]
    for a, b, mass, score in runs:
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        typ = TYPES[max(range(len(TYPES)), key=mass.__getitem__)]
        a, b = _grown(text, a, b, typ, merged[-1][1] if merged else 0)
        if a < b:
            if merged and a <= merged[-1][1]:  # touching or grown into the previous entity: one value
                prev = merged.pop()
                a, mass, score = prev[0], [x + y for x, y in zip(prev[2], mass)], min(prev[3], score)
            merged.append([a, b, mass, score])
    out = [(a, b, TYPES[max(range(len(TYPES)), key=mass.__getitem__)], score) for a, b, mass, score in merged]
    return _disjoint(out)
