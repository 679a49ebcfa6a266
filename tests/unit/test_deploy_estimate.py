"""Sizing: parameter counts from config.json match PEFT's, memory grows with what should grow it."""

from __future__ import annotations

import json

import pytest

from loraforge.config import ConfigError, RunConfig, load_config
from loraforge.deploy.estimate import (KNOWN_CONFIGS, compare_with_run, estimate, format_check, format_estimate,
                                       kaito_instance_type, model_config, parameter_counts, suggest_batch_size)

GEMMA = KNOWN_CONFIGS["gemma3-270m"]


def test_lora_counts_match_peft_by_hand():
    run = load_config(None, ["adapter.r=16", "adapter.target_modules=[q_proj, v_proj]"])
    total, trainable = parameter_counts(GEMMA, run)
    # q: 640->1024, v: 640->256; LoRA adds r*(in+out) per module, 18 layers
    assert trainable == 18 * 16 * ((640 + 1024) + (640 + 256))
    assert trainable < total / 100  # LoRA trains << 1% of a 270M model


@pytest.mark.parametrize("arch", ["gemma3", "llama", "qwen2"])
@pytest.mark.parametrize("targets", ["all-linear", "[q_proj, down_proj]"])
def test_counts_match_real_peft_on_tiny_models(arch, targets):
    from conftest import tiny_causal

    from loraforge.adapters.build import apply_adapter, trainable_parameters

    model = tiny_causal(arch)
    cfg = model.config.to_dict()
    run = load_config(None, ["adapter.r=4", f"adapter.target_modules={targets}"])
    trainable, total = trainable_parameters(apply_adapter(model, run.adapter))
    assert parameter_counts(cfg, run) == (total, trainable)


@pytest.mark.parametrize("method,keys", [("dora", ["adapter.r=4"]), ("ia3", []), ("prefix", ["adapter.num_virtual_tokens=5"]),
                                         ("prompt", ["adapter.num_virtual_tokens=5"]),
                                         ("adapter", ["adapter.bottleneck_size=8"]), ("full", [])])
def test_every_methods_count_matches_the_built_model(method, keys):
    """The registry's per-method count (MethodSpec.count) against the model the method really builds."""
    from conftest import tiny_causal

    from loraforge.adapters.build import apply_adapter, trainable_parameters

    model = tiny_causal("gemma3")
    run = load_config(None, [f"adapter.method={method}", *keys])
    trainable, total = trainable_parameters(apply_adapter(model, run.adapter))
    assert parameter_counts(model.config.to_dict(), run) == (total, trainable)


def test_a_multitask_run_is_sized_by_its_longest_task():
    """data.tasks[i].max_length: the PII task's 384 tokens, not data.max_length's 128, size the step."""
    tasks = 'data.tasks=[{train: a.jsonl}, {task: pii, train: p.jsonl, max_length: 384}]'
    multi = estimate(load_config(None, [tasks, "data.max_length=128"]), "cpu", 8, GEMMA)
    assert multi.seq_len == 384
    assert multi == estimate(load_config(None, ["data.max_length=384"]), "cpu", 8, GEMMA)


def test_memory_is_monotonic_in_batch_size_and_sequence_length():
    run = RunConfig()
    peaks = [estimate(run, "gpu", b, GEMMA).peak_mb for b in (1, 2, 4, 8, 16, 32)]
    assert all(a < b for a, b in zip(peaks, peaks[1:]))
    short = estimate(load_config(None, ["data.max_length=64"]), "cpu", 8, GEMMA)
    long = estimate(load_config(None, ["data.max_length=512"]), "cpu", 8, GEMMA)
    assert short.activations_mb < long.activations_mb


def test_full_logits_cost_more_than_target_only_chunks():
    chunked = estimate(RunConfig(), "cpu", 8, GEMMA)
    full = estimate(load_config(None, ["train.target_only_logits=false"]), "cpu", 8, GEMMA)
    assert full.logits_mb > 2 * chunked.logits_mb
    smaller_chunk = estimate(load_config(None, ["train.logits_chunk=128"]), "cpu", 8, GEMMA)
    assert smaller_chunk.logits_mb < chunked.logits_mb


def test_activation_checkpointing_shrinks_only_activations():
    plain = estimate(RunConfig(), "cpu", 8, GEMMA)
    ckpt = estimate(load_config(None, ["train.activation_checkpointing=true"]), "cpu", 8, GEMMA)
    assert ckpt.activations_mb < plain.activations_mb / 4
    assert (ckpt.weights_mb, ckpt.logits_mb, ckpt.optimizer_mb) == (plain.weights_mb, plain.logits_mb, plain.optimizer_mb)


def test_precision_and_method_change_the_right_terms():
    fp32 = estimate(load_config(None, ["model.dtype=fp32"]), "cpu", 8, GEMMA)
    bf16 = estimate(load_config(None, ["model.dtype=bf16"]), "cpu", 8, GEMMA)
    assert bf16.weights_mb == pytest.approx(fp32.weights_mb / 2, rel=0.01)
    full = estimate(load_config(None, ["adapter.method=full"]), "cpu", 8, GEMMA)
    assert full.trainable_params == full.total_params and full.optimizer_mb > 10 * fp32.optimizer_mb


def test_batch_suggestion_fits_and_grows_with_memory():
    run = RunConfig()
    small, big = suggest_batch_size(run, 8, model_cfg=GEMMA), suggest_batch_size(run, 80, model_cfg=GEMMA)
    assert 1 <= small < big
    assert estimate(run, "gpu", small, GEMMA).peak_mb <= 8 * 1024
    assert estimate(run, "gpu", small * 2, GEMMA).peak_mb > 8 * 1024 * 0.9
    assert kaito_instance_type(10_000)[0] != kaito_instance_type(150_000)[0]


def test_model_config_sources(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(GEMMA))
    assert model_config(str(tmp_path)) == GEMMA
    assert model_config("gemma3-270m")["vocab_size"] == 262144
    with pytest.raises(ConfigError, match="cannot size"):
        model_config("no/such-model")


def _fake_run(tmp_path, peak, trainable=1):
    run = load_config(None, ["data.max_length=128"])
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.yaml").write_text(run.to_yaml())
    train = {"peak_rss_mb": peak, "dtype": "float32", "trainable_params": trainable, "total_params": 2, "steps": 1,
             "seconds": 1.0, "tokens_per_s": 1.0, "target_tokens_per_s": 1.0}
    (tmp_path / "metrics.json").write_text(json.dumps({"task": "translate", "after": {}, "train": train}))
    return tmp_path


def test_compare_with_run_reads_metrics(tmp_path):
    est = estimate(load_config(None, ["data.max_length=128", "model.dtype=fp32"]), "cpu")
    res = compare_with_run(_fake_run(tmp_path, est.peak_mb / 2))
    assert res["ratio"] == pytest.approx(2.0, rel=0.01) and res["measured_mb"] == est.peak_mb / 2
    assert res["within_tolerance"] is False


def test_check_prints_a_verdict(tmp_path):
    est = estimate(load_config(None, ["data.max_length=128", "model.dtype=fp32"]), "cpu")
    close = format_check(_fake_run(tmp_path / "a", est.peak_mb * 1.1, trainable=est.trainable_params))
    assert ": OK (within 25%)" in close and "9% under" in close
    far = format_check(_fake_run(tmp_path / "b", est.peak_mb / 2, trainable=est.trainable_params))
    assert "100% over: OFF by more than 25%" in far


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p])
def test_check_on_a_bad_path_says_what_to_pass(tmp_path, make):
    (tmp_path / "config.yaml").write_text("{}\n")  # an interrupted run: config but no metrics
    with pytest.raises(ConfigError) as e:
        compare_with_run(make(tmp_path))
    assert "RUN must be a finished run directory (with metrics.json and config.yaml)" in str(e.value)
    assert "compare_with_run" not in str(e.value)


@pytest.mark.parametrize("fast", [True, False])
def test_auto_dtype_is_what_this_machine_will_use(monkeypatch, fast):
    import loraforge.deploy.estimate as est_mod

    monkeypatch.setattr(est_mod, "cpu_has_fast_bf16", lambda: fast)
    want = "bf16" if fast else "fp32"
    assert estimate(RunConfig(), "cpu", model_cfg=GEMMA).dtype == want
    assert estimate(RunConfig(), "gpu", model_cfg=GEMMA).dtype == "bf16"
    assert estimate(load_config(None, ["model.dtype=fp32"]), "cpu", model_cfg=GEMMA).dtype == "fp32"
    report = format_estimate(RunConfig(), 24)
    assert f"CPU, {want}" in report and f"-> {want} on this machine's CPU" in report


def test_cpu_bf16_detection_reads_the_flags():
    from loraforge.hardware import cpu_has_fast_bf16

    assert cpu_has_fast_bf16("flags : fpu avx2 avx512f amx_bf16 amx_tile")
    assert cpu_has_fast_bf16("flags : fpu avx2 avx512_bf16")
    assert not cpu_has_fast_bf16("flags : fpu avx2 avx512f")


def test_estimate_within_25_percent_of_measured_runs(request):
    """Against real runs' peak RSS (set LORAFORGE_RUNS_TO_CHECK=runs/a,runs/b); skipped when none."""
    import os
    from pathlib import Path

    dirs = [Path(p) for p in os.environ.get("LORAFORGE_RUNS_TO_CHECK", "").split(",") if p]
    dirs = [d for d in dirs if (d / "metrics.json").is_file()]
    if not dirs:
        pytest.skip("no measured runs given (LORAFORGE_RUNS_TO_CHECK)")
    for d in dirs:
        res = compare_with_run(d)
        assert 0.75 <= res["ratio"] <= 1.25, res
        if res["measured_trainable"]:
            assert res["estimated_trainable"] == res["measured_trainable"], res
