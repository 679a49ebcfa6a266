import pytest

from loraforge.adapters import AdapterError, apply_adapter
from loraforge.config import AdapterConfig
from loraforge.models.load import ModelError, load_model, resolve_model_path


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
    with pytest.raises(Exception):
        load_model(str(folder), dtype="fp32")
    a = load_model(str(folder), dtype="fp32", random_weights=True)
    b = load_model(str(folder), dtype="bf16", random_weights=True)
    real = load_model(str(tiny_model_dir), dtype="fp32")
    shapes = {k: v.shape for k, v in real.model.state_dict().items()}
    assert {k: v.shape for k, v in a.model.state_dict().items()} == shapes
    assert next(b.model.parameters()).dtype == torch.bfloat16
    w = "model.embed_tokens.weight"
    assert torch.equal(a.model.state_dict()[w], load_model(str(folder), dtype="fp32", random_weights=True).model.state_dict()[w])
