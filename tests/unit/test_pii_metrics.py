"""PII metrics on hand-made cases (every metric), the alignment behind them, and the rule-based
baseline (checksums, secrets, template variables, the CLI on a config's test split)."""

from __future__ import annotations

import json

import pytest

from loraforge.cli import main
from loraforge.eval.metrics import task_metrics
from loraforge.eval.pii import align, pii_metrics
from loraforge.eval.pii_baseline import baseline_mask, iban_ok, luhn_ok

SRC = "Call Ann Lee at 555-123-4567 or mail ann@x.org"
REF = "Call [NAME] at [PHONE] or mail [EMAIL]"


def test_perfect_output():
    m = pii_metrics([SRC], [REF], [REF])
    assert m == {"exact_match": 100.0, "leak_rate": 0.0, "entity_f1": 100.0, "entity_p": 100.0, "entity_r": 100.0,
                 "typed_f1": 100.0, "typed_p": 100.0, "typed_r": 100.0, "over_masking": 0.0,
                 "faithfulness": 100.0, "n": 1}


def test_unmasked_output_leaks_everything_but_is_faithful():
    m = pii_metrics([SRC], [SRC], [REF])
    assert m["leak_rate"] == 100.0 and m["entity_r"] == 0.0 and m["entity_f1"] == 0.0 and m["exact_match"] == 0.0
    assert m["faithfulness"] == 100.0  # the non-PII text is untouched


def test_partial_output_counts_leaks_boundaries_and_types():
    hyp = "Call Ann Lee at [PHONE] or mail [NAME]"  # name leaked, e-mail masked with the wrong type
    m = pii_metrics([SRC], [hyp], [REF])
    assert m["leak_rate"] == round(100 / 3, 2)
    assert (m["entity_p"], m["entity_r"], m["entity_f1"]) == (100.0, round(200 / 3, 2), 80.0)
    assert (m["typed_p"], m["typed_r"], m["typed_f1"]) == (50.0, round(100 / 3, 2), 40.0)
    assert m["over_masking"] == 0.0 and m["exact_match"] == 0.0


def test_over_masking_on_a_hard_negative_and_faithfulness_drop():
    src = "Upgrade Redis to 7.2.4.1 today"
    hyp = "Upgrade Redis to [IP_ADDRESS] today"
    m = pii_metrics([src], [hyp], [src])
    assert m["over_masking"] == 100.0 and m["entity_p"] == 0.0 and m["leak_rate"] == 0.0
    kept, total = len("Upgrade Redis to ") + len(" today"), len(src) + len("Upgrade Redis to  today")
    assert m["faithfulness"] == round(100 * 2 * kept / total, 2)


def test_existing_placeholder_in_the_source_is_text_not_a_mask():
    src = "Contact [EMAIL] or bob@x.io"
    ref = "Contact [EMAIL] or [EMAIL]"
    assert align(src, ref) == [(19, 27, "EMAIL")]
    m = pii_metrics([src], [ref], [ref])
    assert m["entity_f1"] == 100.0 and m["over_masking"] == 0.0
    m = pii_metrics([src], [src], [ref])  # the model left the e-mail: one leak, nothing predicted
    assert m["leak_rate"] == 100.0 and m["entity_r"] == 0.0


def test_replace_spans_inverts_align_and_refuses_overlaps():
    from loraforge.data.pii_align import replace_spans

    spans = align(SRC, REF)
    assert [t for *_, t in spans] == ["NAME", "PHONE", "EMAIL"]
    assert replace_spans(SRC, [(a, b, f"[{t}]") for a, b, t in reversed(spans)]) == REF  # any order
    with pytest.raises(ValueError, match="overlapping spans at 7"):
        replace_spans(SRC, [(5, 12, "[NAME]"), (7, 9, "[NAME]")])


def test_value_also_present_as_non_pii_is_not_a_leak():
    src = "Paris said hi from Paris"
    ref = "[NAME] said hi from Paris"
    assert pii_metrics([src], [ref], [ref])["leak_rate"] == 0.0
    assert pii_metrics([src], [src], [ref])["leak_rate"] == 100.0


def test_rewritten_output_is_aligned_by_diff():
    src = "Email ann@x.org now"
    hyp = "Please email [EMAIL] now!"  # other text changed too: no exact alignment exists
    m = pii_metrics([src], [hyp], ["Email [EMAIL] now"])
    assert m["entity_r"] == 100.0 and m["leak_rate"] == 0.0 and m["faithfulness"] < 100.0


def test_gold_spans_argument_matches_alignment_and_lengths_are_checked():
    spans = [[{"start": 5, "end": 12, "type": "NAME"}, {"start": 16, "end": 28, "type": "PHONE"},
              {"start": 37, "end": 46, "type": "EMAIL"}]]
    hyp = "Call [NAME] at 555-123-4567 or mail [EMAIL]"
    assert pii_metrics([SRC], [hyp], [REF], gold_spans=spans) == pii_metrics([SRC], [hyp], [REF])
    with pytest.raises(ValueError, match="differ in length"):
        pii_metrics([SRC], [], [REF])


def test_task_dispatch_and_nothing_printed(capsys):
    assert task_metrics("pii", [SRC], [SRC], [REF]) == pii_metrics([SRC], [SRC], [REF])
    out = capsys.readouterr()
    assert "Ann" not in out.out + out.err


# --- baseline ----------------------------------------------------------------------------------


def test_checksums():
    assert luhn_ok("4111 1111 1111 1111") and not luhn_ok("4111 1111 1111 1112")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB82 WEST 1234 5698 7654 33")


def test_baseline_masks_structured_pii():
    text = ("Card 4111-1111-1111-1111, IBAN DE89 3704 0044 0532 0130 00, mail a.b@example.com, "
            "from 203.0.113.7, SSN 123-45-6789, call +1 (415) 555-0134, DOB: 1990-02-03.")
    assert baseline_mask(text) == ("Card [CREDIT_CARD], IBAN [IBAN], mail [EMAIL], from [IP_ADDRESS], SSN [SSN], "
                                   "call [PHONE], DOB: [DATE_OF_BIRTH].")


def test_baseline_checksums_and_secrets():
    assert "[CREDIT_CARD]" not in baseline_mask("ref 4111 1111 1111 1112")  # fails Luhn
    assert "[IBAN]" not in baseline_mask("code GB82 WEST 1234 5698 7654 33")  # fails mod-97
    env = "DB_PASSWORD=hunter2hunter\nAPI_KEY=${API_KEY}\nTOKEN=ghp_" + "a1" * 18 + "\nREPLICAS=3"
    assert baseline_mask(env) == "DB_PASSWORD=[PASSWORD]\nAPI_KEY=${API_KEY}\nTOKEN=[PASSWORD]\nREPLICAS=3"
    assert baseline_mask("postgres://app:s3cr@t@db:5432/x") == "postgres://[USERNAME]:[PASSWORD]@db:5432/x"
    assert baseline_mask("Released 2024-05-01 by Google, see 1.2.300.4") == "Released 2024-05-01 by Google, see 1.2.300.4"


def test_eval_baseline_cli_on_a_config_test_split(tmp_path, capsys):
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in [
        {"text": "mail a.b@example.com now", "masked": "mail [EMAIL] now"},
        {"text": "Hi Ann Lee, all good", "masked": "Hi [NAME], all good"},
    ]))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  task: pii\n  train: {test}\n  dev: null\n  test: {test}\n")
    out = tmp_path / "m.json"
    assert main(["eval", str(cfg), "--baseline", "--metrics-out", str(out)]) == 0
    m = json.loads(out.read_text())
    assert m == json.loads(capsys.readouterr().out)
    # the rules find the e-mail but not the bare name
    assert (m["entity_r"], m["leak_rate"], m["exact_match"], m["n"]) == (50.0, 50.0, 50.0, 2)
