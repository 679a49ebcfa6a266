"""``loraforge ablate``: rows x seeds on one budget, mean ± sd per row, reused runs, errors before training."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml

from loraforge.config import ConfigError
from loraforge.runs import RunDir
from loraforge.workflows.ablate import ablate, load_spec

PAIRS = Path(__file__).parents[1] / "fixtures" / "core" / "pairs.jsonl"


def write_spec(tmp_path, model_dir, rows, **extra) -> Path:
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({
        "model": {"name": str(model_dir)},
        "data": {"train": str(PAIRS), "dev": str(PAIRS), "test": str(PAIRS)},
        "train": {"steps": 50, "batch_size": 4, "lr": 3e-2, "warmup_steps": 0, "eval_every": 0},
        "eval": {"max_new_tokens": 6, "max_examples": 4, "before": False}}))
    spec = tmp_path / "ablation.yaml"
    spec.write_text(yaml.safe_dump({"config": "base.yaml", "overrides": ["train.steps=2"], "seeds": [0, 1],
                                    "rows": rows, **extra}))
    return spec


def test_each_row_and_seed_is_a_run_and_the_table_is_mean_and_sd_over_seeds(tiny_model_dir, tmp_path):
    spec = write_spec(tmp_path, tiny_model_dir, {"baseline": [], "noisy": ["data.augment.noise.dropout=0.3"]})
    out = tmp_path / "out"
    md = ablate(str(spec), out=str(out))
    result = json.loads((out / "ablation.json").read_text())
    for row in ("baseline", "noisy"):
        runs = [RunDir(out / row / f"seed-{s}") for s in (0, 1)]
        assert all(r.is_finished() for r in runs)
        assert [r.config().train.seed for r in runs] == [0, 1] and runs[0].config().train.steps == 2
        chrf = [r.metrics().after["chrf"] for r in runs]
        got = result["rows"][row]["metrics"]["chrf"]
        assert got["values"] == chrf and got["mean"] == pytest.approx(statistics.fmean(chrf))
        assert got["sd"] == pytest.approx(statistics.stdev(chrf)) and got["n"] == 2
    assert RunDir(out / "noisy" / "seed-0").config().data.augment.noise.dropout == 0.3
    text = md.read_text()
    assert "| baseline |" in text and "| noisy |" in text and "±" in text and "2/2" in text
    assert f"loraforge ablate {spec} --out {out}" in text
    # an interrupted or repeated ablation reuses finished runs of the same config
    stamp = (out / "noisy" / "seed-1" / "metrics.json").stat().st_mtime_ns
    ablate(str(spec), out=str(out), rows="noisy", seeds="1")
    assert (out / "noisy" / "seed-1" / "metrics.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("rows,extra,words", [
    ({"ok": [], "broken": ["train.stepz=3"]}, {}, "(?s)ablation row 'broken': .*train.stepz"),
    ({"bt": ["data.augment.back_translation.file=missing.jsonl"]}, {}, "missing.jsonl does not exist"),
    ({"a/b": []}, {}, "folder names"),
    ({"ok": []}, {"colour": "red"}, "colour"),
])
def test_bad_specs_fail_before_any_training(tiny_model_dir, tmp_path, rows, extra, words):
    spec = write_spec(tmp_path, tiny_model_dir, rows, **extra)
    with pytest.raises(ConfigError, match=words):
        ablate(str(spec), out=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_unknown_rows_and_bad_seeds_are_named(tiny_model_dir, tmp_path):
    spec = write_spec(tmp_path, tiny_model_dir, {"baseline": []})
    with pytest.raises(ConfigError, match=r"\['nope'\] not in the spec; its rows: baseline"):
        ablate(str(spec), out=str(tmp_path / "out"), rows="nope")
    with pytest.raises(ConfigError, match="--seeds 'a'"):
        ablate(str(spec), out=str(tmp_path / "out"), seeds="a")


def test_the_shipped_spec_loads_and_every_row_validates():
    from loraforge.workflows.ablate import row_configs

    path = Path(__file__).parents[2] / "configs" / "ablations" / "k8s-en-zh.yaml"
    spec = load_spec(path)
    configs = row_configs(spec, path, Path("/tmp/never"), check_files=False)
    assert {"baseline", "bt-sampled-tagged", "noise-all", "en-zh-both", "en-zh-ja-ko-T5", "en-zh-plus-pii"} <= set(configs)
    steps = {c.train.steps for name, by_seed in configs.items() if name not in ("pii-alone", "en-zh-plus-pii")
             for c in by_seed.values()}
    assert steps == {300}, "every translation row gets the same step budget"
    assert configs["en-zh-ja-ko-T5"][0].data.task_temperature == 5
    assert all(len(by_seed) == 3 for by_seed in configs.values())


def test_every_shipped_spec_validates_and_rows_differ_only_by_their_overrides():
    from loraforge.workflows.ablate import row_configs

    for path in sorted((Path(__file__).parents[2] / "configs" / "ablations").glob("*.yaml")):
        configs = row_configs(load_spec(path), path, Path("/tmp/never"), check_files=False)
        base = configs["baseline"][0]
        assert base.data.exclude_sources == ["docs/tutorials/"], path.name
        assert base.eval.extra_tests == {"tutorials": "k8s:tutorials"}, path.name
        if "en-zh-plus-pii" in configs:  # one adapter for both jobs: the two single-task budgets, each task its share
            both, alone = configs["en-zh-plus-pii"][0], configs["pii-alone"][0]
            assert both.train.steps == base.train.steps + alone.train.steps, path.name
            assert both.data.task_weights == {"en-zh": base.train.steps, "pii": alone.train.steps}, path.name
            assert [t.max_length for _, t in both.data.task_configs()] == [base.data.max_length, alone.data.max_length]
        if "noise-all" in configs:
            noisy = configs["noise-all"][0]
            assert noisy.data.augment.noise.dropout == 0.1 and base.data.augment.noise.dropout == 0
            assert noisy.train == base.train and noisy.adapter == base.adapter, path.name


def test_row_scores_name_the_chosen_tasks_metrics_plainly_and_every_tasks_with_its_name(tmp_path):
    """One table holds a two-task adapter beside the single-task ones: pii.leak_rate means the same in both."""
    from loraforge.runs import RunMetrics, TaskMetrics
    from loraforge.workflows.ablate import _scores

    multi, single = RunDir(tmp_path / "multi"), RunDir(tmp_path / "single")
    for run in (multi, single):
        run.path.mkdir()
    multi.write_metrics(RunMetrics(task="multi", after={"chrf": 50.0}, tasks={
        "en-zh": TaskMetrics(task="translate", after={"chrf": 50.0}),
        "pii": TaskMetrics(task="pii", after={"leak_rate": 3.0})}))
    single.write_metrics(RunMetrics(task="pii", after={"leak_rate": 2.0}))
    assert _scores(multi, "en-zh") == {"chrf": 50.0, "en-zh.chrf": 50.0, "pii.leak_rate": 3.0}
    assert _scores(multi, "pii")["leak_rate"] == 3.0 and "chrf" not in _scores(multi, "pii")
    assert _scores(single, "en-zh") == {"leak_rate": 2.0, "pii.leak_rate": 2.0}


def test_a_tasks_from_row_trains_those_tasks_on_the_base_recipe(tiny_model_dir, tmp_path):
    """tasks_from: the row's data.tasks come from the multi-task config, everything else (steps, lr,
    max_length, markup protection) from the spec's base config and overrides; the base's single-task
    keys give way. A config without data.tasks is refused before training."""
    from loraforge.workflows.ablate import row_configs

    multi = tmp_path / "multi.yaml"
    multi.write_text(yaml.safe_dump({
        "data": {"max_length": 999, "task_temperature": 2.0,
                 "tasks": [{"name": "en-zh", "train": str(PAIRS), "test": str(PAIRS)},
                           {"name": "zh-en", "train": str(PAIRS), "src_lang": "zh", "tgt_lang": "en"}]},
        "train": {"steps": 600, "lr": 5e-4}}))
    spec = write_spec(tmp_path, tiny_model_dir, {"baseline": [], "both": {"tasks_from": "multi.yaml"}})
    base_yaml = yaml.safe_load((tmp_path / "base.yaml").read_text())
    base_yaml["data"].update(max_length=77, protect_markup=True)
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base_yaml))
    configs = row_configs(load_spec(spec), spec, tmp_path / "out", check_files=False)
    base, both = configs["baseline"][0], configs["both"][0]
    assert [name for name, _ in both.data.task_configs()] == ["en-zh", "zh-en"]
    assert both.data.task_temperature == 2.0 and both.data.max_length == 77 and both.data.protect_markup
    assert both.train == base.train and both.train.steps == 2 and both.adapter == base.adapter
    assert all(d.max_length == 77 and d.protect_markup for _, d in both.data.task_configs())
    (tmp_path / "single.yaml").write_text(yaml.safe_dump({"data": {"train": str(PAIRS)}}))
    spec = write_spec(tmp_path, tiny_model_dir, {"bad": {"tasks_from": "single.yaml"}})
    with pytest.raises(ConfigError, match="without data.tasks"):
        row_configs(load_spec(spec), spec, tmp_path / "out", check_files=False)
