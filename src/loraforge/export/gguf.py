"""Write a (merged) transformers causal LM as a GGUF file for llama.cpp, Ollama and Docker Model Runner.

We follow llama.cpp's ``convert_hf_to_gguf.py`` conventions, which transformers' GGUF loader undoes
on the way back: tensor names from ``gguf.get_tensor_name_map``, Gemma RMSNorm weights stored as
``1 + w``, Llama q/k rows permuted for llama.cpp's rotary layout, 1-D tensors kept in F32. The
tokenizer goes into the metadata as llama.cpp expects it: sentencepiece-style vocabularies (Gemma,
Llama 2; byte-fallback BPE) as ``llama`` with scores, byte-level BPE (Qwen, GPT-2 style) as ``gpt2``
with merges.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from loraforge.config import ConfigError

ARCHES = {"gemma3_text": "gemma3", "gemma3": "gemma3", "llama": "llama", "qwen2": "qwen2"}
TYPES = ("f16", "bf16", "q8_0", "f32")


def check_gguf_type(gguf_type: str) -> None:
    if gguf_type not in TYPES:
        raise ConfigError(f"--gguf-type {gguf_type!r}: choose one of {', '.join(TYPES)}")


def gguf_arch(config) -> str:
    arch = ARCHES.get(config.model_type)
    if arch is None:
        raise ConfigError(f"GGUF export supports {', '.join(sorted(set(ARCHES.values())))} models; "
                          f"this one is {config.model_type!r}: use --format merged")
    return arch


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's rotary layout for Llama q/k rows (inverse of transformers' ``_reverse_permute_weights``)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensor(arch: str, name: str, t: torch.Tensor, config) -> np.ndarray:
    w = t.detach().to(torch.float32).cpu().numpy()
    if arch == "gemma3" and name.endswith("norm.weight"):
        w = w + 1.0  # Gemma's RMSNorm multiplies by (1 + w); llama.cpp stores the factor
    if arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
        heads = config.num_attention_heads if "q_proj" in name else config.num_key_value_heads
        w = _permute(w, heads)
    return w


def _encode(w: np.ndarray, gguf_type: str):
    """(data, raw_dtype) for one tensor: 1-D tensors and shapes a block cannot tile stay F32/F16."""
    from gguf import GGMLQuantizationType as Q
    from gguf.quants import quantize

    if w.ndim == 1 or gguf_type == "f32":
        return w.astype(np.float32), None
    if gguf_type == "q8_0":
        if w.shape[-1] % 32 == 0:
            return quantize(w, Q.Q8_0), Q.Q8_0
        return w.astype(np.float16), None
    if gguf_type == "bf16":
        return quantize(w, Q.BF16), Q.BF16
    return w.astype(np.float16), None


def _add_hparams(writer, arch: str, config) -> None:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    rope = getattr(config, "rope_parameters", None) or {}
    theta = (rope.get("full_attention", rope) or {}).get("rope_theta") or getattr(config, "rope_theta", None)
    if theta:
        writer.add_rope_freq_base(float(theta))
    if arch == "gemma3":
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        writer.add_sliding_window(config.sliding_window)
    else:
        writer.add_rope_dimension_count(head_dim)
        writer.add_vocab_size(config.vocab_size)


def _token_types(tokenizer, n: int) -> list[int]:
    from gguf import TokenType

    types = [int(TokenType.NORMAL)] * n
    special = set(tokenizer.all_special_ids)
    for tid, added in tokenizer.added_tokens_decoder.items():
        if tid < n:
            types[tid] = int(TokenType.CONTROL if (added.special or tid in special) else TokenType.USER_DEFINED)
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id < n:
        types[tokenizer.unk_token_id] = int(TokenType.UNKNOWN)
    return types


def _add_tokenizer(writer, tokenizer, vocab_size: int, arch: str) -> None:
    """Vocabulary, scores/merges, special ids and chat template, padded to the embedding's rows."""
    from gguf import TokenType

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec["model"]
    if model["type"] != "BPE":
        raise ConfigError(f"GGUF export handles BPE tokenizers (sentencepiece-BPE or byte-level); this one is "
                          f"{model['type']}: use --format merged")
    vocab = tokenizer.get_vocab()
    tokens = [None] * max(vocab_size, len(vocab))
    for tok, tid in vocab.items():
        tokens[tid] = tok
    types = _token_types(tokenizer, len(tokens))
    for i, tok in enumerate(tokens):
        if tok is None:  # embedding rows beyond the vocabulary: llama.cpp's convention
            tokens[i], types[i] = f"[PAD{i}]", int(TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    if model.get("byte_fallback"):  # sentencepiece-style: llama.cpp's "llama" vocabulary ranks by score
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        rank = {m.replace(" ", ""): -i for i, m in enumerate(merges)}
        for i, tok in enumerate(tokens):
            if len(tok) == 6 and tok.startswith("<0x") and tok.endswith(">"):
                types[i] = int(TokenType.BYTE)
        writer.add_token_scores([float(rank.get(t, -len(merges))) for t in tokens])
        writer.add_add_space_prefix(False)
    else:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(_pre_name(spec, arch))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if merges:
        writer.add_token_merges(merges)
    for setter, tid in ((writer.add_bos_token_id, tokenizer.bos_token_id), (writer.add_eos_token_id, tokenizer.eos_token_id),
                        (writer.add_unk_token_id, tokenizer.unk_token_id), (writer.add_pad_token_id, tokenizer.pad_token_id)):
        if tid is not None:
            setter(tid)
    bos = tokenizer.bos_token_id
    writer.add_add_bos_token(bos is not None and tokenizer.encode("a")[:1] == [bos])
    writer.add_add_eos_token(False)
    if getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)


def _pre_name(spec: dict, arch: str) -> str:
    """llama.cpp's name for the pre-tokenizer split; 'default' (GPT-2's regex) unless it is Qwen2's."""
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    return "qwen2" if PRETOKENIZE_REGEX in json.dumps(spec.get("pre_tokenizer")) and arch == "qwen2" else "default"


def write_gguf(model, tokenizer, path: str | Path, gguf_type: str = "f16", name: str = "loraforge") -> Path:
    """Write ``model`` (a plain transformers causal LM, adapters merged) and its tokenizer to ``path``."""
    from gguf import GGUFWriter, LlamaFileType, get_tensor_name_map, MODEL_ARCH_NAMES

    check_gguf_type(gguf_type)
    config = model.config
    arch = gguf_arch(config)
    arch_id = next(k for k, v in MODEL_ARCH_NAMES.items() if v == arch)
    names = get_tensor_name_map(arch_id, config.num_hidden_layers)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    writer = GGUFWriter(tmp, arch)
    writer.add_name(name)
    writer.add_type("model")
    _add_hparams(writer, arch, config)
    ftype = {"f16": LlamaFileType.MOSTLY_F16, "bf16": LlamaFileType.MOSTLY_BF16, "q8_0": LlamaFileType.MOSTLY_Q8_0,
             "f32": LlamaFileType.ALL_F32}[gguf_type]
    writer.add_file_type(int(ftype))
    writer.add_quantization_version(2)
    tied = getattr(config, "tie_word_embeddings", False)
    for hf_name, t in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reuses token_embd when output.weight is absent
        base, suffix = hf_name.rsplit(".", 1)
        gguf_name = names.get_name(base)
        if gguf_name is None:
            raise ConfigError(f"GGUF export: no llama.cpp name for tensor {hf_name!r} ({arch})")
        data, raw_dtype = _encode(_tensor(arch, hf_name, t, config), gguf_type)
        writer.add_tensor(f"{gguf_name}.{suffix}", data, raw_dtype=raw_dtype)
    _add_tokenizer(writer, tokenizer, config.vocab_size, arch)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> None:
    """``python -m loraforge.export.gguf MODEL OUT [--type q8_0]``: a base model without a run (e.g. the
    embedded Gemma 3 270M) as GGUF, for side-by-side benchmarks; runs go through ``loraforge export``."""
    import argparse

    from loraforge.models.load import load_model

    p = argparse.ArgumentParser(prog="python -m loraforge.export.gguf", description=main.__doc__.split("\n")[0])
    p.add_argument("model", help="model name or folder (as `loraforge train` takes it)")
    p.add_argument("out", help="the .gguf file to write")
    p.add_argument("--type", default="f16", choices=TYPES)
    a = p.parse_args(argv)
    loaded = load_model(a.model, dtype="fp32", device="cpu")
    print(write_gguf(loaded.model, loaded.tokenizer, a.out, a.type, name=Path(a.model).name))


if __name__ == "__main__":
    main()
