"""eval-pages: translate every English page of the test split and compare with the real zh-cn page.

Scores: structure validity (``check_page_structure``) per page, page-level chrF on the aligned text
blocks (each translated block whose English matches an English comment of the real zh-cn page,
paired by the k8s aligner), glossary term accuracy, placeholder repairs, and optionally a Hugo
build of every page comparing rendered code blocks and links with the English page's.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loraforge.data.markup import RepairStats
from loraforge.localize.glossary import Glossary, term_accuracy
from loraforge.localize.page import PageError, read_page
from loraforge.localize.translate import PageOptions, TranslateFn, translate_texts


@dataclass
class PageEval:
    path: str
    valid: bool
    problems: list[str] = field(default_factory=list)
    chrf: float | None = None
    blocks_matched: int = 0
    blocks_reference: int = 0
    hugo: list[str] | None = None  # differences in the rendered page (None: not built)


@dataclass
class PagesEval:
    pages: list[PageEval] = field(default_factory=list)
    chrf: float | None = None
    term_accuracy: float | None = None
    repair: RepairStats = field(default_factory=RepairStats)
    hugo_ok: bool | None = None

    def metrics(self) -> dict:
        """Flat numbers for metrics.json (keys prefixed ``pages_``)."""
        n = len(self.pages)
        valid = sum(p.valid for p in self.pages)
        out = {"pages_n": n, "pages_valid": valid, "pages_valid_pct": round(100 * valid / n, 2) if n else None,
               "pages_chrf": self.chrf, "pages_blocks_matched": sum(p.blocks_matched for p in self.pages),
               "pages_blocks_reference": sum(p.blocks_reference for p in self.pages),
               "pages_term_accuracy": self.term_accuracy,
               "pages_placeholders_repaired": self.repair.placeholders_repaired,
               "pages_segments_fallback": self.repair.segments_fallback}
        if self.hugo_ok is not None:
            out["pages_hugo_ok"] = self.hugo_ok
            out["pages_hugo_mismatch"] = sum(bool(p.hugo) for p in self.pages)
        return out

    def as_dict(self) -> dict:
        return {"metrics": self.metrics(), "repair": self.repair.as_dict(), "pages": [asdict(p) for p in self.pages]}


def _key(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def split_pages(content: str | Path, lang: str = "zh-cn", split: str = "test", dev_pct: float = 2.0,
               test_pct: float = 2.0) -> list[tuple[str, Path, Path]]:
    """(docs/... path, English page, zh page) of every document in ``split`` (the k8s data split)."""
    from loraforge.data.k8s import split_of

    content = Path(content)
    content = content / "content" if (content / "content").is_dir() else content
    out = []
    for en in sorted((content / "en/docs").rglob("*.md")):
        rel = en.relative_to(content / "en").as_posix()
        zh = content / lang / rel
        if zh.is_file() and split_of(rel, dev_pct, test_pct) == split:
            out.append((rel, en, zh))
    if not out:
        raise PageError(f"{content}: no {split} pages with a {lang} translation")
    return out


def eval_pages(content: str | Path, translate_fn: TranslateFn, options: PageOptions | None = None,
               split: str = "test", limit: int | None = None, hugo: bool = False,
               glossary: Glossary | None = None) -> PagesEval:
    """Translate the split's English pages (ONE translate_fn call) and score them."""
    import sacrebleu

    from loraforge.data.k8s import align_page

    opts = options or PageOptions(fragments=True)
    docs = split_pages(content, opts.lang, split)[:limit]
    results = translate_texts([(rel, read_page(en), None) for rel, en, _ in docs], translate_fn, opts)
    report = PagesEval()
    all_h, all_r, srcs = [], [], []
    built = {}
    for (rel, en, zh), res in zip(docs, results):
        if isinstance(res, PageError):
            report.pages.append(PageEval(rel, False, [f"parse: {res}"]))
            continue
        report.repair.add(res.repair)
        ref_pairs, _ = align_page(zh, en)
        refs = {_key(e): z for _, e, z in ref_pairs}
        ours = {_key(e): z for e, z in res.segments}
        matched = [(k, ours[k], refs[k]) for k in refs if k in ours]
        hyps, rs = [m[1] for m in matched], [m[2] for m in matched]
        page = PageEval(rel, res.ok, [f"{p.check}: {p.message}" for p in res.problems],
                        round(sacrebleu.corpus_chrf(hyps, [rs]).score, 2) if hyps else None, len(matched), len(refs))
        report.pages.append(page)
        all_h += hyps
        all_r += rs
        srcs += [m[0] for m in matched]
        built[rel] = (read_page(en), res.text)
    if all_h:
        report.chrf = round(sacrebleu.corpus_chrf(all_h, [all_r]).score, 2)
    if glossary is not None or opts.glossary is not None:
        report.term_accuracy = term_accuracy(srcs, all_h, glossary or opts.glossary)["term_accuracy"]
    if hugo and built:
        from loraforge.localize.hugo import build_site, compare

        pages = {f"en/{rel}": en for rel, (en, _) in built.items()}
        pages.update({f"{opts.lang}/{rel}": zh for rel, (_, zh) in built.items()})
        build = build_site(pages)
        report.hugo_ok = build.ok
        for page in report.pages:
            if page.path in built:
                page.hugo = compare(build, f"en/{page.path}", f"{opts.lang}/{page.path}") if build.ok else [build.log[-500:]]
                page.valid = page.valid and not page.hugo
    return report
