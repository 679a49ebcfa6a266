"""``loraforge data k8s``: build the Kubernetes docs datasets (pairs by comments or by structure,
and the monolingual splits) in one command, so every packaged file has one rebuild line."""

from __future__ import annotations

import gzip
import json
from importlib import resources
from pathlib import Path

from loraforge.data.formats import DataError
from loraforge.data.k8s import Report, build
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
        with gzip.open(path, "rt", encoding="utf-8") as f:
            out |= {json.loads(line)["en"] for line in f}
    return out


def build_command(source: str | Path, out: str | Path, lang: str = "zh-cn", section: str = "docs",
                  align: str = "comments", mono: bool = False, holdout: bool = True) -> Report:
    """``loraforge data k8s``: pairs by comments (zh-cn) or by structure (ja, ko: no English
    comments), and with ``mono`` the monolingual splits next to them."""
    if mono and align == "structure":
        raise DataError("--mono reads the English comments of the pages (zh-cn); it does not apply to --align structure")
    if align == "structure":
        report = build_structure(source, out, lang, section, holdout_en=held_out_english() if holdout else None)
    else:
        report = build(source, out, lang, section)
    if mono:
        report.mono = build_mono(source, out, lang, section)
    return report
