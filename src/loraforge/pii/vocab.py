"""The bytes each token stands for, and indexes that let constrained decoding find, in a 262k
vocabulary, the few tokens that may come next without scanning it at every step.

Decoding works in bytes, not characters: byte-fallback (Gemma) and byte-level BPE (Qwen, GPT-2)
tokens can hold half of a UTF-8 character, which has no text of its own.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass

_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_TABLES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
MAX_TOKEN_BYTES = 64  # longer tokens (runs of spaces in code) are never proposed; shorter ones copy the same bytes


@dataclass
class VocabIndex:
    token_bytes: list[bytes | None]  # None: a special token, never copied
    by_bytes: dict[bytes, list[int]]  # exact bytes -> tokens
    by_open: dict[bytes, list[int]]  # bytes before the first "[" -> tokens containing "["
    by_close: dict[bytes, list[int]]  # bytes up to and including the first "]" -> tokens containing "]"
    max_len: int


def _byte_level_decoder() -> dict[str, int]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {c: b for b, c in bytes_to_unicode().items()}


def _is_byte_level(tokenizer) -> bool:
    from tokenizers import decoders

    dec = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    return isinstance(dec, decoders.ByteLevel)


def token_bytes(tokenizer) -> list[bytes | None]:
    """Bytes per token id (None for special tokens), for byte-level BPE and SentencePiece-style
    (``▁`` for space, ``<0xNN>`` byte fallback) vocabularies."""
    n = len(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(n)))
    special = set(tokenizer.all_special_ids)
    added = {i: t for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()}
    special |= {i for i, t in added.items() if t.special}
    byte_level = _is_byte_level(tokenizer)
    table = _byte_level_decoder() if byte_level else None
    out: list[bytes | None] = []
    for i, piece in enumerate(pieces):
        if i in special or piece is None:
            out.append(None)
        elif i in added:
            out.append(added[i].content.encode("utf-8"))
        elif byte_level:
            try:
                out.append(bytes(table[c] for c in piece))
            except KeyError:
                out.append(None)
        else:
            m = _BYTE_FALLBACK.match(piece)
            out.append(bytes([int(m.group(1), 16)]) if m else piece.replace("\u2581", " ").encode("utf-8"))
    return out


def check_roundtrip(tokenizer, tb: list[bytes | None], sample: str) -> None:
    """Raise when the table does not spell ``sample`` the way the tokenizer encodes it."""
    ids = tokenizer(sample, add_special_tokens=False)["input_ids"]
    spelled = b"".join(tb[i] or b"\0" for i in ids)
    if spelled != sample.encode("utf-8"):
        raise ValueError(f"{type(tokenizer).__name__}: cannot map its tokens to bytes "
                         "(constrained PII decoding supports byte-level BPE and SentencePiece vocabularies)")


def vocab_index(tokenizer) -> VocabIndex:
    """Built once per tokenizer (about a second for Gemma's 262k tokens)."""
    if tokenizer in _TABLES:
        return _TABLES[tokenizer]
    tb = token_bytes(tokenizer)
    check_roundtrip(tokenizer, tb, "Hi Zoë, mail a.b@example.com or call +49 30 1234567 [NAME] 北京\n  x")
    by_bytes: dict[bytes, list[int]] = {}
    by_open: dict[bytes, list[int]] = {}
    by_close: dict[bytes, list[int]] = {}
    max_len = 0
    for i, b in enumerate(tb):
        if not b or len(b) > MAX_TOKEN_BYTES:
            continue
        by_bytes.setdefault(b, []).append(i)
        max_len = max(max_len, len(b))
        if b"[" in b:
            by_open.setdefault(b[:b.index(b"[")], []).append(i)
        if b"]" in b:
            by_close.setdefault(b[:b.index(b"]") + 1], []).append(i)
    index = VocabIndex(tb, by_bytes, by_open, by_close, max_len)
    _TABLES[tokenizer] = index
    return index
