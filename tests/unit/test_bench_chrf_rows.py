"""How much of a corpus chrF rides on the longest rows (``bench.chrf_rows``)."""

from __future__ import annotations

import json

from loraforge.bench import chrf_rows
from loraforge.data.formats import read_records, resolve_spec


def test_the_longest_row_is_scored_apart(tmp_path):
    rows = [r for _, r in read_records(resolve_spec("k8s:test"))]
    longest = max(rows, key=lambda r: len(r["en"]))
    run = tmp_path / "run"
    run.mkdir()
    outputs = [{"id": r["id"], "output": "无" if r is longest else r["zh"]} for r in rows]  # the longest row cut short
    (run / "outputs_after.jsonl").write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in outputs))
    result = chrf_rows.score([str(run)], "k8s:test", drop=1)["runs"][str(run)]
    assert result["n"] == len(rows) and result["chrf_without_longest"] == 100.0
    assert result["chrf"] < 100.0 and result["longest"][0]["id"] == longest["id"] and result["longest"][0]["chrf"] < 60
    assert "| 100.0 |" in chrf_rows.markdown(chrf_rows.score([str(run)], "k8s:test", drop=1))


def test_stored_outputs_are_rescored_with_evaluations_short_translation_check(tmp_path, tiny_model_dir):
    """Runs evaluated before ``eval.min_output_ratio`` existed: the cut-short longest row is kept in
    English by the same check evaluation runs, and only that row."""
    rows = [r for _, r in read_records(resolve_spec("k8s:test"))]
    longest = max(rows, key=lambda r: len(r["en"]))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(f"model:\n  name: {tiny_model_dir}\n")
    outputs = [{"id": r["id"], "output": "无" if r is longest else r["zh"]} for r in rows]
    (run / "outputs_after.jsonl").write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in outputs))
    results = chrf_rows.score([str(run)], "k8s:test", drop=1, min_output_ratio=0.5)
    result = results["runs"][str(run)]
    assert result["short_rows"] == [longest["id"]] and result["chrf_short_kept_in_english"] > result["chrf"]
    assert "kept in English" in chrf_rows.markdown(results) and "--min-output-ratio 0.5" in chrf_rows.markdown(results)
