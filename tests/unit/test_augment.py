"""Source noise, back-translation caching and multi-task sampling: determinism and safety."""

from __future__ import annotations

import math

import pytest

from loraforge.data.augment import (BT_TAG, PROTECTED, BackTranslation, SourceNoise, back_translate, flipped, mix,
                                    noised, read_provenance, write_synthetic)
from loraforge.data.formats import DataError, Example, load_examples
from loraforge.data.mixture import Mixture, task_probabilities

SRC = ("Run `kubectl get pods` to list the {{< glossary_tooltip text=\"Pods\" term_id=\"pod\" >}} in the "
       "[default namespace](/docs/concepts/overview/working-with-objects/namespaces/) of https://k8s.io now.")


def test_noise_is_deterministic_per_epoch_and_index():
    noise = SourceNoise(dropout=0.2, shuffle_k=3, insertion=0.1, seed=7)
    a = noise.apply(SRC, epoch=0, index=5)
    assert a == noise.apply(SRC, epoch=0, index=5) == SourceNoise(0.2, 3, 0.1, 7).apply(SRC, 0, 5)
    variants = {noise.apply(SRC, e, 5) for e in range(8)}
    assert len(variants) > 4  # a different noise each epoch
    assert noise.apply(SRC, 0, 5) != SourceNoise(0.2, 3, 0.1, 8).apply(SRC, 0, 5)


def test_noise_never_touches_protected_markup():
    noise = SourceNoise(dropout=0.3, shuffle_k=3, insertion=0.3, seed=1)
    protected = [m.group(0) for m in PROTECTED.finditer(SRC)]
    assert len(protected) == 4
    for epoch in range(50):
        out = noise.apply(SRC, epoch, 0)
        found = [m.group(0) for m in PROTECTED.finditer(out)]
        assert found == protected  # every span whole, once, in the same order


def test_noise_off_is_identity_and_targets_untouched():
    assert SourceNoise().apply(SRC, 3, 3) == SRC
    ex = [Example("a b c d e f", "甲乙丙", "x")]
    out = noised(ex, SourceNoise(dropout=0.5, seed=2), epoch=1)
    assert out[0].target == "甲乙丙" and out[0].id == "x" and out[0].source != ""


def test_dropout_rate_and_shuffle_distance():
    words = [f"w{i}" for i in range(400)]
    text = " ".join(words)
    out = SourceNoise(dropout=0.25, seed=3).apply(text, 0, 0).split()
    assert 0.18 < 1 - len(out) / len(words) < 0.32
    shuffled = SourceNoise(shuffle_k=3, seed=3).apply(text, 0, 0).split()
    assert sorted(shuffled) == sorted(words) and shuffled != words
    assert max(abs(shuffled.index(w) - i) for i, w in enumerate(words)) <= 3


def test_bad_noise_settings_are_errors():
    with pytest.raises(DataError, match="dropout"):
        SourceNoise(dropout=1.5)
    with pytest.raises(DataError, match="shuffle_k"):
        SourceNoise(shuffle_k=-1)


def test_back_translation_tags_caches_and_reloads(tmp_path):
    bt = BackTranslation(tagged=True, seed=4)
    pairs = back_translate(["甲", "乙", "丙"], lambda xs: [f"src {x}" if x != "乙" else " " for x in xs], bt)
    assert [(p.source, p.target) for p in pairs] == [(BT_TAG + "src 甲", "甲"), (BT_TAG + "src 丙", "丙")]
    path = write_synthetic(tmp_path / "bt.jsonl.gz", pairs, bt.provenance("runs/rev", "k8s:mono-zh"))
    back = load_examples(str(path), None, None, "en", "zh")
    assert [(e.source, e.target) for e in back] == [(p.source, p.target) for p in pairs]
    prov = read_provenance(path)
    assert prov["tagged"] is True and prov["pairs"] == 2 and prov["reverse_adapter"] == "runs/rev"
    with pytest.raises(DataError, match="2 outputs for 3"):
        back_translate(["a", "b", "c"], lambda xs: xs[:2], bt)


def test_flipped_and_mix_ratio():
    real = [Example(f"e{i}", f"z{i}", f"r{i}") for i in range(10)]
    assert [(e.source, e.target) for e in flipped(real[:2])] == [("z0", "e0"), ("z1", "e1")]
    synth = [Example(f"s{i}", f"t{i}", f"s{i}") for i in range(4)]
    out = mix(real, synth, ratio=0.5, seed=1)
    assert len(out) == 15 and sum(e.id.startswith("s") for e in out) == 5
    assert out == mix(real, synth, ratio=0.5, seed=1)
    assert mix(real, synth, 0.0) == real


@pytest.mark.parametrize("temperature", [1.0, 2.0, 5.0, 100.0])
def test_temperature_probabilities(temperature):
    sizes = {"en-zh": 30000, "en-ja": 6000, "pii": 1000}
    p = task_probabilities(sizes, temperature)
    z = sum(n ** (1 / temperature) for n in sizes.values())
    for k, n in sizes.items():
        assert math.isclose(p[k], n ** (1 / temperature) / z)
    if temperature == 1.0:
        assert math.isclose(p["en-zh"], 30000 / 37000)
    if temperature == 100.0:
        assert max(p.values()) - min(p.values()) < 0.05  # nearly uniform


def test_explicit_weights_and_errors():
    assert task_probabilities({"a": 10, "b": 1000}, weights={"a": 1, "b": 3}) == {"a": 0.25, "b": 0.75}
    with pytest.raises(DataError, match="unknown tasks"):
        task_probabilities({"a": 1}, weights={"c": 1})
    with pytest.raises(DataError, match="> 0"):
        task_probabilities({"a": 1}, temperature=0)


@pytest.mark.parametrize("temperature", [1.0, 5.0])
def test_mixture_samples_the_probabilities_and_covers_each_task(temperature):
    sizes = {"a": 50, "b": 10, "c": 5}
    p = task_probabilities(sizes, temperature)
    mixture = Mixture(sizes, p, seed=3)
    n = 6000
    got = mixture.sampled_mix(n)
    for k in sizes:
        assert abs(got[k] - p[k]) < 4 * math.sqrt(p[k] * (1 - p[k]) / n) + 1e-3
    draws = [mixture.draw(g) for g in range(n)]
    first_c = [i for t, i in draws if t == "c"][:5]
    assert sorted(first_c) == list(range(5))  # every example of a task before any repeats


def test_mixture_is_a_pure_function_of_position():
    sizes = {"a": 7, "b": 3}
    m1, m2 = Mixture(sizes, task_probabilities(sizes), seed=9), Mixture(sizes, task_probabilities(sizes), seed=9)
    seq = [m1.draw(g) for g in range(9000)]
    assert [m2.draw(g) for g in range(8990, 9000)] == seq[8990:]  # a resumed stream, no replay needed
