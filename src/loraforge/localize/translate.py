"""Translate whole pages the way the Kubernetes zh-cn team ships them.

Per the zh-cn localization guide: front matter ``title``/``description`` translated, other keys
kept, ``reviewers`` dropped and the English front matter kept in a comment; code copied byte for
byte; ``/docs/`` links pointed at ``/zh-cn/docs/``; headings given explicit ``{#anchor}`` ids from
the English; tables cell by cell, lists item by item; the English of each translated block kept
above it in an HTML comment (its shortcodes escaped, so Hugo does not run them).

Every segment of every page goes through ONE call of ``translate_fn`` (so generation batches and
length-sorts them and shows one progress bar); update mode reuses the translation of each block
whose English is unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import yaml

from loraforge.data.markup import ContinueFn, Protected, RepairStats, protect, restore_batch
from loraforge.localize.glossary import Glossary
from loraforge.data.markup import BARE_URL, SHORTCODE
from loraforge.localize.page import Leaf, Page, PageError, Unit, front_matter_regions, parse_page, rewrite_links

TranslateFn = Callable[[list[str]], list[str]]
FRONT_KEYS = ("title", "description")  # the only front matter the guide translates
DROP_KEYS = ("reviewers",)
SECTION_MARKERS = {"overview", "body", "steps", "more", "discussion", "lessoncontent", "prerequisites",
                   "whatsnext", "objectives", "cleanup", "options", "synopsis", "tutorial", "includes"}


@dataclass
class PageOptions:
    """How pages are translated; the defaults follow the zh-cn guide."""

    lang: str = "zh-cn"
    comments: bool = True  # keep the English above each translated block
    code_comments: bool = False  # translate '# ...' comments in code fences (off until measured)
    glossary: Glossary | None = None
    keep_english: bool = True  # protect the glossary's keep-English terms (API kinds)
    extra_patterns: tuple[str, ...] = ()  # more regexes to protect
    fallback: str = "insert"  # see loraforge.data.markup.restore_batch
    continue_fn: ContinueFn | None = None  # forced-prefix re-decode for broken placeholders
    fragments: bool = False  # accept pages without front matter (generated includes)


@dataclass
class PageResult:
    path: str
    text: str
    segments: list[tuple[str, str]] = field(default_factory=list)  # (English, translation) translated
    blocks_translated: int = 0
    blocks_reused: int = 0
    repair: RepairStats = field(default_factory=RepairStats)
    problems: list = field(default_factory=list)  # structure problems (localize.structure.Problem)

    @property
    def ok(self) -> bool:
        return not self.problems


# --- small text helpers -------------------------------------------------------------------------


def escape_shortcodes(text: str) -> str:
    """``{{< x >}}`` -> ``{{</* x */>}}``: shown, not run (Hugo runs shortcodes inside comments)."""
    def esc(m: re.Match) -> str:
        sc = m.group(0)
        if m.group("esc"):
            return sc
        return sc[:3] + "/*" + sc[3:-3] + "*/" + sc[-3:]
    return SHORTCODE.sub(esc, text).replace("-->", "-- >")


def unescape_shortcodes(text: str) -> str:
    return re.sub(r"\{\{([<%])/\*(.*?)\*/([%>])\}\}", r"{{\1\2\3}}", text, flags=re.S)


def norm(text: str) -> str:
    """How English is compared in update mode: shortcodes unescaped, whitespace collapsed."""
    return re.sub(r"\s+", " ", unescape_shortcodes(text)).strip()


def _comment(lines: Sequence[str]) -> list[str]:
    return ["<!--", *escape_shortcodes("\n".join(lines)).split("\n"), "-->"]


def _yaml_line(key: str, value: str) -> list[str]:
    return yaml.safe_dump({key: value}, allow_unicode=True, width=10**9, sort_keys=False).rstrip("\n").split("\n")


# --- planning: what to translate, what to reuse -------------------------------------------------


@dataclass
class _Plan:
    page: Page
    en_text: str
    reuse_units: dict[int, tuple[list[str], list[int]]] = field(default_factory=dict)  # first -> (zh, unit ids)
    reuse_front: dict[str, list[str]] = field(default_factory=dict)
    jobs: dict[tuple, Protected] = field(default_factory=dict)  # (where...) -> protected source


def _units(page: Page) -> list[Unit]:
    return [p for p in page.parts if isinstance(p, Unit)]


def _previous(zh_text: str, path: str) -> tuple[dict, dict[str, list[str]], dict[str, list[str]]]:
    """From an existing zh page: (English front matter, its translated key lines,
    English comment -> translated lines that follow it)."""
    zh = parse_page(zh_text, path, fragment=True)
    lines = zh.lines
    blocks: dict[str, list[str]] = {}
    en_front: dict = {}
    parts = zh.parts
    for k, part in enumerate(parts):
        if isinstance(part, Unit):
            continue
        text = "\n".join(lines[part[0]:part[1]]).strip()
        if not (text.startswith("<!--") and text.endswith("-->")) or "-->" in text[4:-3]:
            continue
        english = text[4:-3]
        if english.strip().lower() in SECTION_MARKERS:
            continue
        if not en_front and part[0] <= zh.front.body_start + 1:
            try:
                data = yaml.safe_load(english)
            except yaml.YAMLError:
                data = None
            if isinstance(data, dict) and "title" in data:
                en_front = data
                continue
        follow: list[Unit] = []
        for nxt in parts[k + 1:]:
            if isinstance(nxt, Unit):
                follow.append(nxt)
            elif "".join(lines[nxt[0]:nxt[1]]).strip():
                break
        if follow:
            blocks.setdefault(norm(english), lines[follow[0].start:follow[-1].end])
    front_lines = {key: ls for key, ls in front_matter_regions(zh.front.lines) if key in FRONT_KEYS}
    return en_front, front_lines, blocks


def _plan(page: Page, en_text: str, previous: str | None, opts: PageOptions) -> _Plan:
    plan = _Plan(page, en_text)
    if previous is not None:
        en_front, zh_front, blocks = _previous(previous, page.path + " (previous translation)")
        for key in FRONT_KEYS:
            if key in zh_front and en_front.get(key) == page.front.data.get(key):
                plan.reuse_front[key] = zh_front[key]
        units = _units(page)
        i = 0
        while i < len(units):
            for j in range(min(len(units), i + 8), i, -1):  # longest run of blocks one comment covers
                if j - i > 1 and any(_gap_has_text(page, units[m], units[m + 1]) for m in range(i, j - 1)):
                    continue
                english = norm("\n".join(page.lines[units[i].start:units[j - 1].end]))
                if english in blocks:
                    plan.reuse_units[units[i].start] = (blocks[english], [u.start for u in units[i:j]])
                    i = j
                    break
            else:
                i += 1
    terms = opts.glossary.protected_terms() if opts.glossary and opts.keep_english else None
    reused = {s for _, ids in plan.reuse_units.values() for s in ids}
    for key in FRONT_KEYS:
        value = page.front.data.get(key)
        if isinstance(value, str) and value.strip() and key not in plan.reuse_front:
            plan.jobs[("front", key)] = protect(" ".join(value.split()), opts.extra_patterns, terms)
    for unit in _units(page):
        if unit.start in reused:
            continue
        for n, leaf in enumerate(unit.leaves):
            for k, src in enumerate(leaf.sources):
                plan.jobs[(unit.start, n, k)] = protect(src, opts.extra_patterns, terms)
    return plan


def _gap_has_text(page: Page, a: Unit, b: Unit) -> bool:
    return any(line.strip() for line in page.lines[a.end:b.start])


# --- rendering ----------------------------------------------------------------------------------


def _fit(text: str, one_line: bool) -> str:
    """A small model may answer with line breaks (seen: Gemma 3 270M's heading came back on two lines, its
    {#anchor} on the second). A heading or table row must stay on one line; elsewhere a blank line would
    split the block in two, so blank lines go (single line breaks inside a paragraph are harmless)."""
    text = text.strip()
    return re.sub(r"\s*\n\s*", " ", text) if one_line else re.sub(r"\n\s*\n", "\n", text)


_URL_ANYWHERE = re.compile(r"(?<![A-Za-z0-9])" + BARE_URL.pattern.removeprefix(r"\b"))  # also right after 见


def _linkable(text: str, one_line: bool) -> str:
    """Hugo (goldmark) autolinks a bare URL only after whitespace: "更多信息：https://..." renders no link
    (seen in eval-pages on delete-options.md). A URL right after a Chinese character gets a space (the
    guide: a space between Chinese and English); after full-width punctuation it goes on its own line,
    as the zh-cn pages write it (a space in headings and table rows, which must stay on one line)."""
    def sep(m: re.Match) -> str:
        before = text[m.start() - 1] if m.start() else " "
        if before.isspace() or before.isascii():
            return m.group(0)
        return (" " if one_line or before.isalnum() else "\n") + m.group(0)
    return _URL_ANYWHERE.sub(sep, text)


def _render_leaf(leaf: Leaf, outs: list[str], page: Page) -> list[str]:
    one_line = leaf.kind in ("heading", "row")
    outs = [_linkable(_fit(o, one_line), one_line) for o in outs]
    t = outs[0] if outs else ""
    if leaf.kind == "heading":
        return [f"{leaf.prefix}{'#' * leaf.level} {t} {{#{leaf.anchor}}}"]
    if leaf.kind == "row":
        if outs == leaf.sources:
            return page.lines[leaf.start:leaf.end]
        return [leaf.prefix + "| " + " | ".join(c.replace("|", "\\|") for c in outs) + " |"]
    return [leaf.prefix + t]


def _render_unit(unit: Unit, page: Page, done: dict[tuple, str], lang: str) -> tuple[list[str], bool]:
    """The unit's translated lines, and whether anything in it was translated."""
    lines = list(page.lines[unit.start:unit.end])
    changed = False
    for n in range(len(unit.leaves) - 1, -1, -1):
        leaf = unit.leaves[n]
        outs = [done.get((unit.start, n, k), src) for k, src in enumerate(leaf.sources)]
        translated = any((unit.start, n, k) in done for k in range(len(leaf.sources)))
        changed |= translated
        if translated:
            new = [rewrite_links(x, lang) for x in _render_leaf(leaf, outs, page)]
        else:
            new = [rewrite_links(x, lang) for x in page.lines[leaf.start:leaf.end]]
        lines[leaf.start - unit.start:leaf.end - unit.start] = new
    if unit.number is not None and lines:
        lines[0] = re.sub(r"^(\s*)\d+([.)])", rf"\g<1>{unit.number}\2", lines[0], count=1)
    return lines, changed


def _render(plan: _Plan, done: dict[tuple, str], opts: PageOptions) -> tuple[str, int, int]:
    page, lines = plan.page, plan.page.lines
    out = ["---"] if page.front.present else []
    for key, region in front_matter_regions(page.front.lines):
        if key in DROP_KEYS:
            continue
        if key in plan.reuse_front:
            out += plan.reuse_front[key]
        elif ("front", key) in done:
            out += _yaml_line(key, done[("front", key)])
        elif key is not None or region:
            out += region
    if page.front.present:
        out.append("---")
        if opts.comments:
            out += _comment(page.front.lines)
    translated = reused = 0
    skip_until = -1
    for part in page.parts:
        if isinstance(part, tuple):
            if part[0] < skip_until:
                continue
            for n in range(*part):
                out.append(lines[n] if n in page.code else rewrite_links(lines[n], opts.lang))
            continue
        if part.start < skip_until:
            continue
        if part.start in plan.reuse_units:
            zh, ids = plan.reuse_units[part.start]
            last = next(u for u in _units(page) if u.start == ids[-1])
            if opts.comments:
                out += _comment(lines[part.start:last.end])
            out += zh
            reused += len(ids)
            skip_until = last.end
            continue
        body, changed = _render_unit(part, page, done, opts.lang)
        if changed and opts.comments and part.comment:
            out += _comment(lines[part.start:part.end])
        translated += changed
        out += body
    return "\n".join(out), translated, reused


# --- the batched run ----------------------------------------------------------------------------


def translate_texts(pages: Sequence[tuple[str, str, str | None]], translate_fn: TranslateFn,
                    options: PageOptions | None = None) -> list[PageResult | PageError]:
    """Translate (path, English text, previous zh text or None) pages with ONE translate_fn call.

    A page that fails to parse comes back as its PageError; the others are translated and
    structure-checked (``PageResult.problems``).
    """
    from loraforge.localize.structure import check_page_structure

    opts = options or PageOptions()
    plans: list[_Plan | PageError] = []
    for path, text, previous in pages:
        try:
            page = parse_page(text, path, opts.code_comments, opts.fragments)
            plans.append(_plan(page, text, previous, opts))
        except PageError as e:
            plans.append(e)
    jobs = [(pi, key, p) for pi, plan in enumerate(plans) if isinstance(plan, _Plan)
            for key, p in plan.jobs.items() if p.needs_translation()]
    unique: dict[str, int] = {}
    for _, _, p in jobs:
        unique.setdefault(p.text, len(unique))
    texts = list(unique)
    outs = translate_fn(texts) if texts else []
    if len(outs) != len(texts):
        raise ValueError(f"translate_fn returned {len(outs)} outputs for {len(texts)} segments")
    restored, _ = restore_batch([p for _, _, p in jobs], [outs[unique[p.text]] for _, _, p in jobs],
                                opts.continue_fn, opts.fallback)
    per_page: dict[int, dict[tuple, str]] = {}
    per_stats: dict[int, RepairStats] = {}
    for (pi, key, p), r in zip(jobs, restored):
        per_page.setdefault(pi, {})[key] = r.text
        s = per_stats.setdefault(pi, RepairStats())
        s.segments += 1
        s.placeholders += len(p.pieces)
        s.placeholders_ok += len(p.pieces) - len(set(r.missing) | set(r.repeated))
        s.segments_repaired += (not r.ok) and not r.fallback
        s.segments_fallback += r.fallback
        s.placeholders_repaired += r.repaired
    results: list[PageResult | PageError] = []
    for pi, plan in enumerate(plans):
        if isinstance(plan, PageError):
            results.append(plan)
            continue
        done = per_page.get(pi, {})
        text, translated, reused = _render(plan, done, opts)
        segs = [(plan.jobs[k].original, v) for k, v in done.items()]
        res = PageResult(plan.page.path, text, segs, translated, reused, per_stats.get(pi, RepairStats()))
        res.problems = check_page_structure(plan.en_text, text, opts.lang, opts.code_comments, path=plan.page.path,
                                            fragment=opts.fragments)
        results.append(res)
    return results


def _one(result: PageResult | PageError) -> PageResult:
    if isinstance(result, PageError):
        raise result
    return result


def translate_page(text: str, translate_fn: TranslateFn, options: PageOptions | None = None,
                   path: str = "<page>") -> PageResult:
    """Translate one English page (a PageError names the path and line of bad input)."""
    return _one(translate_texts([(path, text, None)], translate_fn, options)[0])


def update_page(new_en_text: str, old_zh_text: str, translate_fn: TranslateFn,
                options: PageOptions | None = None, path: str = "<page>") -> PageResult:
    """Re-translate only the blocks whose English changed; every block whose English matches an
    English comment of ``old_zh_text`` keeps its existing translation byte for byte."""
    return _one(translate_texts([(path, new_en_text, old_zh_text)], translate_fn, options)[0])
