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
