"""The recall knob's curve: ``loraforge eval --pii-curve`` scores the tuned model at each bias on the
dev split (never test), stores the points in metrics.json, draws pii_curve.png and puts both in the
report; ``--bias`` sets the side-by-side table's operating point; both refused where they mean nothing."""

from __future__ import annotations

import json

import pytest

from conftest import tiny_causal
from loraforge.config import DataConfig, RunConfig
from loraforge.data.pii import generate
from loraforge.pii import sidebyside
from loraforge.pii.decode import ConstrainedMasker
from loraforge.runs import RunDir, RunMetrics
from loraforge.runs.metrics import PiiCurve

from test_pii_sidebyside import make_lora

TEST = [r for r in generate(16, seed=7, split="test") if r["spans"]][:3]
DEV = [r for r in generate(16, seed=11, split="train") if r["spans"]][:4]
BIASES = [-1e4, 0.0, 1e4]


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.fixture
def pii_run(tmp_path, tiny_model_dir):
    run = RunDir(tmp_path / "run")
    test = _jsonl(tmp_path / "test.jsonl", TEST)
    cfg = RunConfig.model_validate({"model": {"name": str(tiny_model_dir), "dtype": "fp32"},
                                    "data": {"task": "pii", "train": test, "test": test,
                                             "dev": _jsonl(tmp_path / "dev.jsonl", DEV), "max_dev_examples": 2},
                                    "eval": {"max_examples": 3, "max_new_tokens": 8, "before": False}})
    run.write_config(cfg)
    make_lora(tiny_model_dir, run.adapter_dir)
    run.write_metrics(RunMetrics(task="pii", after={"leak_rate": 50.0, "n": 3}))
    return run


def test_the_curve_is_scored_on_dev_stored_plotted_and_reported(pii_run, monkeypatch, capsys):
    from loraforge.cli import main

    real_sets, real_sweep = sidebyside.eval_sets, sidebyside.sweep_bias
    monkeypatch.setattr(sidebyside, "eval_sets", lambda cfg, limit=None: real_sets(cfg, 2))  # 2 hand-written rows
    swept = []

    def spy(masker, records, biases, **kw):
        swept.append([r["text"] for r in records])
        return real_sweep(masker, records, biases, **kw)

    monkeypatch.setattr(sidebyside, "sweep_bias", spy)
    argv = ["eval", str(pii_run.config_path), "--adapter", str(pii_run), "--pii-curve=-1e4,0,1e4", "--bias", "-3"]
    assert main(argv) == 0
    out, err = capsys.readouterr()

    assert swept == [[r["text"] for r in DEV[:2]]]  # the first data.max_dev_examples dev rows, once
    assert not {r["text"] for r in TEST} & set(swept[0])
    stored = pii_run.metrics()
    curve = stored.pii_curve
    assert isinstance(curve, PiiCurve) and curve.set == pii_run.config().data.dev and curve.n == 2
    assert [p.bias for p in curve.points] == BIASES
    assert curve.points[0].leak_rate == 100.0  # a model that never opens a placeholder leaks every value
    assert curve.points[2].leak_rate < curve.points[0].leak_rate
    assert stored.pii_compare.bias == -3.0 and stored.after["leak_rate"] == 50.0  # operating point; the rest kept
    assert json.loads(out)["pii_curve"] == curve.model_dump()
    assert "| bias | leak % | over-masking % |" in err and "uses bias -3" in err

    png = pii_run / "pii_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = pii_run.report_md.read_text()
    assert "## PII recall knob" in report and "(pii_curve.png)" in report and "| -10000 | 100 |" in report
    assert "uses bias -3" in report
    assert 'src="pii_curve.png"' in pii_run.report_html.read_text()
    assert all(r["text"] not in report for r in DEV + TEST)  # scores only, never the texts

    png.unlink()  # `loraforge report` rebuilds it from metrics.json
    assert main(["report", str(pii_run)]) == 0
    assert png.is_file()


def _translate_run(tmp_path, tiny_model_dir):
    data = _jsonl(tmp_path / "t.jsonl", [{"source": "a", "target": "b"}])
    return RunConfig.model_validate({"model": {"name": str(tiny_model_dir)},
                                     "data": {"train": data, "test": data, "dev": data}})


@pytest.mark.parametrize("flag", [["--pii-curve=0,2"], ["--bias", "1"]])
@pytest.mark.parametrize("case", ["not pii", "no adapter"])
def test_the_flags_are_refused_where_there_is_no_knob(tmp_path, tiny_model_dir, pii_run, capsys, flag, case,
                                                      monkeypatch):
    from loraforge.cli import main
    from loraforge.workflows import evaluate as wf

    monkeypatch.setattr(wf, "load_for_inference", lambda *a, **k: pytest.fail("the model must not load"))
    if case == "not pii":
        cfg = _translate_run(tmp_path, tiny_model_dir)
        RunDir(tmp_path / "t").write_config(cfg)
        path = RunDir(tmp_path / "t").config_path
        argv = ["eval", str(path), "--adapter", str(pii_run), *flag]
    else:
        argv = ["eval", str(pii_run.config_path), *flag]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "only for a PII config (data.task: pii) evaluated with --adapter" in err


def test_the_curve_needs_a_dev_split_and_baseline_takes_no_knob(pii_run, capsys, monkeypatch):
    from loraforge.cli import main
    from loraforge.workflows import evaluate as wf

    monkeypatch.setattr(wf, "load_for_inference", lambda *a, **k: pytest.fail("the model must not load"))
    argv = ["eval", str(pii_run.config_path), "data.dev=null", "--adapter", str(pii_run), "--pii-curve=0"]
    assert main(argv) == 2
    assert "set data.dev" in capsys.readouterr().err
    assert main(["eval", str(pii_run.config_path), "--baseline", "--bias", "1"]) == 2
    assert "not on --baseline" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", str(pii_run.config_path), "--adapter", str(pii_run), "--pii-curve=low,high"])
    assert "is not a list of biases" in capsys.readouterr().err


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_higher_bias_never_unmasks_a_text(tiny_tokenizer, seed):
    """The knob is monotone where greedy decoding makes it so: until a row first commits to a
    placeholder, every bias makes the same choices, and a higher one commits at that step or sooner.
    So a text masked at one bias is masked at every higher one, and a text left untouched at a
    higher bias comes out identical at every lower one. (The number of spans need not be monotone:
    an earlier placeholder may swallow what were two.)"""
    model = tiny_causal(vocab_size=len(tiny_tokenizer), seed=seed)
    texts = [r["text"] for r in generate(12, seed=seed, split="test")] + ["no personal data here", "x"]
    biases = [-4.0, -1.0, 0.0, 1.0, 2.0, 4.0]
    decoded = {b: ConstrainedMasker.from_config(model, tiny_tokenizer, DataConfig(task="pii"), bias=b,
                                                batch_size=4).decode(texts) for b in biases}
    masked = {b: [bool(d.raw) for d in decoded[b]] for b in biases}
    assert any(masked[biases[-1]]) and not all(masked[biases[0]])  # the range moves something
    for lo, hi in zip(biases, biases[1:]):
        assert all(h or not lo_ for lo_, h in zip(masked[lo], masked[hi])), (lo, hi)
        for d_lo, d_hi in zip(decoded[lo], decoded[hi]):
            if not d_hi.raw:
                assert d_lo.output == d_hi.output and not d_lo.raw
