"""The tagging masker (``model.head: tagger``): tags aligned to token offsets and back, a head that
attends both ways, training through the ordinary loop, the saved folder, and every place that loads a
PII model (mask, eval, serve) finding spans with it; exports that cannot carry it refuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import Killed, killed_after, tiny_causal
from loraforge.config import ConfigError, RunConfig
from loraforge.data.formats import Example
from loraforge.data.pii import generate
from loraforge.pii.spans import render
from loraforge.data.pii_tags import IGNORE, LABEL_IDS, LABELS, decode_spans, token_labels
from loraforge.data.templates import encode_tagged

TEXT = "Mail Ann Lee at ann@example.com today, Bob too."
SPANS = [{"start": 5, "end": 12, "type": "NAME"}, {"start": 16, "end": 31, "type": "EMAIL"},
         {"start": 39, "end": 42, "type": "NAME"}]


def offsets(tokenizer, text):
    return [tuple(o) for o in tokenizer(text, return_offsets_mapping=True)["offset_mapping"]]


# --- tags <-> spans ---------------------------------------------------------------------------------


def test_labels_round_trip_to_the_gold_spans(tiny_tokenizer):
    offs = offsets(tiny_tokenizer, TEXT)
    labels = token_labels(TEXT, SPANS, offs)
    assert len(labels) == len(offs)
    spans = decode_spans(TEXT, offs, labels)
    assert [(a, b, t) for a, b, t, _ in spans] == [(s["start"], s["end"], s["type"]) for s in SPANS]
    first = [LABELS[lab] for lab in labels if lab != IGNORE and LABELS[lab].startswith("B-")]
    assert first == ["B-NAME", "B-EMAIL", "B-NAME"]  # one B- per span, I- on the rest


def test_special_tokens_get_no_label_and_overlapping_spans_are_refused(tiny_tokenizer):
    offs = [(0, 0)] + offsets(tiny_tokenizer, TEXT)
    assert token_labels(TEXT, SPANS, offs)[0] == IGNORE
    with pytest.raises(ValueError, match="overlapping"):
        token_labels(TEXT, [{"start": 5, "end": 12, "type": "NAME"}, {"start": 8, "end": 20, "type": "EMAIL"}], offs)


def test_decoding_splits_on_B_and_on_a_type_change_and_scores_by_the_weakest_token():
    text = "Ann Bob x@y.z"
    offs = [(0, 0), (0, 3), (3, 7), (8, 13)]
    ids = [IGNORE, LABEL_IDS["B-NAME"], LABEL_IDS["B-NAME"], LABEL_IDS["I-EMAIL"]]
    spans = decode_spans(text, offs, ids, [1.0, 0.9, 0.6, 0.8])
    assert spans == [(0, 3, "NAME", 0.9), (4, 7, "NAME", 0.6), (8, 13, "EMAIL", 0.8)]
    ids[2] = LABEL_IDS["I-NAME"]
    assert decode_spans(text, offs, ids)[0][:2] == (0, 7)


def probs_for(labels: list[str], confidence: float = 0.9) -> list[list[float]]:
    rows = []
    for label in labels:
        row = [(1 - confidence) / (len(LABELS) - 1)] * len(LABELS)
        row[LABEL_IDS[label]] = confidence
        rows.append(row)
    return rows


def test_entities_are_read_whole_typed_by_their_mass_and_grown_to_whole_words():
    from loraforge.data.pii_tags import decode_entities

    text = "card 4111 1111 1111 1111 ok, Ann Lee"
    offs = [(0, 4), (4, 6), (6, 9), (9, 10), (10, 14), (14, 19), (19, 24), (24, 27), (27, 28), (28, 32), (32, 36)]
    labels = ["O", "O", "B-CREDIT_CARD", "I-CREDIT_CARD", "I-PHONE", "I-CREDIT_CARD", "I-CREDIT_CARD", "O", "O",
              "B-NAME", "B-NAME"]
    spans = decode_entities(text, offs, probs_for(labels))
    # token by token this is card|phone|card pieces, and "4111" starts one token late ("41" untagged)
    assert [(a, b, t) for a, b, t, _ in spans] == [(5, 24, "CREDIT_CARD"), (29, 32, "NAME"), (33, 36, "NAME")]
    assert decode_entities(text, offs, probs_for(labels), bias=-10) == []  # O wins everywhere
    ones = probs_for(["I-NAME"] * len(offs))  # I- all along: one entity, no split at word starts
    assert [(a, b) for a, b, *_ in decode_entities(text, offs, ones)] == [(0, 36)]


def test_growth_crosses_a_types_separators_but_not_into_a_spaceless_script_and_touching_pieces_join():
    """Why: a tagger unsure of one token inside ``223.212.28.30`` or ``18/05/2000`` gave two pieces of
    two types; growth to whole letters-and-digits words swallowed ``手机号`` into a phone number."""
    from loraforge.data.pii_tags import decode_entities

    def read(text, pieces):  # pieces: (substring, label); the rest of the text is one O token each
        offs, labels, pos = [], [], 0
        for sub, label in pieces:
            i = text.index(sub, pos)
            if i > pos:
                offs.append((pos, i)), labels.append("O")
            offs.append((i, i + len(sub))), labels.append(label)
            pos = i + len(sub)
        if pos < len(text):
            offs.append((pos, len(text))), labels.append("O")
        return [(text[a:b], t) for a, b, t, _ in decode_entities(text, offs, probs_for(labels))]

    assert read("from 223.212.28.30 today", [("212.28", "B-IP_ADDRESS"), (".", "O"), ("30", "B-IP_ADDRESS")]) == [
        ("223.212.28.30", "IP_ADDRESS")]
    assert read("born 18/05/2000.", [("18/", "B-IP_ADDRESS"), ("05/20", "B-DATE_OF_BIRTH"),
                                     ("00", "I-DATE_OF_BIRTH")]) == [("18/05/2000", "DATE_OF_BIRTH")]
    assert read("born 18/05/2000.", [("8/05", "B-DATE_OF_BIRTH")]) == [("18/05/2000", "DATE_OF_BIRTH")]
    assert read("手机号15300695752，谢谢", [("15300695752", "B-PHONE")]) == [("15300695752", "PHONE")]
    assert read("我叫许欣，", [("许欣", "B-NAME")]) == [("许欣", "NAME")]
    assert read("Karl-Ludwig Meyer", [("Karl", "B-NAME"), ("Ludwig", "B-NAME"), ("Meyer", "I-NAME")]) == [
        ("Karl-Ludwig Meyer", "NAME")]
    # a B- after a space still starts a new value; one after punctuation inside a word does not
    assert read("Ann Lee", [("Ann", "B-NAME"), ("Lee", "B-NAME")]) == [("Ann", "NAME"), ("Lee", "NAME")]


def test_examples_without_spans_are_labelled_from_their_masked_target(tiny_tokenizer):
    masked = "Mail [NAME] at [EMAIL] today, [NAME] too."
    with_spans = encode_tagged(tiny_tokenizer, [Example(TEXT, masked, meta={"spans": SPANS})], 64)[0]
    from_target = encode_tagged(tiny_tokenizer, [Example(TEXT, masked)], 64)[0]
    assert with_spans.labels == from_target.labels and not with_spans.too_long
    assert encode_tagged(tiny_tokenizer, [Example(TEXT, masked)], 5)[0].too_long


# --- the model --------------------------------------------------------------------------------------


def test_a_bidirectional_tagger_reads_the_words_after_a_token():
    from loraforge.models.tagger import build_tagger

    ids = torch.tensor([[5, 6, 7, 8, 9]])
    changed = ids.clone()
    changed[0, 4] = 20
    for bidirectional in (True, False):
        tagger = build_tagger(tiny_causal("gemma3", seed=1), LABELS, bidirectional)
        torch.nn.init.normal_(tagger.score.weight)
        with torch.no_grad():
            a, b = (tagger(input_ids=x, attention_mask=torch.ones_like(x)).logits for x in (ids, changed))
        assert a.shape == (1, 5, len(LABELS))
        assert torch.allclose(a[0, :4], b[0, :4]) is not bidirectional  # token 0..3 see token 4 only both ways


def test_a_lookahead_head_reads_the_next_tokens_and_never_the_padding():
    from loraforge.models.tagger import build_tagger, with_lookahead

    h = torch.arange(1, 9, dtype=torch.float32).reshape(1, 4, 2)  # 4 positions, hidden 2
    out = with_lookahead(h, 2, torch.tensor([[1, 1, 1, 0]]))
    assert out.shape == (1, 4, 6)
    assert out[0, 0].tolist() == [1, 2, 3, 4, 5, 6] and out[0, 1].tolist() == [3, 4, 5, 6, 0, 0]  # pad reads 0
    assert out[0, 3].tolist() == [0] * 6 and with_lookahead(h, 0) is h

    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    changed = ids.clone()
    changed[0, 4] = 20
    for k in (0, 1, 2):
        tagger = build_tagger(tiny_causal("gemma3", seed=1), LABELS, bidirectional=False, lookahead=k)
        torch.nn.init.normal_(tagger.score.weight)
        with torch.no_grad():
            a, b = (tagger(input_ids=x, attention_mask=torch.ones_like(x)).logits for x in (ids, changed))
        assert a.shape == (1, 6, len(LABELS)) and tagger.meta()["lookahead"] == k
        # a left-to-right stack: token i sees token 4 only through the head, i.e. when i >= 4 - k
        assert [torch.allclose(a[0, i], b[0, i]) for i in range(6)] == [i < 4 - k for i in range(6)]
        # padding a text on the right (a batch with a longer one) changes none of its logits
        padded = torch.cat([ids[:, :4], torch.tensor([[0, 0]])], dim=1)
        mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
        with torch.no_grad():
            alone = tagger(input_ids=ids[:, :4], attention_mask=torch.ones(1, 4, dtype=torch.long)).logits
            batched = tagger(input_ids=padded, attention_mask=mask).logits
        assert torch.allclose(alone[0], batched[0, :4], atol=1e-5)


def test_bidirectional_is_refused_where_the_architecture_has_none():
    from loraforge.models.tagger import build_tagger

    with pytest.raises(ConfigError, match="bidirectional"):
        build_tagger(tiny_causal("llama"), LABELS, bidirectional=True)
    assert build_tagger(tiny_causal("llama"), LABELS).bidirectional is False  # auto: causal there


def test_config_refuses_a_tagger_outside_one_pii_task():
    from loraforge.config import load_config

    with pytest.raises(ConfigError, match=r"model.head=tagger: data.task must be pii"):
        load_config(None, ["model.head=tagger", "data.task=translate"])
    with pytest.raises(ConfigError, match=r"adapter.method must be lora or dora"):
        load_config(None, ["model.head=tagger", "data.task=pii", "adapter.method=ia3"])
    assert load_config(None, ["model.head=tagger", "data.task=pii"]).model.head == "tagger"
    for key in ("model.bidirectional=true", "model.tagger_lookahead=2"):
        with pytest.raises(ConfigError, match=r"model.bidirectional and model.tagger_lookahead are read only"):
            load_config(None, [key])
    with pytest.raises(ConfigError, match="tagger_lookahead"):
        load_config(None, ["model.head=tagger", "data.task=pii", "model.tagger_lookahead=9"])


def test_data_check_shows_a_tagger_config_the_text_alone_with_each_value_and_its_type(tiny_model_dir, tmp_path):
    """What the tagger trains on (encode_tagged), not a prompt and a masked copy."""
    import io

    from loraforge.workflows.inspect import check_data

    record = {"id": "r1", "text": "Mail Ann Lee at ann@x.org today", "masked": "Mail [NAME] at [EMAIL] today",
              "spans": [{"start": 5, "end": 12, "type": "NAME"}, {"start": 16, "end": 25, "type": "EMAIL"}]}
    (tmp_path / "train.jsonl").write_text(json.dumps(record) + "\n")
    cfg = RunConfig.model_validate({"model": {"name": str(tiny_model_dir), "head": "tagger"},
                                    "data": {"task": "pii", "train": str(tmp_path / "train.jsonl"), "dev": None,
                                             "test": None}})
    out = io.StringIO()
    assert check_data(cfg, n=1, out=out)
    shown = out.getvalue()
    assert "Mail ⟦Ann Lee⟧<NAME> at⟦ ann@x.org⟧<EMAIL> today" in shown  # the tokens as tagged: no prompt, no copy
    assert "[NAME]" not in shown and "OK: marked tokens" in shown


# --- trained, saved, loaded, used -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tagger_run(tmp_path_factory, tiny_model_dir):
    """A tiny tagger trained by ``train_run`` on synthetic PII records."""
    from loraforge.workflows.train import train_run

    root = tmp_path_factory.mktemp("tagger")
    rows = [r for r in generate(120, seed=3, split="train") if len(r["text"]) < 300][:48]
    assert len(rows) == 48
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:40]))
    (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[40:44]))
    (root / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[44:48]))
    cfg = RunConfig.model_validate({
        "model": {"name": str(tiny_model_dir), "dtype": "fp32", "head": "tagger"},
        "data": {"task": "pii", "train": str(root / "train.jsonl"), "test": str(root / "test.jsonl"), "dev": str(root / "dev.jsonl"),
                 "max_length": 512},
        "adapter": {"method": "lora", "r": 4, "alpha": 8},
        "train": {"steps": 12, "batch_size": 4, "lr": 1e-2, "warmup_steps": 0, "eval_every": 0, "save_every": 0},
        "eval": {"max_examples": 4},
        "output": {"dir": str(root / "run")}})
    return train_run(cfg, progress=False), rows[40:44]


def test_training_lowers_the_tag_loss_and_saves_head_and_labels(tagger_run):
    run, _ = tagger_run
    history = [r["loss"] for r in run.history() if "loss" in r]
    assert sum(history[-3:]) < sum(history[:3])
    meta = json.loads((run.adapter_dir / "tagger.json").read_text())
    assert meta == {"labels": list(LABELS), "bidirectional": False, "lookahead": 0}  # left to right, no lookahead
    from safetensors import safe_open

    with safe_open(str(run.adapter_dir / "adapter_model.safetensors"), "pt") as f:
        assert any(k.endswith("score.weight") for k in f.keys())  # the head travels with the adapter
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert {"leak_rate", "typed_f1", "faithfulness"} <= set(metrics["after"])
    assert metrics["after"]["faithfulness"] > 0 and metrics["before"] is None


def test_a_loaded_tagger_finds_the_spans_the_trained_one_did(tagger_run):
    from loraforge.eval.inference import load_for_inference
    from loraforge.pii import Masker, MaskOptions
    from loraforge.workflows.mask import build_masker

    run, rows = tagger_run
    cfg = run.config()
    cfg.model.dtype = "fp32"
    loaded, model = load_for_inference(cfg, str(run.path))
    assert getattr(model, "is_token_tagger", False)
    texts = [r["text"] for r in rows]
    masker = build_masker(adapter=str(run.path), merge="model", bias=0.0)
    assert type(masker.model).__name__ == "TagFinder"
    direct = Masker.from_model(model, loaded.tokenizer, cfg.data, MaskOptions(merge="model"), bias=0.0)
    assert masker.find_spans(texts) == direct.find_spans(texts)
    # a memo reads the model once and decodes each bias from the same probabilities, as a fresh pass would
    calls = []
    handle = model.register_forward_pre_hook(lambda *a: calls.append(1))
    memo_masker = build_masker(adapter=str(run.path), merge="model", bias=0.0)
    memo_masker.model.model.register_forward_pre_hook(lambda *a: calls.append(1))
    memo_masker.model.memo = {}
    for bias in (-2.0, 0.0, 3.0):
        memo_masker.model.bias = direct.model.bias = bias
        assert memo_masker.find_spans(texts) == direct.find_spans(texts)
    handle.remove()
    assert len(calls) == 3 + 1  # three fresh passes of `direct`, one of the memo's
    # faithful whatever the bias: the output is the input with spans replaced, nothing else
    for bias, expect in ((-1e4, "none"), (1e4, "all")):
        masker.model.bias = bias
        for text, result in zip(texts, masker.mask(texts)):
            assert render(text, result.spans) == result.text
            covered = sum(s.end - s.start for s in result.spans)
            if expect == "none":
                assert result.spans == [] and result.text == text
            else:
                assert covered >= len("".join(text.split())) * 0.9  # nearly every non-space character masked


def test_exports_that_cannot_carry_a_tagger_refuse_it(tagger_run, tmp_path):
    from loraforge.export.run import ExportError, check_target, read_run

    run, _ = tagger_run
    info = read_run(run.path)
    for fmt in ("merged", "gguf", "oci"):
        with pytest.raises(ExportError, match="PII tagger"):
            check_target(info, fmt)
    check_target(info, "adapter")


def test_serve_masks_with_a_tagger_and_refuses_chat_with_it(tagger_run, tiny_model_dir):
    from fastapi.testclient import TestClient

    from loraforge.serve.app import build_app

    run, rows = tagger_run
    app = build_app(str(tiny_model_dir), [f"tags={run.path}"], dtype="fp32")
    try:
        with TestClient(app) as client:
            r = client.post("/v1/mask", json={"text": rows[0]["text"], "merge": "model", "bias": 50})
            assert r.status_code == 200, r.text
            assert (r.json()["engine"], r.json()["model"]) == ("model", "tags")
            assert r.json()["data"][0]["spans"]  # bias 50: everything is personal data
            r = client.post("/v1/chat/completions", json={"model": "tags", "max_tokens": 4,
                                                         "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 400 and "PII tagger" in r.text
            r = client.post("/v1/chat/completions", json={"model": "base", "max_tokens": 2,
                                                         "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200, r.text  # the base model still chats
    finally:
        app.state.engine.close()


def test_the_decoding_bench_scores_both_decodings_on_dev_at_each_bias(tagger_run, tmp_path):
    from loraforge.bench.pii_tag_decoding import main

    run, _ = tagger_run
    main([str(run.path), "--biases=-50,50", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "pii-tag-decoding.json").read_text())
    dev = run.path.parent / "dev.jsonl"
    assert results["split"] == str(dev) and results["n"] == len(dev.read_text().splitlines())  # dev, never test
    got = {(r["decoding"], r["bias"]): r["model"] for r in results["rows"]}
    assert set(got) == {(d, b) for d in ("token", "entity") for b in (-50.0, 50.0)}
    for decoding in ("token", "entity"):
        assert got[(decoding, -50.0)]["leak_rate"] == 100.0 and got[(decoding, -50.0)]["over_masking"] == 0.0
        assert got[(decoding, 50.0)]["leak_rate"] == 0.0
    assert "python -m loraforge.bench.pii_tag_decoding" in (tmp_path / "pii-tag-decoding.md").read_text()


def test_resume_in_the_middle_of_a_tagger_run_gives_the_same_adapter_and_head(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    from loraforge.config import load_config
    from loraforge.workflows.train import train_run

    rows = [r for r in generate(60, seed=4, split="train") if len(r["text"]) < 300][:20]
    assert len(rows) == 20
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def config(out):
        return load_config(None, [f"model.name={tiny_model_dir}", "model.dtype=fp32", "model.head=tagger",
                                  "data.task=pii", f"data.train={data}", "data.dev=null", "data.test=null",
                                  "data.max_length=512", "adapter.r=4", "adapter.alpha=8", "train.steps=8",
                                  "train.batch_size=4", "train.lr=1e-2", "train.save_every=3", "train.eval_every=0",
                                  "model.tagger_lookahead=1", f"output.dir={out}"])

    ref = train_run(config(tmp_path / "ref"), progress=False)

    with killed_after(5), pytest.raises(Killed):
        train_run(config(tmp_path / "run"), progress=False)
    assert (tmp_path / "run" / "checkpoints" / "step-000003").exists()
    run = train_run(config(tmp_path / "run"), resume=True, progress=False)
    want = load_file(str(ref.adapter_dir / "adapter_model.safetensors"))
    got = load_file(str(run.adapter_dir / "adapter_model.safetensors"))
    assert want.keys() == got.keys() and any(k.endswith("score.weight") for k in got)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-7)
    # the lookahead head travels with the adapter and is rebuilt on load
    from loraforge.eval.inference import load_for_inference
    from loraforge.models.tagger import TokenTagger

    assert json.loads((run.adapter_dir / "tagger.json").read_text())["lookahead"] == 1
    _, model = load_for_inference(run.config(), str(run.path))
    tagger = next(m for m in model.modules() if isinstance(m, TokenTagger))
    assert tagger.lookahead == 1 and tagger.score.in_features == 2 * tagger.config.hidden_size
    score = next(v for k, v in got.items() if k.endswith("score.weight"))
    torch.testing.assert_close(tagger.score.weight.detach().float(), score.float())


def test_the_held_out_contexts_bench_trains_each_variant_and_scores_only_contexts_it_never_trained_on(
        tiny_model_dir, tmp_path):
    import yaml

    from loraforge.bench.pii_contexts import held_out_contexts, main

    held = held_out_contexts(12, 7)
    assert held == held_out_contexts(12, 7) != held_out_contexts(12, 8) and len(held) == 12
    config = tmp_path / "tagger.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"name": str(tiny_model_dir), "dtype": "fp32", "head": "tagger"},
        "data": {"task": "pii", "max_length": 512},
        "adapter": {"method": "lora", "r": 4, "alpha": 8},
        "train": {"steps": 2, "batch_size": 2, "warmup_steps": 0, "eval_every": 0, "save_every": 0},
        "eval": {"before": False}}))
    main(["--config", str(config), "--records-share", "0,0.5", "--n-train", "24", "--n-heldout", "6",
          "--biases=-50,50", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")])
    results = json.loads((tmp_path / "out" / "pii-contexts.json").read_text())
    assert results["held_out_contexts"] == held and [v["records_share"] for v in results["variants"]] == [0, 0.5]
    for v in results["variants"]:
        root = Path(v["run"]).parent
        contexts = lambda name: {json.loads(line)["template"].split("/")[0] for line in (root / name).read_text().splitlines()}  # noqa: E731
        assert contexts("heldout.jsonl") <= set(held) and not contexts("train.jsonl") & set(held)
        by_bias = {r["bias"]: r for r in v["rows"]}
        assert by_bias[50.0]["leak_rate"] == 0.0 and by_bias[50.0]["over_masking"] > by_bias[-50.0]["over_masking"]
    assert "records" in {json.loads(line)["template"].split("/")[0]
                         for line in (tmp_path / "work" / "split7-records0.5" / "train.jsonl").read_text().splitlines()}
    assert "python -m loraforge.bench.pii_contexts" in (tmp_path / "out" / "pii-contexts.md").read_text()
    # --reuse scores the same runs at other biases without training or rebuilding the data again
    adapters = {v["run"]: (Path(v["run"]) / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns
                for v in results["variants"]}
    heldout = (tmp_path / "work" / "split7-records0" / "heldout.jsonl").read_text()
    main(["--config", str(config), "--records-share", "0,0.5", "--n-train", "24", "--n-heldout", "6",
          "--biases=50", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--name", "again", "--reuse"])
    again = json.loads((tmp_path / "out" / "again.json").read_text())
    assert {v["run"]: (Path(v["run"]) / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns
            for v in again["variants"]} == adapters
    assert (tmp_path / "work" / "split7-records0" / "heldout.jsonl").read_text() == heldout
    assert [v["rows"] for v in again["variants"]] == [[r for r in v["rows"] if r["bias"] == 50.0]
                                                       for v in results["variants"]]
    assert f"--records-share 0,0.5 --biases=50 --work {tmp_path / 'work'}`" in (tmp_path / "out" / "again.md").read_text()


def test_the_error_report_reads_each_text_once_for_a_whole_curve(tagger_run, tmp_path, monkeypatch):
    """bench.pii_errors --curve: the tagger reads the set once; each bias, the run's own included, decodes the
    stored probabilities, so the run's own row is the curve's point at its bias, and nothing is timed."""
    import loraforge.models.tagger as tagger_module
    from loraforge.bench.pii_errors import KEYS, run as pii_errors

    cases = tmp_path / "cases.txt"
    cases.write_text("=== c-01 chat\nHi ⟦NAME|Maria Lopez⟧, call me on ⟦PHONE|+44 7700 900123⟧.\n\n"
                     "=== c-02 log\ndeploy ok, version 1.2.3 on node-7\n\n"
                     "=== c-03 mail\nFrom: ⟦EMAIL|j.okafor@example.org⟧\nThanks, ⟦NAME|Jide⟧\n")
    read, real = [], tagger_module.tag_probabilities
    monkeypatch.setattr(tagger_module, "tag_probabilities", lambda m, t, texts, b: read.extend(texts) or real(m, t, texts, b))
    run, _ = tagger_run
    results, _ = pii_errors(str(run.path), str(cases), None, False, curve=[-1.0, 0.0, 1.0])
    assert sorted(read) == sorted(set(read)) and len(read) == 3
    assert results["texts_per_s"] is None and [p["bias"] for p in results["curve"]] == [-1.0, 0.0, 1.0]
    own = next(p for p in results["curve"] if p["bias"] == results["bias"])
    assert {k: own[k] for k in KEYS} == results["scores"]
    plain, _ = pii_errors(str(run.path), str(cases), None, False)
    assert len(read) == 6 and plain["scores"] == results["scores"] and plain["texts_per_s"] > 0
