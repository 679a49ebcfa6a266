"""Monolingual splits of the Kubernetes docs, for back-translation and self-training.

``mono-zh``: zh-cn blocks the comment aligner does not pair (no comment, or a comment whose
structure does not match), ``mono-en``: English blocks of ``content/en`` that no zh-cn pair holds
(pages or paragraphs newer than the translation). Both come from train-split documents only
(``split_of`` of the page path, as the pairs), and never repeat a dev/test text, so synthetic
pairs made from them cannot leak the held-out pages.
"""

from __future__ import annotations

import re
from pathlib import Path

from loraforge.data.k8s import (CJK, MAX_CHARS, SCRIPTS, align_page, blocks, normalize, read_text,
                                split_front_matter, split_of, target_key, tokenize, write_jsonl_gz)

MIN_CHARS = 8  # shorter blocks are labels ("是", "v1") that teach nothing
MARKUP = re.compile(r"<[^>]+>|`[^`]*`|\{\{[<%].*?[%>]\}\}|&\w+;|https?://\S+")


def page_texts(path: Path) -> list[tuple[str, str]]:
    """(kind, text) of every prose block of a page, split and normalised as the aligner does,
    so a block the aligner paired compares equal to its pair's side."""
    _, body, first = split_front_matter(read_text(path))
    out = []
    for kind, value, _ in tokenize(body, path, first):
        if kind == "text":
            out += [(k, normalize(k, lines)) for k, lines in blocks(value)]  # type: ignore[arg-type]
    return out


def _paired_sides(pairs: list[tuple[str, str, str]]) -> tuple[set[str], set[str]]:
    en, tg = set(), set()
    for _, e, t in pairs:
        en.update([e, *e.split("\n\n")])  # a merged-paragraphs pair covers each paragraph
        tg.update([t, *t.split("\n\n")])
    return en, tg


def _keep(text: str, script: str, share: float) -> bool:
    """Long enough, not over-long, no leftover comment label, and enough of the wanted script
    (Chinese docs keep English terms, so a sentence can be mostly Latin letters; a lone Chinese
    word in an English option list is not Chinese text)."""
    if not MIN_CHARS <= len(text) <= MAX_CHARS or "<!--" in text:
        return False
    prose = MARKUP.sub(" ", text)  # generated reference tables are tags around a word or two
    if len(prose.strip()) < 0.5 * len(text) or (script == "A-Za-z" and len(prose.split()) < 4):
        return False
    letters = re.findall(r"[A-Za-z]|[" + SCRIPTS["zh"] + "]", prose)
    wanted = re.findall(f"[{script}]", prose)
    return len(wanted) >= 4 and len(wanted) / len(letters) >= share


def build_mono(source: str | Path, out: str | Path, lang: str = "zh-cn", section: str = "docs",
               dev_pct: float = 2.0, test_pct: float = 2.0) -> dict[str, int]:
    """Write ``mono-<lang>.jsonl.gz`` and ``mono-en.jsonl.gz`` (``{"id", "text", "source", "kind"}``)
    next to the pairs; returns the record counts."""
    source, out = Path(source), Path(out)
    root = source / "content" / lang / section
    en_root = source / "content" / "en" / section
    pages = sorted(root.rglob("*.md"))
    paired_en: set[str] = set()
    paired_tg: set[str] = set()
    held_en: set[str] = set()
    held_tg: set[str] = set()
    for path in pages:  # every pair, all splits: the aligner's coverage, and what is held out
        en_path = en_root / path.relative_to(root)
        pairs, _ = align_page(path, en_path if en_path.is_file() else None)
        e, t = _paired_sides(pairs)
        paired_en |= e
        paired_tg |= t
        if split_of(path.relative_to(root.parent).as_posix(), dev_pct, test_pct) != "train":
            held_tg |= t | {x for _, x in page_texts(path)}
            held_en |= e
            if en_path.is_file():
                held_en |= {x for _, x in page_texts(en_path)}
    key = target_key(lang)
    tg_recs = _mono_records(pages, root, paired_tg | held_tg, SCRIPTS[key], 0.1, dev_pct, test_pct)
    en_recs = _mono_records(sorted(en_root.rglob("*.md")), en_root, paired_en | held_en, "A-Za-z", 0.9,
                            dev_pct, test_pct)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl_gz(out / f"mono-{key}.jsonl.gz", tg_recs)
    write_jsonl_gz(out / "mono-en.jsonl.gz", en_recs)
    return {f"mono-{key}": len(tg_recs), "mono-en": len(en_recs)}


def _mono_records(pages: list[Path], root: Path, exclude: set[str], script: str, share: float,
                  dev_pct: float, test_pct: float) -> list[dict]:
    recs, seen = [], set(exclude)
    for path in pages:
        rel = path.relative_to(root.parent).as_posix()
        if split_of(rel, dev_pct, test_pct) != "train":
            continue
        n = 0
        for kind, text in page_texts(path):
            if text in seen or not _keep(text, script, share) or (script == "A-Za-z" and CJK.search(text)):
                continue
            seen.add(text)
            recs.append({"id": f"{rel[:-3]}#{n}", "text": text, "source": rel, "kind": kind})
            n += 1
    return recs
