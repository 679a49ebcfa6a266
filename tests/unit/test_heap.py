"""train.freed_memory: glibc's malloc settings for the training loop, and what is restored after it."""

import ctypes

import pytest
import torch

from conftest import tiny_causal
from loraforge.adapters import apply_adapter
from loraforge.config import AdapterConfig, ConfigError, TrainConfig, load_config
from loraforge.train import heap

pytestmark = pytest.mark.skipif(heap._glibc() is None, reason="glibc's malloc only")


class FakeLibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, param, value):
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad):
        self.calls.append(("malloc_trim", pad))
        return 1


@pytest.fixture
def libc(monkeypatch):
    fake = FakeLibc()
    monkeypatch.setattr(heap, "_glibc", lambda: fake)
    return fake


def test_keep_stops_mmap_and_trimming_then_restores_and_trims(libc):
    with heap.freed_memory_policy("keep") as after_step:
        assert libc.calls == [("mallopt", heap.M_MMAP_MAX, 0), ("mallopt", heap.M_TRIM_THRESHOLD, 2**31 - 1)]
        after_step()
        assert len(libc.calls) == 2  # nothing per step
    assert libc.calls[2:] == [("mallopt", heap.M_MMAP_MAX, heap.DEFAULT_MMAP_MAX),
                              ("mallopt", heap.M_TRIM_THRESHOLD, heap.DEFAULT_TRIM_THRESHOLD), ("malloc_trim", 0)]


def test_release_trims_after_every_step_and_default_changes_nothing(libc):
    with heap.freed_memory_policy("release") as after_step:
        assert libc.calls == []
        after_step()
        after_step()
        assert libc.calls == [("malloc_trim", 0)] * 2
    assert libc.calls == [("malloc_trim", 0)] * 3  # and once on leaving; glibc's settings were never changed
    libc.calls.clear()
    with heap.freed_memory_policy("default") as after_step:
        after_step()
    assert libc.calls == []


def test_the_policy_is_restored_when_training_fails(libc):
    with pytest.raises(RuntimeError), heap.freed_memory_policy("keep"):
        raise RuntimeError("boom")
    assert ("mallopt", heap.M_MMAP_MAX, heap.DEFAULT_MMAP_MAX) in libc.calls
    assert ("mallopt", heap.M_TRIM_THRESHOLD, heap.DEFAULT_TRIM_THRESHOLD) in libc.calls


@pytest.mark.parametrize("policy", ["keep", "release"])
def test_each_policy_trains_to_the_same_numbers(policy, tiny_tokenizer, tmp_path):
    """Real glibc calls: where freed memory goes changes no number (against glibc's own policy)."""
    from loraforge.train.loop import train
    from test_train import encoded

    losses = {}
    for p in ("default", policy):
        torch.manual_seed(0)
        model = apply_adapter(tiny_causal("gemma3", vocab_size=len(tiny_tokenizer)), AdapterConfig(r=4))
        cfg = TrainConfig(steps=2, batch_size=4, eval_every=0, save_every=0, lr=1e-2, freed_memory=p)
        losses[p] = [r["loss"] for r in train(model, encoded(tiny_tokenizer), [], cfg, tmp_path / p,
                                              tiny_tokenizer.pad_token_id, progress=False).history]
    assert losses[policy] == losses["default"]


def test_an_unknown_policy_is_a_config_error():
    with pytest.raises(ConfigError, match="train.freed_memory"):
        load_config(None, ["train.freed_memory=hoard"])


def test_malloc_in_use_counts_what_is_held():
    from loraforge.train.heap import malloc_in_use

    if malloc_in_use() is None:
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")
    before = malloc_in_use()
    block = bytearray(64 * 2**20)  # one malloc'd block (mmapped at this size)
    held = malloc_in_use()
    del block
    assert held - before >= 64 * 2**20 > malloc_in_use() - before
