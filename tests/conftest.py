"""Tiny random-weight models and a tiny tokenizer, so unit tests run in seconds on 2 CPU cores."""

from __future__ import annotations

import contextlib

import pytest
import torch

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "Kubernetes is an open source system for automating deployment of containerized applications.",
    "A Pod is the smallest deployable unit. Use `kubectl get pods` to list them.",
    "Kubernetes 是一个开源系统，用于自动部署容器化应用。Pod 是最小的可部署单元。使用 `kubectl get pods` 列出它们。",
    "You are a professional translator. user model system assistant translate English Chinese",
]


def build_tokenizer(vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 3, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                                   unk_token="<unk>", additional_special_tokens=SPECIALS[4:])


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tokenizer()


def tiny_causal(arch: str = "gemma3", vocab_size: int = 512, seed: int = 0, **config_overrides):
    from transformers import AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig, Qwen2Config

    common = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  pad_token_id=0, eos_token_id=1, bos_token_id=2,
                  initializer_range=0.5)  # large enough that a rank-4 adapter can move the logits
    common.update(config_overrides)
    if arch == "gemma3":
        config = Gemma3TextConfig(**{"head_dim": 8, "sliding_window": 64, "tie_word_embeddings": True, **common})
    elif arch == "qwen2":
        config = Qwen2Config(tie_word_embeddings=True, **common)
    elif arch == "llama":
        config = LlamaConfig(**common)
    else:
        raise ValueError(arch)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).float()


@pytest.fixture
def tiny_gemma():
    return tiny_causal("gemma3")


def save_tiny_model(path, tokenizer, arch: str = "gemma3"):
    """A Hugging Face folder on disk, loadable by ``loraforge.models.load.load_model``."""
    model = tiny_causal(arch, vocab_size=len(tokenizer))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-gemma3"), tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_seq2seq_dirs(tmp_path_factory):
    """Hub-layout folders of a tiny Marian and a tiny mBART-50 model (tokenizers trained by loraforge)."""
    from seq2seq_helpers import save_tiny_seq2seq

    root = tmp_path_factory.mktemp("tiny-seq2seq")
    return {arch: save_tiny_seq2seq(root, arch) for arch in ("marian", "mbart")}


class Killed(Exception):
    """Raised by ``killed_after``: a training run stopped as if the process died mid-run."""


@contextlib.contextmanager
def killed_after(steps: int):
    """Inside the block, the ``steps``-th optimizer step raises ``Killed`` (resume tests)."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    done = []

    def count(*_):
        done.append(1)
        if len(done) == steps:
            raise Killed

    handle = register_optimizer_step_post_hook(count)
    try:
        yield
    finally:
        handle.remove()
