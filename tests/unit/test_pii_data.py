"""PII data: the synthetic generator (spans, determinism, negatives, template split, locales),
the ai4privacy importer on a hand-made file, and loading through the generic loaders."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from loraforge.cli import main
from loraforge.data.formats import DataError, load_examples
from loraforge.data.pii import apply_spans, build_packaged, generate, write_jsonl
from loraforge.data.pii_import import convert_mask, import_ai4privacy
from loraforge.data.pii_templates import PLACEHOLDER_TYPES, TEMPLATES

FIXTURES = Path(__file__).parent.parent / "fixtures" / "pii"


@pytest.fixture(scope="module")
def records() -> dict[str, list[dict]]:
    return {split: generate(400, seed=3, split=split) for split in ("train", "test")}


@pytest.mark.parametrize("split", ["train", "test"])
def test_spans_match_text_and_masked_exactly(records, split):
    for r in records[split]:
        last_end = 0
        for s in r["spans"]:
            assert r["text"][s["start"]:s["end"]] == s["value"] != ""
            assert s["type"] in PLACEHOLDER_TYPES
            assert s["start"] >= last_end  # sorted, never overlapping
            last_end = s["end"]
        assert apply_spans(r["text"], r["spans"]) == r["masked"]
        assert r["family"] == split


def test_deterministic_for_a_seed(tmp_path):
    a, b = generate(150, seed=11), generate(150, seed=11)
    assert a == b
    assert generate(150, seed=12) != a
    p1, p2 = write_jsonl(a, tmp_path / "a.jsonl.gz"), write_jsonl(b, tmp_path / "b.jsonl.gz")
    assert p1.read_bytes() == p2.read_bytes()  # byte-identical files, not just equal records


def test_deterministic_across_processes():
    """Python salts str hashes per process; Faker data built from sets must not leak that in."""
    code = ("import hashlib, json; from loraforge.data.pii import generate; "
            "print(hashlib.sha256(json.dumps(generate(600, 0)).encode()).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed},
                              capture_output=True, text=True, check=True).stdout for seed in ("1", "2")}
    assert len(digests) == 1


@pytest.mark.parametrize("split", ["train", "test"])
def test_hard_negatives_are_at_least_a_fifth_and_untouched(records, split):
    negatives = [r for r in records[split] if not r["spans"]]
    assert len(negatives) >= 0.2 * len(records[split])
    assert all(r["text"] == r["masked"] for r in negatives)
    texts = "\n".join(r["text"] for r in negatives)
    assert re.search(r"\b\d{1,2}\.\d{1,2}\.\d{1,2}\.\d{1,2}\b", texts)  # IP-shaped version numbers
    assert re.search(r"\[[A-Z_]+\]|<REDACTED>|\*\*\*|<email>|XXX-XX-XXXX", texts)  # existing placeholders
    # decoys inside records that do hold PII too: public companies and products stay
    positives = [r for r in records[split] if r["spans"]]
    assert any(c in r["masked"] for r in positives for c in ("Google", "SAP", "Kubernetes", "Redis", "Stripe", "nginx"))


def test_train_and_test_template_families_are_disjoint(records):
    train_t = {r["template"] for r in records["train"]}
    test_t = {r["template"] for r in records["test"]}
    assert train_t and test_t and not train_t & test_t
    assert {t.name for t in TEMPLATES if t.split == "test"} >= test_t
    assert len({t.split("/")[0] for t in test_t}) >= 5  # the test set spans many contexts
    assert not {r["text"] for r in records["train"]} & {r["text"] for r in records["test"]}


def test_many_locales_and_scripts(records):
    rs = records["train"] + records["test"]
    assert len({r["locale"] for r in rs}) >= 15
    values = "".join(s["value"] for r in rs for s in r["spans"] if s["type"] in ("NAME", "ADDRESS"))
    for script in (r"[\u4e00-\u9fff]", r"[\u0400-\u04ff]", r"[\u0370-\u03ff]"):  # Han, Cyrillic, Greek
        assert re.search(script, values)
    assert {s["type"] for r in rs for s in r["spans"]} == set(PLACEHOLDER_TYPES)


def test_records_load_as_examples(tmp_path, records):
    path = write_jsonl(records["test"][:20], tmp_path / "pii.jsonl")
    examples = load_examples(str(path))
    assert [(e.source, e.target, e.id) for e in examples] == [(r["text"], r["masked"], r["id"]) for r in records["test"][:20]]
    assert examples[0].meta["spans"] == records["test"][0]["spans"]


def test_packaged_splits_load_and_unknown_split_names_the_available_ones():
    test = load_examples("pii:test", limit=5)
    assert len(test) == 5 and all(e.meta["family"] == "test" for e in test)
    with pytest.raises(DataError, match="pii:train"):
        load_examples("pii:nope")


def test_build_packaged_keeps_dev_out_of_train(tmp_path):
    counts = build_packaged(tmp_path, n_train=60, n_dev=20, n_test=20, seed=5)
    read = {s: [json.loads(line) for line in gzip.decompress((tmp_path / f"{s}.jsonl.gz").read_bytes()).splitlines()]
            for s in ("train", "dev", "test")}
    assert counts == {s: len(v) for s, v in read.items()}
    assert not {r["text"] for r in read["train"]} & {r["text"] for r in read["dev"]}
    assert {r["family"] for r in read["test"]} == {"test"}


def test_a_rebuild_with_no_test_records_leaves_the_test_split_untouched(tmp_path, capsys):
    """--n-test 0: train and dev are rewritten, the existing test file keeps its bytes."""
    (tmp_path / "test.jsonl.gz").write_bytes(b"the shipped test split")
    args = ["data", "pii", "--out-dir", str(tmp_path), "--n", "30", "--n-dev", "10", "--n-test", "0", "--seed", "3"]
    assert main(args) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"train", "dev"}
    assert (tmp_path / "test.jsonl.gz").read_bytes() == b"the shipped test split"
    from loraforge.data.pii_cases import training_records

    assert gzip.decompress((tmp_path / "train.jsonl.gz").read_bytes()).count(b"\n") == 30 + len(training_records())


def test_a_rebuild_draws_records_at_the_packaged_splits_share(tmp_path):
    """`data pii --out-dir` without --records-share makes the same mix as the shipped pii:train."""
    from loraforge.data.formats import read_records, resolve_spec

    def share(records):  # of the generated records (the hand-written training cases come on top)
        generated = [r for r in records if r["family"] == "train"]
        return sum(r["template"].startswith("records/") for r in generated) / len(generated)

    assert main(["data", "pii", "--out-dir", str(tmp_path), "--n", "200", "--n-dev", "10", "--n-test", "0"]) == 0
    rebuilt = [r for _, r in read_records(tmp_path / "train.jsonl.gz")]
    shipped = [r for _, r in read_records(resolve_spec("pii:train"))]
    assert 0.15 < share(rebuilt) < 0.35 and 0.2 < share(shipped) < 0.3


def test_cli_writes_one_split(tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    assert main(["data", "pii", "--n", "12", "--seed", "2", "--split", "test", "--out", str(out)]) == 0
    rs = [json.loads(line) for line in out.read_text().splitlines()]
    assert rs == generate(12, seed=2, split="test")
    assert json.loads(capsys.readouterr().out)["records"] == 12


# --- ai4privacy import ---------------------------------------------------------------------------


def test_import_ai4privacy_maps_labels_to_our_placeholders():
    records, report = import_ai4privacy(FIXTURES / "ai4privacy.jsonl")
    masked = [r["masked"] for r in records]
    assert masked == [
        "My name is [NAME] and my email is [EMAIL].",
        # street + number + city + postcode is one address; a city alone, a job title and a date stay
        "Ship it to [ADDRESS]. I work in Paris as a nurse since 2021-03-01.",
        # a title next to a name is part of it; the mask was stored as JSON text
        "[NAME] (born [DATE_OF_BIRTH]), Tel. [PHONE], SSN [SSN], login [USERNAME] / pw [PASSWORD] from [IP_ADDRESS].",
        # the mask was stored as a Python repr; FIRSTNAME_1 is FIRSTNAME
        "Pay with [CREDIT_CARD] or IBAN [IBAN], thanks [NAME].",
    ]
    for r in records:
        assert apply_spans(r["text"], r["spans"]) == r["masked"]
        assert all(r["text"][s["start"]:s["end"]] == s["value"] for s in r["spans"])
    assert records[0]["id"] == "ai4privacy-1"
    assert report["labels_left_unmasked"] == {"CITY": 1, "JOBTITLE": 1, "DATE": 1}
    assert report["entities"]["NAME"] == 3 and report["records"] == 4


def test_import_language_filter_and_cli(tmp_path):
    records, _ = import_ai4privacy(FIXTURES / "ai4privacy.jsonl", language="de")
    assert [r["id"] for r in records] == ["ai4privacy-3"]
    out = tmp_path / "imported.jsonl.gz"
    assert main(["data", "pii", "--import", "ai4privacy", str(FIXTURES / "ai4privacy.jsonl"), "--out", str(out)]) == 0
    assert len(load_examples(str(out))) == 4
    assert main(["data", "pii", "--import", "presidio", str(FIXTURES / "ai4privacy.jsonl"), "--out", str(out)]) == 2


def test_import_rejects_bad_rows_naming_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"source_text": "Hi Ann", "privacy_mask": []}) + "\n"
                   + json.dumps({"source_text": "Hi Ann", "privacy_mask": [{"start": 3, "end": 6, "label": "FIRSTNAME",
                                                                            "value": "Bob"}]}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: .*does not match"):
        import_ai4privacy(bad)
    bad.write_text(json.dumps({"text": "Hi"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: expected fields 'source_text' and 'privacy_mask'"):
        import_ai4privacy(bad)


def test_convert_mask_keeps_separate_names_apart_and_drops_overlaps():
    text = "Ann Lee, Bob Day"
    mask = [{"start": 0, "end": 3, "label": "FIRSTNAME"}, {"start": 4, "end": 7, "label": "LASTNAME"},
            {"start": 4, "end": 6, "label": "LASTNAME"},  # overlaps the previous one: ignored
            {"start": 9, "end": 12, "label": "FIRSTNAME"}, {"start": 13, "end": 16, "label": "LASTNAME"}]
    spans, kept = convert_mask(text, mask)
    assert apply_spans(text, spans) == "[NAME], [NAME]"  # a comma between names separates two people
    assert not kept


def test_structured_records_are_valid_documents_of_their_format_with_exact_spans():
    """``pii_records``: random field schemas in eight formats and ten languages; every JSON/YAML/CSV
    record parses, its spans are exact, and the records without personal data come back unchanged."""
    import csv
    import io

    import yaml

    recs = generate(300, seed=4, split="train", records_share=1.0)
    assert all(r["template"].startswith("records/") for r in recs)
    formats = {r["template"].split("/")[1].split("-")[0] for r in recs}
    languages = {r["template"].split("-")[-1] for r in recs}
    assert len(formats) == 8 and len(languages) >= 8
    for r in recs:
        assert apply_spans(r["text"], r["spans"]) == r["masked"]
        fmt = r["template"].split("/")[1].split("-")[0]
        if fmt == "json":
            json.loads(r["text"])
        elif fmt == "yaml":
            assert isinstance(yaml.safe_load(r["text"]), dict)
        elif fmt == "csv":
            delimiter = max([",", ";", "\t"], key=r["text"].splitlines()[0].count)
            rows = list(csv.reader(io.StringIO(r["text"]), delimiter=delimiter))
            assert len({len(row) for row in rows}) == 1, r["id"]
    negatives = [r for r in recs if not r["spans"]]
    assert 0.15 * len(recs) <= len(negatives) <= 0.35 * len(recs)
    # labels in the language of the values: a Japanese name field is labelled in Japanese
    ja = [r for r in recs if r["template"].endswith("-ja") and any(s["type"] == "NAME" for s in r["spans"])]
    assert ja and all(r["locale"] == "ja_JP" for r in ja)


def test_records_are_a_share_of_the_train_family_only():
    train = generate(400, seed=2, split="train", records_share=0.25)
    share = sum(r["template"].startswith("records/") for r in train) / len(train)
    assert 0.15 < share < 0.35
    assert not any(r["template"].startswith("records/") for r in generate(200, seed=2, split="test"))
    assert not any(r["template"].startswith("records/") for r in generate(200, seed=2, split="train"))  # default


def test_later_template_generations_are_opt_in_and_never_move_a_held_out_split(tmp_path):
    """Templates added later (generation 2) are train-family only and enter training when asked for;
    a split seed of ``bench.pii_contexts`` draws its held-out contexts from generation 1 whatever is
    trained on, so the held-out rows stay the same."""
    from loraforge.bench.pii_contexts import build_data, held_out_contexts

    later = [t for t in TEMPLATES if t.generation > 1]
    assert later and all(t.split == "train" for t in later)
    first_contexts = {t.context for t in TEMPLATES if t.generation == 1}
    assert not {t.context for t in later} & first_contexts  # every later context is new
    held = held_out_contexts(12, 8)
    assert set(held) <= first_contexts
    templates = lambda path: {json.loads(line)["template"] for line in path.read_text().splitlines()}  # noqa: E731
    only_first = build_data(tmp_path / "g1", held, 0.0, 300, 20, 30)
    every = build_data(tmp_path / "all", held, 0.0, 300, 20, 30, generations=2)
    later_names = {t.name for t in later}
    assert not templates(only_first["train"]) & later_names and templates(every["train"]) & later_names
    assert only_first["heldout"].read_bytes() == every["heldout"].read_bytes()  # the same held-out rows
    assert not {r["template"] for r in generate(400, seed=3)} & later_names  # the default data: generation 1


def test_passport_numbers_are_id_numbers():
    recs = generate(40, seed=5, keep=lambda t: t.name == "visa/application", generations=2)
    passports = [s for r in recs for s in r["spans"] if s["type"] == "SSN"]
    assert len(passports) == 40 and all(re.fullmatch(r"[A-Z0-9]{8,9}", s["value"]) for s in passports)
    assert all(r["text"].splitlines()[3].startswith("Passport number: " + s["value"]) for r, s in zip(recs, passports))


def test_later_generation_records_have_exact_spans():
    for r in generate(200, seed=4, keep=lambda t: t.generation == 2, generations=2):
        assert all(r["text"][s["start"]:s["end"]] == s["value"] != "" for s in r["spans"])
        assert apply_spans(r["text"], r["spans"]) == r["masked"]


def test_held_out_context_runs_can_train_on_the_hand_written_cases_too(tmp_path):
    """``bench.pii_contexts --handwritten-repeat K``: train gains K copies of every hand-written training
    case; dev and the held-out rows stay as they were."""
    from loraforge.bench.pii_contexts import build_data, held_out_contexts
    from loraforge.data.pii_cases import training_cases

    held = held_out_contexts(12, 7)
    plain = build_data(tmp_path / "plain", held, 0.0, 60, 10, 12)
    with_cases = build_data(tmp_path / "hw", held, 0.0, 60, 10, 12, handwritten_repeat=2)
    rows = lambda path: [json.loads(line) for line in path.read_text().splitlines()]  # noqa: E731
    added = rows(with_cases["train"])[60:]
    assert rows(with_cases["train"])[:60] == rows(plain["train"])
    assert [r["text"] for r in added] == [r["text"] for r in training_cases()] * 2
    for name in ("dev", "heldout"):
        assert with_cases[name].read_bytes() == plain[name].read_bytes()
