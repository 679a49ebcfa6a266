"""Markup protection: placeholders round-trip, broken outputs are repaired and counted, training
pairs get the same ids on both sides."""

from __future__ import annotations

import re

import pytest

from loraforge.data.formats import DataError, Example
from loraforge.data.markup import (PLACEHOLDER, check, protect, protect_examples, protect_pair, restore,
                                   restore_batch)

# Real snippets from content/en/docs (kubernetes/website, CC BY 4.0).
SNIPPETS = [
    'Kubernetes runs your {{< glossary_tooltip text="workload" term_id="workload" >}}\nby placing containers into Pods.',
    "The [components](/docs/concepts/architecture/#node-components) on a node include the kubelet.",
    "Use `kubectl drain` to safely evict all of your pods from a node, see https://kubernetes.io/docs/ for more.",
    '[SeccompProfile](/docs/reference/generated/kubernetes-api/{{< param "version" >}}/#seccompprofile-v1-core) object',
    "The <code>--node-status-update-frequency</code> flag is <b>10s</b> by default.<br/>",
    '{{< feature-state for_k8s_version="v1.29" state="stable" >}} ![diagram](/images/docs/pod.svg "Pod")',
    "## Management {#management}",
    "Escaped {{</* note */>}} and a literal {3} in prose, plus <!-- a comment -->.",
]


def upper_keep(texts: list[str]) -> list[str]:
    """A fake model: translates (upper-cases) the prose and carries every placeholder."""
    return [PLACEHOLDER.sub(lambda m: m.group(0), t.upper()) for t in texts]


@pytest.mark.parametrize("text", SNIPPETS)
def test_protect_restore_round_trip(text):
    p = protect(text)
    assert p.pieces, "every snippet has markup to protect"
    bare = PLACEHOLDER.sub(" ", p.text)
    for piece in p.pieces:  # nothing that must survive is left for the model
        assert piece.source not in bare or piece.source in ("[", "![")
    r = restore(p.text, p)
    assert r.ok and r.text == text


def test_translated_output_keeps_markup_verbatim():
    text = SNIPPETS[0] + " " + SNIPPETS[1] + " " + SNIPPETS[2]
    p = protect(text)
    out = restore(upper_keep([p.text])[0], p).text
    for item in ['term_id="workload" >}}', "](/docs/concepts/architecture/#node-components)", "`kubectl drain`",
                 "https://kubernetes.io/docs/"]:
        assert item in out
    assert 'text="WORKLOAD"' in out  # the prose parameter was translated
    assert "COMPONENTS" in out and "CONTAINERS" in out


def test_link_text_and_shortcode_prose_stay_translatable():
    p = protect(SNIPPETS[0] + " " + SNIPPETS[1])
    assert "workload" in p.text and "components" in p.text
    assert "term_id" not in p.text and "/docs/" not in p.text


def test_literal_placeholder_in_input_is_protected():
    p = protect("Set {1} to the value.")
    assert restore(p.text, p).text == "Set {1} to the value."
    assert p.text == "Set {1} to the value." and p.pieces[0].source == "{1}"


def test_extra_patterns_and_terms():
    p = protect("Run kube-proxy and two Pods on ip-10-0-0-1.", extra_patterns=[r"ip-[\d-]+"],
                terms={"Pods": "Pod", "kube-proxy": "kube-proxy"})
    assert "ip-10" not in p.text and "Pods" not in p.text
    assert restore(p.text, p).text == "Run kube-proxy and two Pod on ip-10-0-0-1."


def test_check_finds_missing_repeated_unknown():
    p = protect("A `x` b `y` c `z`.")
    r = check("A {1} b {1} c {9}", p)
    assert r.missing == [2, 3] and r.repeated == [1] and r.unknown == ["{9}"] and not r.ok


def test_restore_batch_inserts_missing_placeholder_at_aligned_position():
    p = protect("Run `kubectl get pods` now, then `kubectl logs`.")
    broken = "运行 {1} 现在，然后。"  # {2} dropped
    [res], stats = restore_batch([p], [broken])
    assert res.text == "运行 `kubectl get pods` 现在，然后。`kubectl logs`" or "`kubectl logs`" in res.text
    assert res.text.count("`kubectl logs`") == 1 and not res.fallback
    assert stats.placeholders_repaired == 1 and stats.segments_repaired == 1 and stats.segments_fallback == 0


def test_restore_batch_drops_repeats_and_counts():
    p = protect("See `a` here.")
    [res], stats = restore_batch([p], ["见 {1} {1} 这里"])
    assert res.text.count("`a`") == 1 and stats.placeholders_repaired == 1


def test_restore_batch_falls_back_to_source_when_markup_ignored():
    p = protect("Use `a`, `b` and `c`.")
    [res], stats = restore_batch([p], ["使用它们。"])  # all three missing: more than half
    assert res.fallback and res.text == "Use `a`, `b` and `c`."
    assert stats.segments_fallback == 1 and stats.placeholders_ok == 0
    [res2], stats2 = restore_batch([p], ["使用 {1}、{2}。"], fallback="source")
    assert res2.fallback and stats2.segments_fallback == 1


def test_restore_batch_redecodes_with_forced_prefix():
    p = protect("Click [here](/docs/a/) to start.")
    calls = []

    def continue_fn(sources, prefixes):
        calls.append((sources, prefixes))
        return ["开始。" if pre.endswith("{2}") else "" for pre in prefixes]

    [res], stats = restore_batch([p], ["点击{1}这里开始。"], continue_fn=continue_fn)
    assert calls and calls[0][1][0].endswith("{2}")  # forced up to and including the missing one
    prefix = calls[0][1][0]
    assert prefix.startswith("点击{1}") and res.text == restore(prefix + "开始。", p).text
    assert res.text.count("](/docs/a/)") == 1 and res.text.endswith("开始。")
    assert stats.segments_redecoded == 1 and stats.segments_fallback == 0


def test_restore_batch_rejects_bad_arguments():
    with pytest.raises(ValueError):
        restore_batch([protect("a")], ["a"], fallback="guess")
    with pytest.raises(ValueError):
        restore_batch([protect("a")], [])


def test_protect_pair_same_ids_both_sides():
    en = ('The {{< glossary_tooltip text="control plane" term_id="control-plane" >}} and '
          "[nodes](/docs/concepts/architecture/nodes/) run `kubelet`.")
    zh = ("{{< glossary_tooltip text=\"控制面\" term_id=\"control-plane\" >}}和"
          "[节点](/zh-cn/docs/concepts/architecture/nodes/)运行 `kubelet`。")
    pair = protect_pair(en, zh)
    assert not pair.missing and not pair.extra
    ids = lambda s: sorted(int(m) for m in re.findall(r"\{(\d+)\}", s))  # noqa: E731
    assert ids(pair.source) == ids(pair.target) == [1, 2, 3, 4, 5]
    assert "控制面" in pair.target and "/zh-cn/" not in pair.target
    # the target restored with the source's pieces is the reference with the source's link
    src = protect(en)
    assert restore(pair.target, src).text == zh.replace("/zh-cn/docs/", "/docs/")


def test_protect_examples_drops_or_keeps_pairs_missing_markup():
    data = [Example("Run `a` now.", "现在运行 `a`。"), Example("Run `b` now.", "现在运行。"), Example("Hi.", "你好。")]
    kept, stats = protect_examples(data)
    assert [e.source for e in kept] == ["Run {1} now.", "Hi."] and kept[0].target == "现在运行 {1}。"
    assert stats.dropped == 1 and stats.kept == 2 and stats.target_missing == 1 and stats.with_markup == 2
    kept, stats = protect_examples(data, missing="keep")
    assert len(kept) == 3 and stats.dropped == 0
    with pytest.raises(DataError):
        protect_examples(data, missing="maybe")
