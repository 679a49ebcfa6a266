"""The patterns' over-masking check on sets no rule is written from (``bench.pii_pattern_misses``)."""

from __future__ import annotations

from loraforge.bench import pii_pattern_misses


def test_matches_over_no_gold_value_are_counted_by_pattern(tmp_path):
    page = tmp_path / "content/en/docs/page.md"
    page.parent.mkdir(parents=True)
    page.write_text("Reach the author at github.com/jdoe-dev or [Kyverno](https://github.com/kyverno).\n")
    results, lines = pii_pattern_misses.run(["profile_handle", "table_name"], str(tmp_path), show_values=True)
    docs = results["sets"]["k8s-en-docs"]
    assert docs == {"texts": 1, "found": {}, "over": {"profile_handle": 1}}  # the link's target is no profile
    assert any("jdoe-dev" in line for line in lines)
    for split in ("train", "dev", "handwritten-train"):
        row = results["sets"][split]
        assert row["texts"] > 0 and set(row["found"]) | set(row["over"]) <= {"profile_handle", "table_name"}
    assert "| k8s-en-docs | 1 | 1 | 0 | profile_handle 1 |" in pii_pattern_misses.markdown(results)
