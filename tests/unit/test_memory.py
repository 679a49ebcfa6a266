"""Translation-memory matches in the prompt (``data.memory``): the lookup, the prompt it makes, and
the same memory at training and at generation, on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loraforge.config import ConfigError, load_config
from loraforge.data.formats import Example
from loraforge.data.markup import protect
from loraforge.data.memory import Match, TranslationMemory, with_match
from loraforge.data.splits import encode_splits, load_splits, task_memory
from loraforge.eval.inference import with_memory


def ex(en: str, zh: str, page: str) -> Example:
    return Example(en, zh, meta={"source": page})


PAIRS = [
    ex("Create a Service for the Deployment", "为 Deployment 创建 Service", "docs/a.md"),
    ex("Delete the Pod when the Job finishes", "在 Job 结束时删除 Pod", "docs/b.md"),
    ex("Create a Service for the StatefulSet", "为 StatefulSet 创建 Service", "docs/c.md"),
    ex("Scale the cluster down at night", "在夜间缩减集群", "docs/c.md"),
]


def test_lookup_returns_the_closest_pair_of_another_page_above_the_threshold():
    memory = TranslationMemory(PAIRS, min_score=0.5)
    match = memory.lookup("Create a Service for the DaemonSet")
    assert match is not None and match.target in {"为 Deployment 创建 Service", "为 StatefulSet 创建 Service"}
    assert 0.5 <= match.score < 1
    # the same text on its own page is skipped: the next closest, from another page, comes back
    own = memory.lookup("Create a Service for the StatefulSet", page="docs/c.md")
    assert own == Match("Create a Service for the Deployment", "为 Deployment 创建 Service", own.score)
    # an identical source on another page is an exact match
    exact = memory.lookup("Create a Service for the StatefulSet", page="docs/z.md")
    assert exact.score == 1.0 and exact.target == "为 StatefulSet 创建 Service"
    # nothing similar enough, and nothing shared at all
    assert memory.lookup("Scale the Deployment up") is None
    assert memory.lookup("完全不同") is None
    assert TranslationMemory(PAIRS, min_score=0.99).lookup("Create a Service for the DaemonSet") is None


def test_the_prompt_shows_the_match_before_the_segment_and_nothing_without_one():
    assert with_match("Scale it", None) == "Scale it"
    text = with_match("Create a Service for X", Match("Create a Service for Y", "为 Y 创建 Service", 0.876))
    assert text == ("Translation memory (88% match):\nCreate a Service for Y\n=> 为 Y 创建 Service\n\n"
                    "Translate:\nCreate a Service for X")


def write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def rows(pairs: list[Example]) -> list[dict]:
    return [{"en": p.source, "zh": p.target, "source": p.meta["source"]} for p in pairs]


def test_training_and_generation_match_against_the_same_memory(tmp_path):
    train = write(tmp_path / "train.jsonl", rows(PAIRS) + [
        {"en": "Read the `kubectl` docs", "zh": "阅读 `kubectl` 文档", "source": "docs/d.md"},
        {"en": "Only in tutorials: create a Service for the Deployment", "zh": "教程",
         "source": "docs/tutorials/t.md"}])
    dev = write(tmp_path / "dev.jsonl",
                rows([ex("Delete the Pod when the Job fails", "在 Job 失败时删除 Pod", "docs/e.md")]))
    cfg = load_config(None, [f"data.train={train}", f"data.dev={dev}", "data.test=null",
                             "data.protect_markup=true", "data.exclude_sources=[docs/tutorials/]",
                             "data.memory={min_score: 0.5}"])
    splits = load_splits(cfg)
    by_target = {e.target: e.source for e in splits.train}
    # each training row is matched to another page's row; same-page and held-out rows never show
    assert by_target["为 StatefulSet 创建 Service"].startswith("Translation memory (")
    assert "for the Deployment\n=> 为 Deployment 创建 Service" in by_target["为 StatefulSet 创建 Service"]
    assert by_target["在夜间缩减集群"] == "Scale the cluster down at night"
    assert all("Only in tutorials" not in s for s in by_target.values())
    assert "=> 在 Job 结束时删除 Pod\n\nTranslate:\nDelete the Pod when the Job fails" in splits.dev[0].source
    # generation reads the memory training built: markup protected as in training, held-out rows absent
    memory = task_memory(cfg.data)
    assert len(memory) == 5 and protect("Read the `kubectl` docs").text in memory.sources
    assert "`kubectl`" not in " ".join(memory.sources)
    prompt = with_memory(["Create a Service for the Ingress"], cfg.data)[0]
    assert prompt.endswith("Translate:\nCreate a Service for the Ingress") and "=> 为" in prompt
    off = load_config(None, [f"data.train={train}", "data.dev=null", "data.test=null"])
    assert with_memory(["Create a Service for the Ingress"], off.data) == ["Create a Service for the Ingress"]


def test_memory_outside_translation_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match="data.memory"):
        load_config(None, ["data.task=pii", "data.train=pii:train", "data.memory={min_score: 0.6}"])
    with pytest.raises(ConfigError, match="min_score"):
        load_config(None, ["data.memory={min_score: 0}"])
    with pytest.raises(ConfigError, match="data.memory"):
        load_config(None, ["data.memory={min: 0.5}"])


def test_a_row_the_match_makes_too_long_trains_without_it(tmp_path, tiny_tokenizer):
    long_en = "Create a Service for the Deployment " + "and its many replicas " * 12
    train = write(tmp_path / "train.jsonl", [
        {"en": long_en, "zh": "创建", "source": "docs/a.md"},
        {"en": long_en + "today", "zh": "今天创建", "source": "docs/b.md"},
        {"en": "Scale the cluster", "zh": "缩减集群", "source": "docs/c.md"}])
    args = [f"data.train={train}", "data.dev=null", "data.test=null", "data.template=plain", "data.system_prompt=null"]
    plain = encode_splits(load_config(None, args), load_splits(load_config(None, args)), tiny_tokenizer, "causal")
    limit = max(len(x.input_ids) for x in plain.train) + 4  # every row fits alone, none with a long match
    cfg = load_config(None, args + [f"data.max_length={limit}", "data.memory={min_score: 0.5}"])
    splits = load_splits(cfg)
    assert sum(e.source.startswith("Translation memory") for e in splits.train) == 2
    data = encode_splits(cfg, splits, tiny_tokenizer, "causal")
    assert data.dropped_too_long["train"] == 0 and len(data.train) == 3
    assert [x.input_ids for x in data.train] == [x.input_ids for x in plain.train]


def test_match_rates_count_what_training_and_generation_see(tmp_path):
    from loraforge.bench.memory_matches import match_rates

    train = write(tmp_path / "train.jsonl", rows(PAIRS))
    test = write(tmp_path / "test.jsonl", rows([
        ex("Create a Service for the Ingress", "为 Ingress 创建 Service", "docs/t.md"),
        ex("Nothing alike here", "无", "docs/t.md")]))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  train: {train}\n  dev: null\n  test: null\n  memory: {{min_score: 0.5}}\n")
    rates = match_rates(str(cfg), [], [test])
    # the two Service rows match each other across pages; the others find nothing at 0.5
    assert rates["train"] == {"rows": 4, "matched": 2}
    assert rates[test] == {"rows": 2, "matched": 1, "matched_0.8": 1}
    with pytest.raises(SystemExit, match="data.memory"):
        match_rates(str(cfg), ["data.memory=null"], [test])
