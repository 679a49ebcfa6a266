"""The hand-written evaluation set: offsets hold their values, the shipped file is the annotated source."""

from __future__ import annotations

import pytest

from loraforge.data.formats import read_records
from loraforge.data.pii import apply_spans
from loraforge.pii.handwritten import folder, parse_cases

SHIPPED = [r for _, r in read_records(folder() / "eval.jsonl.gz")]


def test_shipped_file_is_the_annotated_source():
    assert SHIPPED == parse_cases((folder() / "cases.txt").read_text(encoding="utf-8"))


def test_offsets_hold_their_values_and_give_the_masked_text():
    for r in SHIPPED:
        for s in r["spans"]:
            assert r["text"][s["start"]:s["end"]] == s["value"], r["id"]
        assert apply_spans(r["text"], r["spans"]) == r["masked"], r["id"]


def test_size_and_mix():
    assert len(SHIPPED) >= 100
    assert sum(not r["spans"] for r in SHIPPED) >= 25
    assert len({r["template"] for r in SHIPPED}) >= 8  # emails, chats, tickets, logs, k8s, env, code, csv, ...


def test_kept_out_of_training():
    from loraforge.data.formats import resolve_spec

    train = {r["text"] for _, r in read_records(resolve_spec("pii:train"))}
    assert not train & {r["text"] for r in SHIPPED}
    assert not (folder().parent / "pii" / "eval.jsonl.gz").exists()  # not a split of the training folder


@pytest.mark.parametrize("bad,error", [
    ("=== a x\nhi ⟦PASSPORT|X1⟧", "unknown type 'PASSPORT'"),
    ("=== a x\nhi ⟦NAME| Bo⟧", "surrounding whitespace"),
    ("=== a x\nhi ⟦NAME|Bo", "unbalanced"),
    ("stray\n=== a x\nhi", "before the first"),
    ("=== a x\nhi\n=== a y\nho", "duplicate"),
])
def test_annotation_errors_are_caught(bad, error):
    with pytest.raises(ValueError, match=error):
        parse_cases(bad)


def _dev_cases() -> list[dict]:
    from pathlib import Path

    from loraforge.bench.pii_errors import DEV_FILES

    paths = [Path(__file__).resolve().parents[2] / name for name in DEV_FILES]
    return [r for path in paths for r in parse_cases(path.read_text(encoding="utf-8"), str(path))]


def test_development_set_is_apart_from_the_evaluation_set_and_training():
    """Rules are tuned on the development set; it shares no text with the evaluation set or pii:train."""
    from loraforge.data.formats import resolve_spec

    dev = _dev_cases()
    assert len(dev) >= 200 and sum(not r["spans"] for r in dev) >= 90
    assert len({r["id"] for r in dev}) == len(dev)  # the rounds' ids apart
    texts = {r["text"] for r in dev}
    assert not texts & {r["text"] for r in SHIPPED}
    assert not texts & {r["text"] for _, r in read_records(resolve_spec("pii:train"))}
    for r in dev:
        for s in r["spans"]:
            assert r["text"][s["start"]:s["end"]] == s["value"], r["id"]
    # no value either: a value shared with the evaluation set or the training texts was renamed before scoring
    from loraforge.data.pii_cases import training_cases

    values = {s["value"] for r in dev for s in r["spans"]}
    assert not values & {s["value"] for r in SHIPPED for s in r["spans"]}
    assert not values & {s["value"] for r in training_cases() for s in r["spans"]}


def test_errors_are_told_apart_by_kind():
    from loraforge.bench.pii_errors import describe, errors
    from loraforge.pii.spans import Span

    [rec] = parse_cases("=== a chat\n⟦NAME|Ann Lee⟧ (⟦PHONE|0711 2345⟧) met ⟦NAME|Bo⟧ at Acme on ⟦DATE_OF_BIRTH|1 May⟧")
    text = rec["text"]
    at = lambda s: (text.index(s), text.index(s) + len(s))  # noqa: E731
    found = [Span(*at("Ann"), "NAME"),                      # "Lee" left visible: a leak
             Span(*at("0711 2345"), "SSN"),                 # hidden, wrong type
             Span(*at("Bo at"), "NAME"),                    # hidden, right type, wrong bounds
             Span(*at("Acme"), "NAME"),                     # over no gold value
             Span(*at("1 May"), "DATE_OF_BIRTH")]           # right
    errs = errors(rec, found)
    assert [(e["kind"], e["type"]) for e in errs] == [("leak", "NAME"), ("type", "PHONE"), ("bounds", "NAME"),
                                                       ("over", "NAME")]
    assert describe(rec, errs[0]).startswith("pii-handwritten-a leak NAME: '⟦Ann Lee⟧ (0711 2345)")
    assert "-> NAME:'Ann' (model)" in describe(rec, errs[0])
    assert errs[-1]["found"] == [(*at("Acme"), "NAME", "model")]


def test_the_report_shows_the_curve_and_the_command_that_made_it():
    from loraforge.bench.pii_errors import KEYS, markdown

    point = lambda b, leak: {"bias": b, **{k: 0.0 for k in KEYS}, "leak_rate": leak}  # noqa: E731
    results = {"adapter": "runs/x", "cases": "c.txt", "bias": 0.0, "cpu": "cpu", "n": 2, "no_pii_cases": 1,
               "scores": {k: 1.0 for k in KEYS}, "errors": {"leak NAME": 1}, "curve": [point(-1, 2.5), point(1, 0.5)]}
    text = markdown(results)
    assert "| -1 | 2.5 |" in text and "| 1 | 0.5 |" in text
    assert "--bias 0 --curve=-1,1`" in text
    assert "--curve" not in markdown({**results, "curve": []})
    assert "--lone-min-score 0`" in markdown({**results, "curve": [], "lone_min_score": 0.0})
    assert "--lone-min-score" not in markdown({**results, "curve": [], "lone_min_score": 0.5})


def test_training_cases_are_valid_varied_and_apart_from_every_held_out_set():
    """The hand-written training cases (``datasets/pii-handwritten-train``): checksums hold, many kinds of
    text, about half without personal data, and no text or value shared with the evaluation set, the
    development set or pii:test (values were renamed where writers happened to pick the same)."""
    from loraforge.data.formats import resolve_spec
    from loraforge.data.pii_cases import training_cases
    from loraforge.eval.pii_baseline import iban_ok, luhn_ok

    cases = training_cases()
    assert len(cases) >= 800 and 0.4 <= sum(not r["spans"] for r in cases) / len(cases) <= 0.6
    assert len({r["template"] for r in cases}) >= 20
    for r in cases:
        for s in r["spans"]:
            assert r["text"][s["start"]:s["end"]] == s["value"], r["id"]
            if s["type"] == "CREDIT_CARD":
                assert luhn_ok("".join(c for c in s["value"] if c.isdigit())), (r["id"], s["value"])
            if s["type"] == "IBAN":
                assert iban_ok(s["value"]), (r["id"], s["value"])
    held = SHIPPED + _dev_cases() + [r for _, r in read_records(resolve_spec("pii:test"))]
    assert not {r["text"] for r in cases} & {r["text"] for r in held}
    assert not {s["value"] for r in cases for s in r["spans"]} & {s["value"] for r in held for s in r["spans"]}


def test_pii_train_holds_each_training_case_twice():
    """The shipped pii:train is the generated records plus ``HANDWRITTEN_REPEAT`` copies of the current
    cases (``python -m loraforge.pii.handwritten --train`` refreshes it after an edit)."""
    from loraforge.data.formats import resolve_spec
    from loraforge.data.pii_cases import HANDWRITTEN_REPEAT, TRAINING_FAMILY, training_records

    train = [r for _, r in read_records(resolve_spec("pii:train"))]
    assert [r for r in train if r["family"] == TRAINING_FAMILY] == training_records() and HANDWRITTEN_REPEAT == 2
    assert sum(r["family"] != TRAINING_FAMILY for r in train) == 4000


def test_refreshing_the_train_split_keeps_the_generated_records(tmp_path):
    from loraforge.data.pii import generate, refresh_training_split, write_jsonl
    from loraforge.data.pii_cases import training_records

    generated = generate(5, seed=1)
    path = write_jsonl(generated + training_records(1)[:3], tmp_path / "train.jsonl.gz")
    assert refresh_training_split(path, repeat=1) == {"generated": 5, "handwritten": len(training_records(1))}
    assert [r for _, r in read_records(path)] == generated + training_records(1)


def test_extra_case_files_join_the_training_cases_in_a_split_written_elsewhere(tmp_path):
    from loraforge.data.pii import generate, refresh_training_split, write_jsonl
    from loraforge.data.pii_cases import TRAINING_FAMILY, training_records

    generated = generate(3, seed=2)
    path = write_jsonl(generated, tmp_path / "train.jsonl.gz")
    before = path.read_bytes()
    (tmp_path / "round.txt").write_text("=== r1-01 email\nHi ⟦NAME|Ann Lee⟧, see you.\n", encoding="utf-8")
    out = tmp_path / "screen.jsonl.gz"
    counts = refresh_training_split(path, repeat=2, extra=(tmp_path / "round.txt",), out=out)
    assert counts == {"generated": 3, "handwritten": len(training_records(2)) + 2}
    assert path.read_bytes() == before  # the packaged split is left as it was
    records = [r for _, r in read_records(out)]
    added = [r for r in records if r["id"].startswith("pii-handwritten-r1-01#")]
    assert [r["id"][-2:] for r in added] == ["#0", "#1"] and {r["family"] for r in added} == {TRAINING_FAMILY}
    assert added[0]["spans"][0]["value"] == "Ann Lee" and records[:3] == generated


def test_no_copies_asked_reads_no_case_file_and_the_summary_counts_what_the_docs_quote(tmp_path):
    from loraforge.data.pii_cases import summary, training_cases, training_records

    (tmp_path / "part-x.txt").write_text("stray text before any header\n", encoding="utf-8")
    assert training_records(0, tmp_path) == []
    with pytest.raises(ValueError, match="before the first"):
        training_records(1, tmp_path)
    cases = parse_cases("=== a chat\n⟦NAME|Ann⟧ and ⟦NAME|Bo⟧ at ⟦EMAIL|a@b.io⟧\n=== b log\nok")
    assert summary(cases) == {"cases": 2, "without_pii": 1, "values": 3, "kinds": 2,
                              "by_type": {"NAME": 2, "EMAIL": 1}}
    assert summary(training_cases())["values"] == 8224  # the count the training folder's README gives


def test_cached_model_spans_replay_without_the_model_and_refuse_other_weights(tmp_path):
    """``pii_errors --spans-cache``: the model's spans are kept per text, a second run reads them without
    loading the model, and a file made with other weights or another bias is refused, not mixed."""
    from loraforge.bench.pii_errors import CachedFinder
    from loraforge.data.formats import DataError
    from loraforge.pii import Masker, MaskOptions
    from loraforge.pii.spans import Span

    adapter = tmp_path / "run" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_model.safetensors").write_bytes(b"weights one")
    calls = []

    class Model:
        def find_spans(self, texts):
            calls.append(list(texts))
            return [[Span(t.index("Ann"), t.index("Ann") + 3, "NAME", 0.9)] if "Ann" in t else [] for t in texts]

    def load():
        calls.append("load")
        return Model()

    texts = ["Ann wrote", "no one here", "Ann wrote"]
    cache = tmp_path / "spans.json.gz"
    first = CachedFinder(cache, str(tmp_path / "run"), 1.0, load)
    masked = Masker(first, MaskOptions(merge="union")).mask([t for t in texts])
    first.save()
    assert [m.text for m in masked] == ["[NAME] wrote", "no one here", "[NAME] wrote"]
    assert calls == ["load", ["Ann wrote", "no one here"]]  # each distinct text once

    def no_model():
        raise AssertionError("the model was loaded for cached texts")

    again = CachedFinder(cache, str(tmp_path / "run"), 1.0, no_model)
    assert again.find_spans(texts) == first.find_spans(texts)
    with pytest.raises(DataError, match="name another file"):
        CachedFinder(cache, str(tmp_path / "run"), 0.0, no_model)
    moved = tmp_path / "elsewhere"
    (tmp_path / "run").rename(moved)  # the run is not on this machine: the file's spans are replayed as they are
    assert CachedFinder(cache, str(tmp_path / "run"), 1.0, no_model).find_spans(texts) == first.find_spans(texts)
    with pytest.raises(AssertionError, match="was loaded"):
        CachedFinder(cache, str(tmp_path / "run"), 1.0, no_model).find_spans(["a text never tagged"])
    moved.rename(tmp_path / "run")
    (adapter / "adapter_model.safetensors").write_bytes(b"weights two")  # retrained under the same path
    with pytest.raises(DataError, match="name another file"):
        CachedFinder(cache, str(tmp_path / "run"), 1.0, no_model)


def test_pattern_agreement_counts_each_find_against_gold_and_the_model():
    from loraforge.bench.pii_errors import pattern_agreement
    from loraforge.pii import patterns as pat
    from loraforge.pii.spans import Span

    [person] = parse_cases("=== a chat\nmail ⟦EMAIL|ann.lee@mail.example⟧ or call 040 3861 2200")
    [shop] = parse_cases("=== b doc\nFiliale: hamburg@tischlerei.example")
    text = person["text"]
    at = text.index("ann.lee")
    model = [[Span(at, at + len("ann.lee@mail.example"), "EMAIL")], []]
    counts = pattern_agreement([person, shop], model, pat.select(None))
    assert counts == {"EMAIL over, alone in text": 1, "EMAIL over, patterns only": 1, "EMAIL real, model agrees": 1,
                      "PHONE over, patterns only": 1}
    # given the masker's final spans: the shop's mailbox, alone in its text, is the find the union dropped
    phone = text.index("040")
    masked = [[model[0][0], Span(phone, phone + len("040 3861 2200"), "PHONE")], []]
    dropped = {k: v for k, v in pattern_agreement([person, shop], model, pat.select(None), masked).items()
               if k.endswith("dropped")}
    assert dropped == {"EMAIL over, dropped": 1}


def test_gold_as_the_model_shows_what_the_rules_drop_and_add(tmp_path):
    """``pii_errors --adapter gold``: the annotation goes through the rules and patterns in place of a model, so a
    gold value the rules drop is a leak (here an organisation's phone, wrongly annotated as personal, which the
    organisation-line rule removes) and a pattern find the annotation lacks is an over (an unmarked email beside
    a person); a clean case scores perfectly. No model is loaded and nothing is timed."""
    from loraforge.bench.pii_errors import GOLD, run

    cases = tmp_path / "cases.txt"
    cases.write_text("=== clean chat\nMail from ⟦NAME|Ann Lee⟧: ⟦EMAIL|ann.lee@example.org⟧\n"
                     "=== org letter\nAcme Logistics GmbH, Hafenstraße 4, Tel. ⟦PHONE|+49 40 3345 7781⟧\n"
                     "=== unmarked email\n⟦NAME|Bo Chen⟧ wrote to bo.chen@example.org today\n", encoding="utf-8")
    results, lines = run(GOLD, str(cases), None, True)
    assert results["errors"] == {"leak PHONE": 1, "over EMAIL": 1}
    assert results["texts_per_s"] is None and results["bias"] is None
    assert any(line.startswith("pii-handwritten-org leak PHONE") for line in lines)
    with pytest.raises(ValueError, match="no bias to set or sweep"):
        run(GOLD, str(cases), None, False, curve=[0.0])
    with pytest.raises(ValueError, match="no bias to set or sweep"):
        run(GOLD, str(cases), 1.0, False)
