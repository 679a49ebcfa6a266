"""Train a SentencePiece tokenizer on a dataset's source and target text (``loraforge tokenizer train``).

One joint vocabulary for both languages, as Marian and mBART use. The folder is written in the
layout transformers reads, so a model built from scratch around it (or a tiny test model) loads
through exactly the code path of a hub model such as Helsinki-NLP/opus-mt-en-zh:

- ``marian``: source.spm, target.spm (the same model), vocab.json -> ``MarianTokenizer``
- ``mbart50``: tokenizer.json with mBART-50's special tokens and language codes -> ``MBart50Tokenizer``

Both also keep the raw ``spm.model``. No torch here: this runs on a machine without ML deps.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

from loraforge.config import ConfigError
from loraforge.data.formats import load_examples
from loraforge.data.templates import lang_code
from loraforge.runs.files import atomic_dir

FORMATS = ("marian", "mbart50")
SPECIALS = {"unk": "<unk>", "bos": "<s>", "eos": "</s>", "pad": "<pad>"}  # ids 0..3 in the spm model


def _corpus(spec: str, src_lang: str, tgt_lang: str, limit: int | None) -> list[str]:
    lines = []
    for ex in load_examples(spec, src_lang=src_lang, tgt_lang=tgt_lang, limit=limit):
        lines += [t for t in (ex.source, ex.target) if t.strip()]
    return lines


def train_spm(lines: list[str], vocab_size: int, model_type: str = "unigram") -> bytes:
    """A serialized SentencePiece model with <unk>=0, <s>=1, </s>=2, <pad>=3."""
    import sentencepiece as spm

    if model_type not in ("unigram", "bpe"):
        raise ConfigError(f"--model-type {model_type!r}: use unigram or bpe")
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=buf, vocab_size=vocab_size, model_type=model_type,
            character_coverage=0.9995,  # keeps rare CJK characters out of the vocabulary (they become <unk>)
            hard_vocab_limit=False,  # a small corpus gives a smaller vocabulary instead of failing
            unk_id=0, bos_id=1, eos_id=2, pad_id=3,
            unk_piece=SPECIALS["unk"], bos_piece=SPECIALS["bos"], eos_piece=SPECIALS["eos"], pad_piece=SPECIALS["pad"],
            input_sentence_size=2_000_000, shuffle_input_sentence=True, minloglevel=2,
        )
    except RuntimeError as e:
        raise ConfigError(f"SentencePiece training failed (vocab size {vocab_size}): {e}") from None
    return buf.getvalue()


def _save_marian(model_file: Path, out: Path, src_lang: str, tgt_lang: str) -> None:
    import json

    import sentencepiece as spm
    from transformers import MarianTokenizer

    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    shutil.copy(model_file, out / "source.spm")
    shutil.copy(model_file, out / "target.spm")
    tok = MarianTokenizer(str(out / "source.spm"), str(out / "target.spm"), str(out / "vocab.json"),
                          source_lang=src_lang, target_lang=tgt_lang)
    tok.save_pretrained(str(out))


def _mbart_codes(src_lang: str, tgt_lang: str) -> tuple[str, str]:
    from transformers.models.mbart.tokenization_mbart import FAIRSEQ_LANGUAGE_CODES

    src, tgt = lang_code(FAIRSEQ_LANGUAGE_CODES, src_lang), lang_code(FAIRSEQ_LANGUAGE_CODES, tgt_lang)
    if src is None or tgt is None:
        raise ConfigError(f"mBART-50 has no language code for {src_lang!r}/{tgt_lang!r}; codes: {FAIRSEQ_LANGUAGE_CODES}")
    return src, tgt


def _save_mbart50(model_file: Path, out: Path, src_lang: str, tgt_lang: str) -> None:
    import sentencepiece as spm
    from transformers import MBart50Tokenizer
    from transformers.models.mbart.tokenization_mbart import FAIRSEQ_LANGUAGE_CODES

    src, tgt = _mbart_codes(src_lang, tgt_lang)
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    # fairseq order, as mBART-50 checkpoints have it: <s> <pad> </s> <unk>, pieces, language codes, <mask>
    vocab = [(SPECIALS["bos"], 0.0), (SPECIALS["pad"], 0.0), (SPECIALS["eos"], 0.0), (SPECIALS["unk"], 0.0)]
    vocab += [(sp.id_to_piece(i), sp.get_score(i)) for i in range(4, sp.get_piece_size())]
    vocab += [(code, 0.0) for code in FAIRSEQ_LANGUAGE_CODES] + [("<mask>", 0.0)]
    tok = MBart50Tokenizer(vocab=vocab, src_lang=src, tgt_lang=tgt)
    tok.save_pretrained(str(out))


def train_tokenizer(data: str, vocab_size: int, out_dir: str | Path, model_type: str = "unigram",
                    fmt: str = "marian", src_lang: str = "en", tgt_lang: str = "zh",
                    max_examples: int | None = None) -> Path:
    """Train on ``data`` (a file or packaged split) and write a tokenizer folder atomically."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt == "mbart50":
        _mbart_codes(src_lang, tgt_lang)  # fail before the slow part
    lines = _corpus(data, src_lang, tgt_lang, max_examples)
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        (tmp / "spm.model").write_bytes(train_spm(lines, vocab_size, model_type))
        (_save_marian if fmt == "marian" else _save_mbart50)(tmp / "spm.model", tmp, src_lang, tgt_lang)
    return out
