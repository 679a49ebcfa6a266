"""The run directory contract: layout, typed metrics, adapter resolution, atomic writes."""

from __future__ import annotations

import json
import os
import stat

import pytest

from loraforge.config import RunConfig
from loraforge.runs import RunDir, RunDirError, RunMetrics, TrainStats, atomic_dir, atomic_write, resolve_adapter


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_atomic_write_is_whole_and_world_readable(tmp_path):
    p = atomic_write(tmp_path / "a" / "b.txt", "héllo")
    assert p.read_text(encoding="utf-8") == "héllo"
    assert _mode(p) == 0o644
    assert [x.name for x in p.parent.iterdir()] == ["b.txt"]  # no temporary left behind


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    p = atomic_write(tmp_path / "x.json", "old")
    with pytest.raises(TypeError):
        atomic_write(p, 123)  # type: ignore[arg-type]
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["x.json"]


def test_atomic_dir_replaces_on_success_and_keeps_old_on_error(tmp_path):
    out = tmp_path / "adapter"
    with atomic_dir(out) as tmp:
        (tmp / "w.bin").write_bytes(b"1")
        os.chmod(tmp / "w.bin", 0o600)
    assert (out / "w.bin").read_bytes() == b"1" and _mode(out / "w.bin") == 0o644 and _mode(out) == 0o755
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "w.bin").write_bytes(b"2")
            raise RuntimeError("crash mid-export")
    assert (out / "w.bin").read_bytes() == b"1"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["adapter"]
    with pytest.raises(FileExistsError):
        with atomic_dir(out, replace=False):
            pass


def _stats(**kw):
    base = dict(steps=3, seconds=1.5, tokens_per_s=10.0, target_tokens_per_s=5.0, trainable_params=10,
                total_params=100, peak_rss_mb=123.0, dtype="float32")
    return TrainStats(**{**base, **kw})


def test_metrics_round_trip_and_reject_wrong_types(tmp_path):
    run = RunDir(tmp_path)
    m = RunMetrics(task="translate", before={"chrf": 20.0}, after={"chrf": 40.0, "n": 3}, train=_stats())
    run.write_metrics(m)
    back = run.metrics()
    assert back == m and back.train.trainable_pct == 10.0
    run.metrics_path.write_text(json.dumps({"task": "translate", "train": {"steps": "many"}}))
    with pytest.raises(RunDirError, match="metrics.json"):
        run.metrics()


def test_prepare_refuses_silent_overwrite_and_bad_resume(tmp_path):
    run = RunDir(tmp_path / "r")
    run.prepare(resume=False, overwrite=False)
    (run.path / "x").write_text("1")
    with pytest.raises(RunDirError, match="already exists"):
        run.prepare(resume=False, overwrite=False)
    with pytest.raises(RunDirError, match="no checkpoint"):
        run.prepare(resume=True, overwrite=False)
    (run.checkpoints_dir / "step-000002").mkdir(parents=True)
    run.prepare(resume=True, overwrite=False)  # an interrupted run with a checkpoint resumes
    run.write_config(RunConfig())
    run.write_metrics(RunMetrics(task="translate"))
    with pytest.raises(RunDirError, match="finished run"):
        run.prepare(resume=True, overwrite=False)
    run.prepare(resume=False, overwrite=True)
    assert list(run.path.iterdir()) == []


def test_resolve_adapter_forms_and_errors(tmp_path):
    run = RunDir(tmp_path / "run")
    run.write_config(RunConfig())
    with pytest.raises(RunDirError, match="--resume"):
        resolve_adapter(run.path)
    atomic_write(run.adapter_dir / "adapter_config.json", json.dumps({"peft_type": "LORA"}))
    atomic_write(run.adapter_dir / "adapter_model.safetensors", b"")
    for given in (run.path, run.adapter_dir):
        ref = resolve_adapter(given)
        assert ref.dir == run.adapter_dir and ref.kind == "peft" and ref.run == run
        assert ref.peft_config()["peft_type"] == "LORA"
        assert resolve_adapter(ref) is ref  # resolved once, passed on
    with pytest.raises(RunDirError, match=f"pass its folder: {run.adapter_dir}"):
        resolve_adapter(run.adapter_dir / "adapter_model.safetensors")
    with pytest.raises(RunDirError, match="not found"):
        resolve_adapter(tmp_path / "nope")
    bare = tmp_path / "bare"
    atomic_write(bare / "bottleneck_config.json", "{}")
    ref = resolve_adapter(bare)
    assert ref.kind == "bottleneck" and ref.run is None
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="not an adapter folder"):
        resolve_adapter(tmp_path / "empty")


def test_run_dir_stands_where_a_path_did(tmp_path):
    run = RunDir(tmp_path / "r")
    assert str(run) == os.fspath(run) == str(tmp_path / "r") and run / "metrics.json" == tmp_path / "r" / "metrics.json"
    assert run.metrics_before() is None
    run.write_metrics_before({"chrf": 1.5, "n": 2})
    assert RunDir(run).metrics_before() == {"chrf": 1.5, "n": 2}


def _fail(message: str) -> None:
    raise ValueError(message)


def test_run_isolated_runs_a_function_in_a_fresh_process(tmp_path):
    import io
    import sys

    from loraforge.runs.isolated import run_isolated

    out = tmp_path / "out.txt"
    # a fresh interpreter: this test's pid differs from the child's
    assert run_isolated("loraforge.runs.files:atomic_write", {"path": str(out), "data": "hi"}) is None
    assert out.read_text() == "hi"
    echo = io.StringIO()
    error = run_isolated("test_runs:_fail", {"message": "the reason"}, echo=echo,
                         env={"PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), *sys.path])})
    assert error == "ValueError: the reason"  # the last line of the child's stderr
    assert "Traceback" in echo.getvalue()  # streamed to the caller's stderr as it came
    with pytest.raises(ValueError, match="module:function"):
        run_isolated("no_colon", {})


def test_outputs_files_say_which_rows_evaluation_kept_in_english(tmp_path):
    """A row the short or unfinished check replaced by its source reads like a translation in the file unless it
    says so; plain lists (other callers) write id and output only, and the run reads both back the same."""
    from loraforge.eval.inference import Outputs

    run = RunDir(tmp_path / "run")
    run.write_outputs("after", ["a", "b", "c"], Outputs(["Pod 是最小单元。", "A long English paragraph.", "循环"],
                                                       {1: {"kept_source": "unfinished"}, 2: {"loop_cut": True}}))
    rows = [json.loads(line) for line in run.outputs_path("after").read_text(encoding="utf-8").splitlines()]
    assert rows == [{"id": "a", "output": "Pod 是最小单元。"},
                    {"id": "b", "output": "A long English paragraph.", "kept_source": "unfinished"},
                    {"id": "c", "output": "循环", "loop_cut": True}]
    assert run.outputs("after") == {"a": "Pod 是最小单元。", "b": "A long English paragraph.", "c": "循环"}
    run.write_outputs("before", ["a"], ["x"])
    assert json.loads(run.outputs_path("before").read_text(encoding="utf-8")) == {"id": "a", "output": "x"}
