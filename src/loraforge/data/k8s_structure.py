"""Align localized pages that do NOT keep the English in comments (ja, ko) to ``content/en``.

The Japanese and Korean docs translate the English page at the same path but keep no English
comment, so pairs come from document structure: both pages are parsed with markdown-it-py into
blocks (headings, paragraphs, list-item paragraphs, table rows, code fences, block shortcodes,
section markers). Anchors (headings with their id, code fences by content, block shortcodes,
section markers) are matched in order; the text blocks between two matched anchors are paired
one to one only when both sides hold the same sequence of block kinds. Everything else is dropped
and counted: the translations lag the English, and a wrong pair costs more than a missing one.
Last, each pair's code spans, link targets and glossary terms must agree (``fingerprint``).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.token import Token

from loraforge.data.formats import DataError
from loraforge.data.k8s import (CODE_SHORTCODES, INLINE_SHORTCODES, MAX_CHARS, Report, _join, _yaml_dict,
                                add_pairs, drop_english_seen_in_train,
                                read_text, reject_reason, split_front_matter, split_of, target_key,
                                trim_edge_tags, write_jsonl_gz)
from loraforge.data.markup import CODE_SPAN, SHORTCODE

MASK, MORE = "\ue002", "\ue004"  # a shortcode's first line / its further lines, as markdown-it sees them
ANCHORS = {"heading", "code", "shortcode", "marker"}
MARKERS = {"overview", "body", "steps", "more", "discussion", "lessoncontent", "prerequisites", "whatsnext",
           "objectives", "cleanup", "options", "synopsis", "tutorial", "includes"}
HEADING_ID = re.compile(r"\s*\{#([^}\s]+)\}\s*$")
LINK_TARGET = re.compile(r"\]\(\s*<?([^)\s>]+)|href=[\"']([^\"']+)")
TERM_ID = re.compile(r"term_id=\"([^\"]+)\"")
PROSE_PARAM = re.compile(r"\b(text|title|alt|name|caption)=\"[^\"]*\"")


@dataclass(frozen=True)
class Block:
    kind: str  # heading | paragraph | list | table | code | shortcode | marker
    key: tuple  # what must be equal for two anchors to match (never equal for a bare heading)
    weak: tuple  # what must be equal for two blocks to pair inside a segment
    text: str = ""
    line: int = 0


# --- parsing ------------------------------------------------------------------------------------


def _mask(lines: list[str]) -> tuple[list[str], list[tuple[int, str]]]:
    """Hide shortcodes from markdown-it (``>}}`` starting a line is no blockquote), line count kept;
    code-like shortcode bodies become fences. Returns masked lines and (line, shortcode) found."""
    text = "\n".join(lines)
    found = [(text.count("\n", 0, m.start()), m.group(0)) for m in SHORTCODE.finditer(text)]
    masked = SHORTCODE.sub(lambda m: MASK + ("\n" + MORE) * m.group(0).count("\n"), text).split("\n")
    open_at: tuple[str, int] | None = None
    for n, sc in found:
        m = SHORTCODE.match(sc)
        name, closing = (m.group(4), bool(m.group(3))) if m and m.group(4) else ("", False)
        if open_at is None and not closing and name in CODE_SHORTCODES:
            open_at = (name, n)
        elif open_at and closing and name == open_at[0]:
            indent = re.match(r"\s*", lines[open_at[1]]).group(0)
            if n > open_at[1]:
                masked[open_at[1]], masked[n] = indent + "~~~~~~~~~~", indent + "~~~~~~~~~~"
            open_at = None
    return masked, found


def _block_shortcode(line: str) -> tuple | None:
    """(name, closing, params) of a line holding only block shortcodes, else None."""
    if not re.fullmatch(r"\s*(\{\{[<%].*?[%>]\}\}\s*)+", line, re.S):
        return None
    scs = [m for m in SHORTCODE.finditer(line) if m.group(4)]
    if not scs or all(m.group(4) in INLINE_SHORTCODES for m in scs):
        return None
    m = scs[0]
    return (m.group(4), bool(m.group(3)), " ".join(PROSE_PARAM.sub("", m.group(5) or "").split()))


def anchorize(text: str) -> str:
    """Hugo's default heading id (lower case, spaces to '-', punctuation dropped)."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" if ch.isspace() else "" for ch in text.strip().lower())


class _Reader:
    """Token stream of one page body -> blocks, with shortcodes put back into the text."""

    def __init__(self, lines: list[str], first: int, lang: str):
        self.lines, self.first, self.lang = lines, first, lang
        self.masked, found = _mask(lines)
        self.found = found
        self.tokens = MarkdownIt("commonmark").enable("table").parse("\n".join(self.masked))
        self.blocks: list[Block] = []
        self.n_heading = 0

    def text(self, parts: list[str], start: int, end: int) -> str:
        scs = iter([sc for n, sc in self.found if start <= n < end])
        joined = (" ".join if self.lang.startswith("ko") else _join)([p for p in parts if p.strip()])
        joined = re.sub(f" ?{MORE}", "", joined)
        joined = re.sub(MASK, lambda m: next(scs, ""), joined)
        return trim_edge_tags(re.sub(r"\s+", " ", joined).strip())

    def add(self, kind: str, key: tuple, weak: tuple, text: str = "", line: int = 0) -> None:
        self.blocks.append(Block(kind, key, weak, text, self.first + line))

    def read(self, own_ids: bool) -> list[Block]:
        toks, in_list = self.tokens, 0
        for i, t in enumerate(toks):
            if t.type == "list_item_open":
                in_list += 1
            elif t.type == "list_item_close":
                in_list -= 1
            elif t.type == "heading_open":
                self.heading(t, toks[i + 1], own_ids)
            elif t.type == "paragraph_open" and t.map:
                self.paragraph(t, toks[i + 1], "list" if in_list else "paragraph")
            elif t.type in ("fence", "code_block") and t.map:
                body = [re.sub(r"(^|\s)(#|//)\s.*$", "", ln).strip() for ln in t.content.split("\n")]
                body = [ln for ln in body if ln]  # code comments get translated, the code does not
                digest = hashlib.sha1("\n".join(body).encode("utf-8")).hexdigest()[:12]
                self.add("code", ("code", digest), ("code",), line=t.map[0])
            elif t.type == "tr_open" and t.map:
                self.row(toks, i)
            elif t.type == "html_block" and t.map:
                m = re.fullmatch(r"\s*<!--\s*(\w+)\s*-->\s*", t.content)
                if m and m.group(1).lower() in MARKERS:
                    self.add("marker", ("m", m.group(1).lower()), ("m", m.group(1).lower()), line=t.map[0])
        return self.blocks

    def heading(self, t: Token, inline: Token, own_ids: bool) -> None:
        assert t.map is not None
        text = self.text([inline.content], t.map[0], t.map[1])
        m = HEADING_ID.search(text)
        if m:
            hid, text = m.group(1), text[: m.start()].strip()
        else:
            hid = anchorize(re.sub(r"\{\{.*?\}\}|[`*_]", "", text)) if own_ids else None
        self.n_heading += 1
        level = int(t.tag[1])
        key = ("h", level, hid) if hid else ("h?", level, self.n_heading)  # a bare heading matches nothing
        self.add("heading", key, ("heading", level), text, t.map[0])

    def paragraph(self, t: Token, inline: Token, kind: str) -> None:
        """A paragraph, cut at lines that hold only block shortcodes (those are anchors)."""
        assert t.map is not None
        content = inline.content.split("\n")
        run: list[tuple[int, str]] = []

        def flush():
            if run:
                self.add(kind, (kind,), (kind,), self.text([s for _, s in run], run[0][0], run[-1][0] + 1), run[0][0])
                run.clear()

        for k, n in enumerate(range(t.map[0], t.map[1])):
            sc = _block_shortcode(self.lines[n]) if n < len(self.lines) else None
            if sc:
                flush()
                self.add("shortcode", ("sc",) + sc, ("sc",) + sc[:2], line=n)
            elif k < len(content):
                run.append((n, content[k]))
        flush()

    def row(self, toks: list[Token], i: int) -> None:
        assert toks[i].map is not None
        cells = []
        for t in toks[i + 1:]:
            if t.type == "tr_close":
                break
            if t.type == "inline":
                cells.append(t.content)
        joined = self.text(["\ue003".join(cells)], toks[i].map[0], toks[i].map[1])  # one pass: shortcodes in order
        text = " | ".join(c.strip() for c in joined.split("\ue003"))
        self.add("table", ("table", len(cells)), ("table", len(cells)), text, toks[i].map[0])


def page_blocks(text: str, lang: str, own_ids: bool) -> tuple[dict, list[Block]]:
    """(front matter, blocks) of a page. ``own_ids``: give headings their Hugo id when they have no
    explicit ``{#id}`` (right for English; a translated heading's own id matches nothing)."""
    fm, body, first = split_front_matter(text)
    return (_yaml_dict(fm) if fm else {}), _Reader(body, first, lang).read(own_ids)


# --- alignment ----------------------------------------------------------------------------------


def align_blocks(en: list[Block], tg: list[Block]) -> tuple[list[tuple[str, str, str]], Counter]:
    """(kind, en, target) pairs of two block lists, and the dropped text blocks by reason."""
    dropped: Counter = Counter()
    return _align(en, tg, [_anchor_key, _fingerprint_key], dropped), dropped


def _anchor_key(b: Block, run: list[Block]) -> tuple | None:
    return b.key if b.kind in ANCHORS else None


def _fingerprint_key(b: Block, run: list[Block]) -> tuple | None:
    """Inside a run whose structure differs: a text block whose code spans/links/terms no other
    block of the run has is an anchor too (the translation copies them verbatim)."""
    fp = frozenset(fingerprint(b.text)) if b.text else frozenset()
    if not fp or sum(1 for o in run if o.text and frozenset(fingerprint(o.text)) == fp) > 1:
        return None
    return ("fp", b.weak, fp)


def _align(en: list[Block], tg: list[Block], keys: list, dropped: Counter) -> list[tuple[str, str, str]]:
    """Pair two runs one to one when their block kinds agree; else match anchors (the first key
    function), pair them and recurse into the runs between them with the remaining keys."""
    if [b.weak for b in en] == [b.weak for b in tg]:
        out, run = [], []
        for a, b in zip(en, tg):  # the shift check looks at the text between two anchors
            if a.kind in ANCHORS:
                out += _checked(run, dropped) + _checked([(a, b)] if a.text and b.text else [], dropped)
                run = []
            elif a.text and b.text:
                run.append((a, b))
        return out + _checked(run, dropped)
    if not keys:
        dropped["structure_mismatch"] += sum(1 for b in tg if b.text)
        return []
    key = keys[0]
    ea = [(i, k) for i, b in enumerate(en) if (k := key(b, en)) is not None]
    ta = [(j, k) for j, b in enumerate(tg) if (k := key(b, tg)) is not None]
    sm = SequenceMatcher(None, [k for _, k in ea], [k for _, k in ta], autojunk=False)
    matched = [(ea[a + n][0], ta[b + n][0]) for a, b, size in sm.get_matching_blocks() for n in range(size)]
    pairs: list[tuple[str, str, str]] = []
    bounds = [(-1, -1)] + matched + [(len(en), len(tg))]
    for (e0, t0), (e1, t1) in zip(bounds, bounds[1:]):
        if e0 >= 0 and en[e0].text and tg[t0].text:
            pairs += _checked([(en[e0], tg[t0])], dropped)  # a heading matched by its id, a block by its code
        pairs += _align(en[e0 + 1:e1], tg[t0 + 1:t1], keys[1:], dropped)
    return pairs


def fingerprint(text: str) -> set[str]:
    """What a translation copies verbatim: code spans, link targets (``/ja/docs`` -> ``/docs``)
    and glossary term ids."""
    out = {m.group(0) for m in CODE_SPAN.finditer(text)}
    for m in LINK_TARGET.finditer(text):
        target = re.sub(r"^/(ja|ko|zh-cn)/", "/", m.group(1) or m.group(2)).split("#")[0].rstrip("/")
        out.add("link:" + target)
    out |= {"term:" + t for t in TERM_ID.findall(text)}
    return out


def _checked(run: list[tuple[Block, Block]], dropped: Counter) -> list[tuple[str, str, str]]:
    """The pairs of one run whose verbatim parts agree. Fully disjoint fingerprints in a run of
    several pairs mean the run is shifted by a block, so nothing in it is trusted."""
    prints = [(fingerprint(a.text), fingerprint(b.text)) for a, b in run]
    if len(run) > 1 and any(fa and fb and not fa & fb for fa, fb in prints):
        dropped["fingerprint_shift"] += len(run)
        return []
    out = []
    for (a, b), (fa, fb) in zip(run, prints):
        if (fa or fb) and len(fa & fb) / len(fa | fb) < 0.5:
            dropped["fingerprint_mismatch"] += 1
        else:
            out.append((a.kind, a.text, b.text))
    return out


def align_page(tg_path: Path, en_path: Path, lang: str) -> tuple[list[tuple[str, str, str]], Counter, int]:
    """(pairs, dropped, text blocks on the translated page) for one page pair."""
    en_fm, en_blocks = page_blocks(read_text(en_path), "en", own_ids=True)
    tg_fm, tg_blocks = page_blocks(read_text(tg_path), lang, own_ids=False)
    pairs: list[tuple[str, str, str]] = []
    for key, kind in (("title", "title"), ("linkTitle", "title"), ("description", "description")):
        en, tg = en_fm.get(key), tg_fm.get(key)
        if isinstance(en, str) and isinstance(tg, str) and en.strip() and tg.strip():
            pairs.append((kind, " ".join(en.split()), " ".join(tg.split())))
    got, dropped = align_blocks(en_blocks, tg_blocks)
    return pairs + got, dropped, len(pairs) + sum(1 for b in tg_blocks if b.text)


# --- build --------------------------------------------------------------------------------------


def build_structure(source: str | Path, out: str | Path, lang: str, section: str = "docs",
                    dev_pct: float = 2.0, test_pct: float = 2.0, holdout_en: set[str] | None = None) -> Report:
    """Align ``content/<lang>/<section>`` to ``content/en/<section>`` by structure; write
    train/dev/test.jsonl.gz split by document exactly as the zh-cn build (``split_of`` of the path).

    ``holdout_en``: English held out elsewhere (the zh-cn dev/test), never put in train here, so a
    multi-language adapter has not seen an en→zh test source with another target."""
    source, out = Path(source), Path(out)
    root = source / "content" / lang / section
    en_root = source / "content" / "en" / section
    if not root.is_dir() or not en_root.is_dir():
        raise DataError(f"{root if not root.is_dir() else en_root}: directory not found "
                        f"(expected a kubernetes/website checkout with content/{lang} and content/en)")
    key = target_key(lang)
    report = Report()
    cov = Counter()
    splits: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    seen: set[tuple[str, str]] = set()
    for path in sorted(root.rglob("*.md")):
        rel = path.relative_to(root.parent).as_posix()
        report.files += 1
        en_path = en_root / path.relative_to(root)
        if not en_path.is_file():
            cov["pages_without_english"] += 1
            continue
        pairs, dropped, n_blocks = align_page(path, en_path, lang)
        report.dropped.update(dropped)
        cov["blocks"] += n_blocks
        cov["aligned"] += len(pairs)
        cov["pages_with_pairs"] += bool(pairs)
        split = split_of(rel, dev_pct, test_pct)

        def reject(en: str, tgt: str, train: bool = split == "train") -> str | None:
            if reason := reject_reason(en, tgt, lang) or _plausible(en, tgt):
                return reason
            if (en, tgt) in seen:
                return "duplicate"
            return "en_held_out_by_zh" if train and holdout_en and en in holdout_en else None

        add_pairs(splits[split], seen, report, rel, key, pairs, reject)
    drop_english_seen_in_train(splits, report)
    if not any(splits.values()):
        raise DataError(f"{root}: no pairs aligned by structure in {report.files} files")
    out.mkdir(parents=True, exist_ok=True)
    for name, recs in splits.items():
        write_jsonl_gz(out / f"{name}.jsonl.gz", recs)
        report.pairs[name] = len(recs)
        report.kinds.update(r["kind"] for r in recs)
    report.coverage = {"pages": report.files, **dict(sorted(cov.items()))}
    return report


def _plausible(en: str, tgt: str) -> str | None:
    """Stricter than ``reject_reason`` because no comment vouches for the pair: a translation of an
    older English paragraph often lacks (or has) a sentence; very short ones prove little."""
    if len(en) > MAX_CHARS:
        return "too_long"
    n_en = len(re.findall(r"[.!?](\s|$)", en))
    n_tg = len(re.findall(r"[。！？]|[.!?](\s|$)", tgt))
    if abs(n_en - n_tg) > max(1, (max(n_en, n_tg) + 2) // 3):
        return "sentence_count"
    ratio = len(tgt) / len(en)
    if len(en) >= 40 and not 0.2 <= ratio <= 1.6:
        return "length_ratio"
    n_en, n_tg = _numbers(en), _numbers(tgt)
    if n_en - n_tg or {n for n in n_tg - n_en if "." in n}:
        return "number_mismatch"  # "beta since 1.27" translated from "alpha in 1.25": an older English
    return None


def _numbers(text: str) -> set[str]:
    """Numbers and versions of the prose (not of link targets or shortcode parameters). A
    translation keeps them; it may add counts ("2つ" for "two"), but not versions."""
    return set(re.findall(r"\d+(?:\.\d+)*", re.sub(r"\]\([^)]*\)|\{\{.*?\}\}|<[^>]*>", "", text)))
