"""Translate pages on disk: a file or a folder of them, in one batch, written atomically.

Every output path is checked before anything is translated (no overwrite without
``overwrite=True``), a page that fails to parse or to validate is reported with its path and not
written, and each written page appears whole or not at all (``loraforge.runs.atomic_write``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from loraforge.data.markup import RepairStats
from loraforge.localize.page import PageError, read_page
from loraforge.localize.translate import PageOptions, PageResult, TranslateFn, translate_texts
from loraforge.runs import atomic_write


@dataclass
class PagesResult:
    pages: list[PageResult] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # path -> why (parse error or structure problems)
    repair: RepairStats = field(default_factory=RepairStats)

    def as_dict(self) -> dict:
        return {"pages": len({p.path for p in self.pages} | set(self.failed)),
                "written": len(self.written), "failed": self.failed,
                "blocks_translated": sum(p.blocks_translated for p in self.pages),
                "blocks_reused": sum(p.blocks_reused for p in self.pages), **self.repair.as_dict()}


def _inputs(src: Path) -> list[tuple[Path, Path]]:
    """(page, path relative to the input root); a folder means every .md under it."""
    if src.is_dir():
        return [(p, p.relative_to(src)) for p in sorted(src.rglob("*.md"))]
    if not src.is_file():
        raise PageError(f"{src}: no such file or folder")
    return [(src, Path(src.name))]


def translate_pages(src: str | Path, out: str | Path, translate_fn: TranslateFn, options: PageOptions | None = None,
                    previous: str | Path | None = None, overwrite: bool = False,
                    progress: bool = True) -> PagesResult:
    """Translate ``src`` (a page or a folder) into ``out`` (a file for a page, else a folder
    mirroring ``src``). With ``previous`` (the existing zh page or folder), update mode: blocks
    whose English is unchanged keep their translation."""
    src, out = Path(src), Path(out)
    items = _inputs(src)
    if not items:
        raise PageError(f"{src}: no .md pages found")
    single = src.is_file()
    targets = {p: (out if single and out.suffix == ".md" else out / rel) for p, rel in items}
    if not overwrite:
        existing = [str(t) for t in targets.values() if t.exists()]
        if existing:
            raise PageError(f"{existing[0]}: already exists ({len(existing)} output page(s) would be overwritten; "
                            "pass overwrite=True / --overwrite)")
    result = PagesResult()
    batch = []
    for page, rel in tqdm(items, desc="read pages", unit="page", disable=not progress or len(items) < 2):
        try:
            text = read_page(page)
            old = None
            if previous is not None:
                prev = Path(previous) if single and Path(previous).is_file() else Path(previous) / rel
                old = read_page(prev) if prev.is_file() else None
            batch.append((str(page), text, old))
        except PageError as e:
            result.failed[str(page)] = str(e)
    for (path, _, _), res in zip(batch, translate_texts(batch, translate_fn, options)):  # ONE translate_fn call
        if isinstance(res, PageError):
            result.failed[path] = str(res)
            continue
        result.pages.append(res)
        result.repair.add(res.repair)
        if res.problems:
            result.failed[res.path] = "; ".join(f"{p.check}: {p.message}" for p in res.problems)
            continue
        target = targets[Path(res.path)]
        atomic_write(target, res.text)
        result.written.append(str(target))
    return result
