import os

import pytest

from loraforge.adapters import AdapterError, apply_adapter
from loraforge.config import AdapterConfig
from loraforge.models.load import ModelError, has_fast_bf16, load_model, resolve_model_path


def test_unknown_model_lists_what_is_available():
    with pytest.raises(ModelError) as e:
        load_model("no-such-model")
    assert "gemma3-270m" in str(e.value) and ".gguf" in str(e.value)


def test_missing_gguf_and_folder_without_config(tmp_path):
    with pytest.raises(ModelError, match="GGUF file not found"):
        resolve_model_path(str(tmp_path / "x.gguf"))
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model_path(str(tmp_path))


def test_local_folder_loads_with_family_and_pad(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir), dtype="fp32")
    assert loaded.family == "causal" and loaded.tokenizer.pad_token_id == 0
    with pytest.raises(ModelError, match="seq2seq"):
        load_model(str(tiny_model_dir), family="seq2seq")


def test_unsupported_architecture_is_named(tmp_path, tiny_tokenizer):
    from transformers import CLIPVisionConfig

    CLIPVisionConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="unsupported architecture"):
        load_model(str(tmp_path))


def test_target_modules_that_match_nothing_list_the_layers(tiny_gemma):
    with pytest.raises(AdapterError) as e:
        apply_adapter(tiny_gemma, AdapterConfig(target_modules=["qkv_proj"]))
    assert "q_proj" in str(e.value) and "all-linear" in str(e.value)


def test_qlora_needs_a_gpu(tiny_gemma):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(AdapterError, match="CUDA"):
        apply_adapter(tiny_gemma, AdapterConfig(method="qlora"))


def test_random_weights_need_only_the_config(tiny_model_dir, tmp_path):
    """A folder without weights (what a benchmark machine gets): the same architecture, seeded weights."""
    import shutil

    import torch

    folder = tmp_path / "config-only"
    shutil.copytree(tiny_model_dir, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(OSError, match="no file named model.safetensors"):
        load_model(str(folder), dtype="fp32")
    a = load_model(str(folder), dtype="fp32", random_weights=True)
    b = load_model(str(folder), dtype="bf16", random_weights=True)
    real = load_model(str(tiny_model_dir), dtype="fp32")
    shapes = {k: v.shape for k, v in real.model.state_dict().items()}
    assert {k: v.shape for k, v in a.model.state_dict().items()} == shapes
    assert next(b.model.parameters()).dtype == torch.bfloat16
    w = "model.embed_tokens.weight"
    assert torch.equal(a.model.state_dict()[w], load_model(str(folder), dtype="fp32", random_weights=True).model.state_dict()[w])


def _gemma_style_tokenizer():
    """A transformers 5 GemmaTokenizer (Python copies of vocab and merges) on a tiny vocabulary."""
    from transformers import GemmaTokenizer

    from conftest import CORPUS

    chars = sorted({c for line in CORPUS for c in line.replace(" ", "▁")})
    vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"] + chars)}
    merges = []
    for word in ("Kubernetes", "kubectl", "deployment"):
        for n in range(2, len(word) + 1):
            if word[:n] not in vocab:
                merges.append((word[:n - 1], word[n - 1]))
                vocab[word[:n]] = len(vocab)
    return GemmaTokenizer(vocab=vocab, merges=merges)


def test_slim_tokenizer_drops_python_copies_and_keeps_behaviour(tmp_path):
    from transformers import AutoTokenizer

    from conftest import CORPUS, save_tiny_model

    path = save_tiny_model(tmp_path / "model", _gemma_style_tokenizer())
    full = AutoTokenizer.from_pretrained(path)
    assert isinstance(full._vocab, dict) and len(full._merges) > 0  # what transformers keeps
    slim = load_model(str(path)).tokenizer
    assert slim._vocab is None and slim._merges is None
    assert isinstance(load_model(str(path), lean=False).tokenizer._vocab, dict)  # as transformers builds it
    for text in CORPUS:
        assert slim(text).input_ids == full(text).input_ids
        assert slim.decode(slim(text).input_ids) == full.decode(full(text).input_ids)
    slim.save_pretrained(tmp_path / "saved")
    again = AutoTokenizer.from_pretrained(tmp_path / "saved")
    assert [again(t).input_ids for t in CORPUS] == [full(t).input_ids for t in CORPUS]
    assert again.get_vocab() == full.get_vocab()


def test_load_model_bounds_the_kernel_caches_unless_the_environment_sets_them(tiny_model_dir, monkeypatch):
    from loraforge.models.load import KERNEL_CACHE_CAPACITY, KERNEL_CACHE_VARS

    for var in KERNEL_CACHE_VARS:
        monkeypatch.delenv(var, raising=False)
    load_model(str(tiny_model_dir))
    assert [os.environ[v] for v in KERNEL_CACHE_VARS] == [str(KERNEL_CACHE_CAPACITY)] * 2
    for var in KERNEL_CACHE_VARS:
        monkeypatch.delenv(var)
    load_model(str(tiny_model_dir), lean=False)  # a baseline that loads like plain transformers
    assert not any(v in os.environ for v in KERNEL_CACHE_VARS)
    monkeypatch.setenv(KERNEL_CACHE_VARS[0], "7")
    load_model(str(tiny_model_dir))
    assert os.environ[KERNEL_CACHE_VARS[0]] == "7"


GROWTH = """
import torch
from loraforge.train.heap import malloc_in_use
w = torch.randn(1024, 256, dtype=torch.bfloat16)
before = malloc_in_use()
for rows in range(32, 32 + 8 * 120, 8):  # 120 distinct shapes
    x = torch.randn(rows, 256, dtype=torch.bfloat16, requires_grad=True)
    torch.nn.functional.linear(x, w).sum().backward()
print(malloc_in_use() - before)
"""


@pytest.mark.skipif(not has_fast_bf16("cpu"), reason="bf16 matmuls take oneDNN only where bf16 is native")
def test_bounded_kernel_caches_stop_growing_with_new_shapes():
    """The lever itself: if PyTorch stopped reading these variables, the bound would be a no-op."""
    import subprocess
    import sys

    from loraforge.models.load import KERNEL_CACHE_VARS

    from loraforge.train.heap import malloc_in_use

    if malloc_in_use() is None:
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")

    def grown(capacity: int) -> int:
        env = {**os.environ, "OMP_NUM_THREADS": "1", **{v: str(capacity) for v in KERNEL_CACHE_VARS}}
        out = subprocess.run([sys.executable, "-c", GROWTH], env=env, capture_output=True, text=True, check=True)
        return int(out.stdout)

    unbounded, bounded = grown(1024), grown(8)
    assert unbounded > 5 * 2**20 and bounded < unbounded / 4, (unbounded, bounded)  # here: 129 vs 5 MB


def test_library_deprecation_noise_is_silenced_and_nothing_else(tiny_model_dir):
    """PEFT reads a property transformers deprecated: the user cannot act on that FutureWarning."""
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        loaded = load_model(str(tiny_model_dir))
        loaded.model.is_gradient_checkpointing  # what PEFT does on every adapter build and load
        warnings.warn("a deprecation of ours", FutureWarning)
    assert [str(w.message) for w in seen if issubclass(w.category, FutureWarning)] == ["a deprecation of ours"]


def test_output_layer_gets_a_contiguous_input_and_the_same_logits(tiny_model_dir):
    """Generation keeps the last position only (``logits_to_keep=1``): a strided view. ``load_model`` hands
    the output layer a contiguous copy (frozen bf16 weights otherwise send torch's matmul down a path
    that copies the whole head once per row); the logits are the same as on the strided view."""
    import torch

    model = load_model(str(tiny_model_dir), dtype="bf16").model.eval().requires_grad_(False)
    seen = []
    model.get_output_embeddings().register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    ids = torch.randint(3, 100, (4, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        last = model(input_ids=ids, logits_to_keep=1).logits[:, -1]
        hidden = model.model(input_ids=ids).last_hidden_state[:, -1:]
        assert not hidden.is_contiguous()
        strided = torch.nn.functional.linear(hidden, model.get_output_embeddings().weight)[:, -1]
    assert seen and seen[0].shape == (4, 1, seen[0].shape[-1]) and seen[0].is_contiguous()
    assert torch.equal(last, strided)
