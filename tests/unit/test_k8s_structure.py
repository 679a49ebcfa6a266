"""Structure alignment of ja/ko pages to content/en, and the monolingual splits, on small synthetic
page trees; one light check of the shipped files against the shared snapshot when it is present."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from loraforge.data import k8s
from loraforge.data.formats import DataError, resolve_spec
from loraforge.data.k8s_mono import build_mono
from loraforge.data.k8s_structure import align_blocks, build_structure, fingerprint, page_blocks

REPO = Path(__file__).parents[2]
SNAPSHOT = REPO.parent / "shared" / "data" / "k8s-zh-cn"
DATASETS = REPO / "src" / "loraforge" / "datasets"

EN = """---
title: Nodes
description: How nodes work.
---
<!-- overview -->

Kubernetes runs your workload on nodes. Each node has a `kubelet`.

<!-- body -->

## Management

There are two ways to add nodes to the [API server](/docs/concepts/api/).

1. The kubelet registers itself.
2. You add a Node object by hand.

```shell
kubectl get nodes # list them
```

The output lists 3 nodes.

## Self-registration {#self-reg}

{{< note >}}
Set `--register-node` to true.
{{< /note >}}

| Flag | Meaning |
|------|---------|
| `--kubeconfig` | Path to credentials. |
"""

JA = """---
title: ノード
description: ノードの仕組み。
---
<!-- overview -->

Kubernetesはワークロードをノード上で実行します。
各ノードには`kubelet`があります。

<!-- body -->

## 管理 {#management}

[APIサーバー](/ja/docs/concepts/api/)にノードを加えるには2つの方法があります。

1. kubeletが自己登録する。
2. 手動でNodeオブジェクトを追加する。

```shell
kubectl get nodes # 一覧を表示
```

出力には3つのノードが表示されます。

## 自己登録 {#self-reg}

{{< note >}}
`--register-node`をtrueに設定します。
{{< /note >}}

| フラグ | 意味 |
|------|---------|
| `--kubeconfig` | 資格情報へのパス。 |
"""


def write(root: Path, lang: str, rel: str, text: str) -> None:
    path = root / "content" / lang / "docs" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def read(out: Path, name: str) -> list[dict]:
    with gzip.open(out / f"{name}.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def read_pairs(out: Path) -> list[dict]:
    return [r for name in ("train", "dev", "test") for r in read(out, name)]


def pages_in(split: str, n: int, dev_pct: float = 30, test_pct: float = 30) -> list[str]:
    """``n`` page names that the document split rule puts in ``split``."""
    names = (f"concepts/page-{i}.md" for i in range(1000))
    return [p for p in names if k8s.split_of(f"docs/{p}", dev_pct, test_pct) == split][:n]


def test_structure_pairs_the_right_blocks(tmp_path):
    write(tmp_path, "en", "concepts/nodes.md", EN)
    write(tmp_path, "ja", "concepts/nodes.md", JA)
    report = build_structure(tmp_path, tmp_path / "out", "ja")
    got = {(r["kind"], r["en"], r["ja"]) for r in read_pairs(tmp_path / "out")}
    assert got == {
        ("title", "Nodes", "ノード"),
        ("description", "How nodes work.", "ノードの仕組み。"),
        ("paragraph", "Kubernetes runs your workload on nodes. Each node has a `kubelet`.",
         "Kubernetesはワークロードをノード上で実行します。各ノードには`kubelet`があります。"),
        ("heading", "Management", "管理"),
        ("paragraph", "There are two ways to add nodes to the [API server](/docs/concepts/api/).",
         "[APIサーバー](/ja/docs/concepts/api/)にノードを加えるには2つの方法があります。"),
        ("list", "The kubelet registers itself.", "kubeletが自己登録する。"),
        ("list", "You add a Node object by hand.", "手動でNodeオブジェクトを追加する。"),
        ("paragraph", "The output lists 3 nodes.", "出力には3つのノードが表示されます。"),
        ("heading", "Self-registration", "自己登録"),
        ("paragraph", "Set `--register-node` to true.", "`--register-node`をtrueに設定します。"),
        ("table", "Flag | Meaning", "フラグ | 意味"),
        ("table", "`--kubeconfig` | Path to credentials.", "`--kubeconfig` | 資格情報へのパス。"),
    }
    assert report.coverage["pages_with_pairs"] == 1
    assert report.coverage["aligned"] == report.coverage["blocks"] == 12


def test_mismatched_structure_is_refused_only_where_it_differs(tmp_path):
    # the translation lags: the first section has one paragraph the English no longer has
    ja = JA.replace("出力には3つのノードが表示されます。", "古い段落です。\n\n出力には3つのノードが表示されます。")
    write(tmp_path, "en", "concepts/nodes.md", EN)
    write(tmp_path, "ja", "concepts/nodes.md", ja)
    report = build_structure(tmp_path, tmp_path / "out", "ja")
    got = {r["en"] for r in read_pairs(tmp_path / "out")}
    assert "The output lists 3 nodes." not in got and "The kubelet registers itself." in got
    assert "Set `--register-node` to true." in got  # the next section (anchored by its id) still pairs
    assert report.dropped["structure_mismatch"] == 2


def test_paragraphs_are_not_paired_across_a_missing_anchor_by_position():
    """A heading without {#id} only pairs by level inside its segment; a page that dropped a whole
    section must not pair the next section's text with the wrong English. A block whose code span
    is unique on both sides is itself an anchor, and pairs with its own English."""
    en = "---\ntitle: A\n---\n## One\n\nFirst text.\n\n## Two\n\nSecond text{}.\n"
    ja = "---\ntitle: エー\n---\n## 二\n\n二番目の{}テキスト。\n"

    def align(code: str):
        return align_blocks(page_blocks(en.format(code), "en", own_ids=True)[1],
                            page_blocks(ja.format(code), "ja", own_ids=False)[1])

    pairs, dropped = align("")
    assert pairs == [] and dropped["structure_mismatch"] == 2
    pairs, dropped = align(" `b`")
    assert pairs == [("paragraph", "Second text `b`.", "二番目の `b`テキスト。")]
    assert dropped["structure_mismatch"] == 1


def test_fingerprint_mismatch_is_dropped():
    en = "## Run {#run}\n\nRun `kubectl apply`.\n"
    ja = "## 実行 {#run}\n\n`kubectl delete`を実行します。\n"
    pairs, dropped = align_blocks(page_blocks(en, "en", True)[1], page_blocks(ja, "ja", False)[1])
    assert [p[1] for p in pairs] == ["Run"] and dropped["fingerprint_mismatch"] == 1
    assert fingerprint("See [x](/ko/docs/a/#b) and {{< glossary_tooltip term_id=\"pod\" >}}") == {
        "link:/docs/a", "term:pod"}


def test_korean_lines_join_with_a_space():
    ko = "---\ntitle: 노드\n---\n노드는 워크로드를\n실행한다.\n"
    _, blocks = page_blocks(ko, "ko", own_ids=False)
    assert blocks[0].text == "노드는 워크로드를 실행한다."


def test_code_shortcode_body_is_an_anchor_not_text():
    en = "Before.\n\n{{< highlight yaml >}}\nkind: Pod\n{{< /highlight >}}\n\nAfter.\n"
    _, blocks = page_blocks(en, "en", own_ids=True)
    assert [b.kind for b in blocks] == ["paragraph", "code", "paragraph"]


def test_split_is_the_zh_cn_rule_by_document(tmp_path):
    names = pages_in("train", 2) + pages_in("dev", 2) + pages_in("test", 2)
    for i, rel in enumerate(names):
        en = f"---\ntitle: Page {i}\n---\nParagraph number {i} with `code{i}`.\n"
        write(tmp_path, "en", rel, en)
        write(tmp_path, "ko", rel, f"---\ntitle: 페이지 {i}\n---\n{i}번째 `code{i}` 문단입니다.\n")
        write(tmp_path, "zh-cn", rel, f"---\ntitle: 页面 {i}\n---\n<!--\nParagraph number {i} with `code{i}`.\n-->\n"
                                      f"第 {i} 段，含 `code{i}`。\n")
    build_structure(tmp_path, tmp_path / "ko", "ko", dev_pct=30, test_pct=30)
    k8s.build(tmp_path, tmp_path / "zh", dev_pct=30, test_pct=30)
    for name in ("train", "dev", "test"):
        ko_docs = {r["source"] for r in read(tmp_path / "ko", name)}
        zh_docs = {r["source"] for r in read(tmp_path / "zh", name)}
        assert ko_docs == zh_docs == {f"docs/{p}" for p in names if k8s.split_of(f"docs/{p}", 30, 30) == name}
        assert len(ko_docs) == 2


def test_english_held_out_by_zh_stays_out_of_train(tmp_path):
    write(tmp_path, "en", "concepts/nodes.md", EN)
    write(tmp_path, "ja", "concepts/nodes.md", JA)
    build_structure(tmp_path, tmp_path / "out", "ja", holdout_en={"Management"})
    report = build_structure(tmp_path, tmp_path / "out", "ja", holdout_en={"Management"})
    assert "Management" not in {r["en"] for r in read(tmp_path / "out", "train")}
    assert report.dropped["en_held_out_by_zh"] == 1


def test_no_pairs_is_an_error(tmp_path):
    write(tmp_path, "en", "a.md", "---\ntitle: A\n---\nText.\n")
    with pytest.raises(DataError, match="directory not found"):
        build_structure(tmp_path, tmp_path / "out", "ja")
    write(tmp_path, "ja", "b.md", "---\ntitle: ビー\n---\nテキスト。\n")
    with pytest.raises(DataError, match="no pairs aligned by structure"):
        build_structure(tmp_path, tmp_path / "out", "ja")


# --- monolingual splits -------------------------------------------------------------------------


def zh_page(i: int, extra: str) -> str:
    return (f"---\ntitle: 页面\n---\n<!--\nThe aligned paragraph {i} is here.\n-->\n对齐的第 {i} 段在这里，很长。\n\n"
            f"{extra}\n")


def test_mono_excludes_held_out_docs_and_aligned_blocks(tmp_path):
    train, test, dev = pages_in("train", 1)[0], pages_in("test", 1)[0], pages_in("dev", 1)[0]
    for rel, tag in ((train, "训练"), (test, "测试"), (dev, "开发")):
        write(tmp_path, "zh-cn", rel, zh_page(0, f"这是没有注释的{tag}段落，无法对齐。"))
        write(tmp_path, "en", rel, f"---\ntitle: Page\n---\nThe aligned paragraph 0 is here.\n\n"
                                  f"A newer English paragraph about {rel}.\n")
    write(tmp_path, "en", pages_in("train", 2)[1], "---\ntitle: New\n---\nA page nobody translated yet.\n")
    write(tmp_path, "en", pages_in("test", 2)[1], "---\ntitle: New\n---\nAn untranslated page of the test split.\n")
    counts = build_mono(tmp_path, tmp_path / "out", dev_pct=30, test_pct=30)
    zh = [r["text"] for r in read(tmp_path / "out", "mono-zh")]
    en = [r["text"] for r in read(tmp_path / "out", "mono-en")]
    assert zh == ["这是没有注释的训练段落，无法对齐。"]
    assert "A page nobody translated yet." in en and f"A newer English paragraph about {train}." in en
    assert not any(test in t or dev in t or "test split" in t for t in en)
    assert "The aligned paragraph 0 is here." not in en
    assert counts == {"mono-zh": 1, "mono-en": len(en)}


def test_mono_never_repeats_held_out_text(tmp_path):
    train, test = pages_in("train", 1)[0], pages_in("test", 1)[0]
    shared = "两页都有的未对齐段落，出现在测试页。"
    write(tmp_path, "zh-cn", train, zh_page(1, shared))
    write(tmp_path, "zh-cn", test, zh_page(2, shared))
    build_mono(tmp_path, tmp_path / "out", dev_pct=30, test_pct=30)
    assert shared not in [r["text"] for r in read(tmp_path / "out", "mono-zh")]


# --- CLI, packaging, the snapshot ---------------------------------------------------------------


def test_cli_builds_structure_and_mono(tmp_path, capsys):
    from loraforge.cli import main

    write(tmp_path, "en", "concepts/nodes.md", EN)
    write(tmp_path, "ja", "concepts/nodes.md", JA)
    assert main(["data", "k8s", "--source", str(tmp_path), "--out", str(tmp_path / "ja"), "--lang", "ja",
                 "--align", "structure", "--no-holdout"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["coverage"]["aligned"] == 12 and sum(report["pairs"].values()) == 12
    write(tmp_path, "zh-cn", "concepts/nodes.md", zh_page(0, "未对齐的一段中文文字。"))
    assert main(["data", "k8s", "--source", str(tmp_path), "--out", str(tmp_path / "zh"), "--mono"]) == 0
    assert json.loads(capsys.readouterr().out)["mono"]["mono-zh"] == len(read(tmp_path / "zh", "mono-zh"))


@pytest.mark.parametrize("spec, field", [("k8s-ja:train", "ja"), ("k8s-ko:test", "ko"), ("k8s:mono-zh", "text"),
                                         ("k8s:mono-en", "text")])
def test_packaged_specs_resolve(spec, field):
    path = resolve_spec(spec)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        first = json.loads(f.readline())
    assert field in first and first["source"].startswith("docs/")


def test_shipped_ja_ko_splits_follow_the_zh_split():
    for name in ("k8s-en-ja", "k8s-en-ko", "k8s-en-zh"):
        for split in ("train", "dev", "test"):
            assert all(k8s.split_of(r["source"]) == split for r in read(DATASETS / name, split))
    test_docs = {k8s.split_of(r["source"]) for r in read(DATASETS / "k8s-en-zh", "mono-zh")}
    assert test_docs == {"train"}


@pytest.mark.skipif(not SNAPSHOT.is_dir(), reason=f"shared snapshot {SNAPSHOT} not present")
def test_snapshot_rebuild_of_ja_matches_shipped_files(tmp_path):
    holdout = {r["en"] for s in ("dev", "test") for r in read(DATASETS / "k8s-en-zh", s)}
    build_structure(SNAPSHOT, tmp_path, "ja", holdout_en=holdout)
    for name in ("train", "dev", "test"):
        got = hashlib.sha256((tmp_path / f"{name}.jsonl.gz").read_bytes()).hexdigest()
        want = hashlib.sha256((DATASETS / "k8s-en-ja" / f"{name}.jsonl.gz").read_bytes()).hexdigest()
        assert got == want, f"{name}: rebuild with the command in k8s-en-ja/README.md"


def test_numbers_must_survive_translation(tmp_path):
    """An older English behind the translation shows in its numbers: the pair is dropped."""
    en = "---\ntitle: F\n---\n## Status {#status}\n\nThe field is beta and enabled by default in 1.27.\n\nThere are two ways.\n"
    ja = "---\ntitle: エフ\n---\n## 状態 {#status}\n\nこのフィールドは1.25で追加されたアルファ機能です。\n\n2つの方法があります。\n"
    write(tmp_path, "en", "f.md", en)
    write(tmp_path, "ja", "f.md", ja)
    report = build_structure(tmp_path, tmp_path / "out", "ja")
    got = {r["en"] for r in read_pairs(tmp_path / "out")}
    assert "There are two ways." in got  # a count the translation adds is fine
    assert not any("1.27" in e for e in got) and report.dropped["number_mismatch"] == 1
