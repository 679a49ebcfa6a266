"""The product commands wired into the CLI: markup protection in training/eval, `mask`/`unmask`,
`translate-page`/`eval-pages` (with a fake segment translator), and `bench serve --compare-gguf`."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from loraforge.cli import main
from loraforge.config import load_config
from loraforge.data.splits import load_splits

FIXTURES = Path(__file__).parents[1] / "fixtures"
PAGE = FIXTURES / "localize" / "page.md"


def _markup_pairs(tmp_path: Path) -> Path:
    rows = [{"en": f"Run `kubectl get pods -n ns{i}` and read [the guide](/docs/concepts/pod-{i}/).",
             "zh": f"运行 `kubectl get pods -n ns{i}` 并阅读[指南](/zh-cn/docs/concepts/pod-{i}/)。"} for i in range(6)]
    rows.append({"en": "See `a` and `b`.", "zh": "见 `a`。"})  # the target lost markup: dropped when protecting
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


def test_protect_markup_puts_placeholders_in_train_and_dev_not_test(tmp_path):
    data = _markup_pairs(tmp_path)
    common = [f"data.train={data}", f"data.dev={data}", f"data.test={data}"]
    plain = load_splits(load_config(None, common))
    prot = load_splits(load_config(None, [*common, "data.protect_markup=true"]))
    assert len(plain.train) == 7 and len(prot.train) == 6  # the pair that lost `b` is dropped
    for e in prot.train + prot.dev:
        assert "`" not in e.source and "](" not in e.source and "{1}" in e.source and "{1}" in e.target
    assert [e.source for e in prot.test] == [e.source for e in plain.test]  # scored against real references


def test_evaluate_restores_markup_and_counts_repairs(tmp_path, tiny_model_dir):
    from loraforge.eval import inference
    from loraforge.workflows import eval_run

    data = _markup_pairs(tmp_path)
    cfg = load_config(None, [f"model.name={tiny_model_dir}", f"data.test={data}", "data.protect_markup=true",
                             "eval.max_new_tokens=4", "eval.max_examples=6"])
    seen = []

    def echo(loaded, model, cfg_, sources, systems=None, **kw):  # a "model" that copies its protected input
        seen.extend(sources)
        return inference.Generated(list(sources), [4] * len(sources))

    mp = pytest.MonkeyPatch()
    mp.setattr(inference, "generate_answers", echo)
    try:
        metrics = eval_run(cfg)
    finally:
        mp.undo()
    assert seen and all("`" not in s and "{1}" in s for s in seen)  # the model saw placeholders only
    assert metrics["markup"] == 100.0  # and the markup came back
    from loraforge.data.markup import protect

    expected = sum(len(protect(e["en"]).pieces) for e in map(json.loads, data.read_text().splitlines()[:6]))
    assert expected >= 12 and metrics["placeholders"] == expected and metrics["placeholders_repaired"] == 0


def test_mask_and_unmask_round_trip_through_the_cli(tmp_path, capsys):
    text = "Mail jane.doe@example.com, card 4111 1111 1111 1111, again jane.doe@example.com."
    mapping = tmp_path / "m.json"
    assert main(["mask", "--style", "numbered", "--mapping", str(mapping), text]) == 0
    captured = capsys.readouterr()
    masked = captured.out
    assert masked == "Mail [EMAIL_1], card [CREDIT_CARD_1], again [EMAIL_1].\n"
    assert "personal data" in captured.err and stat.S_IMODE(os.stat(mapping).st_mode) == 0o600
    (tmp_path / "masked.txt").write_text(masked, encoding="utf-8")
    assert main(["unmask", str(tmp_path / "masked.txt"), "--mapping", str(mapping)]) == 0
    assert capsys.readouterr().out == text + "\n"
    (tmp_path / "other.txt").write_text("Mail [EMAIL_1] somewhere else.\n", encoding="utf-8")
    assert main(["unmask", str(tmp_path / "other.txt"), "--mapping", str(mapping)]) == 2
    assert "another text" in capsys.readouterr().err


def test_mask_jsonl_spans_are_input_offsets(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    texts = ["call +49 30 1234567 now", "nothing personal here", "ip 192.168.10.20 down"]
    src.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    assert main(["mask", "--jsonl", str(src), "--format", "spans"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in rows] == [0, 1, 2] and rows[1]["spans"] == []
    for r, t in zip(rows, texts):
        for s in r["spans"]:
            assert t[s["start"]:s["end"]] in ("+49 30 1234567", "192.168.10.20")


def test_mask_bad_inputs_are_one_line_errors(tmp_path, capsys):
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"abc\x00def")
    assert main(["mask", "--file", str(binary)]) == 2
    assert "binary" in capsys.readouterr().err
    assert main(["mask", "--merge", "model", "hello"]) == 2
    assert "--adapter" in capsys.readouterr().err


def _fake_translator(mp):
    from loraforge.workflows import localize

    calls = []

    def fake(*a, **kw):
        def fn(segments):
            calls.append(list(segments))
            fn.stats["segments"] += len(segments)
            return [f"译{s}" for s in segments]
        fn.stats = {"segments": 0, "segments_looped": 0, "segments_cut": 0}
        return fn
    mp.setattr(localize, "segment_translator", fake)
    return calls


def test_translate_page_cli_writes_a_structurally_valid_page(tmp_path, capsys, monkeypatch):
    from loraforge.localize import check_page_structure

    calls = _fake_translator(monkeypatch)
    out = tmp_path / "zh.md"
    assert main(["translate-page", str(PAGE), str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(calls) == 1 and report["written"] == 1 and report["blocks_translated"] > 0 and not report["failed"]
    assert report["segments"] == len(calls[0]) and report["segments_looped"] == 0  # the translator's counts
    zh = out.read_text(encoding="utf-8")
    assert check_page_structure(PAGE.read_text(encoding="utf-8"), zh) == []
    assert main(["translate-page", str(PAGE), str(out)]) == 2  # never overwritten silently
    assert "overwrite" in capsys.readouterr().err
    assert main(["translate-page", str(PAGE), str(out), "--previous", str(out), "--overwrite"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["blocks_translated"] == 0 and again["blocks_reused"] == report["blocks_translated"]


def test_translate_page_bad_page_is_reported_with_its_path(tmp_path, capsys, monkeypatch):
    _fake_translator(monkeypatch)
    bad = FIXTURES / "localize" / "bad_fence.md"
    code = main(["translate-page", str(bad), str(tmp_path / "out.md")])
    assert code == 2 and not (tmp_path / "out.md").exists()
    assert "bad_fence.md" in capsys.readouterr().out + capsys.readouterr().err


def test_bench_serve_compare_flags_reach_side_by_side(monkeypatch, capsys):
    from loraforge.bench import serve_compare

    got = {}

    def fake(gguf, base, **kw):
        got.update(gguf=gguf, base=base, **kw)
        return {"engines": [{"name": "loraforge", "failures": 0}, {"name": "llama.cpp", "failures": 1}]}
    monkeypatch.setattr(serve_compare, "side_by_side", fake)
    code = main(["bench", "serve", "--compare-gguf", "m.gguf", "--requests", "8", "--soak", "20",
                 "--llama-threads", "2", "--out-dir", "o"])
    assert code == 1  # a failure in either engine fails the command
    assert got == {"gguf": "m.gguf", "base": "gemma3-270m", "requests": 8, "concurrency": 16, "max_tokens": 64,
                   "soak": 20, "out": "o", "threads": 2, "adapter": None, "serve_args": None, "loraforge_only": False}
    assert main(["bench", "serve", "--compare-gguf", "t.gguf", "--adapter", "runs/x", "--int8", "--loraforge-only"]) == 1
    assert got["gguf"] == "t.gguf" and got["adapter"] == "runs/x" and got["serve_args"] == ["--int8"]
    assert got["loraforge_only"] is True
    assert main(["bench", "serve", "--adapter", "runs/x"]) == 2  # a tuned run only with --compare-gguf
    assert "--compare-gguf" in capsys.readouterr().err
    assert main(["bench", "serve", "--int8"]) == 2  # so is --int8
    assert "--compare-gguf" in capsys.readouterr().err
    assert main(["bench", "serve", "--loraforge-only"]) == 2  # and --loraforge-only
    assert "--compare-gguf" in capsys.readouterr().err
