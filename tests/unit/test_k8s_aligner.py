"""The Kubernetes docs aligner on small fixture pages (tests/fixtures/k8s), plus one build over the
shared snapshot that must reproduce the shipped dataset byte for byte."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from loraforge.data import k8s
from loraforge.data.formats import DataError

FIXTURES = Path(__file__).parents[1] / "fixtures" / "k8s"
REPO = Path(__file__).parents[2]
SNAPSHOT = REPO.parent / "shared" / "data" / "k8s-zh-cn"
SHIPPED = REPO / "src" / "loraforge" / "datasets" / "k8s-en-zh"


def read_split(out: Path, name: str) -> list[dict]:
    with gzip.open(out / f"{name}.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def read_all(out: Path) -> list[dict]:
    return [r for name in ("train", "dev", "test") for r in read_split(out, name)]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("k8s-out")
    report = k8s.build(FIXTURES, out)
    return report, read_all(out)


def pair(records: list[dict], en: str) -> dict:
    found = [r for r in records if r["en"] == en]
    assert len(found) == 1, f"expected one pair for {en!r}, found {len(found)}"
    return found[0]


# --- kinds --------------------------------------------------------------------------------------


def test_front_matter_title_and_description(built):
    _, recs = built
    assert pair(recs, "Pods") == {"id": "docs/concepts/pods#0", "en": "Pods", "zh": "Pod（容器组）",
                                  "source": "docs/concepts/pods.md", "kind": "title"}
    desc = pair(recs, "Pods are the smallest deployable units of computing that you can create and manage in Kubernetes.")
    assert desc["kind"] == "description"
    assert desc["zh"] == "Pod 是可以在 Kubernetes 中创建和管理的最小可部署计算单元。"


def test_title_falls_back_to_english_page_without_front_matter_comment(built):
    _, recs = built
    assert pair(recs, "Run an Application")["zh"] == "运行应用"
    assert pair(recs, "Run an Application")["kind"] == "title"


def test_heading_drops_anchor(built):
    _, recs = built
    r = pair(recs, "What is a Pod?")
    assert (r["kind"], r["zh"]) == ("heading", "什么是 Pod？")


def test_list_items_pair_one_to_one_despite_blank_lines(built):
    _, recs = built
    assert pair(recs, "Pods run on nodes.")["zh"] == "Pod 运行在节点上。"
    assert pair(recs, "Pods share a network namespace.")["zh"] == "Pod 共享网络名字空间。"
    assert pair(recs, "Pods run on nodes.")["kind"] == "list"


def test_table_rows_and_separator(built):
    _, recs = built
    tables = [(r["en"], r["zh"]) for r in recs if r["kind"] == "table"]
    assert tables == [("Field | Meaning", "字段 | 含义"), ("name | The name of the Pod", "name | Pod 的名称")]


def test_multi_paragraph_comment_one_to_one_and_merged(built):
    _, recs = built
    assert pair(recs, "Each Pod has a unique IP address.")["zh"] == "每个 Pod 都有唯一的 IP 地址。"
    assert pair(recs, "Containers in a Pod share that address.")["zh"] == "Pod 中的容器共享该地址。"
    merged = pair(recs, "Pods are ephemeral. They are not designed to run forever.\n\nWhen a Pod is deleted, it is not restarted.")
    assert merged["kind"] == "paragraphs"
    assert merged["zh"].startswith("Pod 是临时性的。") and merged["zh"].endswith("它不会被重新启动。")


def test_every_kind_present(built):
    report, recs = built
    assert set(report.kinds) == {"title", "description", "heading", "paragraph", "paragraphs", "list", "table"}
    assert sum(report.kinds.values()) == len(recs) == sum(report.pairs.values())


# --- pitfalls -----------------------------------------------------------------------------------


def test_fenced_code_skipped_and_text_before_it_kept(built):
    _, recs = built
    assert pair(recs, "The following is an example of a Pod:")["zh"] == "下面是一个 Pod 示例："
    everything = json.dumps(recs, ensure_ascii=False)
    assert "apiVersion" not in everything and "这是一个注释" not in everything


def test_section_markers_are_not_pairs(built):
    _, recs = built
    for marker in ("overview", "body", "more"):
        assert all(marker not in (r["en"].lower(), r["zh"].lower()) for r in recs)


def test_inline_markup_verbatim_and_whitespace_normalised(built):
    _, recs = built
    r = pair(recs, 'A Pod is a group of one or more {{< glossary_tooltip text="containers" term_id="container" >}}, '
                   "with shared storage and network resources. See [the Pod API](/docs/reference/pod/) and `kubectl get pods`.")
    # Chinese lines join without a space; the shortcode, link and inline code are kept as written.
    assert r["zh"] == ('Pod 是一组（一个或多个）{{< glossary_tooltip text="容器" term_id="container" >}}；'
                       "这些容器共享存储、网络资源。参阅 [Pod API](/zh-cn/docs/reference/pod/) 和 `kubectl get pods`。")
    assert pair(recs, "Learn about [Pod lifecycle](/docs/concepts/workloads/pods/pod-lifecycle/).")["kind"] == "list"


def test_implausible_pairs_dropped_with_reasons(built):
    report, recs = built
    texts = {r["en"] for r in recs}
    assert "This sentence was not translated." not in texts  # identical
    assert "See the reference for details." not in texts  # no Chinese on the zh side
    assert "Note" not in texts  # length ratio
    assert "Limits" not in texts  # heading vs paragraph
    assert "Port number" not in texts  # only an inline <!--Default:--> label follows
    expected = {"identical": 1, "no_target_script": 1, "length_ratio": 1, "block_mismatch": 1,
                "no_translation": 1, "inline_comment": 1, "comment_not_english": 1, "duplicate": 1}
    assert {k: report.dropped[k] for k in expected} == expected


def test_dedupe_across_documents(built):
    _, recs = built
    nexts = [r for r in recs if r["en"] == "What's next"]
    assert len(nexts) == 1 and nexts[0]["source"] == "docs/concepts/pods.md"
    assert len({(r["en"], r["zh"]) for r in recs}) == len(recs)
    assert len({r["id"] for r in recs}) == len(recs)


def test_lang_ja(tmp_path):
    report = k8s.build(FIXTURES, tmp_path, lang="ja")
    recs = read_all(tmp_path)
    assert {(r["en"], r["ja"]) for r in recs} == {
        ("What is a Pod?", "Podとは"), ("A Pod is a group of one or more containers.", "Podは、1つ以上のコンテナのグループです。")}
    assert report.dropped["no_target_script"] == 1  # "Pods" -> "Pod" has no Japanese script
    assert all("zh" not in r for r in recs)


def test_section_blog_is_separate_from_docs(tmp_path, built):
    k8s.build(FIXTURES, tmp_path, section="blog")
    blog = read_all(tmp_path)
    assert {r["source"] for r in blog} == {"blog/_posts/2024-01-01-hello.md"}
    assert pair(blog, "This post says hello.")["zh"] == "这篇文章向你问好。"
    _, docs = built
    assert all(r["source"].startswith("docs/") for r in docs)


def test_edge_tags_and_shared_brackets():
    assert k8s.trim_edge_tags("检查 etcd 是否就绪时使用的超时</p></td>") == "检查 etcd 是否就绪时使用的超时"
    assert k8s.trim_edge_tags('<span class="text-muted">名称</span></td>') == '<span class="text-muted">名称</span>'
    assert k8s.trim_edge_tags("<td>a</td> <td>b</td>") == "<td>a</td> <td>b</td>"
    assert k8s.trim_edge_tags("Use kubectl get pods > out.txt") == "Use kubectl get pods > out.txt"
    assert k8s._repair_shared_brackets(" td>Allows access.</td") == "<td>Allows access.</td>"


def test_api_reference_field_header_splits_from_description():
    en = "- **conditions** ([]Condition)\n  *Patch strategy: merge on key `type`*\n\n  conditions is the current state."
    zh = ["- **conditions** ([]Condition)", "", "  **补丁策略：按照键 `type` 合并**", "", "  conditions 是当前状态。"]
    pairs, reason = k8s.align_segment(en, zh)
    assert reason is None
    assert [(k, e) for k, e, _ in pairs] == [("list", "**conditions** ([]Condition)"),
                                             ("paragraph", "*Patch strategy: merge on key `type`*"),
                                             ("paragraph", "conditions is the current state.")]
    assert pairs[2][2] == "conditions 是当前状态。"


def test_reject_reasons():
    assert k8s.reject_reason("No description provided.", "环境变量名称", "zh-cn") == "placeholder"
    assert k8s.reject_reason("x" * 2001, "中" * 900, "zh-cn") == "too_long"
    long_en = ("InteractiveMode determines this plugin's relationship with standard input. Valid values are "
               "Never (never uses standard input), IfAvailable (uses it if available) or Always (requires it).")
    assert k8s.reject_reason(long_en, "interactiveMode 确定与标准输入的关系。有效值为：", "zh-cn") == "truncated"
    assert k8s.reject_reason(long_en, "interactiveMode 确定与标准输入的关系。有效值为 Never。", "zh-cn") is None
    assert k8s.reject_reason("Valid values are:", "有效值为：", "zh-cn") is None


# --- determinism and splits ---------------------------------------------------------------------


def test_build_is_byte_reproducible(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    k8s.build(FIXTURES, a)
    # a second build from a copy with a different mtime and directory must give the same bytes
    src = tmp_path / "copy"
    shutil.copytree(FIXTURES, src)
    k8s.build(src, b)
    for name in ("train", "dev", "test"):
        data = (a / f"{name}.jsonl.gz").read_bytes()
        assert data == (b / f"{name}.jsonl.gz").read_bytes()
        assert data[4:8] == b"\0\0\0\0"  # gzip mtime field: no build time in the file


def test_split_by_document(tmp_path):
    src = tmp_path / "src"
    for i in range(30):
        page = src / "content" / "zh-cn" / "docs" / f"page{i}.md"
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(f"<!--\nPage {i} first sentence.\n-->\n第 {i} 页第一句。\n\n"
                        f"<!--\nPage {i} second sentence.\n-->\n第 {i} 页第二句。\n", encoding="utf-8")
    report = k8s.build(src, tmp_path / "out", dev_pct=25, test_pct=25)
    owner: dict[str, str] = {}
    for name in ("train", "dev", "test"):
        recs = read_split(tmp_path / "out", name)
        assert recs, f"split {name} is empty"
        for r in recs:
            assert owner.setdefault(r["source"], name) == name, f"{r['source']} in {owner[r['source']]} and {name}"
            assert k8s.split_of(r["source"], 25, 25) == name
    assert sum(report.pairs.values()) == 60 and len(owner) == 30


# --- bad input ----------------------------------------------------------------------------------


def write_page(root: Path, text: str | bytes, name: str = "bad.md") -> Path:
    page = root / "content" / "zh-cn" / "docs" / name
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return page


def test_missing_directory(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: source directory not found"):
        k8s.build(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(DataError, match=r"content/ko/docs: directory not found"):
        k8s.build(FIXTURES, tmp_path / "out", lang="ko")


def test_unbalanced_comment_names_file_and_line(tmp_path):
    page = write_page(tmp_path, "<!--\nA sentence.\n-->\n一句话。\n\n<!--\nNever closed.\n未闭合。\n")
    with pytest.raises(DataError, match=rf"{page}:6: comment '<!--' is never closed"):
        k8s.build(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing partial written


def test_non_utf8_names_file_and_line(tmp_path):
    page = write_page(tmp_path, "<!--\nA sentence.\n-->\n".encode() + b"\xff\xfe bad\n")
    with pytest.raises(DataError, match=rf"{page}:4: not valid UTF-8"):
        k8s.build(tmp_path, tmp_path / "out")


def test_byte_order_mark_does_not_hide_front_matter(tmp_path):
    write_page(tmp_path, "\ufeff---\ntitle: 配额\n---\n<!--\ntitle: Quotas\n-->\n")
    k8s.build(tmp_path, tmp_path / "out")
    assert [(r["en"], r["zh"], r["kind"]) for r in read_all(tmp_path / "out")] == [("Quotas", "配额", "title")]


def test_empty_result_is_an_error(tmp_path):
    write_page(tmp_path, "---\ntitle: 无\n---\n只有中文，没有英文注释。\n")
    with pytest.raises(DataError, match=r"no aligned pairs found in 1 files"):
        k8s.build(tmp_path, tmp_path / "out")


def test_cli_reports_errors(tmp_path, capsys):
    from loraforge.cli import main

    assert main(["data", "k8s", "--source", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "directory not found" in capsys.readouterr().err
    assert main(["data", "k8s", "--source", str(FIXTURES), "--out", str(tmp_path / "o")]) == 0
    assert json.loads(capsys.readouterr().out)["pairs"]["train"] == len(read_all(tmp_path / "o"))


# --- the shared snapshot and the shipped files --------------------------------------------------


def test_shipped_splits_are_disjoint_by_document_and_hold_no_blog():
    recs = {name: read_split(SHIPPED, name) for name in ("train", "dev", "test")}
    sources = {name: {r["source"] for r in rs} for name, rs in recs.items()}
    assert not sources["train"] & sources["dev"]
    assert not sources["train"] & sources["test"]
    assert not sources["dev"] & sources["test"]
    assert all(r["source"].startswith("docs/") for rs in recs.values() for r in rs)
    assert 100 <= len(recs["test"]) <= 1000 and 100 <= len(recs["dev"]) <= 1000
    assert sum(len(rs) for rs in recs.values()) >= 30_000


@pytest.mark.skipif(not SNAPSHOT.is_dir(), reason=f"shared snapshot {SNAPSHOT} not present")
def test_snapshot_rebuild_matches_shipped_files(tmp_path):
    report = k8s.build(SNAPSHOT, tmp_path)
    assert sum(report.pairs.values()) >= 30_000
    for name in ("train", "dev", "test"):
        assert (tmp_path / f"{name}.jsonl.gz").read_bytes() == (SHIPPED / f"{name}.jsonl.gz").read_bytes(), (
            f"{name}.jsonl.gz differs: rebuild with the command in {SHIPPED / 'README.md'}")
