"""``loraforge data stats``: counts, length percentiles and problems with their locations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loraforge.data.formats import DataError
from loraforge.data.stats import approx_tokens, data_stats, format_stats, percentiles


def jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


GOOD = [{"en": f"Pod number {i} runs on a node in the cluster.", "zh": f"第 {i} 个 Pod 运行在集群的某个节点上。",
         "kind": "paragraph"} for i in range(20)]


def test_approx_tokens_counts_words_and_cjk_chars():
    assert approx_tokens("Run `kubectl get pods` now") == 5
    assert approx_tokens("运行 kubectl 命令") == 5  # 运 行 kubectl 命 令
    assert approx_tokens("") == 0


def test_percentiles_nearest_rank():
    p = percentiles(list(range(1, 101)))
    assert (p["p50"], p["p90"], p["p99"], p["max"], p["mean"]) == (50, 90, 99, 100, 50.5)
    assert percentiles([7])["p50"] == 7 and percentiles([])["max"] == 0


def test_clean_file(tmp_path):
    stats = data_stats(jsonl(tmp_path / "d.jsonl", GOOD))
    assert stats["examples"] == stats["unique_pairs"] == 20
    assert stats["problems"] == {}
    assert stats["kinds"] == {"paragraph": 20}
    assert stats["source"]["max"] == 10 and stats["target"]["p50"] > stats["source"]["p50"]
    text = format_stats(stats)
    assert "examples: 20" in text and "problems: none found" in text


def test_problems_are_found_with_locations(tmp_path):
    bad = GOOD + [
        {"en": "  ", "zh": "空的源文本。"},                                 # line 21: empty source
        {"en": "An untranslated sentence stays English.", "zh": ""},          # line 22: empty target
        dict(GOOD[3]),                                                         # line 23: duplicate of line 4
        {"en": "This sentence was never translated at all.", "zh": "This sentence was never translated at all."},
        {"en": "A long English sentence that got a one-character translation.", "zh": "是"},  # line 25
    ]
    path = jsonl(tmp_path / "d.jsonl", bad)
    problems = data_stats(path)["problems"]
    assert problems["empty source"] == {"count": 1, "where": [f"{path}:21"]}
    assert problems["empty target"] == {"count": 1, "where": [f"{path}:22"]}
    assert problems["duplicate pair"] == {"count": 1, "where": [f"{path}:23 (same as {path}:4)"]}
    assert problems["target has no CJK"]["where"] == [f"{path}:24"]
    ratio = problems["extreme length ratio"]["where"]
    assert [w.split(" ")[0] for w in ratio] == [f"{path}:25"]  # 1 char for 62: far below the median 0.4
    text = format_stats(data_stats(path))
    assert "duplicate pair: 1" in text and f"{path}:21" in text


def test_no_cjk_check_for_non_cjk_targets(tmp_path):
    recs = [{"source": f"Call me at 555-01{i:02d}.", "target": "Call me at [PHONE]."} for i in range(10)]
    stats = data_stats(jsonl(tmp_path / "pii.jsonl", recs))
    assert stats["cjk_target"] is False and "target has no CJK" not in stats["problems"]


def test_location_list_is_capped_but_count_complete(tmp_path):
    recs = GOOD + [{"en": "Same.", "zh": "相同。"}] * 9
    stats = data_stats(jsonl(tmp_path / "d.jsonl", recs))
    assert stats["problems"]["duplicate pair"]["count"] == 8
    assert len(stats["problems"]["duplicate pair"]["where"]) == 5
    assert "... and 3 more" in format_stats(stats)


def test_tokenizer_counts(tmp_path, tiny_tokenizer):
    path = jsonl(tmp_path / "d.jsonl", GOOD[:3])
    stats = data_stats(path, tokenizer=tiny_tokenizer)
    expected = [len(tiny_tokenizer(r["en"], add_special_tokens=False)["input_ids"]) for r in GOOD[:3]]
    assert stats["source"]["max"] == max(expected) and stats["unit"].startswith("tokens")
    tok_dir = tmp_path / "tok"
    tiny_tokenizer.save_pretrained(tok_dir)
    assert data_stats(path, tokenizer=str(tok_dir))["source"] == stats["source"]
    with pytest.raises(DataError, match="cannot load tokenizer"):
        data_stats(path, tokenizer=str(tmp_path))


def test_bad_input_names_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"en": "A", "zh": "甲"}\nnot json\n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path}:2: not valid JSON"):
        data_stats(path)
    empty = tmp_path / "e.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="no examples found"):
        data_stats(empty)


def test_packaged_split_and_field_mapping(tmp_path):
    stats = data_stats("k8s:test")
    assert stats["examples"] >= 100 and stats["cjk_target"]
    path = jsonl(tmp_path / "q.jsonl", [{"q": "Why?", "a": "因为。"}])
    assert data_stats(path, source_field="q", target_field="a")["examples"] == 1


def test_cli_does_not_import_torch_without_tokenizer(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", GOOD)
    code = ("import sys; from loraforge.cli import main; rc = main(['data', 'stats', sys.argv[1]]); "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "examples: 20" in out.stdout and "problems: none found" in out.stdout


def test_cli_with_tokenizer_folder(tmp_path, tiny_tokenizer, capsys):
    from loraforge.cli import main

    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    assert main(["data", "stats", str(jsonl(tmp_path / "d.jsonl", GOOD)), "--tokenizer", str(tmp_path / "tok")]) == 0
    assert f"length in tokens ({tmp_path / 'tok'})" in capsys.readouterr().out


def _gemma_cached() -> bool:
    try:
        from loraforge.models.load import cache_home
    except ImportError:
        return False
    return any((cache_home() / "models").glob("gemma-3-270m*/tokenizer.json"))


@pytest.mark.skipif(not _gemma_cached(), reason="Gemma 3 270M not in the loraforge cache (first load converts it)")
def test_cli_with_embedded_gemma_tokenizer(capsys):
    from loraforge.cli import main

    assert main(["data", "stats", "k8s:test", "--tokenizer", "gemma3-270m"]) == 0
    out = capsys.readouterr().out
    assert "length in tokens (gemma3-270m)" in out


def test_wrong_csv_columns_suggest_the_commands_own_flags(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("question,answer\nWhat is a Pod?,The smallest unit.\n", encoding="utf-8")
    with pytest.raises(DataError, match="--source-field and --target-field") as err:
        data_stats(path)
    assert "data.source_field" not in str(err.value)
    with pytest.raises(DataError, match="--source-field and --target-field must be set together"):
        data_stats(path, source_field="question")


def test_data_stats_and_example_problems_share_one_definition(tmp_path):
    from loraforge.data.formats import Example, example_problems

    assert example_problems(Example("A Pod.", "  ")) == ["empty target"]
    assert example_problems(Example("", "一个 Pod。")) == ["empty source"]
    assert example_problems(Example("A Pod.", "一个 Pod。")) == []
    stats = data_stats(jsonl(tmp_path / "d.jsonl", [*GOOD[:3], {"en": "A Pod.", "zh": " "}]))
    assert stats["problems"]["empty target"]["count"] == 1
