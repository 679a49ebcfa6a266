"""Generic loaders: every format and field shape, and every bad input naming file and line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from loraforge.data.formats import DataError, iter_examples, load_examples


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def jsonl(path: Path, records: list) -> Path:
    return write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


# --- shapes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("record", [
    {"en": "Hello", "zh": "你好"},
    {"source": "Hello", "target": "你好"},
    {"prompt": "Hello", "completion": "你好"},
    {"input": "Hello", "output": "你好"},
    {"messages": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "你好"}]},
])
def test_field_shapes(tmp_path, record):
    ex = load_examples(str(jsonl(tmp_path / "d.jsonl", [dict(record, id="a1")])))[0]
    assert (ex.source, ex.target, ex.id) == ("Hello", "你好", "a1")


def test_lang_pair_wins_over_generic_shape_and_rest_goes_to_meta(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", [{"en": "Hi", "zh": "嗨", "source": "docs/a.md", "kind": "heading"}])
    ex = load_examples(str(path))[0]
    assert (ex.source, ex.target) == ("Hi", "嗨")
    assert ex.meta == {"source": "docs/a.md", "kind": "heading"}
    ja = load_examples(str(jsonl(tmp_path / "j.jsonl", [{"en": "Hi", "ja": "やあ"}])), tgt_lang="ja")[0]
    assert ja.target == "やあ"


def test_messages_keep_system_and_use_last_user_turn(tmp_path):
    msgs = [{"role": "system", "content": "Translate."}, {"role": "user", "content": "One"},
            {"role": "assistant", "content": "一"}, {"role": "user", "content": "Two"},
            {"role": "assistant", "content": "二"}]
    ex = load_examples(str(jsonl(tmp_path / "m.jsonl", [{"messages": msgs}])))[0]
    assert (ex.system, ex.source, ex.target) == ("Translate.", "Two", "二")


def test_explicit_field_mapping(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", [{"question": "Q?", "answer": "A.", "en": "x", "zh": "y"}])
    ex = load_examples(str(path), source_field="question", target_field="answer")[0]
    assert (ex.source, ex.target) == ("Q?", "A.")
    with pytest.raises(DataError, match="must be set together"):
        load_examples(str(path), source_field="question")


# --- formats ------------------------------------------------------------------------------------


def test_json_list_and_data_wrapper(tmp_path):
    recs = [{"en": "A", "zh": "甲"}, {"en": "B", "zh": "乙"}]
    assert [e.target for e in load_examples(str(write(tmp_path / "l.json", json.dumps(recs))))] == ["甲", "乙"]
    wrapped = write(tmp_path / "w.json", json.dumps({"data": recs}))
    assert [e.source for e in load_examples(str(wrapped))] == ["A", "B"]


def test_csv_with_bom_quoted_newline_and_tsv(tmp_path):
    path = write(tmp_path / "d.csv", "\ufeffsource,target\n\"two\nlines\",两行\nplain,普通\n")
    assert [(e.source, e.target) for e in load_examples(str(path))] == [("two\nlines", "两行"), ("plain", "普通")]
    tsv = write(tmp_path / "d.tsv", "en\tzh\nA, with comma\t甲\n")
    assert load_examples(str(tsv))[0].source == "A, with comma"


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"source": ["A", "B"], "target": ["甲", "乙"]}), path)
    assert [e.target for e in load_examples(str(path))] == ["甲", "乙"]


def test_jsonl_gz_and_unicode_line_separator_inside_strings(tmp_path):
    text = json.dumps({"en": "a\u2028b", "zh": "甲\u2029乙"}, ensure_ascii=False) + "\n"
    path = write(tmp_path / "d.jsonl.gz", gzip.compress(text.encode("utf-8")))
    ex = load_examples(str(path))
    assert len(ex) == 1 and ex[0].source == "a\u2028b" and ex[0].target == "甲\u2029乙"


def test_packaged_split_and_limit():
    test = load_examples("k8s:test", limit=5)
    assert len(test) == 5 and all(e.source and e.target for e in test)
    with pytest.raises(DataError, match=r"k8s:nope.*available: .*k8s:test"):
        load_examples("k8s:nope")


def test_iter_examples_reports_locations(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", [{"en": "A", "zh": "甲"}])
    write(path, path.read_text(encoding="utf-8") + "\n" + json.dumps({"en": "B", "zh": "乙"}) + "\n")
    assert [w for w, _ in iter_examples(str(path))] == [f"{path}:1", f"{path}:3"]


# --- bad input ----------------------------------------------------------------------------------


def test_bad_json_line_names_file_and_line(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"en": "A", "zh": "甲"}\n{"en": "B", "zh": \n')
    with pytest.raises(DataError, match=rf"^{path}:2: not valid JSON"):
        load_examples(str(path))


def test_line_lacking_a_field_names_file_line_and_keys(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", [{"en": "A", "zh": "甲"}, {"en": "B"}])
    with pytest.raises(DataError, match=rf"^{path}:2: no known field pair in record with keys \['en'\]"):
        load_examples(str(path))
    with pytest.raises(DataError, match=rf"^{path}:2: missing field 'zh'"):
        load_examples(str(path), source_field="en", target_field="zh")


def test_wrong_types(tmp_path):
    path = write(tmp_path / "d.jsonl", '["en", "zh"]\n')
    with pytest.raises(DataError, match=rf"{path}:1: expected a JSON object, got list"):
        load_examples(str(path))
    path = jsonl(tmp_path / "n.jsonl", [{"en": "A", "zh": None}])
    with pytest.raises(DataError, match=rf"{path}:1: field 'zh' must be a string, got NoneType"):
        load_examples(str(path))
    path = write(tmp_path / "i.json", json.dumps([{"en": "A", "zh": "甲"}, 3]))
    with pytest.raises(DataError, match=rf"{path}: item 2: expected a JSON object"):
        load_examples(str(path))


def test_bad_messages(tmp_path):
    path = jsonl(tmp_path / "m.jsonl", [{"messages": [{"role": "user", "content": "Hi"}]}])
    with pytest.raises(DataError, match=rf"{path}:1: .*end with an assistant turn"):
        load_examples(str(path))
    path = jsonl(tmp_path / "n.jsonl", [{"messages": ["Hi", "嗨"]}])
    with pytest.raises(DataError, match=rf"{path}:1: messages\[0\] must be an object"):
        load_examples(str(path))


def test_csv_short_row_names_line(tmp_path):
    path = write(tmp_path / "d.csv", "source,target\nA,甲\nB\n")
    with pytest.raises(DataError, match=rf"{path}:3: .*record with keys \['source'\]"):
        load_examples(str(path))


def test_non_utf8_names_line(tmp_path):
    path = write(tmp_path / "d.jsonl", b'{"en": "A", "zh": "x"}\n{"en": "\xff"}\n')
    with pytest.raises(DataError, match=rf"{path}:2: not valid UTF-8"):
        load_examples(str(path))


@pytest.mark.parametrize("name,content,message", [
    ("empty.jsonl", "\n\n", "no examples found"),
    ("d.txt", "hello", "unknown format"),
    ("bad.jsonl.gz", b"not gzip", "not a valid gzip file"),
    ("bad.parquet", b"not parquet", "not a readable parquet file"),
])
def test_unreadable_files(tmp_path, name, content, message):
    path = write(tmp_path / name, content)
    with pytest.raises(DataError, match=rf"{path}: {message}"):
        load_examples(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=rf"{tmp_path / 'nope.jsonl'}: file not found"):
        load_examples(str(tmp_path / "nope.jsonl"))
