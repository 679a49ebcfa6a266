"""Page translation: structure kept per the zh-cn guide, one batched call, update mode, bad input,
the structure checker, the glossary. The translator is a fake (upper-cases prose, keeps placeholders)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from loraforge.data.formats import DataError
from loraforge.localize import (Glossary, PageError, PageOptions, build_glossary, check_page_structure,
                                default_glossary, load_glossary, parse_page, read_page, term_accuracy,
                                translate_page, update_page)
from loraforge.localize.files import translate_pages

FIX = Path(__file__).parent.parent / "fixtures" / "localize"
PAGE = (FIX / "page.md").read_text()


class Fake:
    """Counts calls; 'translates' by upper-casing (placeholders like {3} are unchanged)."""

    def __init__(self, mark: str = ""):
        self.calls: list[list[str]] = []
        self.mark = mark

    def __call__(self, texts: list[str]) -> list[str]:
        self.calls.append(list(texts))
        return [self.mark + t.upper() for t in texts]


def fences(text: str) -> list[str]:
    return re.findall(r"^ *```.*?^ *```", text, re.M | re.S)


def body_without_comments(text: str) -> str:
    return re.sub(r"<!--.*?-->", "", text, flags=re.S)


# --- translate_page ---------------------------------------------------------------------------


def test_front_matter_title_description_translated_reviewers_dropped():
    r = translate_page(PAGE, Fake(), path="page.md")
    front = yaml.safe_load(r.text.split("---")[1])
    assert front["title"] == "RUNNING PODS ON NODES" and front["description"].startswith("HOW THE CONTROL PLANE")
    assert front["content_type"] == "concept" and front["weight"] == 20 and "reviewers" not in front
    comment = r.text.split("---", 2)[2].split("-->")[0]  # the English front matter, kept as the guide asks
    assert "title: Running Pods on Nodes" in comment and "- alice" in comment


def test_code_fences_copied_byte_for_byte():
    r = translate_page(PAGE, Fake(), path="page.md")
    assert fences(body_without_comments(r.text)) == fences(PAGE)
    assert "kubectl apply -f https://k8s.io/examples/pods/simple-pod.yaml" in r.text  # not upper-cased


def test_links_rewritten_anchors_explicit_shortcodes_kept():
    r = translate_page(PAGE, Fake(), path="page.md")
    out = body_without_comments(r.text)
    assert "](/zh-cn/docs/concepts/architecture/nodes/)" in out
    assert "](/zh-cn/docs/concepts/workloads/controllers/deployment/#creating-a-deployment)" in out
    assert "](https://kubernetes.io/docs/reference/)" in out  # external links untouched
    assert "## SCHEDULING BASICS {#scheduling-basics}" in out
    assert "### STEPS {#the-steps}" in out  # an explicit English id is kept
    assert "## WHAT'S NEXT {#whats-next}" in out
    assert 'text="CONTROL PLANE" term_id="control-plane"' in out  # the prose parameter translated
    assert "{{< note >}}" in out and "{{< /note >}}" in out and "`kubectl get pods --watch`" in out
    assert "<b>TAINTS</b>" in out
    assert r.ok, r.problems


def test_english_kept_in_comments_without_live_shortcodes():
    r = translate_page(PAGE, Fake(), path="page.md")
    comments = re.findall(r"<!--(.*?)-->", r.text, re.S)
    assert any("The scheduler watches for new Pods" in c for c in comments)
    for c in comments:
        assert not re.search(r"\{\{[<%](?!/\*)", c), f"live shortcode in a comment: {c}"
    assert '{{</* glossary_tooltip text="Pod" term_id="pod" */>}}' in r.text
    # the comment sits inside the note shortcode, not around it
    assert re.search(r"\{\{< note >\}\}\n<!--\nA Deployment manages", r.text)
    plain = translate_page(PAGE, Fake(), PageOptions(comments=False), path="page.md")
    assert "<!--\n" not in plain.text and plain.ok


def test_lists_item_by_item_numbered_and_tables_cell_by_cell():
    r = translate_page(PAGE, Fake(), path="page.md")
    out = body_without_comments(r.text)
    assert "1. CREATE THE POD:" in out and "2. CHECK THAT IT RUNS." in out and "3. DELETE IT WHEN" in out
    assert "- LABELS SELECT OBJECTS." in out and "- TAINTS REPEL PODS." in out
    assert "| `nodeName` | THE NODE THE POD RUNS ON |" in out and "|-------|---------|" in out
    assert r.text.count("<!--\n1. ") == 3  # one comment per item, as the zh-cn guide does


def test_a_translation_with_line_breaks_stays_inside_its_heading_row_or_item():
    """Small models answer with line breaks (seen: Gemma 3 270M's heading came back as two lines, and
    the {#anchor} landed on the second): headings and rows go on one line, blank lines never split a block."""
    res = translate_page(PAGE, lambda texts: [t.upper() + "\n\nMORE\n" for t in texts], path="page.md")
    assert check_page_structure(PAGE, res.text) == []
    assert "## SCHEDULING BASICS MORE {#scheduling-basics}" in res.text


def test_glossary_keeps_api_kinds_in_english():
    g = Glossary(terms={"control plane": "控制面"}, keep={"Pod", "Deployment"})
    r = translate_page(PAGE, Fake(), PageOptions(glossary=g), path="page.md")
    out = body_without_comments(r.text)
    assert "WATCHES FOR NEW Pod WITH" in out and "A Deployment MANAGES Pod FOR YOU" in out
    assert "POD" not in out.replace("simple-pod", "")  # every Pod/Pods kept as the English kind


def test_all_segments_of_a_folder_go_through_one_call(tmp_path):
    src = tmp_path / "en"
    (src / "sub").mkdir(parents=True)
    (src / "a.md").write_text(PAGE)
    (src / "sub" / "b.md").write_text((FIX / "safely-drain-node.md").read_text())
    fake = Fake()
    res = translate_pages(src, tmp_path / "zh", fake, progress=False)
    assert len(fake.calls) == 1 and len(fake.calls[0]) > 20
    assert sorted(res.written) == sorted(str(tmp_path / "zh" / p) for p in ("a.md", "sub/b.md"))
    assert (tmp_path / "zh" / "a.md").read_text() == translate_page(PAGE, Fake(), path="x").text
    assert res.as_dict()["blocks_translated"] > 10 and not res.failed


def test_no_overwrite_and_bad_pages_not_written(tmp_path):
    src = tmp_path / "en"
    src.mkdir()
    (src / "good.md").write_text(PAGE)
    (src / "bad.md").write_text((FIX / "bad_fence.md").read_text())
    out = tmp_path / "zh"
    res = translate_pages(src, out, Fake(), progress=False)
    assert res.written == [str(out / "good.md")] and "bad.md" in next(iter(res.failed))
    assert "never closed" in res.failed[str(src / "bad.md")] and not (out / "bad.md").exists()
    with pytest.raises(PageError, match="already exists"):
        translate_pages(src, out, Fake(), progress=False)
    before = (out / "good.md").read_text()
    translate_pages(src, out, Fake(mark="!"), overwrite=True, progress=False)
    assert (out / "good.md").read_text() != before


def test_page_failing_validation_is_not_written(tmp_path, monkeypatch):
    import loraforge.localize.structure as structure

    monkeypatch.setattr(structure, "check_page_structure",
                        lambda *a, **k: [structure.Problem("code", "broken on purpose")])
    (tmp_path / "p.md").write_text(PAGE)
    res = translate_pages(tmp_path / "p.md", tmp_path / "out.md", Fake(), progress=False)
    assert not res.written and "broken on purpose" in res.failed[str(tmp_path / "p.md")]
    assert not (tmp_path / "out.md").exists()


# --- update mode ------------------------------------------------------------------------------


def test_update_retranslates_only_changed_blocks():
    old_zh = translate_page(PAGE, Fake(), path="page.md").text
    new_en = PAGE.replace("binds each one to a node.", "binds each one to a suitable node.").replace(
        "- Taints repel Pods.", "- Taints repel most Pods.")
    fake = Fake(mark="NEW ")
    r = update_page(new_en, old_zh, fake, path="page.md")
    assert len(fake.calls) == 1 and len(fake.calls[0]) == 2
    assert r.blocks_translated == 2 and r.blocks_reused > 10
    old_lines, new_lines = old_zh.split("\n"), r.text.split("\n")
    import difflib

    changed = [ln for ln in difflib.unified_diff(old_lines, new_lines, lineterm="", n=0)
               if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    assert sorted(changed) == sorted([
        "-binds each one to a node.", "+binds each one to a suitable node.",
        "-THE SCHEDULER WATCHES FOR NEW PODS WITH `kubectl get pods --watch` AND BINDS EACH ONE TO A NODE.",
        "+NEW THE SCHEDULER WATCHES FOR NEW PODS WITH `kubectl get pods --watch` AND BINDS EACH ONE TO A SUITABLE NODE.",
        "-- Taints repel Pods.", "+- Taints repel most Pods.",
        "-- TAINTS REPEL PODS.", "+- NEW TAINTS REPEL MOST PODS."])


def test_update_with_unchanged_english_reuses_everything_byte_for_byte():
    old_zh = translate_page(PAGE, Fake(), path="page.md").text
    fake = Fake(mark="NEW ")
    r = update_page(PAGE, old_zh, fake, path="page.md")
    assert r.text == old_zh and r.blocks_translated == 0 and fake.calls == []


def test_update_reuses_a_human_comment_covering_several_blocks():
    en = "---\ntitle: T\n---\n\n## Overview\n\nFirst paragraph.\n\nSecond paragraph.\n"
    zh = ("---\ntitle: 标题\n---\n<!--\ntitle: T\n-->\n\n<!--\n## Overview\n\nFirst paragraph.\n-->\n"
          "## 概述 {#overview}\n\n第一段。\n\n<!--\nSecond paragraph.\n-->\n第二段。\n")
    r = update_page(en, zh, Fake(), path="t.md")
    assert r.blocks_reused == 3 and r.blocks_translated == 0
    assert "第一段。" in r.text and "第二段。" in r.text and "title: 标题" in r.text


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("name,message", [
    ("bad_fence.md", r"bad_fence.md:7: code fence '```' is never closed"),
    ("bad_shortcode.md", r"bad_shortcode.md:7: shortcode '\{\{< note >\}\}' is never closed"),
    ("no_front.md", r"no_front.md:1: no front matter"),
    ("latin1.md", r"latin1.md:5: not valid UTF-8"),
    ("binary.md", r"binary.md:\d+: binary file"),
])
def test_bad_input_names_path_and_line(name, message):
    with pytest.raises(PageError, match=message):
        parse_page(read_page(FIX / name), FIX / name)


def test_closing_shortcode_without_opening_is_an_error():
    with pytest.raises(PageError, match=r"x.md:5: .*closes nothing"):
        parse_page("---\ntitle: a\n---\n\n{{< /note >}}\n", "x.md")


def test_multiline_shortcode_is_not_markdown():
    text = ('---\ntitle: a\n---\n\nSee [spec](/docs/api/{{< param "version"\n>}}/#pod) and\n{{< note >}} Text. {{<\n'
            '/note >}}\n')
    r = translate_page(text, Fake(), path="x.md")
    assert r.ok, r.problems
    assert '](/zh-cn/docs/api/{{< param "version"\n>}}/#pod)' in body_without_comments(r.text)


# --- structure checker ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def good() -> str:
    r = translate_page(PAGE, Fake(), path="page.md")
    assert r.ok
    return r.text


@pytest.mark.parametrize("check,breaks", [
    ("front_matter", [("content_type: concept\n", "")]),
    ("front_matter", [("weight: 20\n---", "weight: 20\nreviewers:\n- alice\n---")]),
    ("code", [("pods/simple-pod.yaml\n   ```\n\n<!--", "pods/other-pod.yaml\n   ```\n\n<!--")]),
    ("shortcodes", [("{{< /note >}}\n\n<!--", "{{< /caution >}}\n\n<!--"), ("{{< note >}}\n<!--", "{{< caution >}}\n<!--")]),
    ("shortcodes", [('term_id="control-plane" >}} PICKS', 'term_id="control" >}} PICKS')]),
    ("links", [("[NODES](/zh-cn/docs/concepts/architecture/nodes/)", "[NODES](/docs/concepts/architecture/nodes/)")]),
    ("headings", [("## SCHEDULING BASICS {#scheduling-basics}", "## 调度基础")]),
    ("headings", [("### STEPS {#the-steps}", "### STEPS {#steps}")]),
])
def test_structure_check_catches_each_break(good, check, breaks):
    broken = good
    for old, new in breaks:
        assert old in broken, old
        broken = broken.replace(old, new, 1)
    problems = check_page_structure(PAGE, broken, path="page.md")
    assert check in {p.check for p in problems}, problems


def test_structure_check_reports_unparseable_translation(good):
    problems = check_page_structure(PAGE, good + "\n```yaml\nunclosed: true\n", path="page.md")
    assert [p.check for p in problems] == ["parse"] and "never closed" in problems[0].message


# --- glossary --------------------------------------------------------------------------------


def test_glossary_tsv_and_yaml(tmp_path):
    (tmp_path / "g.tsv").write_text("# comment\ncontrol plane\t控制面\nPod\t=\nDeployment\t\n")
    g = load_glossary(tmp_path / "g.tsv")
    assert g.terms == {"control plane": "控制面"} and g.keep == {"Pod", "Deployment"}
    (tmp_path / "g.yaml").write_text("terms:\n  node: 节点\nkeep: [Service]\n")
    g = load_glossary(tmp_path / "g.yaml")
    assert g.terms == {"node": "节点"} and g.keep == {"Service"}
    (tmp_path / "flat.yml").write_text("node: 节点\nPod: null\n")
    assert load_glossary(tmp_path / "flat.yml").keep == {"Pod"}
    (tmp_path / "bad.tsv").write_text("a\tb\tc\n")
    with pytest.raises(DataError, match=r"bad.tsv:1"):
        load_glossary(tmp_path / "bad.tsv")


def test_build_glossary_from_glossary_pages(tmp_path):
    for lang, title in (("en", "Control Plane (CP)"), ("zh-cn", "控制平面（Control Plane）")):
        d = tmp_path / "content" / lang / "docs/reference/glossary"
        d.mkdir(parents=True)
        (d / "control-plane.md").write_text(f"---\ntitle: {title}\nid: control-plane\n---\nbody\n")
        (d / "pod.md").write_text("---\ntitle: Pod\n---\n")
    g = build_glossary(tmp_path)
    assert g.terms == {"Control Plane": "控制平面"} and g.keep == {"Pod"}
    shipped = default_glossary()
    assert shipped.terms.get("Control Plane") == "控制平面" and {"Pod", "Deployment", "ConfigMap"} <= shipped.keep


def test_term_accuracy():
    g = Glossary(terms={"control plane": "控制面"}, keep={"Pod"})
    src = ["The control plane runs Pods.", "No terms here.", "A Pod."]
    out = ["控制面运行 Pod。", "这里没有。", "一个豆荚。"]
    assert term_accuracy(src, out, g) == {"term_accuracy": round(100 * 2 / 3, 2), "terms": 3}
    assert term_accuracy(["nothing"], ["无"], g)["term_accuracy"] is None


def test_inline_shortcodes_may_move_block_shortcodes_may_not(good):
    a = '{{< glossary_tooltip text="POD" term_id="pod" >}} RUNS ON A NODE THAT THE {{< glossary_tooltip text="CONTROL PLANE" term_id="control-plane" >}}'
    b = '{{< glossary_tooltip text="CONTROL PLANE" term_id="control-plane" >}} RUNS ON A NODE THAT THE {{< glossary_tooltip text="POD" term_id="pod" >}}'
    assert a in good
    assert check_page_structure(PAGE, good.replace(a, b), path="page.md") == []
