"""bf16 Linear layers with oneDNN-packed weights: the same bits as ``F.linear``, re-packed when a LoRA
merge swaps a weight, and out of the way of autograd and of other dtypes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from loraforge.models import prepack
from loraforge.models.prepack import PrepackedLinear, prepack_linears

needs_onednn_bf16 = pytest.mark.skipif(not prepack.available(), reason="oneDNN bf16 linear not available here")


def tiny_bf16(arch: str = "gemma3"):
    from conftest import tiny_causal

    return tiny_causal(arch, vocab_size=400).to(torch.bfloat16).eval()


def linears(model) -> list[torch.nn.Linear]:
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)]


def test_an_fp32_model_is_left_alone():
    from conftest import tiny_causal

    model = tiny_causal("llama", vocab_size=400).eval()
    assert prepack_linears(model) == 0
    assert all(type(m) is torch.nn.Linear for m in linears(model))


@needs_onednn_bf16
@pytest.mark.parametrize("arch", ["gemma3", "qwen2"])  # qwen2: q/k/v projections with a bias
def test_a_prepacked_model_gives_the_same_logits(arch):
    model = tiny_bf16(arch)
    ids = torch.randint(5, 400, (3, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        count = prepack_linears(model)
        after = model(input_ids=ids).logits
    assert count == len(linears(model)) > 0
    assert all(type(m) is PrepackedLinear and m.packed is not None for m in linears(model))
    assert torch.equal(before, after)


@needs_onednn_bf16
def test_a_swapped_weight_is_repacked_and_swapping_back_restores_it():
    layer = torch.nn.Linear(64, 96, bias=False).to(torch.bfloat16)
    original = layer.weight.data
    other = torch.randn(96, 64).to(torch.bfloat16)
    x = torch.randn(4, 1, 64).to(torch.bfloat16)
    prepack_linears(torch.nn.Sequential(layer))
    with torch.no_grad():
        assert torch.equal(layer(x), F.linear(x, original))
        layer.weight.data = other  # how AdapterRouter merges a LoRA
        assert torch.equal(layer(x), F.linear(x, other))
        layer.weight.data = original  # and unmerges it
        assert torch.equal(layer(x), F.linear(x, original))


@needs_onednn_bf16
def test_autograd_takes_the_ordinary_path():
    layer = torch.nn.Linear(16, 8).to(torch.bfloat16)
    prepack_linears(torch.nn.Sequential(layer))
    x = torch.randn(2, 16).to(torch.bfloat16)
    layer(x).float().sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def run_to_the_end(engine, requests) -> None:
    """Drive the engine by hand, one iteration at a time, so two engines see the same batches."""
    engine.close()
    engine.waiting.extend(requests)
    for _ in range(10_000):
        if not engine.step():
            return
    raise AssertionError("the engine did not finish")


@needs_onednn_bf16
def test_a_bf16_engine_with_merged_and_mixed_adapters_gives_the_unpacked_engines_tokens(tmp_path, monkeypatch):
    """Rows on one adapter (merged into the weights: the packed layers must re-pack), then adapters
    mixed with the base (unmerged, routed per row): token for token what the plain bf16 engine gives."""
    from test_serve_engine import engine_with_adapters, make_lora_llama, prompts, request

    model = make_lora_llama(tmp_path).to(torch.bfloat16)
    schedule = [(["beta"] * 3, [20, 18, 25]), (["alpha", "beta", "__base__", "alpha"], [9, 14, 6, 11])]

    def tokens(**kw) -> list[list[int]]:
        out = []
        for k, (adapters, budgets) in enumerate(schedule):
            engine = engine_with_adapters(model, max_batch=4, **kw)
            pairs = [request(p, b, adapter=a) for a, p, b in zip(adapters, prompts(len(adapters), seed=k), budgets)]
            run_to_the_end(engine, [r for r, _ in pairs])
            assert engine.router.merged is None or k == 0
            engine.router.unmerge()
            out += [c.tokens for _, c in pairs]
        return out

    plain = tokens(prepack=False)
    repacks = []
    original = PrepackedLinear.repack
    monkeypatch.setattr(PrepackedLinear, "repack", lambda self: (repacks.append(self), original(self))[1])
    packed = tokens(prepack=True)
    assert plain == packed
    assert all(type(m.get_base_layer()) is PrepackedLinear for m in model.modules() if hasattr(m, "lora_A"))
    assert len(repacks) > len(linears(model)), "a merge never re-packed"  # the first packing is one each
