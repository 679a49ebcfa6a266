"""``loraforge data k8s``: build the Kubernetes docs datasets (pairs by comments or by structure,
and the monolingual splits) in one command, so every packaged file has one rebuild line."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from loraforge.data.formats import DataError
from loraforge.data.k8s import Report, build, read_jsonl_gz, section_pairs, write_jsonl_gz
from loraforge.data.k8s_mono import build_mono
from loraforge.data.k8s_structure import build_structure


def held_out_english(name: str = "k8s-en-zh") -> set[str]:
    """English of a packaged dataset's dev and test splits."""
    base = Path(str(resources.files("loraforge") / "datasets" / name))
    out: set[str] = set()
    for split in ("dev", "test"):
        path = base / f"{split}.jsonl.gz"
        if not path.is_file():
            raise DataError(f"{path}: not found (needed to hold its English out of train; or pass --no-holdout)")
        out |= {r["en"] for r in read_jsonl_gz(path)}
    return out


RESERVED = {"train", "dev", "test", "mono-en", "mono-zh", "docs"}
"""Names a held-out section may not take: the other files of a dataset folder, and the whole docs."""


def section_name(prefix: str) -> str:
    """The split a held-out section is written as: 'docs/tutorials/' -> 'tutorials' (k8s:tutorials)."""
    name = prefix.rstrip("/").rsplit("/", 1)[-1]
    if not prefix.endswith("/") or not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name) or name in RESERVED:
        raise DataError(f"--holdout-section {prefix!r}: expected a folder of page paths ending in '/', such as "
                        f"'docs/tutorials/', whose last part is not one of {', '.join(sorted(RESERVED))}")
    return name


def write_section(out: str | Path, prefix: str, report: Report | None = None) -> Report:
    """Write ``<out>/<name>.jsonl.gz``: the pairs of the pages under ``prefix`` from the train/dev/test
    files already in ``out`` (``k8s.section_pairs``); byte-reproducible from those files alone."""
    out, report, name = Path(out), report or Report(), section_name(prefix)
    splits = {}
    for split in ("train", "dev", "test"):
        path = out / f"{split}.jsonl.gz"
        if not path.is_file():
            raise DataError(f"{path}: not found (--holdout-section reads the built train/dev/test files)")
        splits[split] = read_jsonl_gz(path)
    records = section_pairs(splits, prefix, report, name)
    if not records:
        raise DataError(f"--holdout-section {prefix!r}: no pair of {out} comes from a page under it "
                        "(sources look like 'docs/tutorials/...')")
    write_jsonl_gz(out / f"{name}.jsonl.gz", records)
    report.pairs[name] = len(records)
    return report


def build_command(source: str | Path, out: str | Path, lang: str = "zh-cn", section: str = "docs",
                  align: str = "comments", mono: bool = False, holdout: bool = True,
                  holdout_section: str | None = None) -> Report:
    """``loraforge data k8s``: pairs by comments (zh-cn) or by structure (ja, ko: no English
    comments), with ``mono`` the monolingual splits next to them, and with ``holdout_section`` the
    pairs of one folder of pages as a split of its own (``write_section``)."""
    if mono and align == "structure":
        raise DataError("--mono reads the English comments of the pages (zh-cn); it does not apply to --align structure")
    if holdout_section is not None:
        section_name(holdout_section)  # a bad prefix fails before the build
    if align == "structure":
        report = build_structure(source, out, lang, section, holdout_en=held_out_english() if holdout else None)
    else:
        report = build(source, out, lang, section)
    if mono:
        report.mono = build_mono(source, out, lang, section)
    if holdout_section is not None:
        write_section(out, holdout_section, report)
    return report
