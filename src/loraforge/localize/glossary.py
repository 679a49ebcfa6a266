"""Glossary: English terms with their required zh-cn rendering, plus terms kept in English.

The default comes from the docs' own glossary pages (``content/<lang>/docs/reference/glossary/``):
the front-matter title in each language. A title the translators left as it is (Pod, Deployment,
ConfigMap) is a keep-English term; those are protected during translation so the model cannot
translate an API kind. ``term_accuracy`` measures how often a source term's expected rendering
appears in the output.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from loraforge.data.formats import DataError, decode_utf8
from loraforge.localize.page import PageError, read_page, split_front_matter

DEFAULT_FILE = "k8s_glossary.tsv"
KEEP = "="  # in a TSV, "term<TAB>=" (or an empty second column) keeps the term in English


@dataclass
class Glossary:
    terms: dict[str, str] = field(default_factory=dict)  # en -> zh
    keep: set[str] = field(default_factory=set)  # kept in English

    def __len__(self) -> int:
        return len(self.terms) + len(self.keep)

    def protected_terms(self) -> dict[str, str]:
        """For ``protect(terms=...)``: each keep-English term (and its plural, which Chinese does
        not inflect: Pods -> Pod) mapped to what must come out."""
        out: dict[str, str] = {}
        for term in self.keep:
            out[term] = term
            if re.search(r"[A-Za-z]$", term):
                out.setdefault(term + ("es" if term.endswith("s") else "s"), term)
        return out

    def expected(self) -> list[tuple[re.Pattern, str]]:
        """(pattern that finds the term in English, the rendering the output must contain)."""
        out = []
        for en, zh in self.terms.items():
            out.append((re.compile(rf"(?<![\w-]){re.escape(en)}(?:e?s)?(?![\w-])", re.I), zh))
        for en in self.keep:
            out.append((re.compile(rf"(?<![\w-]){re.escape(en)}(?:e?s)?(?![\w-])"), en))
        return out

    def to_tsv(self) -> str:
        rows = [f"{en}\t{zh}" for en, zh in sorted(self.terms.items(), key=lambda kv: kv[0].lower())]
        rows += [f"{en}\t{KEEP}" for en in sorted(self.keep, key=str.lower)]
        return "\n".join(rows) + "\n"


def _clean(title: str) -> str:
    """'Control Plane (CP)' -> 'Control Plane'; '控制平面（Control Plane）' -> '控制平面'."""
    return re.sub(r"\s*[（(][^（）()]*[）)]\s*$", "", title.strip()).strip()


def _title(path: Path) -> str | None:
    try:
        fm = split_front_matter(read_page(path).split("\n"), str(path))
    except PageError:
        return None
    title = fm.data.get("title")
    return title.strip() if isinstance(title, str) else None


def build_glossary(content: str | Path, lang: str = "zh-cn") -> Glossary:
    """The glossary the docs define: each glossary page's title in English and in ``lang``."""
    content = Path(content)
    content = content / "content" if (content / "content").is_dir() else content
    en_dir, tgt_dir = content / "en/docs/reference/glossary", content / lang / "docs/reference/glossary"
    if not en_dir.is_dir() or not tgt_dir.is_dir():
        raise DataError(f"{content}: no glossary pages (expected {en_dir} and {tgt_dir})")
    g = Glossary()
    for en_path in sorted(en_dir.glob("*.md")):
        if en_path.name == "index.md" or en_path.name.startswith("_"):
            continue
        en, zh = _title(en_path), _title(tgt_dir / en_path.name)
        if not en or not zh:
            continue
        en, zh = _clean(en), _clean(zh)
        if not en or not zh:
            continue
        if en == zh:
            g.keep.add(en)
        else:
            g.terms[en] = zh
    return g


def load_glossary(path: str | Path) -> Glossary:
    """Read a glossary: TSV ``en<TAB>zh`` (``=`` or nothing keeps the term in English) or YAML
    (``{terms: {en: zh}, keep: [en]}``, or a flat ``{en: zh}`` where null keeps it)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: glossary file not found")
    text = decode_utf8(path.read_bytes(), path)
    g = Glossary()
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise DataError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(data, dict):
            raise DataError(f"{path}: a glossary is a mapping (en: zh) or {{terms: ..., keep: [...]}}")
        terms = data.get("terms", {}) if ("terms" in data or "keep" in data) else data
        keep = data.get("keep", []) if ("terms" in data or "keep" in data) else []
        if not isinstance(terms, dict) or not isinstance(keep, list):
            raise DataError(f"{path}: 'terms' must be a mapping and 'keep' a list")
        for en, zh in terms.items():
            if zh is None or str(zh).strip() in ("", KEEP, str(en)):
                g.keep.add(str(en).strip())
            else:
                g.terms[str(en).strip()] = str(zh).strip()
        g.keep.update(str(k).strip() for k in keep)
        return g
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cols = line.split("\t")
        en = cols[0].strip()
        zh = cols[1].strip() if len(cols) > 1 else ""
        if not en or len(cols) > 2:
            raise DataError(f"{path}:{n}: expected 'english<TAB>translation' (or '<TAB>=' to keep English)")
        if zh in ("", KEEP, en):
            g.keep.add(en)
        else:
            g.terms[en] = zh
    return g


def default_glossary() -> Glossary:
    """The glossary built from the Kubernetes docs (shipped with the package; CC BY 4.0,
    The Kubernetes Authors)."""
    return load_glossary(Path(str(resources.files("loraforge.localize") / DEFAULT_FILE)))


def term_accuracy(sources: Sequence[str], outputs: Sequence[str], glossary: Glossary) -> dict:
    """Share of glossary terms found in the sources whose expected rendering is in the output."""
    found = total = 0
    checks = glossary.expected()
    for src, out in zip(sources, outputs):
        for pattern, want in checks:
            n = len(pattern.findall(src))
            if n:
                total += 1
                found += want in out
    return {"term_accuracy": round(100 * found / total, 2) if total else None, "terms": total}
