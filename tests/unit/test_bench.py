"""loraforge bench train / bench generate on the tiny random-weight model (a few steps, batch 2)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from loraforge.bench import train as bench
from loraforge.bench.flops import ModelShape, model_shape, train_flops
from loraforge.bench.generate import GenerateSpec, bench_generate

JOB_FIELDS = {"job", "kind", "precision", "steps", "measured_steps", "seconds", "tokens", "target_tokens",
              "tokens_per_s", "target_tokens_per_s", "peak_rss_mb", "dev_loss", "flops", "flops_per_s",
              "lm_head_positions", "model_shape"}


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture
def spec(tiny_model_dir):
    return bench.BenchSpec(model=str(tiny_model_dir), steps=3, batch_size=2, n_dev=2, matmul_size=64,
                           lr=1e-2, warmup_steps=0)


TRL_CPU_ABLATION = ["trl-bf16", "trl-bf16-lean-loading", "trl-bf16-weights", "trl-bf16-weights-no-checkpointing",
                    "trl-bf16-weights-padding-free", "trl-bf16-weights-packing",
                    "trl-bf16-weights-packing-no-checkpointing", "trl-fp32"]
TRL_FP32_TUNED = ["trl-fp32-no-checkpointing", "trl-fp32-padding-free", "trl-fp32-packing",
                  "trl-fp32-packing-no-checkpointing"]  # where bf16 is emulated, a speed-minded user stays in fp32


def test_jobs_and_ablation_levers(spec):
    names = [j.job for j in bench.jobs(spec, "both", ablation=True)]
    from loraforge.models.load import has_fast_bf16

    assert names == TRL_CPU_ABLATION + TRL_FP32_TUNED * (not has_fast_bf16()) + [
                     "loraforge", "loraforge-no-compile", "loraforge-no-target-only-logits",
                     "loraforge-no-length-grouping", "loraforge-no-matmul-attention", "loraforge-freed-memory-default",
                     "loraforge-kernel-caches-default", "loraforge-packing"] + [
                     "loraforge-fp32-weights"] * has_fast_bf16() + [
                     "loraforge-low-memory", "loraforge-compile-model"]
    # process-wide levers go in the job's environment: PyTorch's own kernel-cache sizes for one row only
    from loraforge.models.load import KERNEL_CACHE_VARS

    # TRL as it comes (PyTorch's caches, transformers' tokenizer), except the row that loads like loraforge
    torch_caches = {v: "1024" for v in KERNEL_CACHE_VARS}
    setups = {j.job: (j.env, j.lean_loading) for j in bench.jobs(spec, "both", ablation=True)}
    assert setups.pop("loraforge-kernel-caches-default") == (torch_caches, True)
    assert setups.pop("trl-bf16-lean-loading") == ({}, True)
    trl = [job for job in setups if job.startswith("trl-")]
    assert [setups.pop(job) for job in trl] == [(torch_caches, False)] * len(trl)
    assert all(setup == ({}, True) for setup in setups.values())  # loraforge-*
    assert [j.job for j in bench.jobs(spec, "loraforge")] == ["loraforge"]
    assert "loraforge-no-packing" in [j.job for j in bench.jobs(spec, "loraforge", ablation=True, cuda=True)]


def test_trl_rows_as_it_comes_and_at_its_best(spec):
    from loraforge.bench.trl_job import TRL_LEVERS

    # without --ablation: TRL as it comes, bf16 weights, and all its speed options together
    cpu = {j.job: j for j in bench.jobs(spec, "trl", fast_bf16=True)}
    assert list(cpu) == ["trl-bf16", "trl-bf16-weights", "trl-bf16-weights-packing-no-checkpointing", "trl-fp32"]
    assert [(j.dtype, j.trl_bf16, j.trl_args) for j in cpu.values()] == [
        ("fp32", True, {}), ("bf16", True, {}),
        ("bf16", True, {**TRL_LEVERS["packing"], **TRL_LEVERS["no-checkpointing"]}),
        ("fp32", False, {})]
    assert [bench.trl_as_it_comes(j) for j in cpu.values()] == [True, False, False, True]
    emulated = [j.job for j in bench.jobs(spec, "trl", fast_bf16=False)]
    assert emulated == list(cpu) + ["trl-fp32-packing-no-checkpointing"]
    # --ablation: each option alone on bf16 weights (and fp32 where bf16 is emulated)
    assert [j.job for j in bench.jobs(spec, "trl", ablation=True, fast_bf16=False)] == TRL_CPU_ABLATION + TRL_FP32_TUNED
    args = {j.job: (j.dtype, j.trl_args) for j in bench.jobs(spec, "trl", ablation=True, fast_bf16=True)}
    assert [args[f"trl-bf16-weights-{name}"] for name in TRL_LEVERS] == [("bf16", a) for a in TRL_LEVERS.values()]
    # on a GPU: TRL in bf16 only, Liger kernels as one more option
    gpu = bench.jobs(spec, "trl", cuda=True)
    assert [(j.job, j.dtype, j.trl_liger) for j in gpu] == [
        ("trl-bf16", "fp32", False), ("trl-bf16-liger", "fp32", True), ("trl-bf16-weights", "bf16", False),
        ("trl-bf16-weights-liger-packing-no-checkpointing", "bf16", True)]
    assert "trl-bf16-weights-liger" in [j.job for j in bench.jobs(spec, "trl", cuda=True, ablation=True)]
    # emulated bf16: --trl-bf16-steps shortens (0 skips) every bf16 row, fp32 rows keep --steps
    short = bench.jobs(spec, "trl", bf16_steps=2, fast_bf16=False)
    assert {j.job: j.steps for j in short} == {"trl-bf16": 2, "trl-bf16-weights": 2,
                                                "trl-bf16-weights-packing-no-checkpointing": 2, "trl-fp32": 3,
                                                "trl-fp32-packing-no-checkpointing": 3}
    assert [j.job for j in bench.jobs(spec, "both", bf16_steps=0, fast_bf16=True)] == ["trl-fp32", "loraforge"]
    assert all(j.steps == 2 for j in bench.jobs(spec, "trl", bf16_steps=2, cuda=True))


def test_selecting_jobs_implies_ablation_and_names_the_valid_ones(spec):
    from loraforge.config import ConfigError

    assert [j.job for j in bench.jobs(spec, "both", select=["loraforge-low-memory", "trl-bf16"])] == [
        "trl-bf16", "loraforge-low-memory"]  # without ablation=True: --jobs implies it
    with pytest.raises(ConfigError, match="no such job loraforge-warp-drive; choose from trl-bf16, .*loraforge-low"):
        bench.jobs(spec, "both", select=["loraforge-warp-drive", "loraforge"])
    with pytest.raises(ConfigError, match="no such job trl-bf16 with --only loraforge"):
        bench.jobs(spec, "loraforge", select=["trl-bf16"])


def test_ablation_flags_reach_the_training_loop(spec, monkeypatch):
    """Each ablation job hands train() a config with exactly its lever switched off."""
    import loraforge.train.loop as loop

    seen = []

    def fake_train(model, train_set, dev_set, cfg, run_dir, pad_id, family, progress):
        seen.append(cfg)
        return loop.TrainResult(history=[{"tokens_per_s": 1000.0}] * cfg.steps)

    monkeypatch.setattr(loop, "train", fake_train)
    rows = [bench.run_job(j) for j in bench.jobs(spec, "loraforge", ablation=True)]
    assert [c.compile_model for c in seen] == [False] * (len(seen) - 1) + [True]
    seen = seen[:-1]
    levers = [(c.compile, c.target_only_logits, c.length_grouping, c.matmul_attention, c.freed_memory, c.packing,
               c.activation_checkpointing) for c in seen]
    from loraforge.models.load import has_fast_bf16, load_model

    default = (True, True, True, True, "keep", "auto", False)
    assert levers == [default, (False, True, True, True, "keep", "auto", False),
                      (True, False, True, True, "keep", "auto", False), (True, True, False, True, "keep", "auto", False),
                      (True, True, True, False, "keep", "auto", False), (True, True, True, True, "default", "auto", False),
                      default, (True, True, True, True, "keep", True, False)] + [default] * has_fast_bf16() + [
                      (True, True, True, True, "release", True, True)]
    low_memory = seen[-1]  # the same examples per optimizer step, in two micro-batches
    assert (low_memory.logits_chunk, low_memory.batch_size, low_memory.grad_accum) == (32, 1, 2)
    assert all(c.steps == 3 and c.batch_size * c.grad_accum == 2 for c in seen)
    assert [r["lm_head_positions"] for r in rows][:4] == ["target", "target", "all", "target"]
    # the same tokens, more FLOPs when the LM head runs at every position
    assert rows[0]["tokens"] == rows[2]["tokens"] and rows[2]["flops"] > rows[0]["flops"]
    if has_fast_bf16():  # the fp32-weights job really loads fp32 weights
        assert rows[0]["precision"] == "bfloat16" and rows[8]["precision"] == "float32"
    # micro-batches: the low-memory job's steps cover the same examples, each once
    train_set, _ = bench.bench_examples(spec, load_model(spec.model).tokenizer)
    for cfg in (seen[0], low_memory):
        covered = [e.input_ids for b in bench.step_batches(train_set, cfg) for e in b]
        assert sorted(covered) == sorted(e.input_ids for e in train_set)
        assert all(len(b) == spec.batch_size for b in bench.step_batches(train_set, cfg))


def test_trl_and_loraforge_run_the_same_job(spec):
    """With length grouping off, loraforge sees TRL's batches: same tokens, and (fp32) the same dev loss."""
    trl = bench.run_job(replace(spec, job="trl-fp32", kind="trl", dtype="fp32"))
    ours = bench.run_job(replace(spec, overrides={"length_grouping": False}))
    untrained = bench.run_job(replace(spec, lr=1e-9, overrides={"length_grouping": False}))
    for row in (trl, ours):
        assert JOB_FIELDS <= row.keys()
        assert row["measured_steps"] == spec.steps - bench.WARMUP and row["seconds"] > 0
    assert (trl["tokens"], trl["target_tokens"]) == (ours["tokens"], ours["target_tokens"])
    assert trl["lm_head_positions"] == "all" and ours["lm_head_positions"] == "target"
    assert abs(untrained["dev_loss"] - ours["dev_loss"]) > 1e-3  # training moved the model...
    assert ours["dev_loss"] == pytest.approx(trl["dev_loss"], rel=1e-3)  # ...the same way in both


def test_bench_train_cli_writes_json_and_markdown(tiny_model_dir, tmp_path, monkeypatch):
    import os
    import resource

    from loraforge.cli import main

    # each job process touches a 1.5 GiB buffer as it starts (more than a tiny job's own peak): its
    # reported peak RSS must count it, and must be no more than what the OS reports for our children
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text("bytearray(b'x') * (1536 << 20)\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "results"
    assert main(["bench", "train", "--model", str(tiny_model_dir), "--steps", "3", "--batch-size", "2",
                 "--dev-examples", "2", "--matmul-size", "64", "--jobs", "loraforge", "--out", str(out)]) == 0
    results = json.loads((out / "train.json").read_text())
    assert results["settings"]["steps"] == 3 and set(results["matmul_peak_flops"]) == {"fp32", "bf16"}
    (row,) = results["jobs"]
    assert JOB_FIELDS | {"mfu", "mfu_fp32", "mfu_bf16", "wall_seconds"} <= row.keys()
    assert 0 < row["mfu"] == min(row["mfu_fp32"], row["mfu_bf16"])
    assert 1536 <= row["peak_rss_mb"] <= resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 + 0.1
    md = (out / "train.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("|")]
    assert len(lines) == 3 and lines[2].startswith("| loraforge |")
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    # a TRL row with fewer steps (--trl-bf16-steps): ratios name their baseline, the dev loss its steps
    from loraforge.bench.report import train_markdown

    trl = dict(row, job="trl-bf16", kind="trl", steps=2, speedup_vs_trl=1.0, rss_vs_trl=1.0)
    md = train_markdown(dict(results, jobs=[trl, dict(row, speedup_vs_trl=2.5, rss_vs_trl=0.5)],
                             trl_baseline="trl-bf16"))
    assert "(after 2 steps)" in md and "| 2.50x | 0.50x |" in md and "of this run (`trl-bf16`" in md
    assert "VRAM" not in md
    # a GPU run: peak VRAM columns, the GPU named, which attention kernel the packed job used
    gpu = dict(results, machine=dict(results["machine"], gpu="NVIDIA H200"),
               jobs=[dict(trl, peak_vram_mb=4096.0), dict(row, job="loraforge-packing", peak_vram_mb=1024.0,
                                                          vram_vs_trl=0.25, attention={"varlen": 36})])
    md = train_markdown(gpu)
    assert "peak VRAM (GB)" in md and "| 4.00 |" in md and "| 1.00 | 0.25x |" in md and "NVIDIA H200" in md
    assert "`loraforge-packing` attention calls: varlen 36" in md


def test_train_flops_formula():
    shape = ModelShape(n_body=10, n_lora=2, d_model=3, vocab=5, layers=1, attn_width=2)
    # body 4*10*2 + attention 3*4*1*2*(1+2) + head 4*3*5*1 + lora 6*2*2
    assert train_flops(shape, [2], head_positions=1) == 80 + 72 + 60 + 24
    assert train_flops(shape, [2], 2) - train_flops(shape, [2], 1) == 60


def test_model_shape_counts_lora_and_frozen_weights(tiny_gemma):
    from loraforge.adapters import apply_adapter, trainable_parameters
    from loraforge.config import AdapterConfig

    model = apply_adapter(tiny_gemma, AdapterConfig(r=4, alpha=8), "causal")
    shape = model_shape(model)
    assert shape.n_lora == trainable_parameters(model)[0]
    assert shape.n_body == sum(p.numel() for n, p in model.named_parameters() if n.endswith("base_layer.weight"))
    assert (shape.vocab, shape.d_model, shape.layers) == (512, 32, 2)


def test_bench_generate(tiny_model_dir, tmp_path):
    spec = GenerateSpec(model=str(tiny_model_dir), prompts=4, max_new_tokens=6, batch_size=4)
    res = bench_generate(spec, tmp_path, log=lambda _: None)
    assert res["prompts"] == 4 and [r["batch_size"] for r in res["runs"]] == [1, 4, 4]
    assert [r["tie_margin"] is None for r in res["runs"]] == [True, False, True]
    assert all(r["tokens"] > 0 and r["tokens_per_s"] > 0 for r in res["runs"])
    assert res["mismatches"] == len(res["mismatched_prompts"]) == res["runs"][1]["differ_from_batch1"] == 0
    assert res["runs"][0]["tokens"] == res["runs"][1]["tokens"]  # identical outputs, identical counts
    noise = res["gap_noise"]
    # identical outputs: every decode step is compared, and fp32 batching moves a gap by float noise only
    assert noise["steps"] == res["runs"][0]["tokens"] and noise["max"] < 1e-3
    assert "Gap noise" in (tmp_path / "generate.md").read_text()
    assert json.loads((tmp_path / "generate.json").read_text())["speedup"] == res["speedup"]
    assert "| loraforge generate | 4 |" in (tmp_path / "generate.md").read_text()


def test_a_failed_job_is_listed_and_every_finished_job_is_written(spec, tmp_path, monkeypatch):
    """Results are rewritten after each job, a failing job does not end the run, and the CLI then exits 1."""
    seen_on_disk = []

    def fake_child(job, log):
        seen_on_disk.append(len(json.loads((tmp_path / "t.json").read_text())["jobs"])
                            if (tmp_path / "t.json").exists() else None)
        if job.job == "loraforge-no-compile":
            raise bench.JobFailed(job.job, "ValueError: no flash attention")
        return {"job": job.job, "kind": job.kind, "precision": "bfloat16", "lm_head_positions": "target",
                "steps": job.steps, "target_tokens_per_s": 10.0, "tokens_per_s": 30.0, "peak_rss_mb": 1000.0,
                "dev_loss": 1.0, "flops_per_s": 1e9, "wall_seconds": 1.0}

    monkeypatch.setattr(bench, "_child", fake_child)
    results = bench.bench_train(spec, tmp_path, only="loraforge", ablation=True, name="t", log=lambda *a: None,
                                select=["loraforge", "loraforge-no-compile", "loraforge-packing"])
    assert seen_on_disk == [None, 1, 1]  # the first row was on disk before the second job started
    assert [r["job"] for r in results["jobs"]] == ["loraforge", "loraforge-packing"]
    assert results["failed"] == ["loraforge-no-compile"]
    assert results["failures"] == {"loraforge-no-compile": "ValueError: no flash attention"}
    assert "Failed jobs: `loraforge-no-compile` (ValueError: no flash attention)." in (tmp_path / "t.md").read_text()
    from loraforge.cli import main

    assert main(["bench", "train", "--model", spec.model, "--matmul-size", "64", "--only", "loraforge",
                 "--ablation", "--jobs", "loraforge-no-compile", "--out", str(tmp_path)]) == 1


def test_attention_counts_belong_to_their_own_job(spec):
    """Jobs run in one process (as here) report only their own attention calls."""
    packed = bench.run_job(replace(spec, job="loraforge-packing", overrides={"packing": True}))
    padded = bench.run_job(spec)
    sdpa = bench.run_job(replace(spec, overrides={"matmul_attention": False}))
    assert packed["attention"] == {"matmul-per-sequence": spec.steps * 2}  # 2 layers per forward
    assert padded["attention"] == {"matmul": spec.steps * 2}
    assert sdpa["attention"] is None


def test_a_job_process_gets_its_environment(spec, monkeypatch):
    """Levers read at a process's first matmul (kernel-cache sizes) travel in the child's environment."""
    import os
    import subprocess
    from pathlib import Path

    seen = []

    def fake_run(cmd, env, **kw):
        seen.append(env)
        Path(cmd[-1]).write_text(json.dumps({"target_tokens_per_s": 1.0, "tokens_per_s": 2.0, "peak_rss_mb": 3.0,
                                             "dev_loss": None}))
        return subprocess.CompletedProcess(cmd, 0, "", None)

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    monkeypatch.setenv("LORAFORGE_TEST_MARK", "kept")
    bench._child(replace(spec, env={"LRU_CACHE_CAPACITY": "1024"}), log=lambda m: None)
    bench._child(spec, log=lambda m: None)
    assert seen[0]["LRU_CACHE_CAPACITY"] == "1024" and seen[0]["LORAFORGE_TEST_MARK"] == "kept"
    assert seen[1]["LORAFORGE_TEST_MARK"] == "kept"  # no job env: the parent's, unchanged
    assert seen[1].get("LRU_CACHE_CAPACITY") == os.environ.get("LRU_CACHE_CAPACITY")


def _row(job, kind, rate, rss, as_it_comes=False, lean=False):
    return {"job": job, "kind": kind, "lean_loading": lean, "trl_as_it_comes": as_it_comes,
            "target_tokens_per_s": rate, "peak_rss_mb": rss}


def test_ratios_are_against_the_fastest_trl_row_and_trl_as_it_comes():
    """The headline is against the fastest TRL row; the as-it-comes ratios stay; lean loading is never a baseline."""
    rows = [_row("trl-bf16", "trl", 10.0, 1000.0, as_it_comes=True),
            _row("trl-fp32", "trl", 16.0, 2000.0, as_it_comes=True),
            _row("trl-bf16-lean-loading", "trl", 50.0, 800.0, lean=True),
            _row("trl-bf16-weights-packing-no-checkpointing", "trl", 20.0, 500.0),
            _row("trl-bf16-weights", "trl", 12.0, 600.0),
            _row("loraforge", "loraforge", 100.0, 250.0)]
    results = {"jobs": rows}
    bench._compare_with_trl(results)
    assert (results["trl_baseline"], results["trl_as_it_comes"]) == ("trl-bf16-weights-packing-no-checkpointing",
                                                                      "trl-fp32")
    assert [(r["speedup_vs_trl"], r["rss_vs_trl"]) for r in rows][-1] == (5.0, 0.5)
    assert [(r["speedup_vs_trl_as_it_comes"], r["rss_vs_trl_as_it_comes"]) for r in rows][-1] == (6.25, 0.125)
    # only TRL as it comes in the run: both baselines are that row
    results = {"jobs": [dict(r) for r in rows[:3] + rows[-1:]]}
    bench._compare_with_trl(results)
    assert results["trl_baseline"] == results["trl_as_it_comes"] == "trl-fp32"
    # no TRL row as it comes (e.g. --jobs picked tuned rows only): no as-it-comes ratios
    results = {"jobs": [dict(r) for r in rows[3:]]}  # copies that still carry the ratios computed above
    bench._compare_with_trl(results)
    assert results["trl_as_it_comes"] is None and "speedup_vs_trl_as_it_comes" not in results["jobs"][-1]
    assert results["jobs"][-1]["speedup_vs_trl"] == 5.0


def test_the_table_names_its_baselines_and_the_trl_options(spec, tmp_path):
    from loraforge.bench.report import train_markdown

    common = {"precision": "float32", "lm_head_positions": "all", "steps": 3, "tokens_per_s": 1.0, "dev_loss": None,
              "flops_per_s": 1e9, "mfu_bf16": 0.1, "mfu_fp32": 0.2}
    rows = [dict(_row("trl-fp32", "trl", 10.0, 1000.0, as_it_comes=True), **common, trl_options={}),
            dict(_row("trl-fp32-packing-no-checkpointing", "trl", 20.0, 1000.0), **common, train_examples=40,
                 trl_options={"packing": True, "gradient_checkpointing": False}),
            dict(_row("loraforge", "loraforge", 100.0, 500.0), **common)]
    results = {"settings": {"model": "m", "steps": 3, "batch_size": 2, "max_length": 64}, "jobs": rows,
               "matmul_peak_flops": {"fp32": 1e12, "bf16": 1e12}, "fast_bf16": False, "warmup_steps_skipped": 2,
               "machine": {"cpu": "cpu", "cores": 2, "torch": "2"}}
    bench._compare_with_trl(results)
    md = train_markdown(results)
    header = next(line for line in md.splitlines() if line.startswith("| job"))
    assert "speed vs `trl-fp32-packing-no-checkpointing` | RSS vs `trl-fp32-packing-no-checkpointing` | " \
           "speed vs `trl-fp32` | RSS vs `trl-fp32`" in header
    assert "| 5.00x | 0.50x | 10.00x | 0.50x |" in md  # loraforge against both
    assert "`trl-fp32-packing-no-checkpointing` packing=True, gradient_checkpointing=False" in md
    assert "`trl-fp32-packing-no-checkpointing` packs: it was given 40 examples" in md
    lines = [line for line in md.splitlines() if line.startswith("|")]
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    # MFU against an emulated bf16 peak means nothing: shown as '-', and as a share where bf16 is fast
    assert "| 0.0010 | - | 20.0% |" in md
    assert "| 0.0010 | 10.0% | 20.0% |" in train_markdown(dict(results, fast_bf16=True))
    # the fastest TRL row is the as-it-comes one: one pair of ratio columns
    results["jobs"] = [rows[0], rows[2]]
    bench._compare_with_trl(results)
    assert "speed vs `trl-fp32` | RSS vs `trl-fp32` | job wall" in train_markdown(results)


def test_trl_at_its_best_rows_run_on_the_tiny_model(spec):
    """bf16 weights, padding-free and packing without checkpointing: each row trains with what it says."""
    rows = {j.job: bench.run_job(j) for j in bench.jobs(spec, "trl", select=[
        "trl-bf16-weights", "trl-bf16-weights-padding-free", "trl-bf16-weights-packing-no-checkpointing"])}
    padded, free, best = rows.values()
    assert {r["precision"] for r in rows.values()} == {"bfloat16 weights, bf16 autocast"}
    assert [(r["trl_ran_with"]["gradient_checkpointing"], r["trl_ran_with"]["padding_free"],
             r["trl_ran_with"]["packing"]) for r in rows.values()] == [(True, False, False), (True, True, False),
                                                                       (False, True, True)]
    assert free["trl_options"] == {"bf16": True, "padding_free": True, "max_length": None}
    # padding-free changes how the batch is laid out, not what it trains on
    assert (free["tokens"], free["target_tokens"]) == (padded["tokens"], padded["target_tokens"])
    assert free["dev_loss"] == pytest.approx(padded["dev_loss"], rel=1e-2)
    # packing fills rows of max_length: its steps hold more examples, so it was given more
    assert best["train_examples"] > spec.steps * spec.batch_size == padded["train_examples"]
    assert best["tokens"] > 0 and best["measured_steps"] == padded["measured_steps"]
    assert not any(r["trl_as_it_comes"] for r in rows.values())


def test_a_job_that_fails_in_its_process_reports_why(spec):
    with pytest.raises(bench.JobFailed) as e:
        bench._child(replace(spec, job="trl-bf16-weights", kind="trl", model="/nonexistent/model"), log=lambda m: None)
    assert e.value.job == "trl-bf16-weights"
    assert e.value.reason.startswith("ModelError: unknown model '/nonexistent/model'")


def test_bench_train_cli_runs_an_ablation_job_without_ablation_and_refuses_unknown_jobs(spec, tmp_path, monkeypatch,
                                                                                         capsys):
    from loraforge.cli import main

    ran = []

    def fake_child(job, log):
        ran.append(job.job)
        return {"job": job.job, "kind": job.kind, "precision": "float32", "lm_head_positions": "all",
                "steps": job.steps, "target_tokens_per_s": 10.0, "tokens_per_s": 30.0, "peak_rss_mb": 1000.0,
                "dev_loss": None, "flops_per_s": 1e9, "trl_as_it_comes": bench.trl_as_it_comes(job)}

    monkeypatch.setattr(bench, "_child", fake_child)
    args = ["bench", "train", "--model", spec.model, "--matmul-size", "64", "--out", str(tmp_path)]
    assert main(args + ["--jobs", "trl-bf16,loraforge-low-memory"]) == 0
    assert ran == ["trl-bf16", "loraforge-low-memory"]
    assert main(args + ["--jobs", "trl-bf16,warp-drive"]) == 2
    err = capsys.readouterr().err
    assert "no such job warp-drive; choose from trl-bf16," in err and "Traceback" not in err
    assert ran == ["trl-bf16", "loraforge-low-memory"]  # nothing ran
