"""Read a Hugo Markdown page and cut it into what gets translated and what is copied.

markdown-it-py's token map (line ranges) splits the body into blocks; nothing here regex-splits
Markdown. A page becomes ``parts``: verbatim line runs (code fences, blank lines, comments,
block shortcodes) and ``Unit``s (a heading, a paragraph, one top-level list item, a table, a
blockquote), each with ``Leaf``s: the line ranges whose text is translated (a paragraph, a
heading, a table row cell by cell, ...). Rendering swaps each leaf's lines for its translation, so
everything the translator does not own comes out byte for byte.

Hugo shortcodes are not Markdown, so markdown-it sees a ``{{< note >}}`` line as paragraph text:
block shortcodes alone on a line are cut out of the paragraphs here and copied verbatim.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml
from markdown_it import MarkdownIt
from markdown_it.token import Token

from loraforge.data.formats import DataError, decode_utf8
from loraforge.data.markup import SHORTCODE

# Shortcodes that sit inside running text; any other shortcode alone on a line is structure.
INLINE_SHORTCODES = {"glossary_tooltip", "ref", "relref", "param", "skew", "link", "latest-version",
                     "latest-semver", "version", "api-reference", "example", "term", "fullversion"}
# Shortcodes whose body is code or hidden text: copied like a code fence.
CODE_SHORTCODES = {"mermaid", "highlight", "comment", "code"}
# Shortcodes that always need a closing tag, whether or not this page closes them.
PAIRED_SHORTCODES = {"note", "caution", "warning", "tabs", "tab", "highlight", "mermaid", "comment",
                     "details", "table"}
SHORTCODE_LINE = re.compile(r"^\s*(?:\{\{[<%].*?[%>]\}\}\s*)+$", re.S)
MASK = "\ue002"  # what markdown-it sees in place of each shortcode (as Hugo hides them)
HEADING_ID = re.compile(r"\s*\{#([^}\s]+)\}\s*$")
CODE_COMMENT_LANGS = {"", "yaml", "yml", "shell", "bash", "sh", "console", "python", "dockerfile", "text", "toml"}
CODE_COMMENT = re.compile(r"^(\s*#+\s+)(.*[A-Za-z].*)$")


class PageError(DataError):
    """A page that cannot be translated safely; the message names the path and line."""


def markdown() -> MarkdownIt:
    return MarkdownIt("commonmark").enable("table")


# --- reading ------------------------------------------------------------------------------------


def read_page(path: str | Path) -> str:
    """The page's text; binary or non-UTF-8 files are a PageError naming the path."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise PageError(f"{path}: cannot read ({e.strerror})") from None
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise PageError(f"{path}:{line}: binary file (NUL byte), not a Markdown page")
    try:
        return decode_utf8(raw, path)
    except DataError as e:
        raise PageError(str(e)) from None


@dataclass
class FrontMatter:
    lines: list[str]  # between the --- lines
    data: dict
    body_start: int  # index of the first body line in the page's lines
    present: bool = True


def split_front_matter(lines: list[str], where: str, fragment: bool = False) -> FrontMatter:
    """The front matter; a page without one is an error unless ``fragment`` (generated pages that
    other pages include, such as the kubeadm reference, have none)."""
    if not lines or lines[0].strip() != "---":
        if fragment:
            return FrontMatter([], {}, 0, present=False)
        raise PageError(f"{where}:1: no front matter (a Hugo page starts with a '---' line)")
    end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), None)
    if end is None:
        raise PageError(f"{where}:1: front matter opened with '---' is never closed")
    try:
        data = yaml.safe_load("\n".join(lines[1:end])) or {}
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", 0) + 2
        raise PageError(f"{where}:{line}: front matter is not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise PageError(f"{where}:2: front matter must be a YAML mapping")
    return FrontMatter(lines[1:end], data, end + 1)


def front_matter_regions(lines: list[str]) -> list[tuple[str | None, list[str]]]:
    """Top-level (key, lines) regions of YAML front matter, so a key can be replaced or dropped
    while every other line stays byte for byte. Lines before the first key have key None."""
    regions: list[tuple[str | None, list[str]]] = [(None, [])]
    for line in lines:
        m = re.match(r"^([A-Za-z_][\w-]*)\s*:", line)
        if m:
            regions.append((m.group(1), [line]))
        else:
            regions[-1][1].append(line)
    return regions


# --- shortcodes ---------------------------------------------------------------------------------


def shortcodes(text: str) -> list[tuple[str, bool, str, int]]:
    """(name, is_closing, params, offset) of the live shortcodes in ``text`` (escaped
    ``{{</* */>}}`` ones are shown, not run, so they do not count)."""
    out = []
    for m in SHORTCODE.finditer(text):
        if m.group("esc"):
            continue
        out.append((m.group(4), bool(m.group(3)), (m.group(5) or "").strip() + ("/" if m.group(6) else ""), m.start()))
    return out


def mask_shortcodes(text: str) -> tuple[str, list[int], list[tuple[int, str]]]:
    """Hide every shortcode from markdown-it behind one MASK character, as Hugo does before it
    renders Markdown (a ``>}}`` starting a line is no blockquote). Returns the masked text, the
    original line each masked line starts at (plus a sentinel) and (offset, text) of each shortcode."""
    found = [(m.start(), m.group(0)) for m in SHORTCODE.finditer(text)]
    masked = SHORTCODE.sub(MASK, text)
    starts, line, i = [0], 0, 0
    inside = {start: len(sc) for start, sc in found}
    while i < len(text):
        if i in inside:
            line += text.count("\n", i, i + inside[i])
            i += inside[i]
            continue
        if text[i] == "\n":
            line += 1
            starts.append(line)
        i += 1
    starts.append(line + 1)
    return masked, starts, found


def is_block_shortcode_line(line: str) -> bool:
    if not SHORTCODE_LINE.match(line):
        return False
    return any(name not in INLINE_SHORTCODES for name, *_ in shortcodes(line))


def check_shortcodes(text: str, skip: set[int], where: str, first_line: int = 1) -> None:
    """Every paired shortcode opened is closed, in order; else a PageError with the line.
    ``skip`` holds line indexes (of ``text``) inside code fences."""
    found = []
    for name, closing, params, at in shortcodes(text):
        n = text.count("\n", 0, at)
        if n not in skip:
            found.append((name, closing, params, n + first_line))
    paired = PAIRED_SHORTCODES | {name for name, closing, _, _ in found if closing}
    stack: list[tuple[str, int]] = []
    for name, closing, params, line in found:
        if name not in paired or params.endswith("/"):
            continue
        if not closing:
            stack.append((name, line))
        elif not stack or stack[-1][0] != name:
            raise PageError(f"{where}:{line}: shortcode '{{{{< /{name} >}}}}' closes nothing "
                            f"(open: {stack[-1][0] + ' from line ' + str(stack[-1][1]) if stack else 'none'})")
        else:
            stack.pop()
    if stack:
        name, line = stack[-1]
        raise PageError(f"{where}:{line}: shortcode '{{{{< {name} >}}}}' is never closed")


def code_shortcode_lines(lines: list[str]) -> set[int]:
    """Lines inside (and of) highlight/mermaid/... shortcodes: code, copied verbatim."""
    out: set[int] = set()
    open_at: tuple[str, int] | None = None
    for i, line in enumerate(lines):
        for name, closing, params, _ in shortcodes(line):
            if closing:
                if open_at and open_at[0] == name:
                    out.update(range(open_at[1], i + 1))
                    open_at = None
            elif open_at is None and not params.endswith("/") and (
                    name in CODE_SHORTCODES or (name == "tab" and "codelang=" in params)):
                open_at = (name, i)
    return out


def rewrite_links(text: str, lang: str = "zh-cn") -> str:
    """Point site-relative ``/docs/`` links (Markdown, reference definitions, href=) at ``/<lang>/docs/``."""
    text = re.sub(r"(\]\(\s*<?|href=[\"']?)/docs/", rf"\1/{lang}/docs/", text)
    return re.sub(r"^(\s*\[[^\]]+\]:\s*<?)/docs/", rf"\1/{lang}/docs/", text, flags=re.M)


# --- anchors ------------------------------------------------------------------------------------


def anchorize(text: str) -> str:
    """Hugo's default (GitHub-style) heading id: lower case, spaces to '-', punctuation dropped."""
    out = []
    for ch in text.strip().lower():
        if ch.isalnum() or ch in "-_":
            out.append(ch)
        elif ch.isspace():
            out.append("-")
    return "".join(out)


def plain_text(inline: Token) -> str:
    """What a heading renders as, for its id: text and code without the markup."""
    parts = []
    for t in inline.children or []:
        if t.type in ("text", "code_inline", "html_inline"):
            parts.append(t.content if t.type != "html_inline" else "")
        elif t.type in ("softbreak", "hardbreak"):
            parts.append(" ")
    return "".join(parts)


# --- units and leaves ---------------------------------------------------------------------------


@dataclass
class Leaf:
    """Lines [start, end) replaced by a render of the translated ``sources``.

    kind: text | heading | row | html | code_comment | shortcode. ``template`` holds what render
    needs (the line prefix, a heading's level and anchor, a row's cell layout).
    """

    kind: str
    start: int
    end: int
    sources: list[str]
    prefix: str = ""
    anchor: str = ""
    level: int = 0


@dataclass
class Unit:
    """A block the English comment goes above: a heading, a paragraph, a list item, a table."""

    kind: str
    start: int
    end: int
    leaves: list[Leaf] = field(default_factory=list)
    comment: bool = True  # False where a comment would hold a shortcode alone or hide code
    number: int | None = None  # an ordered list item's explicit number (comments split lists)


@dataclass
class Page:
    path: str
    lines: list[str]
    front: FrontMatter
    parts: list[Unit | tuple[int, int]]  # units and verbatim (start, end) line ranges, in order
    headings: list[tuple[int, str, bool]] = field(default_factory=list)  # (level, anchor, explicit)
    code: set[int] = field(default_factory=set)  # lines of code fences and code shortcodes


def _inline_after(tokens: list[Token], i: int) -> Token:
    return next(t for t in tokens[i + 1:] if t.type == "inline")


def _prefix(line: str, content_first: str) -> str:
    at = line.find(content_first) if content_first else -1
    return line[:at] if at >= 0 else line[: len(line) - len(line.lstrip())]


class _Builder:
    """Turns masked-parse tokens into leaves over the page's original lines."""

    def __init__(self, lines: list[str], offset: int, starts: list[int], found: list[tuple[int, str]],
                 code_lines: set[int], code_comments: bool):
        self.lines, self.offset, self.starts = lines, offset, starts
        self.code_lines, self.code_comments = code_lines, code_comments
        body = "\n".join(lines[offset:])
        self.masked = SHORTCODE.sub(MASK, body).split("\n")
        self.found = [(offset + body.count("\n", 0, at), sc) for at, sc in found]  # (line, text)
        self.anchors: Counter = Counter()
        self.headings: list[tuple[int, str, bool]] = []

    def leaves(self, tokens: list[Token]) -> list[Leaf]:
        """Leaves of a token run (one top-level block and its children)."""
        out: list[Leaf] = []
        for i, t in enumerate(tokens):
            if t.type == "paragraph_open":
                out += self.paragraph(t, _inline_after(tokens, i))
            elif t.type == "heading_open":
                out.append(self.heading(t, _inline_after(tokens, i)))
            elif t.type == "tr_open":
                out.append(self.row(tokens, i))
            elif t.type == "html_block":
                out += self.html(t)
            elif t.type == "fence" and self.code_comments:
                out += self.fence_comments(t)
        return [lf for lf in out if not any(n in self.code_lines for n in range(lf.start, lf.end))]

    def abs(self, t: Token) -> tuple[int, int]:
        assert t.map is not None
        return self.line(t.map[0]), self.line(t.map[1])

    def line(self, masked: int) -> int:
        """The page line a masked body line starts at."""
        return self.starts[masked] + self.offset

    def orig(self, masked: int) -> str:
        return "\n".join(self.lines[self.line(masked):self.line(masked + 1)])

    def unmask(self, text: str, start: int, end: int) -> str:
        """Put back, in order, the shortcodes that start on page lines [start, end)."""
        scs = iter([sc for n, sc in self.found if start <= n < end])
        return re.sub(MASK, lambda m: next(scs, MASK), text)

    def paragraph(self, t: Token, inline: Token) -> list[Leaf]:
        """A paragraph, cut at block shortcode lines (each of those is verbatim, or a
        ``shortcode`` leaf when it has prose parameters)."""
        assert t.map is not None
        content = inline.content.split("\n")
        out, run = [], []
        for k, m in enumerate(range(t.map[0], t.map[1])):
            text = content[k] if k < len(content) else ""
            n, original = self.line(m), self.orig(m)
            if is_block_shortcode_line(original):
                if run:
                    out.append(self._text(run))
                    run = []
                if re.search(r"\b(text|title|alt)=\"[^\"]*[^\W\d_]", original):
                    body = original.strip()
                    out.append(Leaf("shortcode", n, self.line(m + 1), [body], prefix=original[: original.index(body)]))
            else:
                run.append((m, text))
        if run:
            out.append(self._text(run))
        return out

    def _text(self, run: list[tuple[int, str]]) -> Leaf:
        first_m, first_text = run[0]
        start, end = self.line(first_m), self.line(run[-1][0] + 1)
        joined = self.unmask(" ".join(s.strip() for _, s in run if s.strip()), start, end)
        prefix = _prefix(self.masked[first_m], first_text.strip())
        return Leaf("text", start, end, [joined], prefix=prefix)

    def heading(self, t: Token, inline: Token) -> Leaf:
        start, end = self.abs(t)
        text = self.unmask(inline.content, start, end)
        m = HEADING_ID.search(text)
        if m:
            anchor, text = m.group(1), text[: m.start()]
        else:
            base = anchorize(HEADING_ID.sub("", plain_text(inline)))
            anchor = base if not self.anchors[base] else f"{base}-{self.anchors[base]}"
            self.anchors[base] += 1
        level = int(t.tag[1])
        self.headings.append((level, anchor, bool(m)))
        prefix = re.match(r"^[\s>]*", self.lines[start]).group(0)
        return Leaf("heading", start, end, [text.strip()], prefix=prefix, anchor=anchor, level=level)

    def row(self, tokens: list[Token], i: int) -> Leaf:
        start, end = self.abs(tokens[i])
        cells = []
        for t in tokens[i + 1:]:
            if t.type == "tr_close":
                break
            if t.type == "inline":
                cells.append(t.content)
        joined = self.unmask("\ue003".join(cells), start, end)  # one pass keeps the shortcodes in order
        cells = joined.split("\ue003")
        return Leaf("row", start, end, cells, prefix=re.match(r"^[\s>]*", self.lines[start]).group(0))

    def html(self, t: Token) -> list[Leaf]:
        """Prose lines of an HTML block (tags become placeholders); comments and code stay."""
        start, end = self.abs(t)
        if t.content.lstrip().startswith("<!--") or re.search(r"<(pre|code|script|style)\b", t.content, re.I):
            return []
        out = []
        assert t.map is not None
        for m in range(t.map[0], t.map[1]):
            line = self.orig(m)
            if re.sub(r"<[^>]*>", "", line).strip():
                out.append(Leaf("html", self.line(m), self.line(m + 1), [line.strip()],
                                prefix=line[: len(line) - len(line.lstrip())]))
        return out

    def fence_comments(self, t: Token) -> list[Leaf]:
        start, end = self.abs(t)
        if t.info.strip().split(" ")[0].lower() not in CODE_COMMENT_LANGS:
            return []
        out = []
        for n in range(start + 1, end - 1):
            m = CODE_COMMENT.match(self.lines[n])
            if m:
                out.append(Leaf("code_comment", n, n + 1, [m.group(2)], prefix=m.group(1)))
        return out


def _trim(unit: Unit, lines: list[str]) -> list[Unit | tuple[int, int]]:
    """Blank and block-shortcode lines at the edges of a unit go outside it (verbatim), so the
    English comment sits inside a shortcode, never around one."""
    start, end = unit.start, unit.end
    edge = lambda n: not lines[n].strip() or is_block_shortcode_line(lines[n])  # noqa: E731
    while start < end and edge(start) and not any(lf.start <= start < lf.end for lf in unit.leaves):
        start += 1
    while end > start and edge(end - 1) and not any(lf.start <= end - 1 < lf.end for lf in unit.leaves):
        end -= 1
    out: list[Unit | tuple[int, int]] = []
    if start > unit.start:
        out.append((unit.start, start))
    out.append(replace(unit, start=start, end=end))
    if end < unit.end:
        out.append((end, unit.end))
    return out


def _closed(t: Token, lines: list[str], last_line: int | None) -> bool:
    last = re.sub(r"^[\s>]*", "", lines[last_line]).strip() if last_line is not None else ""
    ch = t.markup[0]
    return bool(re.fullmatch(rf"{re.escape(ch)}{{{len(t.markup)},}}", last))


def parse_page(text: str, path: str | Path = "<page>", code_comments: bool = False, fragment: bool = False) -> Page:
    """Split a page into front matter, units and verbatim runs; bad input is a PageError."""
    where = str(path)
    lines = text.split("\n")
    front = split_front_matter(lines, where, fragment)
    off = front.body_start
    body = lines[off:]
    masked, starts, found = mask_shortcodes("\n".join(body))
    tokens = markdown().parse(masked)
    line = lambda m: starts[m] + off  # noqa: E731  (masked body line -> page line)
    fence_lines: set[int] = set()
    for t in tokens:
        if t.type == "fence":
            assert t.map is not None
            if not _closed(t, lines, line(t.map[1] - 1) if t.map[1] - t.map[0] > 1 else None):
                raise PageError(f"{where}:{line(t.map[0]) + 1}: code fence '{t.markup}' is never closed")
            fence_lines.update(range(line(t.map[0]), line(t.map[1])))
    check_shortcodes("\n".join(body), {n - off for n in fence_lines}, where, off + 1)
    code_lines = {n + off for n in code_shortcode_lines(body)}
    b = _Builder(lines, off, starts, found, code_lines, code_comments)
    parts: list[Unit | tuple[int, int]] = []
    covered = off
    i = 0
    while i < len(tokens):
        t = tokens[i]
        j = i + 1
        if t.nesting == 1:  # find the matching close at the same level
            depth = 1
            while depth:
                depth += tokens[j].nesting
                j += 1
        if t.map is None:
            i = j
            continue
        start, end = b.abs(t)
        if start > covered:
            parts.append((covered, start))
        if t.type in ("bullet_list_open", "ordered_list_open"):
            parts += _list_items(b, tokens[i:j], lines)
        elif t.type in ("paragraph_open",):
            for leaf in b.leaves(tokens[i:j]):  # a paragraph cut at shortcodes: one unit a piece
                if leaf.start > start:
                    parts.append((start, leaf.start))
                parts.append(Unit("paragraph", leaf.start, leaf.end, [leaf], comment=leaf.kind != "shortcode"))
                start = leaf.end
            if end > start:
                parts.append((start, end))
        else:
            leaves = b.leaves(tokens[i:j])
            kind = t.type.replace("_open", "")
            if leaves:
                parts += _trim(Unit(kind, start, end, leaves, comment=t.type != "fence"), lines)
            else:
                parts.append((start, end))
        covered = max(covered, end)
        i = j
    if covered < len(lines):
        parts.append((covered, len(lines)))
    return Page(where, lines, front, parts, b.headings, fence_lines | code_lines)


def _list_items(b: _Builder, tokens: list[Token], lines: list[str]) -> list[Unit | tuple[int, int]]:
    """One unit per top-level item (the zh-cn guide comments lists item by item)."""
    out: list[Unit | tuple[int, int]] = []
    start_list = b.abs(tokens[0])[0]
    covered = start_list
    level = tokens[0].level + 1
    items = [k for k, t in enumerate(tokens) if t.type == "list_item_open" and t.level == level]
    first = int(tokens[0].attrs.get("start", 1)) if tokens[0].type == "ordered_list_open" else None
    for n, k in enumerate(items):
        end_k = items[n + 1] if n + 1 < len(items) else len(tokens)
        s, e = b.abs(tokens[k])
        if s > covered:
            out.append((covered, s))
        leaves = b.leaves(tokens[k:end_k])
        number = None if first is None else first + n
        out += _trim(Unit("list_item", s, e, leaves, number=number), lines) if leaves else [(s, e)]
        covered = max(covered, e)
    end_list = b.abs(tokens[0])[1]
    if end_list > covered:
        out.append((covered, end_list))
    return out
