"""``loraforge tokenizer train``: SentencePiece on source+target text, loadable as Marian / mBART-50 tokenizers."""

import json
import subprocess
import sys

import pytest
from transformers import AutoTokenizer, MarianTokenizer, MBart50Tokenizer

from loraforge.cli import main
from loraforge.config import ConfigError
from loraforge.data.formats import load_examples
from loraforge.data.tokenizer_train import train_tokenizer
from seq2seq_helpers import FIXTURE

TEXTS = [t for e in load_examples(FIXTURE) for t in (e.source, e.target)]


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_marian_layout_round_trips_the_training_text(model_type, tmp_path):
    out = train_tokenizer(FIXTURE, vocab_size=120, out_dir=tmp_path / "tok", model_type=model_type)
    assert {"source.spm", "target.spm", "vocab.json", "spm.model", "tokenizer_config.json"} <= {p.name for p in out.iterdir()}
    tok = AutoTokenizer.from_pretrained(str(out))
    assert isinstance(tok, MarianTokenizer)
    vocab = json.loads((out / "vocab.json").read_text())
    assert len(tok) == len(vocab) and (tok.unk_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 2, 3)
    for text in TEXTS:  # every character was seen, so nothing becomes <unk> and decoding is exact
        ids = tok(text)["input_ids"]
        assert ids[-1] == tok.eos_token_id and tok.unk_token_id not in ids
        assert tok.decode(ids, skip_special_tokens=True) == text
    assert len(tok("Kubernetes")["input_ids"]) < len("Kubernetes")  # it learned merges, not characters


def test_mbart50_layout_has_language_codes(tmp_path):
    out = train_tokenizer(FIXTURE, vocab_size=120, out_dir=tmp_path / "tok", fmt="mbart50")
    tok = AutoTokenizer.from_pretrained(str(out))
    assert isinstance(tok, MBart50Tokenizer)
    assert tok.convert_tokens_to_ids(["<s>", "<pad>", "</s>", "<unk>"]) == [0, 1, 2, 3]  # fairseq order
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (1, 2, 3)
    zh = tok.lang_code_to_id["zh_CN"]
    assert tok.convert_ids_to_tokens(zh) == "zh_CN" and tok("zh_CN", add_special_tokens=False)["input_ids"] == [zh]
    tok.src_lang, tok.tgt_lang = "en_XX", "zh_CN"
    enc = tok(TEXTS[0], text_target=TEXTS[1])
    assert enc["labels"][0] == zh and tok.decode(enc["labels"], skip_special_tokens=True) == TEXTS[1]


def test_cli_and_errors(tmp_path, capsys):
    assert main(["tokenizer", "train", "--data", FIXTURE, "--vocab-size", "100", "--out", str(tmp_path / "t")]) == 0
    assert (tmp_path / "t" / "source.spm").is_file() and str(tmp_path / "t") in capsys.readouterr().out
    with pytest.raises(ConfigError, match="unigram or bpe"):
        train_tokenizer(FIXTURE, 100, tmp_path / "x", model_type="word-ish")
    with pytest.raises(ConfigError, match="no language code"):
        train_tokenizer(FIXTURE, 100, tmp_path / "x", fmt="mbart50", tgt_lang="tlh")
    assert not (tmp_path / "x").exists()  # a failed run leaves nothing behind
    assert main(["tokenizer", "train", "--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "y")]) == 2


def test_training_does_not_import_torch(tmp_path):
    code = ("import sys; from loraforge.data.tokenizer_train import train_spm; "
            f"train_spm({TEXTS!r}, 100); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
