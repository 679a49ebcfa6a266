"""End-to-end workflows on a tiny model folder: the run directory, resume after a kill, Ctrl-C,
never overwriting a run, data check, and DDP on two CPU processes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from loraforge.config import ConfigError, load_config
from loraforge.data.formats import DataError
from loraforge.runs import RunDir, RunDirError
from loraforge.workflows import check_data, train_run

PAIRS = Path(__file__).parents[1] / "fixtures" / "core" / "pairs.jsonl"


def overrides(model_dir, run_dir, *extra):
    return [f"model.name={model_dir}", f"data.train={PAIRS}", f"data.dev={PAIRS}", f"data.test={PAIRS}",
            "train.batch_size=4", "train.lr=3e-2", "train.warmup_steps=0", "eval.max_new_tokens=8",
            "eval.max_examples=8", f"output.dir={run_dir}", *extra]


def adapter_weights(run_dir):
    return load_file(str(Path(run_dir) / "adapter" / "adapter_model.safetensors"))


def test_train_run_writes_a_complete_run_directory(tiny_model_dir, tmp_path):
    cfg = load_config(None, overrides(tiny_model_dir, tmp_path / "run", "train.steps=6", "train.eval_every=3"))
    run = train_run(cfg, progress=False)
    assert isinstance(run, RunDir)
    names = {p.name for p in run.path.iterdir()}
    assert {"adapter", "config.yaml", "metrics.json", "report.md", "report.html", "loss.png", "history.jsonl",
            "outputs_before.jsonl", "outputs_after.jsonl"} <= names
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (run / "adapter").iterdir()}
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["before"]) >= {"bleu", "chrf", "ter", "markup"}
    assert metrics["train"]["steps"] == 6 and metrics["train"]["trainable_params"] > 0
    report = (run / "report.md").read_text()
    assert "| chrf |" in report and "loss.png" in report
    assert (run / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert load_config(run / "config.yaml") == cfg
    # the report can be rebuilt from the run's own files
    (run / "report.md").unlink()
    from loraforge.workflows import rebuild_report

    assert rebuild_report(run).read_text() == report
    # an existing run is never overwritten silently, and a finished one is not "resumed" (retrained)
    with pytest.raises(RunDirError, match="--resume"):
        train_run(cfg, progress=False)
    with pytest.raises(RunDirError, match="finished run"):
        train_run(cfg, resume=True, progress=False)


def _cli(*args, env_extra=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    return [sys.executable, "-m", "loraforge.cli", *args], env


def _wait_for(path: Path, proc, timeout=120):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, "training ended before it could be interrupted"
        assert time.time() - t0 < timeout
        time.sleep(0.05)


# `loraforge ...` that reports on exit how many optimizer steps this process ran
COUNTING_CLI = """
import atexit, sys
from torch.optim.optimizer import register_optimizer_step_post_hook
steps = []
register_optimizer_step_post_hook(lambda *args: steps.append(1))
atexit.register(lambda: print(f"optimizer steps in this process: {len(steps)}", file=sys.stderr))
from loraforge.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("how", ["sigkill", "sigint"])
def test_interrupted_run_resumes_to_the_same_adapter(tiny_model_dir, tmp_path, how):
    # dropout on: the adapter only matches if the resumed process restored the RNG state too
    common = ["train.steps=400", "train.save_every=10", "train.eval_every=0", "data.test=null", "eval.before=false",
              "adapter.dropout=0.1"]
    reference = train_run(load_config(None, overrides(tiny_model_dir, tmp_path / "ref", *common)), progress=False)

    run = tmp_path / "run"
    cmd, env = _cli("train", *overrides(tiny_model_dir, run, *common))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(run / "checkpoints" / "step-000010", proc)
    proc.send_signal(signal.SIGKILL if how == "sigkill" else signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert not (run / "adapter").exists(), "the run finished before the signal"
    if how == "sigint":
        assert proc.returncode == 130 and "checkpoint saved" in err
    assert list((run / "checkpoints").glob("step-*"))

    saved = int(sorted((run / "checkpoints").glob("step-*"))[-1].name.split("-")[1])
    cmd, env = _cli("train", *overrides(tiny_model_dir, run, *common), "--resume")
    cmd[1:3] = ["-c", COUNTING_CLI]
    err = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stderr
    assert f"optimizer steps in this process: {400 - saved}\n" in err  # only the remaining steps, not a restart
    ref, got = adapter_weights(reference), adapter_weights(run)
    assert ref.keys() == got.keys()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-7)
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history if "loss" in r] == list(range(1, 401))


def test_a_run_cut_by_its_time_budget_says_so(tiny_model_dir, tmp_path):
    """A budget shorter than one step: the run stops after its first, metrics.json keeps what was asked beside
    what ran, and the report and the history say why."""
    cfg = load_config(None, overrides(tiny_model_dir, tmp_path / "run", "train.steps=40", "train.eval_every=0",
                                      "train.max_minutes=0.000001", "eval.before=false"))
    run = train_run(cfg, progress=False)
    train = json.loads((run / "metrics.json").read_text())["train"]
    assert (train["steps"], train["steps_asked"]) == (1, 40)
    assert "1 of 40 (train.max_minutes)" in (run / "report.md").read_text()
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert history[0]["budget_stop"] is True and [r["step"] for r in history if "loss" in r] == [1]


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if anything loads a model: input errors must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr("loraforge.models.load.load_model", refuse)


def test_resume_without_a_checkpoint_is_an_error(tmp_path, no_model_load):
    cfg = load_config(None, [f"output.dir={tmp_path / 'none'}"])
    with pytest.raises(RunDirError, match="no checkpoint"):
        train_run(cfg, resume=True)
    RunDir(tmp_path / "started").write_config(cfg)  # killed before its first checkpoint: not silently from step 0
    with pytest.raises(RunDirError, match="no checkpoint"):
        train_run(cfg.model_copy(update={"output": cfg.output.model_copy(update={"dir": str(tmp_path / "started")})}),
                  resume=True)


def _interrupted_run(tmp_path, *extra):
    """A run directory as a killed run leaves it: config.yaml and a checkpoint, no metrics."""
    cfg = load_config(None, [f"output.dir={tmp_path / 'run'}", *extra])
    RunDir(tmp_path / "run").write_config(cfg)
    (tmp_path / "run" / "checkpoints" / "step-000010").mkdir(parents=True)
    return cfg


def test_resume_refuses_changes_that_would_make_another_run(tmp_path, no_model_load):
    from loraforge.workflows.train import check_resume_changes, config_for_resume

    saved = _interrupted_run(tmp_path, "train.steps=100")
    changed = load_config(None, [f"output.dir={tmp_path / 'run'}", "train.steps=100", "adapter.r=64"])
    with pytest.raises(ConfigError, match=r"adapter\.r: 16 -> 64.*only output\.\*, eval\.\*, train\.steps"):
        train_run(changed, resume=True)
    shorter = load_config(None, [f"output.dir={tmp_path / 'run'}", "train.steps=50"])
    with pytest.raises(ConfigError, match="may only grow"):
        check_resume_changes(saved, shorter)
    allowed = load_config(None, [f"output.dir={tmp_path / 'elsewhere'}", "train.steps=200", "eval.max_new_tokens=9",
                                 "train.save_every=5"])
    assert check_resume_changes(saved, allowed) is allowed
    # --resume with no config file: the saved config, plus the overrides that may change
    assert config_for_resume(str(tmp_path / "run"), ["train.steps=300"]).train.steps == 300
    with pytest.raises(ConfigError, match="data.train"):
        config_for_resume(str(tmp_path / "run"), ["data.train=other.jsonl"])


def test_a_malformed_data_line_fails_before_the_model_loads(tmp_path, no_model_load):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"en": "A Pod.", "zh": "一个 Pod。"}\n{"en": "broken\n', encoding="utf-8")
    for split in ("train", "dev", "test"):
        cfg = load_config(None, [f"data.{split}={bad}", f"output.dir={tmp_path / split}"])
        with pytest.raises(DataError, match=f"{bad}:2"):
            train_run(cfg, progress=False)


def test_eval_with_a_missing_adapter_fails_before_the_model_loads(tmp_path, no_model_load):
    from loraforge.workflows import eval_run

    cfg = load_config(None, [f"data.test={PAIRS}"])
    with pytest.raises(RunDirError, match="adapter not found"):
        eval_run(cfg, adapter=str(tmp_path / "nope"))


def test_data_check_passes_good_data_and_fails_a_broken_template(tiny_model_dir, tmp_path, monkeypatch):
    import io

    cfg = load_config(None, overrides(tiny_model_dir, tmp_path / "x"))
    out = io.StringIO()
    assert check_data(cfg, n=1, out=out)
    assert "OK" in out.getvalue()
    # not a terminal: no colour, so the trained tokens are bracketed, and the legend says so
    first = json.loads(PAIRS.read_text(encoding="utf-8").splitlines()[0])
    assert f"⟦{first['zh']}<|im_end|>⟧" in out.getvalue() or f"⟦{first['zh']}" in out.getvalue()
    assert "(between ⟦ ⟧)" in out.getvalue() and "(green)" not in out.getvalue()

    from loraforge.data import templates

    broken = templates.Template("chatml", "")  # forgets the end-of-turn
    monkeypatch.setitem(templates.BUILTIN, "chatml", broken)
    monkeypatch.setattr(templates, "_FACTS", __import__("weakref").WeakKeyDictionary())
    monkeypatch.setattr(templates, "_stop_token_ids", lambda tok, name: [tok.convert_tokens_to_ids("<|im_end|>")])
    out = io.StringIO()
    assert not check_data(load_config(None, overrides(tiny_model_dir, tmp_path / "x", "data.template=chatml")),
                          out=out)
    assert "end-of-turn" in out.getvalue() and "FAILED" in out.getvalue()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_train_run_leaves_a_process_group_it_did_not_join(tiny_model_dir, tmp_path):
    """train_run leaves the launcher's group it joined (the 2-process runs below exit cleanly), but a group the
    caller had already joined stays the caller's: still usable after the run."""
    import torch.distributed as tdist

    tdist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        train_run(load_config(None, overrides(tiny_model_dir, tmp_path / "run", "train.steps=2", "train.eval_every=0",
                                              "train.save_every=0", "data.test=null", "eval.before=false")),
                  progress=False)
        assert tdist.is_initialized()
        t = torch.ones(1)
        tdist.all_reduce(t)
        assert t.item() == 1.0
    finally:
        if tdist.is_initialized():
            tdist.destroy_process_group()


@pytest.mark.parametrize("topology", ["1 node x 2 processes", "2 nodes x 1 process"])
def test_ddp_matches_one_process_with_accumulation(tiny_model_dir, tmp_path, topology):
    """What the PyTorchJob/TrainJob manifests run (torchrun, static rendezvous, gloo on CPU) gives the
    adapter and loss curve of one process with the same global batch, identical on every rank."""
    common = ["train.steps=4", "train.eval_every=0", "train.save_every=0", "data.test=null", "eval.before=false",
              "train.length_grouping=false"]
    single = train_run(load_config(None, overrides(tiny_model_dir, tmp_path / "one", *common, "train.batch_size=2",
                                                   "train.grad_accum=2")), progress=False)
    port = _free_port()
    train_args = ["-m", "loraforge.cli", "train", *overrides(tiny_model_dir, tmp_path / "two", *common,
                                                             "train.batch_size=2")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run"]
    if topology.startswith("1 node"):
        commands = [[*launcher, "--nproc-per-node", "2", "--master-port", str(port), *train_args]]
    else:
        commands = [[*launcher, "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(rank),
                     "--master-addr", "127.0.0.1", "--master-port", str(port), *train_args] for rank in (0, 1)]
    # each launcher writes to its own file, not a pipe: a pipe read only after the other rank finished fills up,
    # blocks its writer inside a collective, and both ranks wait for each other until the timeout
    logs = [tmp_path / f"launcher{i}.log" for i in range(len(commands))]
    procs = []
    for command, log in zip(commands, logs):
        with open(log, "wb") as sink:
            procs.append(subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT))
    for p, log in zip(procs, logs):
        p.wait(timeout=300)
        assert p.returncode == 0, log.read_text(errors="replace")[-3000:]
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["train"]["world_size"] == 2 and metrics["train"]["ranks_identical"] is True
    one, two = adapter_weights(single), adapter_weights(tmp_path / "two")
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-6)

    def losses(run):
        return [r["loss"] for r in map(json.loads, (run / "history.jsonl").read_text().splitlines()) if "loss" in r]

    assert losses(tmp_path / "two") == pytest.approx(losses(single), rel=1e-5)


def test_translate_cli_reads_args_file_and_stdin(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import io

    from loraforge.cli import main

    run = train_run(load_config(None, overrides(tiny_model_dir, tmp_path / "run", "train.steps=2", "train.eval_every=0",
                                                "data.test=null", "eval.before=false")), progress=False)
    from loraforge.workflows import translate_texts

    expected = translate_texts(["A Pod.", "A Service."], adapter=str(run), max_new_tokens=4)
    assert len(expected) == 2
    capsys.readouterr()
    assert main(["translate", "--adapter", str(run), "--max-new-tokens", "4", "A Pod.", "A Service."]) == 0
    assert capsys.readouterr().out == "".join(f"{t}\n" for t in expected)
    texts = tmp_path / "in.txt"
    texts.write_text("A Pod.\n\nA Service.\n", encoding="utf-8")
    assert main(["translate", "--adapter", str(run), "--max-new-tokens", "4", "--file", str(texts)]) == 0
    assert capsys.readouterr().out == "".join(f"{t}\n" for t in expected)  # one line per input, blank skipped
    monkeypatch.setattr("sys.stdin", io.StringIO("A Service.\n"))
    assert main(["translate", "--adapter", str(run), "--max-new-tokens", "4", "--file", "-"]) == 0
    assert capsys.readouterr().out == "".join(f"{t}\n" for t in translate_texts(["A Service."], adapter=str(run),
                                                                                 max_new_tokens=4))
    assert main(["translate", "--adapter", str(tmp_path / "missing"), "x"]) == 2


def test_data_check_and_data_stats_agree_on_an_empty_target(tiny_model_dir, tmp_path):
    import io

    from loraforge.data.stats import data_stats

    data = tmp_path / "d.jsonl"
    data.write_text(PAIRS.read_text(encoding="utf-8") + json.dumps({"en": "A Pod.", "zh": ""}) + "\n",
                    encoding="utf-8")
    cfg = load_config(None, [f"model.name={tiny_model_dir}", f"data.train={data}", "data.dev=null"])
    out = io.StringIO()
    assert not check_data(cfg, n=0, out=out)
    assert "1 with problems" in out.getvalue() and "problem: empty target" in out.getvalue()
    assert data_stats(data)["problems"]["empty target"]["count"] == 1


def test_data_check_with_template_model_and_no_chat_template_says_what_to_use(tiny_model_dir):
    import io

    cfg = load_config(None, [f"model.name={tiny_model_dir}", f"data.train={PAIRS}", "data.template=model"])
    with pytest.raises(ConfigError, match="no chat template.*data.template=auto"):
        check_data(cfg, out=io.StringIO())


def test_translate_reports_outputs_cut_by_their_budget(tiny_tokenizer, monkeypatch, capsys, tmp_path):
    from scripted_model import scripted_model

    from loraforge.workflows import translate, translate_texts

    plain = [i for i in range(len(tiny_tokenizer)) if i not in tiny_tokenizer.all_special_ids][20:60]  # no loop
    token = tiny_tokenizer.convert_tokens_to_ids("Pod")
    scripts = iter([(plain, 5), (plain, None), (plain, None), (plain, None), (token, None)])  # one per model load
    monkeypatch.setattr("loraforge.eval.inference.load_for_inference",
                        lambda cfg, adapter: (loaded := scripted_model(tiny_tokenizer, *next(scripts)), loaded.model))
    texts = ["A Pod.", "A Service."]
    cut = []
    outputs = translate_texts(texts, batch_size=1, max_new_tokens=30, on_cut=lambda i, budget: cut.append((i, budget)))
    assert cut == [] and outputs == [tiny_tokenizer.decode(plain[:5]).strip()] * 2
    result = translate(texts, batch_size=1, max_new_tokens=30)
    assert result.cut == [0, 1] and result.budget == 30
    assert result.outputs == [tiny_tokenizer.decode(plain[:30]).strip()] * 2  # widened to the whole budget
    keep_source = tmp_path / "keep-source.yaml"
    keep_source.write_text("eval:\n  unfinished_keeps_source: true\n")
    result = translate(texts, batch_size=1, max_new_tokens=30, config_path=keep_source)
    assert result.cut == [0, 1]
    assert result.outputs == texts  # never finished, even with the whole budget: kept as their source
    capsys.readouterr()
    translate_texts(texts, batch_size=1, max_new_tokens=8)  # the default on_cut: a warning on stderr
    err = capsys.readouterr().err
    assert "segment 1 was cut" in err and "segment 2 was cut" in err and "--max-new-tokens" in err
    result = translate(texts, batch_size=1, max_new_tokens=30)  # a loop is cut after its first pass, not widened
    assert result.cut == [] and result.outputs == ["Pod"] * 2


def test_eval_says_when_its_config_is_not_the_one_the_adapter_trained_with(tmp_path, capsys):
    """``eval CONFIG --adapter RUN`` scores under CONFIG; where its prompt-shaping keys differ from the run's own
    config, a warning names them and the command that scores the adapter as trained."""
    from loraforge.workflows.evaluate import warn_if_not_trained_with

    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text("{}")
    (run / "config.yaml").write_text("data:\n  task: translate\n  system_prompt: Translate.\n")
    assert warn_if_not_trained_with(load_config(run / "config.yaml", ["eval.max_new_tokens=64"]), run) == []
    assert capsys.readouterr().err == ""  # budgets, test sets, decoding: the user's to change
    other = load_config(run / "config.yaml", ["data.system_prompt=Translate to Japanese."])
    assert warn_if_not_trained_with(other, run) == ["data.system_prompt"]
    err = capsys.readouterr().err
    assert "data.system_prompt ('Translate.', here 'Translate to Japanese.')" in err
    assert f"loraforge eval {run / 'config.yaml'} --adapter {run}" in err
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "adapter_config.json").write_text("{}")
    assert warn_if_not_trained_with(other, tmp_path / "bare") == []  # a bare adapter folder has no run config


def test_the_forecast_replay_refuses_a_run_whose_data_changed_since(tiny_model_dir, tmp_path):
    """bench.budget_forecast rebuilds a finished run's batches from its config: they must hold the tokens the run
    counted. After the training file is rewritten the replay is refused with the way out (``--set``), which
    replays it from a copy of the data it trained on."""
    from loraforge.bench.budget_forecast import step_seconds

    data = tmp_path / "train.jsonl"
    data.write_text(PAIRS.read_text())
    (kept := tmp_path / "kept.jsonl").write_text(PAIRS.read_text())
    cfg = load_config(None, overrides(tiny_model_dir, tmp_path / "run", "train.steps=4", "train.eval_every=0",
                                      "eval.before=false", "data.test=null", f"data.train={data}"))
    run = train_run(cfg, progress=False).path
    assert json.loads((run / "metrics.json").read_text())["train"]["tokens"] > 0  # exact, not seconds x tokens/s
    seconds, work, budget = step_seconds(run)
    assert len(seconds) == len(work) == 4 and all(s > 0 for s in seconds) and budget["steps"] == 4
    lines = PAIRS.read_text().splitlines()
    data.write_text("\n".join(line for i, line in enumerate(lines) if i % 2 == 0) + "\n")
    with pytest.raises(SystemExit, match="data has changed since.*--set data.train="):
        step_seconds(run)
    assert step_seconds(run, [f"data.train={kept}"])[0] == pytest.approx(seconds)
