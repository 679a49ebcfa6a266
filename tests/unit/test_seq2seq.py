"""Encoder-decoder models (Marian, mBART-50) through the same loading, encoding, training and CLI paths."""

import json

import pytest
import torch
from transformers import MarianMTModel, MarianTokenizer, MBartForConditionalGeneration

from loraforge.config import ConfigError, DataConfig, load_config
from loraforge.data.formats import Example, load_examples
from loraforge.data.templates import IGNORE, encode_examples, set_seq2seq_langs
from loraforge.models.load import ModelError, detect_family, load_model
from loraforge.train.batching import collate
from seq2seq_helpers import FIXTURE


def test_family_is_detected_from_the_config(tiny_seq2seq_dirs, tiny_model_dir):
    marian = load_model(str(tiny_seq2seq_dirs["marian"]))
    assert marian.family == "seq2seq" and isinstance(marian.model, MarianMTModel)
    assert isinstance(marian.tokenizer, MarianTokenizer)  # the opus-mt-en-zh tokenizer class, from our files
    mbart = load_model(str(tiny_seq2seq_dirs["mbart"]))
    assert mbart.family == "seq2seq" and isinstance(mbart.model, MBartForConditionalGeneration)
    assert load_model(str(tiny_model_dir)).family == "causal"
    assert detect_family(marian.model.config) == "seq2seq"
    with pytest.raises(ModelError, match="seq2seq model"):
        load_model(str(tiny_seq2seq_dirs["marian"]), family="causal")


def test_marian_source_to_encoder_target_to_labels(tiny_seq2seq_dirs):
    tok = load_model(str(tiny_seq2seq_dirs["marian"])).tokenizer
    enc = encode_examples(tok, [Example("Use kubectl.", "使用 kubectl。")], DataConfig(), "seq2seq")[0]
    assert tok.decode(enc.input_ids, skip_special_tokens=True) == "Use kubectl."
    assert tok.decode(enc.labels, skip_special_tokens=True) == "使用 kubectl。"
    assert enc.input_ids[-1] == enc.labels[-1] == tok.eos_token_id and IGNORE not in enc.labels
    prefixed = encode_examples(tok, [Example("Use kubectl.", "x")], DataConfig(task_prefix="translate "), "seq2seq")[0]
    assert tok.decode(prefixed.input_ids, skip_special_tokens=True) == "translate Use kubectl."  # T5-style prefix


def test_mbart_language_codes_and_forced_bos(tiny_seq2seq_dirs):
    loaded = load_model(str(tiny_seq2seq_dirs["mbart"]), dtype="fp32")
    tok, model = loaded.tokenizer, loaded.model
    en, zh = tok.lang_code_to_id["en_XX"], tok.lang_code_to_id["zh_CN"]
    enc = encode_examples(tok, [Example("A Pod.", "一个 Pod。")], DataConfig(src_lang="en", tgt_lang="zh"), "seq2seq")[0]
    assert enc.input_ids[0] == en and enc.input_ids[-1] == tok.eos_token_id  # mBART-50: [src code] text </s>
    assert enc.labels[0] == zh and enc.labels[-1] == tok.eos_token_id  # [tgt code] text </s>
    # the decoder sees </s> then the target code: exactly what generation with a forced BOS produces
    batch = collate([enc], tok.pad_token_id, "seq2seq")
    shifted = model.prepare_decoder_input_ids_from_labels(labels=batch["labels"])
    assert shifted[0, :2].tolist() == [model.config.decoder_start_token_id, zh]
    assert set_seq2seq_langs(tok, DataConfig(src_lang="en", tgt_lang="zh")) == zh
    out = model.generate(**tok(["A Pod."], return_tensors="pt"), forced_bos_token_id=zh, max_new_tokens=3,
                         do_sample=False)
    assert out[0, :2].tolist() == [model.config.decoder_start_token_id, zh]
    with pytest.raises(ConfigError, match="no such language code"):
        set_seq2seq_langs(tok, DataConfig(src_lang="en", tgt_lang="tlh"))


def test_seq2seq_loss_is_over_target_tokens(tiny_seq2seq_dirs):
    from loraforge.config import TrainConfig
    from loraforge.train.loop import TrainStep

    loaded = load_model(str(tiny_seq2seq_dirs["marian"]), dtype="fp32")
    enc = encode_examples(loaded.tokenizer, load_examples(FIXTURE, limit=3), DataConfig(), "seq2seq")
    batch = collate(enc, loaded.tokenizer.pad_token_id, "seq2seq")
    loss, n = TrainStep(loaded.model, "seq2seq", TrainConfig())(**batch)
    assert int(n) == sum(len(e.labels) for e in enc)  # padding is never a target
    with torch.no_grad():
        reference = loaded.model(**batch).loss  # transformers' own mean CE over the same labels
    assert float(loss) / int(n) == pytest.approx(float(reference), rel=1e-5)


def test_train_eval_translate_end_to_end(tiny_seq2seq_dirs, tmp_path, capsys):
    from loraforge.workflows import eval_run, train_run, translate_texts

    cfg = load_config(None, [f"model.name={tiny_seq2seq_dirs['mbart']}", f"data.train={FIXTURE}", f"data.dev={FIXTURE}",
                             f"data.test={FIXTURE}", "train.steps=8", "train.lr=3e-2", "train.batch_size=4",
                             "eval.max_examples=3",
                             "eval.max_new_tokens=6", "model.dtype=fp32", "adapter.method=adapter",
                             "adapter.bottleneck_size=8", f"output.dir={tmp_path / 'run'}"])
    run = train_run(cfg, progress=False)
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"bleu", "chrf", "ter"} <= set(metrics["after"]) and {"bleu", "chrf"} <= set(metrics["before"])
    assert metrics["train"]["trainable_params"] < metrics["train"]["total_params"]
    outputs = {k: [json.loads(x)["output"] for x in (run / f"outputs_{k}.jsonl").read_text().splitlines()]
               for k in ("before", "after")}
    assert outputs["after"] != outputs["before"], "the adapter must change the outputs, or the reload proves nothing"
    capsys.readouterr()
    again = eval_run(cfg, adapter=str(run), show_examples=True)
    assert again["chrf"] == pytest.approx(metrics["after"]["chrf"])  # reload gives the same outputs
    assert [json.loads(x)["output"] for x in capsys.readouterr().out.splitlines()] == outputs["after"]
    from loraforge.adapters import load_adapter

    loaded = load_model(cfg.model.name, dtype="fp32")
    enc = encode_examples(loaded.tokenizer, load_examples(FIXTURE, limit=3), cfg.data, "seq2seq")
    batch = collate(enc, loaded.tokenizer.pad_token_id, "seq2seq")
    with torch.no_grad():
        base = loaded.model(**batch).logits
        tuned = load_adapter(loaded.model, run)(**batch).logits
    # the up-projections start at zero, so equal logits would mean the trained weights never loaded
    assert not torch.equal(base, tuned)
    out = translate_texts(["A Pod is the smallest unit."], adapter=str(run), max_new_tokens=6)
    assert out == outputs["after"][:1]  # the first test example's source: translate gives what eval gave


def test_hub_id_without_a_hub_is_a_clear_error():
    """A hub id goes straight to from_pretrained (the same call as a local folder); offline it must say so."""
    import os
    import subprocess
    import sys

    code = ("from loraforge.models.load import ModelError, load_model\n"
            "try:\n    load_model('Helsinki-NLP/opus-mt-en-zh')\nexcept ModelError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}).stdout
    assert "cannot load model 'Helsinki-NLP/opus-mt-en-zh'" in out
