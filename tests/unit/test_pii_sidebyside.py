"""The PII maskers side by side on the same rows: one table in metrics.json (typed), the report and
``loraforge eval`` (tuned model, + patterns, validated patterns, rules, Presidio; pii:test and the
hand-written set)."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_causal
from loraforge.config import DataConfig, RunConfig
from loraforge.data.pii import generate
from loraforge.pii import Masker, MaskOptions
from loraforge.pii.decode import ConstrainedMasker
from loraforge.pii.evaluate import score_spans
from loraforge.pii.presidio import unavailable
from loraforge.pii import sidebyside
from loraforge.pii.sidebyside import MODEL, PATTERNS, PRESIDIO, RULES, UNION, compare_sets
from loraforge.runs import PiiComparison, RunDir, RunMetrics

RECORDS = [r for r in generate(16, seed=7, split="test") if r["spans"]][:4]
SCORES = ("leak_rate", "typed_f1", "entity_f1", "over_masking", "faithfulness", "no_pii_unchanged", "n")


def silent_model(tokenizer):
    """A model masker that never opens a placeholder (bias -1e4): every value leaks."""
    model = tiny_causal(vocab_size=len(tokenizer), seed=0)
    return ConstrainedMasker.from_config(model, tokenizer, DataConfig(task="pii"), bias=-1e4, batch_size=4)


def by(cmp: PiiComparison) -> dict[tuple[str, str], dict]:
    return {(r.set, r.masker): r.model_dump() for r in cmp.rows}


def test_every_masker_scores_the_same_rows_of_every_set(tiny_tokenizer):
    sets = {"a": RECORDS[:2], "b": RECORDS[2:]}
    cmp = compare_sets(sets, silent_model(tiny_tokenizer), bias=-1e4, presidio=False)
    rows = by(cmp)
    assert [(r.set, r.masker) for r in cmp.rows] == [(s, m) for s in "ab" for m in (MODEL, UNION, PATTERNS, RULES)]
    assert {r["n"] for r in rows.values()} == {2}
    assert cmp.bias == -1e4 and cmp.presidio == "not run: not asked for"
    for s in "ab":
        assert rows[s, MODEL]["leak_rate"] == 100.0  # the silent model masks nothing
        # so the union holds the validated patterns' spans, but for phones and mailboxes: with nothing personal
        # found in a text, those are an organisation's (``masker._NEED_A_PERSON``)
        recs = sets[s]
        kept = [[p for p in spans if p.type not in ("PHONE", "EMAIL")]
                for spans in Masker(options=MaskOptions(merge="patterns")).find_spans([r["text"] for r in recs])]
        assert {k: rows[s, UNION][k] for k in SCORES} == {k: score_spans(recs, kept)[k] for k in SCORES}
        assert rows[s, PATTERNS]["leak_rate"] < 100.0
        assert all(r["texts_per_s"] > 0 for (set_, _), r in rows.items() if set_ == s)


def test_the_union_row_is_what_loraforge_mask_runs():
    """The row is scored on ``Masker(model, union).find_spans``'s spans, the union's own rules included (a phone
    found by its length alone, phones and mailboxes in a text with nothing personal), not on a plain merge of
    the model's and the patterns' spans."""
    from loraforge.pii.spans import Span

    class Model:  # finds the first word of each text as a name: some personal data in every text
        def find_spans(self, texts):
            return [[Span(0, len(t.split()[0]), "NAME")] if t.split() else [] for t in texts]

    records = RECORDS + [{"text": "Artikel 4012345678901 ist wieder lieferbar. Fragen: info@shop.example, 040 3861 2200",
                          "masked": "Artikel 4012345678901 ist wieder lieferbar. Fragen: info@shop.example, 040 3861 2200",
                          "spans": []}]
    rows = by(compare_sets({"x": records}, Model(), presidio=False))
    shipped = score_spans(records, Masker(Model(), MaskOptions(merge="union")).find_spans([r["text"] for r in records]))
    assert {k: rows["x", UNION][k] for k in SCORES} == {k: shipped[k] for k in SCORES}


def test_without_a_model_only_the_model_free_rows():
    cmp = compare_sets({"x": RECORDS}, None, bias=2.0, presidio=False)
    assert [r.masker for r in cmp.rows] == [PATTERNS, RULES] and cmp.bias is None


@pytest.mark.skipif(unavailable() is not None, reason=unavailable() or "")
def test_presidio_is_a_row_and_says_how_it_ran():
    cmp = compare_sets({"x": RECORDS[:2]}, None)
    assert [r.masker for r in cmp.rows] == [PATTERNS, RULES, PRESIDIO]
    assert "pattern recognizers" in cmp.presidio  # with or without a spaCy model, it says which


def test_the_table_is_typed_in_metrics_json():
    cmp = compare_sets({"x": RECORDS}, None, presidio=False)
    metrics = RunMetrics(task="pii", after={"leak_rate": 1.0}, pii_compare=cmp)
    back = RunMetrics.model_validate_json(metrics.to_json())
    assert isinstance(back.pii_compare, PiiComparison) and back.pii_compare == cmp
    assert back.pii_compare.rows[0].leak_rate == cmp.rows[0].leak_rate
    assert RunMetrics.model_validate_json('{"task": "pii"}').pii_compare is None  # older runs still load


def make_lora(model_dir, out):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                           LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules="all-linear"))
    model.save_pretrained(out)


@pytest.fixture
def pii_run(tmp_path, tiny_model_dir):
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in RECORDS[:3]))
    run = RunDir(tmp_path / "run")
    cfg = RunConfig.model_validate({"model": {"name": str(tiny_model_dir), "dtype": "fp32"},
                                    "data": {"task": "pii", "train": str(test), "test": str(test)},
                                    "eval": {"max_examples": 3, "max_new_tokens": 8, "before": False}})
    run.write_config(cfg)
    make_lora(tiny_model_dir, run.adapter_dir)
    run.write_metrics(RunMetrics(task="pii", after={"leak_rate": 50.0, "n": 3}))
    return run


def test_eval_of_a_pii_adapter_shows_the_table_and_stores_it_in_the_run(pii_run, monkeypatch, capsys):
    from loraforge.cli import main

    real = sidebyside.eval_sets
    monkeypatch.setattr(sidebyside, "eval_sets", lambda cfg, limit=None: real(cfg, 2))  # 2 hand-written rows
    assert main(["eval", str(pii_run.config_path), "--adapter", str(pii_run)]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    table = PiiComparison.model_validate(result["pii_compare"])
    sets = {r.set for r in table.rows}
    assert sets == {str(pii_run.config().data.test), "pii-handwritten"}
    assert {r.masker for r in table.rows} >= {MODEL, UNION, RULES}
    assert {r.n for r in table.rows if r.set == "pii-handwritten"} == {2}
    assert "| set | masker | leak % |" in err and "pii-handwritten" in err
    stored = pii_run.metrics()
    assert stored.pii_compare == table and stored.after["leak_rate"] == 50.0  # the rest kept
    report = pii_run.report_md.read_text()
    assert "## PII maskers side by side" in report and "| pii-handwritten | rule baseline |" in report
    assert "PII maskers side by side" in pii_run.report_html.read_text()
    assert all(r["text"] not in report for r in RECORDS[:3])  # scores only, never the texts
