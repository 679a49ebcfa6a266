"""Every target renders for every preset and validates offline; validation really rejects mistakes."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from loraforge.config import ConfigError, RunConfig, load_config
from loraforge.deploy.k8s import TARGETS, Options, render, torchrun_command
from loraforge.deploy.kaito import not_expressible, training_config
from loraforge.deploy.validate import ManifestError, validate_doc, validate_file

ROOT = Path(__file__).resolve().parents[2]
PRESETS = sorted((ROOT / "configs").glob("*.yaml"))


KAITO = dict(kaito_preset="phi-3-mini-4k-instruct", adapter_image="acr.io/adapters/demo:1")


def _configs():
    return [pytest.param(load_config(p), id=p.stem) for p in PRESETS] or [pytest.param(RunConfig(), id="defaults")]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("cfg", _configs())
def test_every_target_renders_and_validates(cfg, target, tmp_path):
    multi = target in ("pytorchjob", "trainjob")
    rendered = render(cfg, target, Options(nodes=2 if multi else 1, procs=2 if multi else 1, **KAITO))
    out = tmp_path / f"{target}.yaml"
    out.write_text(rendered.to_yaml())
    lines = validate_file(out)  # what `loraforge deploy validate` runs, on the text a user gets
    assert len(lines) == len(rendered.docs) >= 2
    kinds = {d["kind"] for d in rendered.docs}
    expected = {"kaito": {"Workspace", "ConfigMap"}, "pytorchjob": {"PyTorchJob", "ConfigMap"},
                "trainjob": {"TrainJob", "ConfigMap"}, "job": {"Job", "PersistentVolumeClaim"},
                "serve": {"Deployment", "Service"}, "vllm": {"Deployment", "Service"}}[target]
    assert expected <= kinds


@pytest.mark.parametrize("cfg", _configs())
def test_mounted_config_is_the_run_config_with_cluster_paths(cfg):
    rendered = render(cfg, "job")
    cm = next(d for d in rendered.docs if d["kind"] == "ConfigMap")
    inside = RunConfig.model_validate(yaml.safe_load(cm["data"]["config.yaml"]))
    assert inside.output.dir.startswith("/workspace/runs/")
    assert inside.train == cfg.train and inside.adapter == cfg.adapter and inside.data.train == cfg.data.train


def test_local_data_files_are_remapped_and_noted():
    cfg = RunConfig()
    cfg.data.train = "my/data/train.jsonl"
    rendered = render(cfg, "job")
    cm = next(d for d in rendered.docs if d["kind"] == "ConfigMap")
    assert yaml.safe_load(cm["data"]["config.yaml"])["data"]["train"] == "/data/train.jsonl"
    assert any("my/data/train.jsonl" in n for n in rendered.notes)


def test_pytorchjob_topology_and_launcher():
    job = next(d for d in render(RunConfig(), "pytorchjob", Options(nodes=3, procs=4)).docs if d["kind"] == "PyTorchJob")
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1 and specs["Worker"]["replicas"] == 2
    assert job["spec"]["nprocPerNode"] == "4"
    container = specs["Worker"]["template"]["spec"]["containers"][0]
    assert container["name"] == "pytorch"  # the Training Operator finds the container by this name
    cmd = container["command"]
    assert cmd[0] == "torchrun" and "--nnodes=3" in cmd and "--nproc-per-node=4" in cmd
    script = cmd[cmd.index("--no-python") + 1:]
    assert script[:2] == ["sh", "-c"] and "loraforge train /etc/loraforge/config.yaml" in script[2]
    single = next(d for d in render(RunConfig(), "pytorchjob").docs if d["kind"] == "PyTorchJob")
    assert "Worker" not in single["spec"]["pytorchReplicaSpecs"]


def test_trainjob_refers_to_torch_distributed_runtime():
    job = next(d for d in render(RunConfig(), "trainjob", Options(nodes=2, procs=1)).docs if d["kind"] == "TrainJob")
    assert job["spec"]["runtimeRef"]["name"] == "torch-distributed"
    assert job["spec"]["trainer"]["numNodes"] == 2 and job["spec"]["trainer"]["numProcPerNode"] == 1
    assert job["spec"]["trainer"]["command"] == torchrun_command(2, 1, False, "/workspace/runs/loraforge-latest")


def test_kaito_training_config_maps_our_settings():
    cfg = load_config(None, ["adapter.method=qlora", "adapter.r=8", "train.lr=3e-4", "train.steps=77",
                             "train.batch_size=2", "train.schedule=constant"])
    tc = training_config(cfg)["training_config"]
    assert set(tc) == {"ModelConfig", "QuantizationConfig", "LoraConfig", "TrainingArguments", "DataCollator",
                       "DatasetConfig"}  # the sections of KAITO's own lora/qlora ConfigMaps
    assert tc["QuantizationConfig"]["load_in_4bit"] is True and tc["QuantizationConfig"]["bnb_4bit_quant_type"] == "nf4"
    assert tc["LoraConfig"]["r"] == 8
    args = tc["TrainingArguments"]
    assert (args["learning_rate"], args["max_steps"], args["per_device_train_batch_size"]) == (3e-4, 77, 2)
    assert args["lr_scheduler_type"] == "constant_with_warmup"
    rendered = render(cfg, "kaito", Options(kaito_preset="phi-3-mini-4k-instruct", adapter_image="acr.io/a:1"))
    tuning, infer = [d for d in rendered.docs if d["kind"] == "Workspace"]
    assert tuning["tuning"]["method"] == "qlora" and tuning["tuning"]["output"]["image"] == "acr.io/a:1"
    assert infer["inference"]["adapters"][0]["source"]["image"] == "acr.io/a:1"
    cm = next(d for d in rendered.docs if d["kind"] == "ConfigMap")
    assert tuning["tuning"]["config"] == cm["metadata"]["name"]
    assert yaml.safe_load(cm["data"]["training_config.yaml"]) == training_config(cfg)


def test_kaito_says_what_it_cannot_express():
    lost = " ".join(not_expressible(load_config(None, ["adapter.method=dora"])))
    assert "loss masking" in lost and "dora" in lost and "target_only_logits" in lost
    assert "max_minutes" not in lost
    assert "train.max_minutes=14: KAITO runs all 550 steps" in " ".join(
        not_expressible(load_config(ROOT / "configs" / "k8s-en-zh-gemma3-270m.yaml")))
    rendered = render(RunConfig(), "kaito", Options(**KAITO))
    assert any("KAITO cannot express: loss masking" in n for n in rendered.terminal_notes())


def test_kaito_of_a_multi_task_config_names_the_tasks_and_each_limit():
    """KAITO reads one dataset with one column pair: the first task's columns are rendered and every
    task's max_length is listed among what it cannot express (not the unused data.max_length)."""
    cfg = load_config(ROOT / "configs" / "multitask-en-zh-pii-gemma3-270m.yaml")
    (first, first_cfg), (second, second_cfg) = cfg.data.task_configs()
    assert first_cfg.max_length != second_cfg.max_length  # the preset keeps long PII texts
    lost = " ".join(not_expressible(cfg))
    assert f"data.tasks ({first}, {second})" in lost
    assert f"max_length per task={first}: {first_cfg.max_length}, {second}: {second_cfg.max_length}" in lost
    assert "data.max_length=" not in lost
    columns = training_config(cfg)["training_config"]["DatasetConfig"]
    assert (columns["context_column"], columns["response_column"]) == ("en", "zh")
    pii = training_config(load_config(ROOT / "configs" / "pii-gemma3-270m.yaml"))["training_config"]["DatasetConfig"]
    assert (pii["context_column"], pii["response_column"]) == ("text", "masked")  # PII records, not languages


def test_kaito_manifest_that_cannot_work_is_an_error():
    # gemma3-270m is inference-only in KAITO: a tuning Workspace for it would be rejected
    with pytest.raises(ConfigError, match="not a KAITO tuning preset.*--kaito-preset"):
        render(RunConfig(), "kaito", Options(adapter_image="acr.io/a:1"))
    with pytest.raises(ConfigError, match="--adapter-image"):  # nowhere to push the adapter
        render(RunConfig(), "kaito", Options(kaito_preset="phi-3-mini-4k-instruct"))
    cfg = load_config(None, ["model.name=microsoft/Phi-3-mini-4k-instruct"])
    tuning = next(d for d in render(cfg, "kaito", Options(adapter_image="acr.io/a:1")).docs if "tuning" in d)
    assert tuning["tuning"]["preset"]["name"] == "phi-3-mini-4k-instruct"  # a known model needs no --kaito-preset


def test_job_retries_resume_from_the_last_checkpoint(tmp_path):
    """Run the Job's container command with a fake `loraforge` on PATH: what does a retry run?"""
    import os
    import subprocess

    job = next(d for d in render(RunConfig(), "job").docs if d["kind"] == "Job")
    assert job["spec"]["backoffLimit"] >= 1
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    run_dir = yaml.safe_load(next(d for d in render(RunConfig(), "job").docs
                                  if d["kind"] == "ConfigMap")["data"]["config.yaml"])["output"]["dir"]
    root = tmp_path / "root"
    fake = tmp_path / "bin" / "loraforge"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    local = [c.replace(run_dir, str(root / "run")) for c in command]
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}

    def attempt():
        return subprocess.run(local, capture_output=True, text=True, env=env)

    assert attempt().stdout.split()[-1] == "--overwrite"  # first attempt, or a crash before any checkpoint
    (root / "run" / "checkpoints" / "step-000100").mkdir(parents=True)
    assert attempt().stdout.split()[-1] == "--resume"  # a retry continues the run
    (root / "run" / "metrics.json").write_text("{}")
    finished = attempt()
    assert finished.returncode != 0 and "finished" in finished.stderr  # never retrained silently


def test_default_image_is_the_one_the_readme_builds_and_the_notes_say_how_to_change_it():
    readme = (ROOT / "README.md").read_text()
    for target, built in (("job", "loraforge-train:cpu"), ("serve", "loraforge-serve:cpu")):
        rendered = render(RunConfig(), target)
        images = {c["image"] for d in rendered.docs if d["kind"] in ("Job", "Deployment")
                  for c in d["spec"]["template"]["spec"]["containers"]}
        assert images == {built} and f"-t {built}" in readme
        assert any("--image" in n and built in n for n in rendered.notes)
    job = next(d for d in render(RunConfig(), "job", Options(image="reg.io/t:1")).docs if d["kind"] == "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "reg.io/t:1"


def test_targets_have_help():
    assert set(TARGETS) == {"kaito", "pytorchjob", "trainjob", "job", "serve", "vllm"}
    assert all(isinstance(h, str) and h for h in TARGETS.values())


def test_kaito_and_k8s_do_not_import_each_other():
    import ast

    import loraforge.deploy.kaito as kaito

    tree = ast.parse(Path(kaito.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "loraforge.deploy.k8s" not in imported


def _job_docs():
    return render(RunConfig(), "job").docs


def test_validation_rejects_typos_in_core_kinds_and_custom_resources():
    job = copy.deepcopy(next(d for d in _job_docs() if d["kind"] == "Job"))
    job["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 3
    with pytest.raises(ManifestError, match="imagePullPolicy"):
        validate_doc(job)
    job = copy.deepcopy(next(d for d in _job_docs() if d["kind"] == "Job"))
    job["spec"]["backofLimit"] = 1  # typo: strict schemas refuse unknown fields
    with pytest.raises(ManifestError, match="'backofLimit' was unexpected"):
        validate_doc(job)
    ws = copy.deepcopy(next(d for d in render(RunConfig(), "kaito", Options(**KAITO)).docs if d["kind"] == "Workspace"))
    ws["tuning"]["mehtod"] = "lora"  # the API server would prune this silently
    with pytest.raises(ManifestError, match="mehtod"):
        validate_doc(ws)
    pj = copy.deepcopy(next(d for d in render(RunConfig(), "pytorchjob").docs if d["kind"] == "PyTorchJob"))
    pj["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = "one"
    with pytest.raises(ManifestError, match="replicas"):
        validate_doc(pj)
    bad_name = copy.deepcopy(pj)
    bad_name["metadata"]["name"] = "Not_A_Name"
    with pytest.raises(ManifestError, match="DNS-1123"):
        validate_doc(bad_name)


def test_validate_file_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(FileNotFoundError):
        validate_file(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\ndata: {a: 1}\n")
    with pytest.raises(ManifestError, match="bad.yaml"):
        validate_file(bad)


def test_multi_node_only_where_supported():
    with pytest.raises(ConfigError, match="pytorchjob or trainjob"):
        render(RunConfig(), "job", Options(nodes=2))


def test_cli_renders_validates_and_writes(tmp_path, capsys):
    from loraforge.cli import main

    assert main(["deploy", "k8s", "--target", "trainjob", "--nodes", "2", "--out", str(tmp_path)]) == 0
    assert main(["deploy", "validate", str(tmp_path / "trainjob.yaml")]) == 0
    assert "TrainJob/" in capsys.readouterr().out
    (tmp_path / "bad.yaml").write_text("kind: Job\n")
    assert main(["deploy", "validate", str(tmp_path / "bad.yaml")]) == 2


def test_serve_int8_passes_the_flag_and_is_refused_elsewhere():
    cfg = RunConfig()
    container = render(cfg, "serve", Options(int8=True)).docs[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][-1] == "--int8" and container["command"][:2] == ["loraforge", "serve"]
    plain = render(cfg, "serve").docs[0]["spec"]["template"]["spec"]["containers"][0]
    assert "--int8" not in plain["command"]
    for target, opts in (("vllm", Options(int8=True)), ("serve", Options(int8=True, gpus=1))):
        with pytest.raises(ConfigError, match="--int8"):
            render(cfg, target, opts)
