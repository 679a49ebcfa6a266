"""Check that a translated page kept the English page's structure.

What a localizer's reviewer (and Hugo) would trip over: front matter keys, code blocks (byte for
byte), the shortcode sequence, link targets (after the ``/docs/`` -> ``/zh-cn/docs/`` rewrite) and
headings with their anchors. Comments are left out on both sides: they hold the English.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from markdown_it.token import Token

from loraforge.localize.page import (CODE_COMMENT, INLINE_SHORTCODES, PageError, markdown, mask_shortcodes, parse_page,
                                    rewrite_links, shortcodes)

_PROSE_PARAM = re.compile(r"\b(text|title|alt)=\"[^\"]*\"")


@dataclass(frozen=True)
class Problem:
    check: str  # front_matter | code | shortcodes | links | headings | parse
    message: str


def _walk(tokens: list[Token]):
    for t in tokens:
        yield t
        if t.children:
            yield from _walk(t.children)


def _body(text: str, path: str, fragment: bool = False):
    """The parsed page and the tokens of its body as parse_page sees it (shortcodes masked)."""
    page = parse_page(text, path, fragment=fragment)
    masked, starts, _ = mask_shortcodes("\n".join(page.lines[page.front.body_start:]))
    tokens = markdown().parse(masked)
    for t in _walk(tokens):  # token maps in page lines
        if t.map:
            t.map = [starts[t.map[0]] + page.front.body_start, starts[t.map[1]] + page.front.body_start]
    return page, tokens


def _code(page, tokens: list[Token], strip_comments: bool) -> list[str]:
    out = []
    for t in _walk(tokens):
        if t.type in ("fence", "code_block") and t.map:
            content = "\n".join(page.lines[t.map[0] + 1:t.map[1] - 1] if t.type == "fence" else page.lines[t.map[0]:t.map[1]])
            if strip_comments:
                content = "\n".join(ln for ln in content.split("\n") if not CODE_COMMENT.match(ln))
            out.append(f"{t.info.strip()}\n{content}")
    return out


def _shortcode_seq(page, tokens: list[Token]) -> list[str]:
    skip: set[int] = set()
    for t in tokens:
        if t.type == "html_block" and t.content.lstrip().startswith("<!--") and t.map:
            skip.update(range(*t.map))
    kept = "\n".join(line for n, line in enumerate(page.lines) if n >= page.front.body_start and n not in skip)
    return [("/" if closing else "") + name + " " + " ".join(_PROSE_PARAM.sub(r"\1=", params).split())
            for name, closing, params, _ in shortcodes(kept)]


def _links(tokens: list[Token], lang: str | None = None, verbatim: set[int] = frozenset()) -> Counter:
    """Link and image targets; with ``lang``, /docs/ links rewritten as the translator does
    (not those in verbatim code-like shortcode bodies, which are copied)."""
    out: Counter = Counter()
    for block in tokens:
        if block.type != "inline":
            continue
        copied = bool(block.map) and block.map[0] in verbatim
        for t in block.children or []:
            if t.type == "link_open":
                href = str(t.attrs.get("href", ""))
                out[_rewrite_target(href, lang) if lang and not copied else href] += 1
            elif t.type == "image":
                out["img:" + str(t.attrs.get("src", ""))] += 1
    return out


def _rewrite_target(href: str, lang: str) -> str:
    return f"/{lang}{href}" if href.startswith("/docs/") else href


def check_page_structure(en_text: str, zh_text: str, lang: str = "zh-cn", code_comments: bool = False,
                         path: str = "<page>", fragment: bool = False) -> list[Problem]:
    """Everything structural that differs between the English page and its translation."""
    try:
        en_page, en_tokens = _body(en_text, path, fragment)
    except PageError as e:
        return [Problem("parse", f"English page: {e}")]
    try:
        zh_page, zh_tokens = _body(zh_text, path + " (translation)", fragment)
    except PageError as e:
        return [Problem("parse", str(e))]
    problems: list[Problem] = []
    if en_page.front.present != zh_page.front.present:
        problems.append(Problem("front_matter", "front matter present on one side only"))
    en_keys = [k for k in en_page.front.data if k != "reviewers"]
    zh_keys = list(zh_page.front.data)
    if "reviewers" in zh_page.front.data:
        problems.append(Problem("front_matter", "'reviewers' must be dropped"))
    if set(en_keys) != set(zh_keys):
        problems.append(Problem("front_matter", f"keys differ: missing {sorted(set(en_keys) - set(zh_keys))}, "
                                                f"extra {sorted(set(zh_keys) - set(en_keys))}"))
    for key in en_keys:
        if key not in ("title", "description") and key in zh_page.front.data \
                and en_page.front.data[key] != zh_page.front.data[key]:
            problems.append(Problem("front_matter", f"'{key}' changed (only title and description are translated)"))
    en_code, zh_code = _code(en_page, en_tokens, code_comments), _code(zh_page, zh_tokens, code_comments)
    if en_code != zh_code:
        bad = next((i for i, (a, b) in enumerate(zip(en_code, zh_code)) if a != b), min(len(en_code), len(zh_code)))
        problems.append(Problem("code", f"code blocks differ ({len(en_code)} in English, {len(zh_code)} translated; "
                                        f"first difference at block {bad + 1})"))
    # block shortcodes keep their order; inline ones (glossary_tooltip, param) may move with the word order
    en_sc = [rewrite_links(sc, lang) for sc in _shortcode_seq(en_page, en_tokens)]
    zh_sc = _shortcode_seq(zh_page, zh_tokens)
    inline = lambda sc: sc.lstrip("/").split(" ")[0] in INLINE_SHORTCODES  # noqa: E731
    en_block, zh_block = [x for x in en_sc if not inline(x)], [x for x in zh_sc if not inline(x)]
    if en_block != zh_block:
        bad = next((i for i, (a, b) in enumerate(zip(en_block, zh_block)) if a != b), min(len(en_block), len(zh_block)))
        problems.append(Problem("shortcodes", f"block shortcode sequence differs at #{bad + 1}: "
                                              f"{en_block[bad] if bad < len(en_block) else 'end'!r} vs "
                                              f"{zh_block[bad] if bad < len(zh_block) else 'end'!r}"))
    en_inline, zh_inline = Counter(x for x in en_sc if inline(x)), Counter(x for x in zh_sc if inline(x))
    if en_inline != zh_inline:
        problems.append(Problem("shortcodes", f"inline shortcodes differ: missing {sorted((en_inline - zh_inline).elements())[:3]}, "
                                              f"extra {sorted((zh_inline - en_inline).elements())[:3]}"))
    want = _links(en_tokens, lang, en_page.code)
    have = _links(zh_tokens)
    if want != have:
        problems.append(Problem("links", f"link targets differ: missing {sorted((want - have).elements())[:5]}, "
                                         f"extra {sorted((have - want).elements())[:5]}"))
    en_h = [(lvl, anchor) for lvl, anchor, _ in en_page.headings]
    zh_h = [(lvl, anchor) for lvl, anchor, _ in zh_page.headings]
    if en_h != zh_h:
        problems.append(Problem("headings", f"headings differ: {len(en_h)} in English, {len(zh_h)} translated; "
                                            f"first mismatch {next((p for p in zip(en_h, zh_h) if p[0] != p[1]), None)}"))
    return problems
