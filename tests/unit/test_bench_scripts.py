"""The stand-alone benchmarks (``python -m loraforge.bench.<name>``) run on tiny inputs and the tiny model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and glibc's mallinfo2")


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_attention_micro_times_both_kernels_on_the_same_inputs(capsys):
    from loraforge.bench.attention_micro import main, time_attention

    sdpa, matmul = time_attention(batch=2, heads=4, kv_heads=1, length=16, head_dim=8, dtype="fp32", repeats=1,
                                  warmup=0)
    assert (sdpa.name, matmul.name) == ("sdpa", "matmul")
    assert sdpa.max_abs_diff == 0 and matmul.max_abs_diff < 1e-5  # the same attention, two kernels
    assert main(["--batch", "2", "--length", "16", "--head-dim", "8", "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["sdpa", "matmul"]
    assert all("ms per layer" in line for line in lines)


@linux_only
def test_tokenizer_memory_runs_on_the_tiny_model(tiny_model_dir, capsys):
    from loraforge.bench.tokenizer_memory import main, measure

    from transformers import AutoTokenizer

    r = measure(str(tiny_model_dir))
    assert r.tokenizer == type(AutoTokenizer.from_pretrained(tiny_model_dir)).__name__
    assert isinstance(r.loaded_mb, float) and isinstance(r.slim_mb, float)
    assert main(["--model", str(tiny_model_dir)]) == 0
    assert "MB as loaded" in capsys.readouterr().out


@linux_only
def test_kernel_caches_measures_in_a_process_with_the_given_capacity(monkeypatch, capsys):
    from loraforge.bench import kernel_caches
    from loraforge.models.load import KERNEL_CACHE_VARS
    from loraforge.train.heap import malloc_in_use

    if malloc_in_use() is None:
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")
    # the child mode measures in this process and prints one number
    assert kernel_caches.main(["--child", "--in-features", "16", "--out-features", "32", "2"]) == 0
    float(capsys.readouterr().out)
    # the parent runs one real child per capacity, with the capacity in the child's environment
    assert kernel_caches.grown_mb(2, 64, in_features=16, out_features=32) >= -1.0
    seen = []
    real_run = kernel_caches.subprocess.run

    def spy(cmd, env, **kw):
        seen.append({var: env[var] for var in KERNEL_CACHE_VARS})
        return real_run(cmd, env=env, **kw)

    monkeypatch.setattr(kernel_caches.subprocess, "run", spy)
    assert kernel_caches.main(["--in-features", "16", "--out-features", "32", "2"]) == 0
    from loraforge.models.load import KERNEL_CACHE_CAPACITY

    assert seen == [{var: str(c) for var in KERNEL_CACHE_VARS} for c in (1024, KERNEL_CACHE_CAPACITY)]
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == ["capacity  1024", f"capacity {KERNEL_CACHE_CAPACITY:5d}"]


def test_gpu_profile_runs_on_the_cpu_with_the_tiny_model(tiny_model_dir):
    from loraforge.bench.gpu_profile import profile_steps

    rows = profile_steps(str(tiny_model_dir), batch=2, steps=1, max_length=256, warmup=1,
                         variants={"padded": {}, "packed": {"packing": True}}, log=lambda s: None)
    assert [r.variant for r in rows] == ["padded", "packed"]
    for r in rows:
        assert r.tokens > 0 and r.step_s > 0
        assert "aten::" in r.table  # the profiler saw the step's operators
        if not torch.cuda.is_available():
            assert r.kernels == 0 and r.gpu_busy_s == 0


def test_gpu_profile_refuses_an_unknown_variant_before_loading(capsys):
    from loraforge.bench.gpu_profile import main

    with pytest.raises(SystemExit) as e:
        main(["--model", "/nonexistent", "--variants", "padded,warp-drive"])
    assert e.value.code == 2 and "warp-drive" in capsys.readouterr().err


def test_interleaved_ab_runs_the_training_loop_with_each_variants_levers(tiny_model_dir, capsys):
    from loraforge.bench.interleaved_ab import interleaved_ab, main

    logged = []
    res = interleaved_ab({"sdpa": {"matmul_attention": False}, "matmul": {}}, cycles=1, model=str(tiny_model_dir),
                         steps=2, batch_size=2, log=logged.append)
    assert [line.split(":")[0] for line in logged] == ["cycle 0 sdpa", "cycle 0 matmul", "cycle 1 sdpa",
                                                      "cycle 1 matmul"]
    assert [len(r.rates) for r in res.values()] == [1, 1]  # cycle 0 is warm-up
    assert all(r.mean > 0 for r in res.values())
    # each variant's TrainConfig reached the loop: only the matmul variant attended through the matmuls
    assert res["matmul"].attention == {"matmul": 2 * 2 * 2}  # 2 cycles x 2 steps x 2 layers
    assert res["sdpa"].attention == {}
    assert main(["{'a': {}}", "0", "--model", str(tiny_model_dir), "--steps", "1", "--batch-size", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("a: 0.0 tok/s (cycles: )")


def test_interleaved_ab_rejects_a_bad_lever_before_loading_the_model():
    from pydantic import ValidationError

    from loraforge.bench.interleaved_ab import interleaved_ab

    with pytest.raises(ValidationError, match="warp_drive"):
        interleaved_ab({"x": {"warp_drive": True}}, cycles=1, model="/nonexistent")


def test_lm_head_bench_runs_on_the_tiny_model(tiny_model_dir, tmp_path):
    """The three heads on hidden states from real decoding; the verified head agrees with fp32 everywhere."""
    import json

    from loraforge.bench.lm_head import run

    if "fbgemm" not in torch.backends.quantized.supported_engines:
        pytest.skip("no fbgemm")
    r = run(batches=(1, 4), new_tokens=4, out=tmp_path, model=str(tiny_model_dir))
    assert r["states"] > 0 and json.loads((tmp_path / "lm-head.json").read_text())["by_batch"].keys() == {"1", "4"}
    for row in r["by_batch"].values():
        assert row["verified"]["greedy_agreement"] == 1.0 and 0 <= row["verified"]["fallback_share"] <= 1
        assert row["fp32"]["seconds_per_call"] > 0 and 0 <= row["int8"]["greedy_agreement"] <= 1
    assert "| 4 |" in (tmp_path / "lm-head.md").read_text()


def test_int8_bench_scores_each_weight_variant_on_a_tiny_run(tiny_model_dir, tmp_path):
    """fp32, bf16 (with fast bf16), int8 with two and one activation levels: engine speed and test-split
    quality in one table, each variant computing in its own dtype whatever the run trained in."""
    import json

    from loraforge.bench.int8 import default_variants, run
    from loraforge.config import ConfigError, load_config
    from loraforge.runs import RunDir
    from loraforge.workflows import train_run

    if "fbgemm" not in torch.backends.quantized.supported_engines:
        pytest.skip("no fbgemm")
    pairs = Path(__file__).parents[1] / "fixtures" / "core" / "pairs.jsonl"
    cfg = load_config(None, [f"model.name={tiny_model_dir}", f"data.train={pairs}", f"data.dev={pairs}",
                             f"data.test={pairs}", "train.steps=2", "train.batch_size=4", "eval.max_new_tokens=6",
                             "eval.max_examples=4", "model.dtype=fp32", f"output.dir={tmp_path / 'run'}"])
    train_run(cfg, progress=False)
    r = run(str(tmp_path / "run"), segments=4, rows=2, tokens=3, out=tmp_path / "out", rounds=2)
    assert list(r["variants"]) == default_variants() and r["reference"] == "fp32"
    # the fp32 row is loraforge eval's own scoring of the (fp32) run: same rows, same generation
    assert r["variants"]["fp32"]["chrf"] == RunDir(tmp_path / "run").metrics().after["chrf"]
    assert r["variants"]["fp32"]["same_as_reference"] == 1.0
    for v in r["variants"].values():
        assert v["engine_tokens_per_s"] > 0 and v["chrf"] is not None and 0 <= v["same_as_reference"] <= 1
        assert len(v["engine_tokens_per_s_rounds"]) == 2 and min(v["engine_tokens_per_s_rounds"]) > 0
    assert json.loads((tmp_path / "out" / "int8.json").read_text())["segments"] == 4
    md = (tmp_path / "out" / "int8.md").read_text()
    assert "| int8 |" in md and "--rows 2 --tokens 3 --rounds 2 --variants " in md  # the command reproduces it
    # a chosen subset, bf16 included whatever the CPU: its row computes in bf16
    r = run(str(tmp_path / "run"), segments=4, rows=2, tokens=3, out=tmp_path / "out2", variants=["bf16", "bf16-unpacked"])
    assert list(r["variants"]) == ["bf16", "bf16-unpacked"] and r["variants"]["bf16"]["dtype"] == "bf16"
    # without prepacked weights: its own engine speed, bf16's quality (eval never prepacks)
    unpacked = r["variants"]["bf16-unpacked"]
    assert unpacked["chrf"] == r["variants"]["bf16"]["chrf"] and unpacked["engine_tokens_per_s"] > 0
    with pytest.raises(ConfigError, match="unknown variant"):
        run(str(tmp_path / "run"), segments=4, out=tmp_path / "out3", variants=["fp16"])


def test_int8_kernels_bench_times_every_linear_at_the_engine_row_counts(tiny_model_dir, tmp_path):
    """Kernels at 2*rows+1 (decoder, two levels) and rows+1 (output layer) rows, against a real engine step."""
    import json

    from loraforge.bench.int8_kernels import run

    if "fbgemm" not in torch.backends.quantized.supported_engines:
        pytest.skip("no fbgemm")
    r = run(str(tiny_model_dir), rows=3, out=tmp_path)
    assert {"decoder", "output layer"} == set(r["kernels_ms"])
    for layers in r["kernels_ms"].values():
        assert {7, 4} <= set(layers["int8"]) and all(ms > 0 for ms in layers["fp32"].values())
    assert r["engine_step_ms"] > 0 and set(r["reductions_ms"]) == {"argmax", "top-32"}
    assert json.loads((tmp_path / "int8-kernels.json").read_text())["rows"] == 3
    assert "7 decoder rows" in (tmp_path / "int8-kernels.md").read_text()


def test_generation_thread_bench_times_the_same_engine_on_both_threads(tiny_model_dir, tmp_path):
    import json

    from loraforge.bench.generation_thread import main

    main(["--model", str(tiny_model_dir), "--dtype", "fp32", "--rows", "2", "--steps", "2", "--rounds", "2",
          "--out", str(tmp_path)])
    r = json.loads((tmp_path / "generation-thread.json").read_text())
    assert r["dtype"] == "float32" and r["rows"] == 2
    # fp32: nothing to prepack, so one variant per thread
    assert r["prepacked_layers"] == 0 and [(v["thread"], v["prepacked"]) for v in r["variants"]] == [
        ("main", False), ("second", False)]
    assert all(len(v["rounds_ms"]) == 2 and min(v["rounds_ms"]) > 0 for v in r["variants"])
    md = (tmp_path / "generation-thread.md").read_text()
    assert "--dtype fp32 --rows 2 --steps 2 --rounds 2" in md and "float32" in md
    from loraforge.models import prepack

    if prepack.available():  # bf16: every thread with and without the packed weights
        main(["--model", str(tiny_model_dir), "--dtype", "bf16", "--rows", "2", "--steps", "2", "--rounds", "1",
              "--out", str(tmp_path / "bf16")])
        r = json.loads((tmp_path / "bf16" / "generation-thread.json").read_text())
        assert r["prepacked_layers"] > 0 and [(v["thread"], v["prepacked"]) for v in r["variants"]] == [
            ("main", True), ("main", False), ("second", True), ("second", False)]
