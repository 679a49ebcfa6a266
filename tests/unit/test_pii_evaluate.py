"""Side-by-side scoring of maskers, the bias curve, and the Presidio adapter (skipped when absent)."""

from __future__ import annotations

import pytest

from conftest import tiny_causal
from loraforge.config import DataConfig
from loraforge.data.pii import generate
from loraforge.eval.pii import pii_metrics
from loraforge.eval.pii_baseline import baseline_mask
from loraforge.pii import Masker, MaskOptions
from loraforge.eval.report import plot_pii_curve
from loraforge.pii.evaluate import compare, markdown_table, rule_finder, score, sweep_bias
from loraforge.pii.presidio import unavailable

RECORDS = generate(12, seed=5, split="test")


def test_rule_finder_scores_like_the_rule_baseline():
    texts = [r["text"] for r in RECORDS]
    ours = score(rule_finder, RECORDS)
    theirs = pii_metrics(texts, [baseline_mask(t) for t in texts], [r["masked"] for r in RECORDS],
                         [r["spans"] for r in RECORDS])
    assert {k: ours[k] for k in theirs} == theirs
    assert ours["texts_per_s"] > 0


def test_compare_puts_every_masker_in_one_table():
    patterns = Masker(options=MaskOptions(merge="patterns"))
    results = compare(RECORDS, {"rules": rule_finder, "patterns": patterns.find_spans})
    table = markdown_table(results)
    assert table.count("\n") == 4 and "| rules |" in table and "| patterns |" in table
    assert all(m["n"] == len(RECORDS) for m in results.values())
    negatives = [r for r in RECORDS if not r["spans"]]
    if negatives:
        assert results["patterns"]["no_pii_unchanged"] is not None


def test_bias_sweep_trades_leaks_for_over_masking(tiny_tokenizer, tmp_path):
    model = tiny_causal(vocab_size=len(tiny_tokenizer), seed=0)
    masker = Masker.from_model(model, tiny_tokenizer, DataConfig(task="pii"), MaskOptions(merge="model"),
                               bias=1.0, batch_size=4)
    rows = [r for r in RECORDS if r["spans"]][:4]
    points = sweep_bias(masker, rows, [-1e4, 1e4])
    assert [p["bias"] for p in points] == [-1e4, 1e4] and masker.bias == 1.0  # restored
    assert points[0]["leak_rate"] == 100.0  # never masks: every value leaks
    assert points[1]["leak_rate"] < points[0]["leak_rate"]
    png = plot_pii_curve(points, tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(unavailable() is not None, reason=unavailable() or "")
def test_presidio_finder_maps_entities_to_our_types():
    from loraforge.pii.presidio import PresidioFinder

    finder = PresidioFinder(use_spacy=False)
    text = "Mail john@example.com, card 4111 1111 1111 1111, on 2024-01-02."
    spans = finder.find_spans([text])[0]
    assert [(text[s.start:s.end], s.type) for s in spans] == [("john@example.com", "EMAIL"),
                                                              ("4111 1111 1111 1111", "CREDIT_CARD")]
    assert "pattern recognizers only" in finder.mode
    assert score(finder.find_spans, RECORDS[:4])["n"] == 4
