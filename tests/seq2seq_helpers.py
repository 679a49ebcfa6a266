"""Tiny Marian and mBART-50 models with a SentencePiece tokenizer trained by ``loraforge tokenizer train``.

Saved in the hub layout (config.json, model.safetensors, tokenizer files), so ``load_model(dir)`` runs
exactly the code path of ``Helsinki-NLP/opus-mt-en-zh`` / ``facebook/mbart-large-50-many-to-many-mmt``.
"""

from __future__ import annotations

from pathlib import Path

import torch

FIXTURE = str(Path(__file__).parent / "fixtures" / "core" / "pairs.jsonl")
_TOKENIZERS: dict = {}


def trained_tokenizer_dir(root: Path, fmt: str) -> Path:
    """A tokenizer folder trained on the k8s fixture pairs (cached per format for the session)."""
    from loraforge.data.tokenizer_train import train_tokenizer

    if fmt not in _TOKENIZERS:
        _TOKENIZERS[fmt] = train_tokenizer(FIXTURE, vocab_size=300, out_dir=root / f"tok-{fmt}", fmt=fmt)
    return _TOKENIZERS[fmt]


def tiny_seq2seq(arch: str, tokenizer, seed: int = 0):
    from transformers import MarianConfig, MarianMTModel, MBartConfig, MBartForConditionalGeneration

    common = dict(vocab_size=len(tokenizer), d_model=32, encoder_layers=2, decoder_layers=2,
                  encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                  max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
                  eos_token_id=tokenizer.eos_token_id, init_std=0.5, dropout=0.0, attention_dropout=0.0)
    torch.manual_seed(seed)
    if arch == "marian":  # Marian starts decoding from <pad>, like the opus-mt checkpoints
        config = MarianConfig(decoder_start_token_id=tokenizer.pad_token_id, forced_eos_token_id=tokenizer.eos_token_id,
                              **common)
        return MarianMTModel(config).float()
    if arch == "mbart":  # mBART-50 starts from </s>, then the forced target language code
        config = MBartConfig(bos_token_id=0, decoder_start_token_id=tokenizer.eos_token_id, scale_embedding=True,
                             **common)
        return MBartForConditionalGeneration(config).float()
    raise ValueError(arch)


def save_tiny_seq2seq(root: Path, arch: str) -> Path:
    """A hub-layout folder for ``arch`` ('marian' or 'mbart'), with its trained tokenizer."""
    from transformers import AutoTokenizer

    tok_dir = trained_tokenizer_dir(root, "marian" if arch == "marian" else "mbart50")
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    out = root / f"tiny-{arch}"
    tiny_seq2seq(arch, tok).save_pretrained(out)
    tok.save_pretrained(out)
    return out
