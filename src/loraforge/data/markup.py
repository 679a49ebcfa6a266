"""Protect markup as numbered placeholders before translation, and restore it after.

A model that never sees a link target or a shortcode cannot break it: ``protect`` swaps inline code,
link/image targets, bare URLs, HTML tags, Hugo shortcode syntax (but not the prose of ``text=``,
``title=``, ``alt=``), heading anchors and user patterns for ``{1}``, ``{2}``, ... and ``restore``
puts them back, checking each came back exactly once. Training data is protected the same way
(``protect_pair``), so the model learns to carry placeholders. Lives in ``data`` because both the
data pipeline and the page translator (``loraforge.localize``) need it.

Regexes here only ever look inside one segment (inline spans); block structure is the parser's job.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from loraforge.data.formats import DataError, Example

# Shortcode parameters whose value is prose; the Kubernetes translators translate them.
TRANSLATABLE_PARAMS = ("text", "title", "alt")
PLACEHOLDER = re.compile(r"[{｛]\s*(\d{1,4})\s*[}｝]")  # lenient: full-width braces, inner spaces
_OPEN, _CLOSE = "\ue000", "\ue001"  # private-use marks for pieces while protecting
_MARK = re.compile(f"{_OPEN}(\\d+){_CLOSE}")

# Hugo shortcodes: an escaped one ({{</* x */>}}, shown not run; it may span several tags) or a
# live one (groups: delimiter, closing slash, name, params, self-closing slash).
SHORTCODE = re.compile(r"(?P<esc>\{\{[<%]/\*.*?\*/[%>]\}\})"
                       r"|\{\{([<%])\s*(/)?\s*([\w.-]+)(.*?)\s*(/)?\s*[%>]\}\}", re.S)
_PARAM = re.compile(r"\b(" + "|".join(TRANSLATABLE_PARAMS) + r')=(")([^"]*)"')
CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`).+?(?<!`)\1(?!`)", re.S)
HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
AUTOLINK = re.compile(r"<(?:https?|ftp|mailto):[^\s<>]*>")
LINK = re.compile(r"(!?\[)((?:[^\[\]]|\[[^\[\]]*\])*)"
                  r"(\]\((?:[^()\s]|\([^()\s]*\))*(?:\s+\"[^\"]*\")?\)|\]\[[^\]]*\])")
BARE_URL = re.compile(r"\bhttps?://[^\s<>()\[\]{}\"'`]*[^\s<>()\[\]{}\"'`.,;:!?]")
HTML_TAG = re.compile(r"</?[A-Za-z][\w-]*(?:\s+[^<>]*?)?/?>")
ANCHOR = re.compile(r"\{#[^}\s]+\}")
_LOCALE_LINK = re.compile(r"(\]\(|href=\"|\])/zh-cn/")


def placeholder(n: int) -> str:
    return "{" + str(n) + "}"


@dataclass(frozen=True)
class Piece:
    """One protected span: ``source`` as in the input, ``restore`` what goes back (differs only
    for glossary terms rendered another way), ``key`` what pairs it with a target's piece."""

    source: str
    restore: str
    key: str


@dataclass(frozen=True)
class Protected:
    """Text with placeholders; ``pieces[i]`` is placeholder ``{i+1}``."""

    text: str
    pieces: tuple[Piece, ...]
    original: str

    @property
    def ids(self) -> list[int]:
        return list(range(1, len(self.pieces) + 1))

    def needs_translation(self) -> bool:
        """False when nothing but placeholders, digits and punctuation is left to translate."""
        return bool(re.search(r"[^\W\d_]", PLACEHOLDER.sub("", self.text)))


class _Builder:
    """Replaces spans by private marks, then numbers them in reading order."""

    def __init__(self, text: str):
        self.text = text
        self.pieces: list[Piece] = []

    def mark(self, source: str, restore: str | None = None, key: str | None = None) -> str:
        self.pieces.append(Piece(source, source if restore is None else restore, source if key is None else key))
        return f"{_OPEN}{len(self.pieces) - 1}{_CLOSE}"

    def sub(self, pattern: re.Pattern, fn: Callable[[re.Match], str] | None = None) -> None:
        self.text = pattern.sub(fn or (lambda m: self.mark(m.group(0))), self.text)

    def expand(self, text: str, field_: str = "source") -> str:
        return _MARK.sub(lambda m: self.expand(getattr(self.pieces[int(m.group(1))], field_), field_), text)

    def finish(self, original: str) -> Protected:
        out: list[Piece] = []

        def number(m: re.Match) -> str:
            p = self.pieces[int(m.group(1))]
            # a piece that swallowed other pieces (a code span holding a term) keeps their source
            src = self.expand(p.source)
            restore = src if p.restore == p.source else self.expand(p.restore, "restore")
            out.append(Piece(src, restore, _LOCALE_LINK.sub(r"\1/", self.expand(p.key, "key"))))
            return placeholder(len(out))

        return Protected(_MARK.sub(number, self.text), tuple(out), original)


def _shortcode(b: _Builder, m: re.Match) -> str:
    """A shortcode becomes placeholders around its translatable values: ``{1}control plane{2}``."""
    sc = m.group(0)
    if m.group("esc"):  # escaped (shown, not run): keep whole
        return b.mark(sc)
    parts, last = [], 0
    for p in _PARAM.finditer(sc):
        value_start, value_end = p.start(3), p.end(3)
        if not re.search(r"[^\W\d_]", p.group(3)):
            continue
        parts.append(b.mark(sc[last:value_start]))
        parts.append(p.group(3))
        last = value_end
    parts.append(b.mark(sc[last:]))
    return "".join(parts)


def _link(b: _Builder, m: re.Match) -> str:
    opener, label, closer = m.group(1), m.group(2), m.group(3)
    close_mark = b.mark(closer)
    return b.mark(opener, key=opener + closer) + label + close_mark


def protect(text: str, extra_patterns: Iterable[str | re.Pattern] = (),
            terms: dict[str, str] | None = None) -> Protected:
    """Replace markup by ``{n}`` placeholders; ``extra_patterns`` (regexes) are protected too.

    ``terms`` maps glossary terms to what they must become (``{"Pods": "Pod"}`` keeps an API kind
    in English); matched case-sensitively on word boundaries, longest first.
    """
    b = _Builder(text)
    b.sub(PLACEHOLDER)  # literal "{3}" in the input must not pass for a placeholder
    b.sub(HTML_COMMENT)
    b.sub(SHORTCODE, lambda m: _shortcode(b, m))
    b.sub(CODE_SPAN)
    b.sub(AUTOLINK)
    b.sub(LINK, lambda m: _link(b, m))
    b.sub(BARE_URL)
    b.sub(HTML_TAG)
    b.sub(ANCHOR)
    for pat in extra_patterns:
        b.sub(re.compile(pat) if isinstance(pat, str) else pat)
    if terms:
        alts = "|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True))
        b.sub(re.compile(rf"(?<![\w-])(?:{alts})(?![\w-])"), lambda m: b.mark(m.group(0), terms[m.group(0)]))
    return b.finish(text)


# --- restore and repair -------------------------------------------------------------------------


@dataclass
class RestoreResult:
    """``text`` is restored; ``missing``/``repeated`` ids say what the model got wrong."""

    text: str
    missing: list[int] = field(default_factory=list)
    repeated: list[int] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    repaired: int = 0  # placeholders inserted or removed by the repair
    fallback: bool = False  # the segment fell back to its source

    @property
    def ok(self) -> bool:
        return not (self.missing or self.repeated or self.unknown)


def check(output: str, protected: Protected) -> RestoreResult:
    """Which placeholders did not come back exactly once (the text is left as given)."""
    found = Counter(int(m.group(1)) for m in PLACEHOLDER.finditer(output))
    n = len(protected.pieces)
    return RestoreResult(output, missing=[i for i in range(1, n + 1) if found[i] == 0],
                         repeated=[i for i in range(1, n + 1) if found[i] > 1],
                         unknown=[placeholder(i) for i in sorted(found) if not 1 <= i <= n])


def restore(output: str, protected: Protected) -> RestoreResult:
    """Put the pieces back. A repeated placeholder keeps its first occurrence, an unknown one is
    dropped; a missing one stays missing (see ``repair``). The result records all of it."""
    res = check(output, protected)
    seen: set[int] = set()

    def put(m: re.Match) -> str:
        i = int(m.group(1))
        if not 1 <= i <= len(protected.pieces) or i in seen:
            return ""
        seen.add(i)
        return protected.pieces[i - 1].restore

    res.text = PLACEHOLDER.sub(put, output)
    return res


def aligned_position(output: str, protected: Protected, pid: int) -> int:
    """Where placeholder ``pid`` belongs in ``output``: right after the nearest earlier placeholder
    that came back (or before the nearest later one) when it touched it in the source, else at the
    same relative place between them."""
    src_pos = {int(m.group(1)): (m.start(), m.end()) for m in PLACEHOLDER.finditer(protected.text)}
    out_pos = {}
    for m in PLACEHOLDER.finditer(output):
        out_pos.setdefault(int(m.group(1)), (m.start(), m.end()))
    start, end = src_pos.get(pid, (0, 0))
    prev = max((i for i in out_pos if i in src_pos and src_pos[i][1] <= start), key=lambda i: src_pos[i][1], default=None)
    nxt = min((i for i in out_pos if i in src_pos and src_pos[i][0] >= end), key=lambda i: src_pos[i][0], default=None)
    lo_src, lo_out = (src_pos[prev][1], out_pos[prev][1]) if prev else (0, 0)
    hi_src, hi_out = (src_pos[nxt][0], out_pos[nxt][0]) if nxt else (len(protected.text), len(output))
    if hi_out < lo_out:  # the model reordered the neighbours; stay after the earlier one
        hi_out = lo_out
    if prev and not protected.text[lo_src:start].strip():
        return lo_out
    if nxt and not protected.text[end:hi_src].strip():
        return hi_out
    frac = (start - lo_src) / max(hi_src - lo_src, 1)
    return lo_out + round(frac * (hi_out - lo_out))


def insert_missing(output: str, protected: Protected, missing: Sequence[int]) -> str:
    for pid in sorted(missing):
        at = aligned_position(output, protected, pid)
        output = output[:at] + placeholder(pid) + output[at:]
    return output


@dataclass
class RepairStats:
    """Counted, never silent: what came back, what was repaired, what fell back to the source."""

    segments: int = 0
    placeholders: int = 0
    placeholders_ok: int = 0  # came back exactly once from the first decode
    segments_repaired: int = 0
    placeholders_repaired: int = 0
    segments_redecoded: int = 0  # fixed by a forced-prefix re-decode
    segments_fallback: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def add(self, other: RepairStats) -> None:
        for k, v in other.__dict__.items():
            setattr(self, k, getattr(self, k) + v)


# (protected sources, forced output prefixes) -> continuations after each prefix
ContinueFn = Callable[[list[str], list[str]], list[str]]
FALLBACKS = ("insert", "source")


def restore_batch(protecteds: Sequence[Protected], outputs: Sequence[str], continue_fn: ContinueFn | None = None,
                  fallback: str = "insert") -> tuple[list[RestoreResult], RepairStats]:
    """Restore every output; repair the ones whose placeholders did not come back exactly once.

    Repair, in order: (1) with ``continue_fn``, one batched re-decode of the broken segments
    whose output is forced up to and including the first missing placeholder (at its aligned
    position); (2) ``fallback="insert"``: drop repeats and insert what is still missing at its
    aligned position, unless more than one and more than half are missing (the model ignored the
    markup), then (3)
    the segment falls back to its source text, as does every broken segment with
    ``fallback="source"``. Both counts are in the returned ``RepairStats``.
    """
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}, not {fallback!r}")
    if len(protecteds) != len(outputs):
        raise ValueError(f"{len(outputs)} outputs for {len(protecteds)} segments")
    stats = RepairStats(segments=len(outputs))
    outs = list(outputs)
    first = [check(o, p) for o, p in zip(outs, protecteds)]
    for p, r in zip(protecteds, first):
        stats.placeholders += len(p.pieces)
        stats.placeholders_ok += len(p.pieces) - len(set(r.missing) | set(r.repeated))
    bad = [i for i, r in enumerate(first) if not r.ok]
    if continue_fn and bad:
        need = [i for i in bad if first[i].missing]
        prefixes = []
        for i in need:
            at = aligned_position(outs[i], protecteds[i], first[i].missing[0])
            prefixes.append(outs[i][:at] + placeholder(first[i].missing[0]))
        conts = continue_fn([protecteds[i].text for i in need], prefixes) if need else []
        for i, pre, cont in zip(need, prefixes, conts):
            if check(pre + cont, protecteds[i]).ok:
                outs[i] = pre + cont
                stats.segments_redecoded += 1
    results = []
    for i, (o, p) in enumerate(zip(outs, protecteds)):
        r = check(o, p)
        if r.ok:
            res = restore(o, p)
        elif fallback == "insert" and (len(r.missing) <= 1 or len(r.missing) * 2 <= len(p.pieces)):
            res = restore(insert_missing(o, p, r.missing), p)
            res.repaired = len(r.missing) + sum(o.count(placeholder(j)) - 1 for j in r.repeated) + len(r.unknown)
        else:
            res = RestoreResult(p.original, fallback=True)
        res.missing, res.repeated, res.unknown = first[i].missing, first[i].repeated, first[i].unknown
        if not first[i].ok:
            stats.segments_repaired += not res.fallback
            stats.segments_fallback += res.fallback
            stats.placeholders_repaired += res.repaired
        results.append(res)
    return results, stats


# --- training data ------------------------------------------------------------------------------


@dataclass
class ProtectStats:
    """How protecting a data set went; ``dropped`` pairs lacked source markup in the target."""

    pairs: int = 0
    with_markup: int = 0
    kept: int = 0
    dropped: int = 0
    target_missing: int = 0  # source pieces the target lacks
    target_extra: int = 0  # target markup with no source piece (left as text)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ProtectedPair:
    source: str
    target: str
    missing: tuple[int, ...]  # source ids absent from the target
    extra: tuple[str, ...]  # target markup left unprotected


def protect_pair(source: str, target: str, extra_patterns: Iterable[str | re.Pattern] = ()) -> ProtectedPair:
    """Protect a (source, target) pair with the SAME ids on both sides.

    The target is protected on its own and each of its pieces takes the id of the first unused
    source piece with the same key (link targets compare without the ``/zh-cn`` prefix the
    translators add), so ``restore`` of the target with the source's pieces gives the reference
    back with the source's markup.
    """
    extra_patterns = list(extra_patterns)
    src = protect(source, extra_patterns)
    tgt = protect(target, extra_patterns)
    free: dict[str, list[int]] = {}
    for i, piece in enumerate(src.pieces, 1):
        free.setdefault(piece.key, []).append(i)
    used: set[int] = set()
    extra: list[str] = []

    def swap(m: re.Match) -> str:
        piece = tgt.pieces[int(m.group(1)) - 1]
        ids = free.get(piece.key)
        if ids:
            used.add(ids[0])
            return placeholder(ids.pop(0))
        extra.append(piece.source)
        return piece.source

    text = PLACEHOLDER.sub(swap, tgt.text)
    missing = tuple(i for i in src.ids if i not in used)
    return ProtectedPair(src.text, text, missing, tuple(extra))


def protect_examples(examples: Iterable[Example], extra_patterns: Iterable[str | re.Pattern] = (),
                     missing: str = "drop") -> tuple[list[Example], ProtectStats]:
    """Protect a data set for training. A pair whose target lacks some of the source's markup is
    dropped (``missing="drop"``, the default: it would teach the model to lose placeholders) or kept
    as it is (``"keep"``); either way it is counted."""
    if missing not in ("drop", "keep"):
        raise DataError(f"data.protect_markup: missing must be 'drop' or 'keep', not {missing!r}")
    extra_patterns = list(extra_patterns)
    stats, out = ProtectStats(), []
    for ex in examples:
        stats.pairs += 1
        pair = protect_pair(ex.source, ex.target, extra_patterns)
        has = pair.source != ex.source or pair.target != ex.target
        stats.with_markup += has
        stats.target_missing += len(pair.missing)
        stats.target_extra += len(pair.extra)
        if pair.missing and missing == "drop":
            stats.dropped += 1
            continue
        stats.kept += 1
        out.append(Example(pair.source, pair.target, ex.id, ex.system, dict(ex.meta)))
    return out, stats
