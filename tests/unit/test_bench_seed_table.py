"""Mean ± sd over seeds of stored metrics files (``bench.seed_table``)."""

from __future__ import annotations

import json

import pytest

from loraforge.bench import seed_table


def test_rows_are_the_mean_and_sample_sd_of_their_seeds(tmp_path):
    files = []
    for i, (chrf, short) in enumerate([(54.0, 1), (56.0, 0), (58.0, 2)]):
        path = tmp_path / f"s{i}.json"
        path.write_text(json.dumps({"chrf": chrf, "segments_short": short}))
        files.append(str(path))
    seed_table.main(["--row", f"preset={','.join(files)}", "--metrics", "chrf,segments_short,bleu",
                     "--out", str(tmp_path / "out"), "--name", "t"])
    results = json.loads((tmp_path / "out" / "t.json").read_text())
    row = results["rows"]["preset"]
    assert row["chrf"] == {"mean": 56.0, "sd": 2.0, "values": [54.0, 56.0, 58.0]}
    assert row["segments_short"]["mean"] == 1.0 and "bleu" not in row  # no file holds it
    assert "| preset | 56.0 ± 2.0 | 1.0 ± 1.0 | - | 3 |" in (tmp_path / "out" / "t.md").read_text()


def test_a_row_naming_a_missing_file_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        seed_table.main(["--row", f"x={tmp_path / 'nope.json'}", "--out", str(tmp_path)])
    assert "no such file" in capsys.readouterr().err


def test_a_training_runs_metrics_file_gives_its_tuned_models_scores(tmp_path):
    run = tmp_path / "metrics.json"
    run.write_text(json.dumps({"task": "translate", "before": {"chrf": 27.6}, "after": {"chrf": 66.8},
                               "train": {"steps": 550}}))
    flat = tmp_path / "eval.json"
    flat.write_text(json.dumps({"chrf": 66.9}))
    seed_table.main(["--row", f"ref={run},{flat}", "--metrics", "chrf", "--out", str(tmp_path / "out"), "--name", "t"])
    assert json.loads((tmp_path / "out" / "t.json").read_text())["rows"]["ref"]["chrf"]["values"] == [66.8, 66.9]
