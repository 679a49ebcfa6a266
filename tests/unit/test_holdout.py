"""A held-out docs section (issue 20 §4): the k8s:tutorials builder, data.exclude_sources, and
eval.extra_tests scored beside the test split with a contamination note, on tiny data and models."""

from __future__ import annotations

import gzip
import json
import shutil
from importlib import resources
from pathlib import Path

import pytest

from loraforge.config import ConfigError, load_config
from loraforge.data import k8s
from loraforge.data.formats import DataError, load_examples
from loraforge.data.k8s_build import section_name, write_section
from loraforge.data.splits import load_splits

FIXTURES = Path(__file__).parents[1] / "fixtures" / "k8s"
PACKAGED = Path(str(resources.files("loraforge") / "datasets" / "k8s-en-zh"))


def rec(page: str, n: int, en: str, zh: str = "中文") -> dict:
    return {"id": f"{page[:-3]}#{n}", "en": en, "zh": zh, "source": page, "kind": "paragraph"}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def read_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


# --- the builder -----------------------------------------------------------------------------------


def tiny_splits() -> dict[str, list[dict]]:
    return {
        "train": [rec("docs/concepts/a.md", 0, "Create a Service"), rec("docs/tutorials/z.md", 0, "Hello tutorial"),
                  rec("docs/tutorials/z.md", 1, "Only in tutorials")],
        "dev": [rec("docs/tutorials/b.md", 0, "Create a Service", "创建 Service"), rec("docs/tasks/c.md", 0, "Dev")],
        "test": [rec("docs/tutorials/a.md", 0, "Test page pair")],
    }


def test_section_takes_every_split_and_drops_english_trained_outside_it():
    report = k8s.Report()
    out = k8s.section_pairs(tiny_splits(), "docs/tutorials/", report, "tutorials")
    # from train, dev and test, by page; "Create a Service" is on a concepts train page: dropped
    assert [(r["source"], r["en"]) for r in out] == [
        ("docs/tutorials/a.md", "Test page pair"), ("docs/tutorials/z.md", "Hello tutorial"),
        ("docs/tutorials/z.md", "Only in tutorials")]
    assert report.dropped["tutorials_en_seen_in_train"] == 1


def test_section_rows_go_round_robin_over_pages_so_a_prefix_covers_many():
    splits = {"train": [rec("docs/tutorials/a.md", i, f"a{i}") for i in range(3)]
              + [rec("docs/tutorials/b.md", i, f"b{i}") for i in range(2)] + [rec("docs/tutorials/c.md", 0, "c0")]}
    out = k8s.section_pairs(splits, "docs/tutorials/", k8s.Report(), "tutorials")
    assert [r["en"] for r in out] == ["a0", "b0", "c0", "a1", "b1", "a2"]


def test_section_files_are_byte_reproducible_and_the_cli_flag_writes_them(tmp_path):
    from loraforge.cli import main

    for name, rows in tiny_splits().items():
        k8s.write_jsonl_gz(tmp_path / f"{name}.jsonl.gz", rows)
    first = write_section(tmp_path, "docs/tutorials/")
    data = (tmp_path / "tutorials.jsonl.gz").read_bytes()
    write_section(tmp_path, "docs/tutorials/")
    assert (tmp_path / "tutorials.jsonl.gz").read_bytes() == data and first.pairs == {"tutorials": 3}
    # the real build: --holdout-section writes the section beside the splits, which stay as without it
    plain, held = tmp_path / "plain", tmp_path / "held"
    assert main(["data", "k8s", "--source", str(FIXTURES), "--out", str(plain)]) == 0
    assert main(["data", "k8s", "--source", str(FIXTURES), "--out", str(held), "--holdout-section", "docs/tasks/"]) == 0
    for split in ("train", "dev", "test"):
        assert (plain / f"{split}.jsonl.gz").read_bytes() == (held / f"{split}.jsonl.gz").read_bytes()
    section = read_gz(held / "tasks.jsonl.gz")
    every = [r for split in ("train", "dev", "test") for r in read_gz(held / f"{split}.jsonl.gz")]
    pages = {r["source"] for r in every if r["source"].startswith("docs/tasks/")}
    assert section and {r["source"] for r in section} == pages


@pytest.mark.parametrize("prefix", ["docs/tutorials", "docs/", "x/test/", ""])
def test_a_bad_section_prefix_is_refused_before_the_build(prefix):
    with pytest.raises(DataError, match="--holdout-section"):
        section_name(prefix)


def test_the_packaged_tutorials_split_is_rebuilt_byte_for_byte_from_the_packaged_splits(tmp_path):
    for split in ("train", "dev", "test"):
        shutil.copy(PACKAGED / f"{split}.jsonl.gz", tmp_path)
    write_section(tmp_path, "docs/tutorials/")
    assert (tmp_path / "tutorials.jsonl.gz").read_bytes() == (PACKAGED / "tutorials.jsonl.gz").read_bytes()
    tutorials = read_gz(PACKAGED / "tutorials.jsonl.gz")
    other_en = {r["en"] for r in read_gz(PACKAGED / "train.jsonl.gz") if not r["source"].startswith("docs/tutorials/")}
    assert tutorials and all(r["source"].startswith("docs/tutorials/") for r in tutorials)
    assert not other_en & {r["en"] for r in tutorials}


# --- data.exclude_sources --------------------------------------------------------------------------


def sourced_data(tmp_path: Path) -> dict[str, Path]:
    """train: 4 concepts rows, 3 tutorials rows; dev: 1 + 1; test: 2 tutorials rows."""
    train = [rec("docs/concepts/a.md", i, f"Concept {i}") for i in range(4)] + \
        [rec("docs/tutorials/t.md", i, f"Tutorial {i}") for i in range(3)]
    dev = [rec("docs/concepts/d.md", 0, "Dev concept"), rec("docs/tutorials/d.md", 0, "Dev tutorial")]
    test = [rec("docs/tutorials/t2.md", i, f"Held {i}") for i in range(2)]
    return {name: write_jsonl(tmp_path / f"{name}.jsonl", rows) for name, rows in
            (("train", train), ("dev", dev), ("test", test))}


def data_overrides(files: dict[str, Path], *extra: str) -> list[str]:
    return [f"data.train={files['train']}", f"data.dev={files['dev']}", f"data.test={files['test']}", *extra]


def test_packaged_k8s_examples_carry_their_page_path():
    assert load_examples("k8s:dev", limit=2)[0].meta["source"].startswith("docs/")


def test_excluded_rows_leave_train_and_dev_never_test_and_are_counted(tmp_path):
    files = sourced_data(tmp_path)
    splits = load_splits(load_config(None, data_overrides(files, "data.exclude_sources=[docs/tutorials/]",
                                                          "data.max_train_examples=3")))
    assert [e.meta["source"] for e in splits.train] == ["docs/concepts/a.md"] * 3  # cut after excluding
    assert [e.source for e in splits.dev] == ["Dev concept"] and len(splits.test) == 2
    assert splits.excluded == {"train": {"docs/tutorials/": 3}, "dev": {"docs/tutorials/": 1}}
    plain = load_splits(load_config(None, data_overrides(files)))
    assert len(plain.train) == 7 and plain.excluded == {"train": {}, "dev": {}}


def test_a_prefix_that_matches_no_training_row_is_an_error_naming_the_key(tmp_path):
    files = sourced_data(tmp_path)
    with pytest.raises(DataError, match=r"data.exclude_sources: 'docs/tutorial/' matches no training row.*"
                                        r"sources look like 'docs/concepts/a.md'"):
        load_splits(load_config(None, data_overrides(files, "data.exclude_sources=[docs/tutorials/, docs/tutorial/]")))
    unsourced = write_jsonl(tmp_path / "plain.jsonl", [{"en": "a b", "zh": "甲"}])
    with pytest.raises(DataError, match="carry no 'source' field"):
        load_splits(load_config(None, [f"data.train={unsourced}", "data.dev=null", "data.test=null",
                                       "data.exclude_sources=[docs/]"]))
    with pytest.raises(DataError, match="drops every training row"):
        load_splits(load_config(None, data_overrides(files, "data.exclude_sources=[docs/]")))


def test_multitask_prefix_may_match_in_one_task_only_and_counts_sum(tmp_path):
    files = sourced_data(tmp_path)
    pii = write_jsonl(tmp_path / "pii.jsonl", [{"text": "Call Erin at 555-0100.", "masked": "Call [NAME] at [PHONE]."}])
    tasks = [{"name": "en-zh", "train": str(files["train"]), "dev": str(files["dev"])},
             {"name": "zh-en", "train": str(files["train"]), "src_lang": "zh", "tgt_lang": "en"},
             {"name": "pii", "task": "pii", "train": str(pii)}]
    splits = load_splits(load_config(None, [f"data.tasks={json.dumps(tasks)}",
                                            "data.exclude_sources=[docs/tutorials/]"]))
    assert splits.excluded["train"] == {"docs/tutorials/": 6} and splits.excluded["dev"] == {"docs/tutorials/": 1}
    assert len(splits.tasks["pii"].train) == 1


@pytest.mark.parametrize("override, key", [
    ("data.exclude_sources=['']", "data.exclude_sources"),
    ("data.exclude_sources=[docs/a/, docs/a/]", "data.exclude_sources"),
    ("eval.extra_tests={bad name: k8s:tutorials}", "eval.extra_tests"),
    ("eval.extra_tests={tutorials: ''}", "eval.extra_tests"),
    ("eval.extra_test={tutorials: k8s:tutorials}", "eval.extra_test"),
])
def test_bad_holdout_settings_are_config_errors_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_data_check_reports_the_excluded_rows(tiny_model_dir, tmp_path, capsys):
    from loraforge.cli import main

    files = sourced_data(tmp_path)
    code = main(["data", "check", f"model.name={tiny_model_dir}", *data_overrides(files),
                 "data.exclude_sources=[docs/tutorials/]", "-n", "1"])
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert code == 0 and "data.exclude_sources dropped rows: train 3 (docs/tutorials/), dev 1 (docs/tutorials/)" in out
    assert "train: 4 examples" in out and "dev: 1 examples" in out
    assert main(["data", "check", f"model.name={tiny_model_dir}", *data_overrides(files),
                 "data.exclude_sources=[docs/tutorial/]"]) == 2


# --- eval.extra_tests ------------------------------------------------------------------------------


def test_extra_tests_are_scored_beside_test_and_flagged_when_training_saw_their_pages(tiny_model_dir, tmp_path, capsys):
    """One run, two extra sets: one of excluded pages (held out), one of trained pages (contaminated)."""
    from loraforge.eval.heldout import held_out
    from loraforge.eval.metrics import task_metrics
    from loraforge.runs import RunDir
    from loraforge.workflows import eval_run, rebuild_report, train_run
    from loraforge.workflows.ablate import _scores, contaminated_sets

    files = sourced_data(tmp_path)
    trained = write_jsonl(tmp_path / "trained.jsonl", [rec("docs/concepts/a.md", 9, "Seen page")])
    held = write_jsonl(tmp_path / "held.jsonl", [rec("docs/tutorials/t.md", 9, "Held page")])
    cfg = load_config(None, [f"model.name={tiny_model_dir}", *data_overrides(files),
                             "data.exclude_sources=[docs/tutorials/]", "data.max_length=512", "train.steps=2",
                             "train.batch_size=2", "train.warmup_steps=0", "eval.max_new_tokens=6",
                             f"eval.extra_tests={{held: '{held}', seen: '{trained}'}}",
                             f"output.dir={tmp_path / 'run'}"])
    run = RunDir(train_run(cfg, progress=False))
    metrics = run.metrics()
    extra = held_out(metrics)
    assert set(extra) == {"held", "seen"} and metrics.after and metrics.after["n"] == 2
    for name, path in (("held", held), ("seen", trained)):
        rows = load_examples(str(path))
        hyps = [run.outputs(f"after-{name}")[e.id] for e in rows]
        after = dict(extra[name].after)
        # translations kept as their source (eval.min_output_ratio, eval.unfinished_keeps_source): each counted
        # row's output is its source
        kept = after.pop("segments_short") + after.pop("segments_unfinished")
        assert 0 <= kept <= sum(h == e.source for h, e in zip(hyps, rows))
        assert after == task_metrics("translate", [e.source for e in rows], hyps, [e.target for e in rows], "zh")
        assert extra[name].before and extra[name].split == str(path)
    assert not extra["held"].contaminated and extra["held"].documents == 1
    assert extra["seen"].contaminated and extra["seen"].trained_rows == 4 and extra["seen"].trained_documents == 1
    report = run.report_md.read_text()
    assert "## Extra test held (" in report and "## Extra test seen (" in report
    assert report.count("CONTAMINATED") == 2  # the seen set's heading and its summary line, nothing for held
    assert "| test held | held out: no training row comes from its 1 page |" in report
    run.report_md.unlink()
    assert rebuild_report(run).read_text() == report
    scores = _scores(run, None)
    assert scores["held.chrf"] == extra["held"].after["chrf"] and scores["seen.contaminated"] == 1
    assert contaminated_sets([scores]) == ["seen"]
    capsys.readouterr()
    again = eval_run(cfg, adapter=str(run), worst=1)
    assert again["extra_tests"]["held"]["after"] == extra["held"].after
    # --worst on a single-task run: the test row with the lowest sentence chrF, without a task name
    import sacrebleu

    test_rows = load_examples(str(cfg.data.test))
    outputs = run.outputs("after")
    scored = sorted((sacrebleu.sentence_chrf(outputs[e.id], [e.target]).score, e.id) for e in test_rows)
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert "task" not in row and row["chrf"] == round(scored[0][0], 2)
    assert row["id"] in {i for score, i in scored if score == scored[0][0]}  # ties: either one
    assert row["output"] == outputs[row["id"]]
    assert again["extra_tests"]["seen"]["trained_rows"] == 4 and again["extra_tests"]["seen"]["contaminated"]


def test_the_ablation_table_shows_extra_test_columns_and_flags_contaminated_rows():
    from loraforge.workflows.ablate import AblationSpec, to_markdown

    spec = AblationSpec(config="c.yaml", rows={"a": [], "b": []}, seeds=[0], metrics=["chrf", "tutorials.chrf"])
    def stat():
        return {"mean": 50.0, "sd": None, "n": 1, "values": [50.0]}

    results = {"a": {"seeds": [0], "errors": {}, "metrics": {"chrf": stat(), "tutorials.chrf": stat()},
                     "contaminated": []},
               "b": {"seeds": [0], "errors": {}, "metrics": {"chrf": stat()}, "contaminated": ["tutorials"]}}
    md = to_markdown(spec, results, "loraforge ablate x")
    assert "| row | chrF | tutorials chrF | seeds |" in md
    assert "| a | 50.00 | 50.00 |" in md and "| b (trained on tutorials: not held out) | 50.00 (+0.00) | - |" in md


def test_the_lifted_preset_differs_from_todays_only_by_the_held_out_section():
    configs = Path(__file__).parents[2] / "configs"
    today = load_config(configs / "k8s-en-zh-gemma3-270m.yaml")
    lifted = load_config(configs / "k8s-en-zh-lifted-gemma3-270m.yaml")
    assert lifted.data.exclude_sources == ["docs/tutorials/"]
    assert lifted.eval.extra_tests == {"tutorials": "k8s:tutorials"}
    same = lambda c: c.model_copy(update={"data": c.data.model_copy(update={"exclude_sources": []}),  # noqa: E731
                                          "eval": c.eval.model_copy(update={"extra_tests": {}}),
                                          "output": today.output})
    assert same(lifted).model_dump() == same(today).model_dump()


def test_every_translation_row_of_the_shipped_ablation_holds_out_the_tutorials():
    from loraforge.workflows.ablate import load_spec, row_configs

    path = Path(__file__).parents[2] / "configs" / "ablations" / "k8s-en-zh.yaml"
    spec = load_spec(path)
    configs = row_configs(spec, path, Path("/tmp/never"), check_files=False)
    assert {"tutorials.chrf", "tutorials.bleu", "tutorials.markup"} <= set(spec.metrics)
    for name, by_seed in configs.items():
        for cfg in by_seed.values():
            held = (["docs/tutorials/"], {"tutorials": "k8s:tutorials"})
            assert (cfg.data.exclude_sources, cfg.eval.extra_tests) == (held if name != "pii-alone" else ([], {})), name


def test_a_multitask_run_scores_extra_tests_with_its_translate_tasks_settings(tiny_model_dir, tmp_path):
    from loraforge.data.splits import extra_tests
    from loraforge.eval.heldout import held_out
    from loraforge.runs import RunDir
    from loraforge.workflows import eval_run, train_run

    files = sourced_data(tmp_path)
    pii = write_jsonl(tmp_path / "pii.jsonl", [{"text": "Call Erin at 555-0100.", "masked": "Call [NAME] at [PHONE]."}])
    tasks = [{"name": "pii", "task": "pii", "train": str(pii)},
             {"name": "zh-en", "train": str(files["train"]), "test": str(files["test"]), "src_lang": "zh",
              "tgt_lang": "en", "system_prompt": "Translate to English."}]
    cfg = load_config(None, [f"model.name={tiny_model_dir}", f"data.tasks={json.dumps(tasks)}",
                             "data.exclude_sources=[docs/tutorials/]", "data.max_length=512", "train.steps=1",
                             "train.batch_size=2", "eval.max_new_tokens=4", "eval.before=false",
                             f"eval.extra_tests={{held: '{files['test']}'}}", f"output.dir={tmp_path / 'run'}"])
    (name, (data, rows)), = extra_tests(cfg).items()
    assert (data.task, data.src_lang, data.system_prompt) == ("translate", "zh", "Translate to English.")
    run = RunDir(train_run(cfg, progress=False))
    held = held_out(run.metrics())["held"]
    assert held.after == run.metrics().tasks["zh-en"].after  # the same rows, scored as that task scores them
    assert not held.contaminated and held.before is None
    assert "## Extra test held (" in run.report_md.read_text()
    assert eval_run(cfg, adapter=str(run))["extra_tests"]["held"]["after"] == held.after
    # eval --outputs-dir keeps the outputs as the training run named them, and never over earlier ones
    kept = RunDir(tmp_path / "eval-outputs")
    eval_run(cfg, adapter=str(run), outputs_dir=str(kept))
    for stage in ("after-held", "after-zh-en"):
        assert kept.outputs(stage) and kept.outputs(stage) == run.outputs(stage)
    with pytest.raises(DataError, match="holds outputs already"):
        eval_run(cfg, adapter=str(run), outputs_dir=str(kept))
