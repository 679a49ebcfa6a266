"""Commands that run a multi-task adapter (data.tasks) choose one task and use its settings, never the
top-level data.* keys: translate (--task, default the first translate task), the export card (every
task, its data and its own metrics), mask --adapter and /v1/mask (the pii task's prompt)."""

from __future__ import annotations

import pytest
import yaml

from loraforge.config import ConfigError, RunConfig, load_config
from loraforge.runs import RunDir, RunMetrics, TaskMetrics

TASKS = [{"name": "mask", "task": "pii", "train": "p.jsonl", "test": "pt.jsonl", "system_prompt": "Mask personal data."},
         {"train": "z.jsonl", "src_lang": "zh", "tgt_lang": "en", "system_prompt": "Translate Chinese to English."},
         {"train": "e.jsonl", "test": "et.jsonl"}]  # en-zh: inherits data.system_prompt
SHARED = "Shared translator prompt."


def multi_config(model_dir, tasks=TASKS) -> RunConfig:
    return RunConfig.model_validate({"model": {"name": str(model_dir)},
                                     "data": {"system_prompt": SHARED, "tasks": tasks}})


def make_lora(model_dir, out, seed: int = 1):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                           LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=16, target_modules="all-linear",
                                      init_lora_weights=False))
    model.save_pretrained(out)


@pytest.fixture(scope="module")
def multi_run(tiny_model_dir, tmp_path_factory) -> str:
    """A finished multi-task run as training leaves it: config.yaml (data.tasks), adapter/, metrics.json."""
    run = RunDir(tmp_path_factory.mktemp("multi") / "run")
    run.write_config(multi_config(tiny_model_dir))
    make_lora(tiny_model_dir, run.adapter_dir)
    tasks = {"mask": TaskMetrics(task="pii", before={"leak_rate": 91.5}, after={"leak_rate": 12.25},
                                 baseline={"leak_rate": 40.5}),
             "zh-en": TaskMetrics(task="translate"),
             "en-zh": TaskMetrics(task="translate", before={"chrf": 11.5}, after={"chrf": 33.75})}
    run.write_metrics(RunMetrics(task="multi", before=tasks["mask"].before, after=tasks["mask"].after, tasks=tasks))
    return str(run.path)


# --- choosing a task ------------------------------------------------------------------------------


def test_task_config_picks_by_name_then_kind_then_first_and_lists_the_tasks_when_wrong(tiny_model_dir):
    data = multi_config(tiny_model_dir).data
    assert data.task_config()[0] == "mask"
    name, d = data.task_config(kind="translate")
    assert (name, d.src_lang, d.system_prompt) == ("zh-en", "zh", "Translate Chinese to English.")
    name, d = data.task_config("en-zh")
    assert (d.src_lang, d.tgt_lang, d.system_prompt) == ("en", "zh", SHARED)
    for args, words in ((("nope",), "task 'nope': no such task"), (("mask", "translate"), "is a pii task"),
                        ((None, "sft"), "no sft task")):
        with pytest.raises(ConfigError, match=words) as e:
            data.task_config(*args)
        assert "mask (pii), zh-en (translate), en-zh (translate)" in str(e.value)
    single = load_config(None, ["data.task=pii"]).data
    assert single.task_config() == ("pii", single) and single.task_config(kind="pii")[1] is single


def test_split_names_list_each_tasks_dataset(tiny_model_dir):
    """What the KAITO note and the compare heading print for a multi-task config (not "None")."""
    data = multi_config(tiny_model_dir).data
    assert data.split_names("train") == "mask: p.jsonl, zh-en: z.jsonl, en-zh: e.jsonl"
    assert data.split_names("test") == "mask: pt.jsonl, en-zh: et.jsonl"
    assert load_config(None, ["data.train=k8s:train"]).data.split_names("train") == "k8s:train"


# --- translate ------------------------------------------------------------------------------------


@pytest.fixture
def prompts(monkeypatch) -> list[str]:
    """Every prompt generation builds (the real generation_prompts, recorded)."""
    import loraforge.data.templates as templates

    seen: list[str] = []
    real = templates.generation_prompts

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.extend(out[0])
        return out

    monkeypatch.setattr(templates, "generation_prompts", spy)
    return seen


def test_translate_runs_the_first_translate_task_or_the_named_one_with_its_own_prompt(multi_run, prompts):
    from loraforge.workflows.translate import translate

    out = translate(["你好"], adapter=multi_run, max_new_tokens=2)
    assert len(out.outputs) == 1
    assert len(prompts) == 1 and "Translate Chinese to English." in prompts[0] and SHARED not in prompts[0]
    translate(["Hello"], adapter=multi_run, max_new_tokens=2, task="en-zh")
    assert SHARED in prompts[1] and "Chinese to English" not in prompts[1]
    translate(["Mail ann@example.com"], adapter=multi_run, max_new_tokens=2, task="mask")
    assert "Mask personal data." in prompts[2]


def test_translate_refuses_an_unknown_task_naming_the_tasks_before_any_model_loads(multi_run, tiny_model_dir,
                                                                                   tmp_path, capsys, monkeypatch):
    import loraforge.eval.inference as inference
    from loraforge.cli import main

    monkeypatch.setattr(inference, "load_for_inference", lambda *a: pytest.fail("loaded a model"))
    assert main(["translate", "--adapter", multi_run, "--task", "en-ja", "Hello"]) == 2
    err = capsys.readouterr().err
    assert "task 'en-ja': no such task" in err and "mask (pii), zh-en (translate), en-zh (translate)" in err
    config = tmp_path / "no-translate.yaml"  # no translate task: --task is needed
    config.write_text(multi_config(tiny_model_dir, [TASKS[0], {"task": "sft", "train": "s.jsonl"}]).to_yaml())
    assert main(["translate", "--adapter", multi_run, "--config", str(config), "Hello"]) == 2
    assert "has no translate task; its tasks: mask (pii), sft (sft)" in capsys.readouterr().err


# --- the export card ------------------------------------------------------------------------------


def test_card_lists_every_task_with_its_data_prompt_and_own_metrics(tiny_model_dir, multi_run):
    from loraforge.export.card import model_card

    cfg = RunDir(multi_run).config()
    tasks = RunDir(multi_run).metrics().tasks
    metrics = {"tasks": {n: {"before": t.before, "after": t.after, "baseline": t.baseline} for n, t in tasks.items()}}
    card = model_card(cfg, "multi", "lora", "adapter", "causal", {"r": 4}, metrics)
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["tags"][:4] == ["loraforge", "lora", "pii", "translate"] and "multi-task" in meta["tags"]
    assert meta["language"] == ["zh", "en"]
    lines = card.splitlines()
    for name, train, prompt in (("mask", "p.jsonl", "Mask personal data."),
                                ("zh-en", "z.jsonl", "Translate Chinese to English."), ("en-zh", "e.jsonl", SHARED)):
        line = next(x for x in lines if x.startswith(f"  - `{name}`:"))
        assert f"train `{train}`" in line and repr(prompt) in line
    assert "translate (zh -> en)" in card and "k8s:train" not in card  # never the unused top-level data.train
    mask = lines[lines.index("### Task `mask` (its own test split)") + 2:][:5]
    assert mask[0] == "| model | leak_rate |"
    assert mask[2:5] == ["| base model | 91.5 |", "| tuned | 12.25 |", "| rule baseline | 40.5 |"]
    assert "### Task `en-zh` (its own test split)" in card and "| tuned | 33.75 |" in card
    assert "### Task `zh-en`" not in card  # no test split, no table
    single = model_card(RunConfig(), "one", "lora", "adapter", "causal", {}, {"after": {"chrf": 1.0}})
    assert "- task: translate (en -> zh)" in single and "## Metrics (test split)" in single


# --- masking with the pii task ---------------------------------------------------------------------


def test_mask_adapter_prompts_with_the_pii_task_and_refuses_a_run_without_one(multi_run, tmp_path, tiny_model_dir):
    from loraforge.data.formats import DataError
    from loraforge.workflows.mask import build_masker

    masker = build_masker(adapter=multi_run)
    prompt = masker.model.prompt("Call Ann")
    assert "Mask personal data." in prompt and SHARED not in prompt
    run = RunDir(tmp_path / "translate-only")
    run.write_config(multi_config(tiny_model_dir, TASKS[1:]))
    make_lora(tiny_model_dir, run.adapter_dir)
    with pytest.raises(DataError, match=r"not a PII run \(this run has no pii task; its tasks: zh-en"):
        build_masker(adapter=str(run.path))


def test_v1_mask_finds_the_pii_task_of_a_multitask_adapter(multi_run, tiny_model_dir):
    from fastapi.testclient import TestClient

    from loraforge.serve.app import build_app

    app = build_app(str(tiny_model_dir), [f"multi={multi_run}"], dtype="fp32")
    try:
        with TestClient(app) as client:
            r = client.post("/v1/mask", json={"text": "Call Ann at home.", "merge": "model", "bias": -50})
            assert r.status_code == 200, r.text
            assert (r.json()["engine"], r.json()["model"]) == ("model", "multi")
            service = app.state.pii_masker
            name, path, cfg = service.pii_adapter(app.state.engine.adapters, "multi")
            assert cfg.data.task == "pii" and cfg.data.system_prompt == "Mask personal data."
            assert "Mask personal data." in service.finder(path, cfg).prompt("x")
            meta = app.state.engine.adapters["multi"]  # chat without a system prompt: the first task's
            assert (meta["system_prompt"], meta["template"]) == ("Mask personal data.", "auto")
    finally:
        app.state.engine.close()


# --- wiring outside the owned files: export's metrics, serving defaults, eval --baseline ----------


def test_export_card_shows_each_tasks_metrics_and_serving_defaults_to_the_first_task(multi_run, tmp_path, capsys):
    from loraforge.cli import main
    from loraforge.export.run import read_run

    assert main(["export", multi_run, "--format", "adapter", "--out", str(tmp_path / "out")]) == 0
    card = (tmp_path / "out" / "README.md").read_text()
    assert "### Task `mask` (its own test split)" in card and "| rule baseline | 40.5 |" in card
    assert "| tuned | 33.75 |" in card and "## Metrics (test split)" not in card
    info = read_run(multi_run)  # what serve's adapter metadata, merged/GGUF templates and Modelfiles prompt with
    assert (info.data.task, info.data.system_prompt) == ("pii", "Mask personal data.")


def test_eval_baseline_scores_each_pii_task_or_says_there_is_none(tmp_path, capsys):
    import json

    from loraforge.cli import main

    pii = tmp_path / "pii.jsonl"
    pii.write_text("".join(json.dumps({"id": f"q{i}", "text": f"Mail ann{i}@example.com today.",
                                       "masked": "Mail [EMAIL] today."}) + "\n" for i in range(3)))
    tasks = [{"train": "e.jsonl", "test": "e.jsonl"}, {"name": "mask", "task": "pii", "train": str(pii),
                                                       "test": str(pii)}]
    config = tmp_path / "multi.yaml"
    config.write_text(RunConfig.model_validate({"data": {"tasks": tasks}}).to_yaml())
    assert main(["eval", str(config), "--baseline"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out["tasks"]) == ["mask"] and out["tasks"]["mask"]["leak_rate"] == 0  # the rules find e-mails
    config.write_text(RunConfig.model_validate({"data": {"tasks": tasks[:1]}}).to_yaml())
    assert main(["eval", str(config), "--baseline"]) == 2
    assert "no entry of data.tasks is a pii task with a test split (tasks: en-zh (translate))" in \
        capsys.readouterr().err


def test_page_translation_uses_the_en_zh_task_of_a_multitask_run(tiny_model_dir, tmp_path):
    from loraforge.workflows.localize import run_config

    config = tmp_path / "pages.yaml"  # zh-en first; the en-zh task protects markup, unlike data.*
    config.write_text(multi_config(tiny_model_dir, [TASKS[1], {"train": "e.jsonl", "system_prompt": "Pages to zh.",
                                                               "protect_markup": True}]).to_yaml())
    d = run_config(None, None, str(config)).data
    assert (d.src_lang, d.tgt_lang, d.system_prompt, d.protect_markup) == ("en", "zh", "Pages to zh.", True)
    assert run_config(None, None, None).data == RunConfig().data  # single-task: unchanged
