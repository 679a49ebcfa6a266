"""Align English/translated segments from a kubernetes/website ``content/`` tree.

Localized pages (zh-cn, ja, ko, ...) keep the English they were translated from in an HTML
comment right before each translation. That comment, not the (often newer) English page, is the
reference, so pairs come from ``<!-- english -->`` + the text that follows it. The English page
at the same path is only a fallback for the title.

Pipeline per page: front matter -> title/description pairs; body -> tokens (own-line comments,
text, with fenced code removed) -> blocks (heading, paragraph, list item, table row) on each side
-> 1:1 pairing when the block kinds line up, else one multi-paragraph pair, else dropped (counted).
Then filters (target script present, length ratio, ...), dedupe, and a split by document.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from loraforge.data.formats import DataError, decode_utf8
from loraforge.runs.files import atomic_write

# Longer segments are generated option lists (feature gates of the command-line reference), not
# prose: thousands of tokens each, useless for training and slow to evaluate.
MAX_CHARS = 2000
# Comments that only mark a layout section; they are not translations.
SECTION_MARKERS = {
    "overview", "body", "steps", "more", "discussion", "lessoncontent", "prerequisites",
    "whatsnext", "objectives", "cleanup", "options", "synopsis", "tutorial", "includes",
}
# Shortcodes used inside running text; any other shortcode alone on a line is block structure.
INLINE_SHORTCODES = {"glossary_tooltip", "ref", "relref", "param", "skew", "link", "latest-version",
                     "latest-semver", "version", "api-reference", "example", "term", "fullversion"}
# Shortcode blocks whose body is code or hidden text, skipped like a code fence.
CODE_SHORTCODES = {"mermaid", "highlight", "comment", "code"}

SCRIPTS = {  # target-language script, used to reject untranslated "translations"
    "zh": r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff",
    "ja": r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff",
    "ko": r"\uac00-\ud7af\u1100-\u11ff\u3130-\u318f",
}
CJK = re.compile(f"[{SCRIPTS['zh']}{SCRIPTS['ja']}{SCRIPTS['ko']}]")
CJK_PUNCT = "，。、；：？！（）【】《》「」『』“”‘’…—"

FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
SHORTCODE_LINE = re.compile(r"^\s*(\{\{[<%]\s*(/?)\s*([\w-]+)[^}]*?[%>]\}\}\s*)+$")
HTML_LINE = re.compile(
    r"^\s*(</?(td|tr|th|table|tbody|thead|div|ul|ol|li|details|summary|br|hr|dl|dt|dd|p|section|center)"
    r"\b[^>]*>\s*|<a name=[^>]*>\s*</a>\s*)+$", re.I)
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
LIST_ITEM = re.compile(r"^(\s*)([-*+]|\d{1,3}[.)])\s+(.*)$")
TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
# "- **spec.field** (type), required" heads a field in the generated API reference; the English
# puts the description on the next line, the translation often after a blank line.
FIELD_HEADER = re.compile(r"^\*\*[\w.\[\]-]+\*\*\s*\(.*\)\s*([,，]\s*\S+)?\s*$")
ANCHOR = re.compile(r"\s*\{#[^}]*\}\s*$")
PLACEHOLDER = re.compile(r"(?i)\s*(<[^>]+>\s*)*no description provided\.?\s*(</[^>]+>\s*)*")


@dataclass
class Report:
    """What a build kept and dropped, by reason; the CLI prints it as JSON."""

    files: int = 0
    pairs: dict[str, int] = field(default_factory=dict)
    kinds: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    coverage: dict = field(default_factory=dict)  # structure alignment: pages, blocks, aligned
    mono: dict = field(default_factory=dict)  # monolingual splits written: name -> records

    def as_dict(self) -> dict:
        out = {"files": self.files, "pairs": self.pairs, "kinds": dict(sorted(self.kinds.items())),
               "dropped": dict(sorted(self.dropped.items()))}
        return out | {k: v for k, v in (("coverage", self.coverage), ("mono", self.mono)) if v}


# --- parsing ------------------------------------------------------------------------------------


def read_text(path: Path) -> str:
    return decode_utf8(path.read_bytes(), path)


def split_front_matter(text: str) -> tuple[str, list[str], int]:
    """Return (front matter, body lines, line number of the first body line)."""
    lines = text.split("\n")
    if lines and lines[0].strip() == "---":
        for i in range(1, len(lines)):
            if lines[i].strip() == "---":
                return "\n".join(lines[1:i]), lines[i + 1:], i + 2
    return "", lines, 1


def _yaml_dict(text: str) -> dict:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    if isinstance(data, dict):
        return data
    out = {}  # a comment can hold a YAML fragment that does not parse; read the simple keys
    for m in re.finditer(r"^(title|description|linkTitle):\s*(.+)$", text, re.M):
        out[m.group(1)] = m.group(2).strip().strip("\"'")
    return out


def tokenize(lines: list[str], path: Path, first_line: int) -> list[tuple[str, object, int]]:
    """Split body lines into ('comment', text, line), ('text', [lines], line) and ('break', None, line).

    Only a comment that starts its own line counts: ``<!--Default:-->默认值`` inside a line is a
    label, not a translation. Fenced code and code-like shortcode blocks become a 'break'.
    """
    tokens: list[tuple[str, object, int]] = []
    text: list[str] = []
    text_start = first_line
    i = 0

    def flush(kind="break", value=None, at=0):
        nonlocal text
        if text:
            tokens.append(("text", text, text_start))
            text = []
        if kind:
            tokens.append((kind, value, at))

    while i < len(lines):
        line, lineno = lines[i], first_line + i
        stripped = line.strip()
        fence = FENCE.match(line)
        sc = SHORTCODE_LINE.match(line)
        if stripped.startswith("<!--"):
            body_start = line.index("<!--") + 4
            j, rest = i, line[body_start:]
            parts = []
            while "-->" not in rest:
                parts.append(rest)
                j += 1
                if j >= len(lines):
                    raise DataError(f"{path}:{lineno}: comment '<!--' is never closed with '-->'")
                rest = lines[j]
            end = rest.index("-->")
            parts.append(rest[:end])
            after = rest[end + 3:].strip()
            if after and "<!--" not in after:  # inline label like <!--Default:-->默认值：80
                flush(None)
                tokens.append(("inline", "\n".join(parts), lineno))
            else:
                flush("comment", "\n".join(parts), lineno)
            i = j + 1
            continue
        if fence:
            flush("break", None, lineno)
            mark = fence.group(1)
            i += 1
            while i < len(lines) and not re.match(rf"^\s*{re.escape(mark[0])}{{{len(mark)},}}\s*$", lines[i]):
                i += 1
            i += 1
            continue
        if sc and sc.group(3) in CODE_SHORTCODES and not sc.group(2):
            flush("break", None, lineno)
            close = re.compile(rf"\{{\{{[<%]\s*/\s*{re.escape(sc.group(3))}\s*[%>]\}}\}}")
            if not close.search(line):
                i += 1
                while i < len(lines) and not close.search(lines[i]):
                    i += 1
            i += 1
            continue
        if not text:
            text_start = lineno
        text.append(line)
        i += 1
    flush(None)
    return tokens


def is_structural(line: str) -> bool:
    """A line that is layout, not prose: HTML table/div tags or a block shortcode alone on it."""
    if HTML_LINE.match(line):
        return True
    m = SHORTCODE_LINE.match(line)
    return bool(m) and m.group(3) not in INLINE_SHORTCODES


def _strip_comment_code(lines: list[str]) -> list[str]:
    """Remove fenced code from a comment, including a fence the comment truncated."""
    out, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence:
            mark = fence.group(1)
            i += 1
            while i < len(lines) and not re.match(rf"^\s*{re.escape(mark[0])}{{{len(mark)},}}\s*$", lines[i]):
                i += 1
            out.append("")
            i += 1
            continue
        out.append(lines[i])
        i += 1
    return out


def blocks(lines: list[str]) -> list[tuple[str, list[str]]]:
    """Group lines into (kind, lines) blocks: heading, list, table, paragraph.

    Blank lines, structural lines and list-item starts all end a block, so the English and the
    translation agree even where one side has blank lines between list items and the other not.
    """
    out: list[tuple[str, list[str]]] = []
    cur: list[str] = []
    kind = "paragraph"

    def end():
        nonlocal cur, kind
        if cur:
            out.append((kind, cur))
        cur, kind = [], "paragraph"

    for line in lines:
        if not line.strip() or is_structural(line) or TABLE_SEP.match(line):
            end()
            continue
        h = HEADING.match(line)
        if h and not LIST_ITEM.match(line):
            end()
            out.append(("heading", [h.group(2)]))
            continue
        if TABLE_ROW.match(line):
            end()
            out.append(("table", [line.strip().strip("|")]))
            continue
        li = LIST_ITEM.match(line)
        if li:
            end()
            kind, cur = "list", [li.group(3)]
            if FIELD_HEADER.match(li.group(3)):  # API reference: the description is its own block
                end()
            continue
        if line.lstrip().startswith("<p>"):  # HTML paragraphs (config API pages) need no blank line
            end()
        cur.append(re.sub(r"^\s*>\s?", "", line))
        if line.rstrip().endswith("</p>"):
            end()
    end()
    return out


def _join(lines: list[str]) -> str:
    text = ""
    for line in (ln.strip() for ln in lines):
        if not line:
            continue
        if text and not (_wide(text[-1]) and _wide(line[0])) and text[-1] not in CJK_PUNCT:
            text += " "
        text += line
    return text


def _wide(ch: str) -> bool:
    return bool(CJK.match(ch)) or ch in CJK_PUNCT


def normalize(kind: str, lines: list[str]) -> str:
    text = _join(lines)
    text = re.sub(r"\s+", " ", text).strip()
    if kind == "heading":
        text = ANCHOR.sub("", text)
    if kind == "table":
        text = re.sub(r"\s*\|\s*", " | ", text)
    text = re.sub(r"\s*</p>\s*<p>\s*", "\n\n", text)
    m = re.fullmatch(r"<p>(.*?)(</p>)?", text, re.S) or re.fullmatch(r"(.*?)</p>", text, re.S)
    if m:  # a paragraph wrapped in <p> on one side only (command-line reference tables)
        text = m.group(1).strip()
    return trim_edge_tags(text)


EDGE_OPEN = re.compile(r"^<([a-zA-Z][\w-]*)(?:\s[^<>]*)?>\s*")
EDGE_CLOSE = re.compile(r"\s*</([a-zA-Z][\w-]*)>?$")
TRAILING_OPEN = re.compile(r"\s*<[a-zA-Z][\w-]*(\s[^<>]*)?>$")


def trim_edge_tags(text: str) -> str:
    """Drop HTML tags at either end that have no partner inside the text.

    Table cells in the reference pages put ``<td>``/``<span>`` on one side of a comment only
    (``译文</span></td>``), and a few comments are typos like ``<!-- td>...</td-->``; a tag the
    text does not open (or close) is layout, not part of the segment.
    """
    while True:
        before = text
        m = EDGE_CLOSE.search(text)
        if m and not re.search(rf"<{m.group(1)}[\s>]", text):
            text = text[: m.start()]
        m = EDGE_OPEN.match(text)
        if m and not re.search(rf"</{m.group(1)}\b", text):
            text = text[m.end():]
        text = TRAILING_OPEN.sub("", text)
        if text == before:
            return text.strip()


# --- alignment ----------------------------------------------------------------------------------


def _segment_blocks(text_lines: list[str]) -> list[list[tuple[str, list[str]]]]:
    """The translation's blocks, cut into runs at structural lines and headings.

    The comment's translation is a prefix of the text after it; the runs let the aligner try the
    shortest prefix whose blocks match the comment before taking the whole text.
    """
    runs: list[list[str]] = [[]]
    for line in text_lines:
        if is_structural(line) or (HEADING.match(line) and runs[-1] and any(s.strip() for s in runs[-1])):
            runs.append([])
        runs[-1].append(line)
    return [blocks(r) for r in runs]


def align_segment(en_text: str, zh_lines: list[str]) -> tuple[list[tuple[str, str, str]], str | None]:
    """Pair one comment with the text that follows it. Returns (pairs, reason when dropped)."""
    en_blocks = blocks(_strip_comment_code(en_text.split("\n")))
    if not en_blocks:
        return [], None
    runs = _segment_blocks(zh_lines)
    zh_blocks: list[tuple[str, list[str]]] = []
    for run in runs:
        zh_blocks = zh_blocks + run
        if len(zh_blocks) >= len(en_blocks):
            break
    # Untranslated blocks (field names, anchors, code) often follow a translation without a
    # comment of their own; they are not part of this comment's translation.
    while len(zh_blocks) > len(en_blocks) and not CJK.search(" ".join(zh_blocks[-1][1])):
        zh_blocks.pop()
    if not zh_blocks:
        return [], "no_translation"
    if len(zh_blocks) == len(en_blocks) and all(a[0] == b[0] for a, b in zip(en_blocks, zh_blocks)):
        return [(k, normalize(k, e), normalize(k, z)) for (k, e), (_, z) in zip(en_blocks, zh_blocks)], None
    en = "\n\n".join(normalize(k, b) for k, b in en_blocks)
    zh = "\n\n".join(normalize(k, b) for k, b in zh_blocks)
    prose = all(k in ("paragraph", "list") for k, _ in en_blocks + zh_blocks)
    if prose and abs(len(zh_blocks) - len(en_blocks)) == 1 and _same_sentences(en, zh):
        # one paragraph merged or split: the whole comment still translates the whole run
        return [("paragraphs", en, zh)], None
    return [], "block_mismatch"


def _same_sentences(en: str, zh: str) -> bool:
    """Sentence counts agree (within one for long texts): a merged paragraph keeps its sentences,
    a dropped or added sentence changes the count."""
    n_en = len(re.findall(r"[.!?:](\s|$)", en))
    n_zh = len(re.findall(r"[。！？：]|[.!?:](\s|$)", zh))
    return n_en == n_zh or (min(n_en, n_zh) >= 3 and abs(n_en - n_zh) <= 1)


def _repair_shared_brackets(text: str) -> str:
    """``<!--td>English</td-->`` comments out a whole tag, sharing its brackets with the
    comment markers; give the tag its brackets back."""
    m = re.match(r"\s*([a-zA-Z][\w-]*)(\s[^<>]*)?>", text)
    if m and re.search(rf"</{m.group(1)}\s*$", text):
        return "<" + text.strip() + ">"
    return text


def align_page(zh_path: Path, en_path: Path | None) -> tuple[list[tuple[str, str, str]], Counter]:
    """All raw (kind, en, target) pairs of one localized page, before filtering."""
    dropped: Counter = Counter()
    fm, body, first = split_front_matter(read_text(zh_path))
    tokens = tokenize(body, zh_path, first)
    pairs: list[tuple[str, str, str]] = []
    zh_meta = _yaml_dict(fm) if fm else {}
    en_meta: dict = {}
    lead = [t for t in tokens[:3] if not (t[0] == "text" and not "".join(t[1]).strip())]
    if lead and lead[0][0] == "comment" and re.search(r"^\s*(title|reviewers|content_type|description):", str(lead[0][1]), re.M):
        en_meta = _yaml_dict(str(lead[0][1]))
        tokens = [t for t in tokens if t is not lead[0]]
    elif en_path is not None and en_path.is_file():  # fallback: the English page, for the title only
        en_fm, _, _ = split_front_matter(read_text(en_path))
        en_meta = {"title": _yaml_dict(en_fm).get("title")}
    for key, kind in (("title", "title"), ("linkTitle", "title"), ("description", "description")):
        en, zh = en_meta.get(key), zh_meta.get(key)
        if isinstance(en, str) and isinstance(zh, str) and en.strip() and zh.strip():
            pairs.append((kind, re.sub(r"\s+", " ", en).strip(), re.sub(r"\s+", " ", zh).strip()))
    for i, (kind, value, _line) in enumerate(tokens):
        if kind == "inline":
            dropped["inline_comment"] += 1
        if kind != "comment":
            continue
        en_text = _repair_shared_brackets(str(value))
        if en_text.strip().lower() in SECTION_MARKERS:
            continue
        if CJK.search(en_text):
            dropped["comment_not_english"] += 1
            continue
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        zh_lines = nxt[1] if nxt and nxt[0] == "text" else []
        got, reason = align_segment(en_text, zh_lines)  # type: ignore[arg-type]
        if reason:
            dropped[reason] += 1
        pairs.extend(got)
    return pairs, dropped


# --- filters, split, output ---------------------------------------------------------------------


def target_key(lang: str) -> str:
    return lang.split("-")[0].lower()


def reject_reason(en: str, tgt: str, lang: str) -> str | None:
    """Why a pair is implausible, or None. The length ratio bounds are wide on purpose: markup
    and code identifiers are copied verbatim, so technical pairs are often close to 1:1 in chars."""
    if not en or not tgt:
        return "empty"
    if len(en) > MAX_CHARS:
        return "too_long"
    if en == tgt:
        return "identical"
    script = SCRIPTS.get(target_key(lang))
    if script and not re.search(f"[{script}]", tgt):
        return "no_target_script"
    if not re.search(r"[A-Za-z]", en):
        return "no_english"
    if PLACEHOLDER.fullmatch(en):  # generated reference pages: the translator wrote a description
        return "placeholder"
    if script:
        ratio = len(tgt) / len(en)
        if (len(en) >= 20 and ratio < 0.12) or ratio > 3.0:
            return "length_ratio"
        if len(en) >= 60 and ratio < 0.2 and re.search(r"[：:]\s*$", tgt) and not en.rstrip().endswith(":"):
            return "truncated"  # "有效值为：" and the rest went into an HTML list the comment lacks
    return None


def split_of(source: str, dev_pct: float = 2.0, test_pct: float = 2.0) -> str:
    """Deterministic split by document: a hash of the path, so a page never straddles splits."""
    h = int(hashlib.sha256(source.encode("utf-8")).hexdigest()[:8], 16) % 10000 / 100.0
    return "dev" if h < dev_pct else "test" if h < dev_pct + test_pct else "train"


def write_jsonl_gz(path: Path, records: list[dict]) -> None:
    """Byte-reproducible gzip (mtime 0, no file name), written atomically."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        for rec in records:
            gz.write((json.dumps(rec, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8"))
    atomic_write(path, buf.getvalue())


def read_jsonl_gz(path: Path) -> list[dict]:
    """The records of a ``write_jsonl_gz`` file."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def add_pairs(out: list[dict], seen: set[tuple[str, str]], report: Report, rel: str, key: str,
              pairs: list[tuple[str, str, str]], reject) -> None:
    """Append one page's (kind, en, tgt) pairs to its split as records numbered per page; a pair that
    ``reject(en, tgt)`` names a reason for, or one already seen, is dropped and counted."""
    n = 0
    for kind, en, tgt in pairs:
        reason = reject(en, tgt) or ("duplicate" if (en, tgt) in seen else None)
        if reason:
            report.dropped[reason] += 1
            continue
        seen.add((en, tgt))
        out.append({"id": f"{rel[:-3]}#{n}", "en": en, key: tgt, "source": rel, "kind": kind})
        n += 1


def drop_english_seen_in_train(splits: dict[str, list[dict]], report: Report) -> None:
    """Held-out splits must not test what train already teaches: drop exact English repeats (counted)."""
    train_en = {r["en"] for r in splits["train"]}
    for name in ("dev", "test"):
        keep = [r for r in splits[name] if r["en"] not in train_en]
        report.dropped["en_seen_in_train"] += len(splits[name]) - len(keep)
        splits[name] = keep


def section_pairs(splits: dict[str, list[dict]], prefix: str, report: Report, name: str) -> list[dict]:
    """Every pair of the pages under ``prefix`` (from every split), minus pairs whose English a page
    outside the section trains on (counted as ``<name>_en_seen_in_train``, the rule of
    ``drop_english_seen_in_train``): a held-out set in another style than the pages a run trains on,
    once the run excludes ``prefix`` (``data.exclude_sources``).

    Ordered round-robin over the pages (each page's first pair, in page-path order, then each page's
    second, ...), so that the first N rows that ``eval.max_examples`` scores come from as many pages
    as N allows instead of the first page or two."""
    records = [r for split in ("train", "dev", "test") for r in splits.get(split, [])]
    section = sorted((r for r in records if r["source"].startswith(prefix)), key=lambda r: r["source"])
    outside_en = {r["en"] for r in splits.get("train", []) if not r["source"].startswith(prefix)}
    keep = [r for r in section if r["en"] not in outside_en]
    report.dropped[f"{name}_en_seen_in_train"] += len(section) - len(keep)
    nth: Counter = Counter()  # each row's position within its page
    ranked = []
    for r in keep:
        ranked.append((nth[r["source"]], r["source"], len(ranked), r))
        nth[r["source"]] += 1
    return [r for *_, r in sorted(ranked, key=lambda t: t[:3])]


def build(source: str | Path, out: str | Path, lang: str = "zh-cn", section: str = "docs",
          dev_pct: float = 2.0, test_pct: float = 2.0) -> Report:
    """Align every page of ``<source>/content/<lang>/<section>`` and write train/dev/test.jsonl.gz."""
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise DataError(f"{source}: source directory not found (expected a kubernetes/website checkout)")
    root = source / "content" / lang / section if (source / "content").is_dir() else source / lang / section
    if not root.is_dir():
        raise DataError(f"{root}: directory not found (expected a kubernetes/website checkout with content/{lang}/{section})")
    en_root = root.parent.parent / "en" / section
    key = target_key(lang)
    report = Report()
    splits: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    seen: set[tuple[str, str]] = set()
    for path in sorted(root.rglob("*.md")):
        rel = path.relative_to(root.parent).as_posix()  # e.g. docs/concepts/architecture/nodes.md
        report.files += 1
        pairs, dropped = align_page(path, en_root / path.relative_to(root))
        report.dropped.update(dropped)
        split = split_of(rel, dev_pct, test_pct)
        add_pairs(splits[split], seen, report, rel, key, pairs, lambda en, tgt: reject_reason(en, tgt, lang))
    drop_english_seen_in_train(splits, report)
    total = sum(len(v) for v in splits.values())
    if total == 0:
        raise DataError(f"{root}: no aligned pairs found in {report.files} files "
                        f"(are the pages translated with <!-- English --> comments?)")
    out.mkdir(parents=True, exist_ok=True)
    for name, recs in splits.items():
        write_jsonl_gz(out / f"{name}.jsonl.gz", recs)
        report.pairs[name] = len(recs)
        report.kinds.update(r["kind"] for r in recs)
    return report


def review_sample(out: str | Path, n: int = 100, seed: str = "review") -> list[dict]:
    """``n`` records of a build chosen by a seeded hash of their text, for a human to check.

    Hashing the pair (not drawing by position) keeps the sample stable when an aligner change
    adds or drops other pairs, so a review stays valid for the pairs it covered.
    """
    recs = [r for name in ("train", "dev", "test") for r in read_jsonl_gz(Path(out) / f"{name}.jsonl.gz")]
    def key(r: dict) -> str:
        tgt = next(v for k, v in r.items() if k not in ("id", "en", "source", "kind"))
        return hashlib.sha256(f"{seed}\t{r['en']}\t{tgt}".encode("utf-8")).hexdigest()
    return sorted(recs, key=key)[:n]

