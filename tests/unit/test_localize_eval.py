"""eval-pages on a tiny content tree: only test-split documents, structure and chrF on aligned blocks."""

from __future__ import annotations

from pathlib import Path

from loraforge.data.k8s import split_of
from loraforge.localize import Glossary, PageOptions, eval_pages

EN = "---\ntitle: Pods\n---\n\nA Pod runs on a node.\n\n## Using Pods\n\nCreate a Pod with `kubectl run`.\n"
ZH = ("---\ntitle: Pod\n---\n<!--\ntitle: Pods\n-->\n\n<!--\nA Pod runs on a node.\n-->\nPod 运行在节点上。\n\n"
      "<!--\n## Using Pods\n-->\n## 使用 Pod {#using-pods}\n\n<!--\nCreate a Pod with `kubectl run`.\n-->\n"
      "用 `kubectl run` 创建 Pod。\n")
ANSWERS = {"A Pod runs on a node.": "Pod 运行在节点上。", "Using Pods": "使用 Pod",
           "Create a Pod with {1}.": "用 {1} 创建 Pod。", "Pods": "Pod"}


def tree(root: Path) -> str:
    names = [f"docs/p{i}.md" for i in range(400)]
    test = next(n for n in names if split_of(n) == "test")
    train = next(n for n in names if split_of(n) == "train")
    for rel in (test, train):
        for lang, text in (("en", EN), ("zh-cn", ZH)):
            (root / "content" / lang / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / "content" / lang / rel).write_text(text)
    return test


def test_eval_pages_scores_only_test_documents(tmp_path):
    test = tree(tmp_path)
    seen: list[list[str]] = []

    def translate(texts):
        seen.append(texts)
        return [ANSWERS.get(t, t) for t in texts]

    report = eval_pages(tmp_path, translate, PageOptions(fragments=True), glossary=Glossary(keep={"Pod"}))
    assert [p.path for p in report.pages] == [test] and len(seen) == 1
    m = report.metrics()
    assert m["pages_n"] == 1 and m["pages_valid_pct"] == 100.0
    assert m["pages_blocks_matched"] == 4 and m["pages_blocks_reference"] == 4  # title + 3 body blocks
    assert m["pages_chrf"] == 100.0 and m["pages_term_accuracy"] == 100.0


def test_eval_pages_marks_broken_pages_invalid(tmp_path):
    tree(tmp_path)
    report = eval_pages(tmp_path, lambda texts: [t.replace("{1}", "") for t in texts], PageOptions(fragments=True))
    m = report.metrics()
    assert m["pages_valid"] == 1  # the missing placeholder was repaired, so the page still holds
    assert m["pages_placeholders_repaired"] == 1 and m["pages_chrf"] < 100
