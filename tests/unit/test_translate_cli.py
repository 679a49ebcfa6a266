"""`loraforge translate --file FILE` and `--file -` (stdin): one output line per non-blank input line, in order.

The tiny model's outputs are too much alike to show the order, so the translator is replaced by one
whose output names its input; test_workflows.py runs the same paths with the real model."""

import io

import pytest


@pytest.fixture
def echo(monkeypatch):
    """translate_texts -> '<text reversed>': each output names its input."""
    import loraforge.workflows

    calls = []

    def fake(texts, **kwargs):
        calls.append(list(texts))
        return [t[::-1] for t in texts]

    monkeypatch.setattr(loraforge.workflows, "translate_texts", fake)
    return calls


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_translate_prints_one_line_per_input_line_in_order(source, echo, tmp_path, capsys, monkeypatch):
    from loraforge.cli import main

    text = "A Pod.\n\n  \nA Service exposes Pods.\nkubectl get pods\n"
    if source == "file":
        path = tmp_path / "in.txt"
        path.write_text(text, encoding="utf-8")
        arg = str(path)
    else:
        monkeypatch.setattr("sys.stdin", io.StringIO(text))
        arg = "-"
    assert main(["translate", "--model", "unused", "--file", arg]) == 0
    lines = ["A Pod.", "A Service exposes Pods.", "kubectl get pods"]
    assert echo == [lines]  # blank lines skipped, one call with every line
    assert capsys.readouterr().out == "".join(f"{t[::-1]}\n" for t in lines)
