"""The ``loraforge`` command as a user meets it: the README's commands parse, help says what each option
does and its default, user errors are one line and exit 2, and nothing long starts by accident.

Workflow functions are replaced by fakes where a test is about the CLI alone (what reaches the function,
what is printed); ``main`` and the installed console script are the real entry points.
"""

from __future__ import annotations

import argparse
import inspect
import io
import os
import re
import shlex
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from loraforge.cli import build_parser, main
from loraforge.cli.commands import commands
from loraforge.cli.spec import resolve
from loraforge.config import RunConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).with_name("loraforge")
OPS = {"|", "||", "&&", ";", "&", ">", ">>", "<"}


def readme_commands(text: str) -> list[list[str]]:
    """Every ``loraforge ...`` command line in a Markdown text: fenced blocks line by line, and inline code
    spans (``[optional]`` parts kept, an ``a|b|c`` choice as its first value); shell operators end a command."""
    lines: list[str] = []
    for i, part in enumerate(re.split(r"^\s*```.*$", text.replace("\\\n", " "), flags=re.M)):
        if i % 2:
            lines += part.splitlines()
        else:
            lines += [re.sub(r"\[([^\]]*)\]", r"\1", " ".join(s.split())) for s in re.findall(r"`([^`]+)`", part)]
    found = []
    for line in lines:
        m = re.search(r"(?:^|[\s/|$])loraforge\s+(.*)", line)
        if not m:
            continue
        command = re.sub(r"\b([\w.-]+)(?:\|[\w.-]+)+", r"\1", m.group(1))  # a|b|c (no spaces): a choice
        lexer = shlex.shlex(command, posix=True, punctuation_chars="|&;<>")
        lexer.whitespace_split, lexer.commenters = True, "#"
        words = []
        for w in lexer:
            if w in OPS:
                break
            words.append(w)
        found.append(words)
    return found


def parses(argv: list[str]) -> argparse.Namespace:
    try:
        return build_parser().parse_args(argv)
    except SystemExit as e:
        raise AssertionError(f"`loraforge {shlex.join(argv)}` does not parse (exit {e.code})") from None


def test_every_readme_command_parses():
    found = readme_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(found) >= 20, found  # the extraction itself works
    for argv in found:
        parses(argv)


def test_readme_extraction_sees_fences_spans_and_choices():
    text = ("text `loraforge export RUN --format adapter|gguf --out D` and `loraforge data stats F [--tokenizer t]`\n"
            "```sh\nloraforge deploy k8s c.yaml --target job \\\n  --out k8s/   # comment\n"
            "echo x | loraforge translate --file - > out.txt\n```\n")
    assert readme_commands(text) == [["export", "RUN", "--format", "adapter", "--out", "D"],
                                     ["data", "stats", "F", "--tokenizer", "t"],
                                     ["deploy", "k8s", "c.yaml", "--target", "job", "--out", "k8s/"],
                                     ["translate", "--file", "-"]]


# --- help ----------------------------------------------------------------------------------------


def _parsers(parser: argparse.ArgumentParser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def _help_of(help_text: str, option: str) -> str:
    """An option's entry in a --help text: its line and the indented lines under it."""
    lines = help_text.splitlines()
    start = next(i for i, ln in enumerate(lines) if re.match(rf"\s+{re.escape(option)}(\s|,|$)", ln))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("    ")), len(lines))
    return " ".join(ln.strip() for ln in lines[start:end])


def test_every_option_has_help_and_shows_its_default(monkeypatch):
    monkeypatch.setenv("COLUMNS", "10000")  # one line per option
    checked = 0
    for path, parser in _parsers(build_parser()):
        text = parser.format_help()
        for action in parser._actions:
            if not action.option_strings or isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            where = f"loraforge {' '.join(path)} {action.option_strings[0]}"
            assert (action.help or "").strip(), f"{where} has no help"
            if action.default is None or action.nargs == 0 or action.default == []:
                continue
            line = _help_of(text, action.option_strings[0])
            assert f"(default: {action.default})" in line, f"{where}: help does not show its default\n{line}"
            checked += 1
    assert checked >= 40


def test_bias_help_gives_the_decoders_own_defaults(monkeypatch):
    """The --bias defaults are read from the decoders, not repeated as literals that can go stale."""
    from loraforge.pii.decode import DEFAULT_BIAS
    from loraforge.pii.tagger import DEFAULT_TAG_BIAS

    monkeypatch.setenv("COLUMNS", "10000")
    helps = {path: parser.format_help() for path, parser in _parsers(build_parser()) if path in (("eval",), ("mask",))}
    assert len(helps) == 2
    for text in helps.values():
        assert f"default {DEFAULT_BIAS:g}, tagger {DEFAULT_TAG_BIAS:g}" in _help_of(text, "--bias")


def test_building_the_command_table_loads_no_masker():
    """Every `loraforge` command builds the table; the --bias help must not pull in the decoders."""
    code = ("import sys, loraforge.cli.commands; "
            "bad = [m for m in sys.modules if m.startswith('loraforge.pii.') and m != 'loraforge.pii.defaults']; "
            "assert not bad, bad; from loraforge.pii import Masker, DEFAULT_BIAS; "
            "assert 'loraforge.pii.masker' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_top_level_help_is_written_for_users_with_examples_that_parse(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "parse arguments" not in out and "fine-tunes" in out
    examples = [ln.split("  ", 2)[1] for ln in out.split("examples:")[1].splitlines() if ln.startswith("  loraforge")]
    assert len(examples) >= 2
    for example in examples:
        parses(shlex.split(example)[1:])


def test_flag_names_are_the_parameters_of_the_functions_they_feed():
    """The table passes flags to its functions by name: a flag whose dest the function lacks would be
    silently dropped, so every flag of a command with a direct target must be one of its parameters."""
    for command in commands():
        if not isinstance(command.run, str):
            continue  # handlers forward by name themselves; their tests below check what arrives
        params = inspect.signature(resolve(command.run)).parameters
        for a in command.args:
            dest = a.options.get("dest") or a.flags[0].lstrip("-").replace("-", "_")
            assert a.config_key or dest in params, f"{' '.join(command.path)} {a.flags[0]} -> {dest}: not a parameter"


def test_deploy_targets_come_from_deploy_k8s_with_their_help(monkeypatch):
    from loraforge.deploy import k8s

    monkeypatch.setattr(k8s, "TARGETS", {"job": "a batch Job and its PVC", "serve": "a Deployment and Service"})
    parser = dict(_parsers(build_parser()))[("deploy", "k8s")]
    target = next(a for a in parser._actions if "--target" in a.option_strings)
    assert target.choices == ["job", "serve"]
    assert "job: a batch Job and its PVC" in target.help and "serve: a Deployment and Service" in target.help


# --- errors --------------------------------------------------------------------------------------


@pytest.fixture
def train_calls(monkeypatch):
    calls = []
    monkeypatch.setattr("loraforge.workflows.train_run", lambda cfg, resume=False: calls.append((cfg, resume)))
    return calls


def test_train_without_a_config_refuses_and_says_how_to_start(train_calls, capsys):
    assert main(["train"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("loraforge: error:")
    assert "loraforge train configs/demo.yaml" in err and "--defaults" in err
    assert train_calls == []
    assert main(["compare"]) == 2  # the other command that starts training runs


def test_train_runs_on_defaults_only_when_asked(train_calls, tmp_path):
    assert main(["train", "--defaults"]) == 0
    assert train_calls == [(RunConfig(), False)]
    # overrides are an explicit choice too; --out/--overwrite set their config keys
    assert main(["train", "train.steps=3", "--out", str(tmp_path), "--resume"]) == 0
    cfg, resume = train_calls[-1]
    assert (cfg.train.steps, cfg.output.dir, resume) == (3, str(tmp_path), True)
    assert main(["train", "configs/demo.yaml", "--overwrite"]) == 0
    expected = load_config(ROOT / "configs/demo.yaml")
    expected.output.overwrite = True
    assert train_calls[-1][0] == expected


def test_console_script_train_without_config_is_one_line_and_exit_2(tmp_path):
    if not SCRIPT.exists():
        pytest.skip("the loraforge console script is not installed next to this python")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    res = subprocess.run([str(SCRIPT), "train"], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.startswith("loraforge: error: train needs a config") and res.stderr.count("\n") == 1
    assert "Traceback" not in res.stderr


def test_bench_train_unknown_job_is_a_user_error_before_anything_runs(monkeypatch, capsys):
    monkeypatch.setattr("loraforge.bench.train.bench_train", lambda *a, **k: pytest.fail("the bench started"))
    assert main(["bench", "train", "--jobs", "trl-bf16,loraforge-low-memorry"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "loraforge-low-memorry" in err and "loraforge-low-memory" in err


@pytest.mark.parametrize("error", [FileNotFoundError("runs/x: no metrics.json"), PermissionError("runs/x")])
def test_user_errors_are_one_line(monkeypatch, capsys, error):
    def fail(run_dir):
        raise error

    monkeypatch.setattr("loraforge.workflows.rebuild_report", fail)
    assert main(["report", "runs/x"]) == 2
    assert capsys.readouterr().err == f"loraforge: error: {error}\n"


@pytest.mark.parametrize("bug", [RuntimeError("a bug"), ValueError("a bug"), KeyError("a bug")])
def test_unexpected_exceptions_keep_their_traceback(monkeypatch, bug):
    def fail(run_dir):
        raise bug

    monkeypatch.setattr("loraforge.workflows.rebuild_report", fail)
    with pytest.raises(type(bug)):
        main(["report", "runs/x"])


def test_a_bad_config_key_is_one_line(capsys):
    assert main(["config", "show", "configs/demo.yaml", "train.stepz=3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("loraforge: error:") and "stepz" in err


# --- config show ---------------------------------------------------------------------------------


def _leaf_keys(model, prefix=""):
    """Every leaf key; a section that is a union of models (one per method, say) has the keys of each."""
    for name, info in model.model_fields.items():
        sections = [t for t in (info.annotation, *typing.get_args(info.annotation)) if hasattr(t, "model_fields")]
        if not sections:
            yield f"{prefix}{name}"
        for section in sections:
            yield from _leaf_keys(section, f"{prefix}{name}.")


def test_config_show_lists_every_key_with_type_default_help_and_resolved_value(capsys):
    assert main(["config", "show", "configs/demo.yaml", "train.steps=7"]) == 0
    out = capsys.readouterr().out
    for key in _leaf_keys(RunConfig):
        assert f"\n{key} = " in out, key
    block = out.split("\ntrain.steps = ")[1].split("\n")
    assert block[0] == "7" and block[1].strip() == "int (>= 1), default 300"
    eval_every = out.split("\ntrain.eval_every = ")[1].split("\ntrain.")[0]
    assert "Dev loss every N optimizer steps" in eval_every  # the field's docstring in config.py
    assert "\noutput.dir = runs/demo\n" in out  # from the file
    assert main(["config", "show"]) == 0
    assert "\ntrain.steps = 300\n" in capsys.readouterr().out


# --- translate -----------------------------------------------------------------------------------


@pytest.fixture
def translate_calls(monkeypatch):
    calls = []

    def fake(texts, adapter=None, model=None, config_path=None, batch_size=32, max_new_tokens=256, on_cut=None):
        calls.append({"texts": texts, "adapter": adapter, "model": model, "config_path": config_path,
                      "batch_size": batch_size, "max_new_tokens": max_new_tokens})
        for i, t in enumerate(texts):
            if "long" in t and on_cut:
                on_cut(i, max_new_tokens - 1)  # the workflow's budget for a text may be under the flag's
        return [t.upper() for t in texts]

    monkeypatch.setattr("loraforge.workflows.translate_texts", fake)
    return calls


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_translate_passes_every_flag_to_the_function(translate_calls, capsys):
    assert main(["translate", "--adapter", "a", "--model", "m", "--config", "c.yaml", "--batch-size", "4",
                 "--max-new-tokens", "9", "a Pod"]) == 0
    assert translate_calls == [{"texts": ["a Pod"], "adapter": "a", "model": "m", "config_path": "c.yaml",
                                "batch_size": 4, "max_new_tokens": 9}]
    assert capsys.readouterr().out == "A POD\n"


def test_translate_says_it_reads_a_terminal_and_not_a_pipe(translate_calls, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", _Terminal("a Pod\n\na Service\n"))
    assert main(["translate"]) == 0
    captured = capsys.readouterr()
    assert "reading texts from stdin, one per line; end with Ctrl-D" in captured.err
    assert captured.out == "A POD\nA SERVICE\n"
    monkeypatch.setattr("sys.stdin", io.StringIO("a Pod\n"))
    assert main(["translate", "--file", "-"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("how", ["stdin", "file"])
def test_translate_with_no_text_stops_before_loading_a_model(translate_calls, monkeypatch, capsys, tmp_path, how):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["translate"] + (["--file", str(empty)] if how == "file" else [])) == 2
    err = capsys.readouterr().err
    assert err.startswith("loraforge: error: nothing to translate") and err.count("\n") == 1
    assert translate_calls == []


def test_console_script_translate_with_empty_stdin_exits_2_at_once():
    if not SCRIPT.exists():
        pytest.skip("the loraforge console script is not installed next to this python")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    res = subprocess.run([str(SCRIPT), "translate"], input="", env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.startswith("loraforge: error: nothing to translate") and "Traceback" not in res.stderr


def test_translate_warns_once_per_segment_cut_at_its_budget(translate_calls, capsys):
    assert main(["translate", "short", "a long one", "short", "long again", "--max-new-tokens", "7"]) == 0
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 2
    assert "segment 2 " in warnings[0] and "segment 4 " in warnings[1] and "budget of 6 new tokens" in warnings[0]
    assert all("raise --max-new-tokens (now 7)" in w for w in warnings)


# --- report, data stats, make demo -----------------------------------------------------------------


def test_report_says_what_it_wrote(monkeypatch, capsys, tmp_path):
    def fake(run_dir):
        for name in ("report.md", "report.html"):
            (Path(run_dir) / name).write_text("x")
        return Path(run_dir) / "report.md"

    monkeypatch.setattr("loraforge.workflows.rebuild_report", fake)
    assert main(["report", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"wrote {tmp_path / 'report.md'}, {tmp_path / 'report.html'}\n"


def test_data_stats_takes_the_csv_columns_as_flags(tmp_path, capsys):
    csv = tmp_path / "pairs.csv"
    csv.write_text("english,chinese\nA Pod runs.,Pod 运行。\nA node.,一个节点。\n", encoding="utf-8")
    assert main(["data", "stats", str(csv), "--source-field", "english", "--target-field", "chinese"]) == 0
    assert "2" in capsys.readouterr().out


def test_make_demo_keeps_an_earlier_run(tmp_path):
    """`make demo` in a directory with runs/demo moves it aside (and says so) instead of replacing it."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (tmp_path / "pyproject.toml").write_text("")
    (venv / ".installed").write_text("")
    os.utime(tmp_path / "pyproject.toml", (0, 0))  # older than .installed: `make venv` has nothing to do
    fake = venv / "bin" / "loraforge"
    fake.write_text('#!/bin/sh\necho "$@" > args.txt\nmkdir -p runs/demo && echo new > runs/demo/run.txt\n')
    fake.chmod(0o755)
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    (tmp_path / "runs" / "demo" / "run.txt").write_text("old")
    res = subprocess.run(["make", "-f", str(ROOT / "Makefile"), "demo", f"VENV={venv}"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    kept = list((tmp_path / "runs").glob("demo.prev-*"))
    assert len(kept) == 1 and (kept[0] / "run.txt").read_text() == "old"
    assert f"keeping the previous runs/demo as runs/{kept[0].name}" in res.stdout
    assert (tmp_path / "runs" / "demo" / "run.txt").read_text() == "new\n"
    assert (tmp_path / "args.txt").read_text().split() == ["train", "configs/demo.yaml"]
