"""Long documents (chunk edges), streaming jsonl, output formats and bad inputs."""

from __future__ import annotations

import gzip
import json
import re

import pytest

from conftest import tiny_causal
from loraforge.config import DataConfig
from loraforge.data.formats import DataError
from loraforge.pii import Masker, MaskOptions, iter_jsonl, output_record, read_text
from loraforge.pii.chunking import find_chunked, windows
from loraforge.pii.spans import Span, render


class _AtWords:
    """A stand-in model: every whitespace-separated word holding "@" is an EMAIL, as far as the
    chunk shows it (so an email cut by a chunk edge is found cut, like a real model would)."""

    def __init__(self):
        self.calls = []

    def find_spans(self, texts):
        self.calls.append(len(texts))
        return [[Span(m.start(), m.end(), "EMAIL") for m in re.finditer(r"\S*@\S*", t)] for t in texts]


def test_windows_cover_the_text_and_overlap():
    text = ("word " * 500).strip()
    wins = windows(text, 300, 60)
    assert wins[0][0] == 0 and wins[-1][1] == len(text)
    assert all(b[0] < a[1] - 30 for a, b in zip(wins, wins[1:]))  # real overlap
    with pytest.raises(ValueError):
        windows(text, 100, 60)


def test_an_email_across_a_chunk_edge_is_found_once_with_its_offsets():
    size, overlap = 300, 60
    head = "x" * 280 + " "
    email = "anna.karenina.longname@example.com"
    text = head + email + " " + "y " * 200
    start = len(head)
    assert any(a < start + 5 < b < start + len(email) for a, b in windows(text, size, overlap))  # an edge cuts it
    finder = _AtWords()
    spans = find_chunked(text, finder.find_spans, size, overlap)
    assert [(s.start, s.end) for s in spans] == [(start, start + len(email))]
    masker = Masker(_AtWords(), MaskOptions(merge="model", chunk_chars=size, overlap_chars=overlap))
    r = masker.mask_text(text)
    assert r.text == head + "[EMAIL] " + "y " * 200


def test_long_text_through_the_real_decoder_stays_faithful(tiny_tokenizer):
    from loraforge.pii.decode import ConstrainedMasker

    model = tiny_causal(vocab_size=len(tiny_tokenizer), seed=1)
    cm = ConstrainedMasker.from_config(model, tiny_tokenizer, DataConfig(task="pii"), batch_size=4)
    text = " ".join(f"Pod {i} of john{i}@example.com runs." for i in range(12))
    m = Masker(cm, MaskOptions(chunk_chars=120, overlap_chars=40))
    r = m.mask_text(text)
    assert [(s.start, s.end) for s in r.spans] == sorted((s.start, s.end) for s in r.spans)
    assert r.text == render(text, r.spans)
    assert all(f"john{i}@example.com" not in r.text for i in range(12))  # union with the patterns: no email leaks


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_bad_files_are_refused_by_name(tmp_path):
    with pytest.raises(DataError, match=r"empty\.txt: empty text"):
        read_text(_write(tmp_path / "empty.txt", b"  \n"))
    with pytest.raises(DataError, match=r"blob\.bin: binary file"):
        read_text(_write(tmp_path / "blob.bin", b"PK\x03\x04\x00\x00data"))
    with pytest.raises(DataError, match=r"latin1\.txt:2: not valid UTF-8"):
        read_text(_write(tmp_path / "latin1.txt", "ok\nM\u00fcller".encode("latin-1")))
    assert read_text(_write(tmp_path / "ok.txt", b"\xef\xbb\xbfhello")) == "hello"
    with pytest.raises(DataError, match="empty text"):
        Masker().mask_text("")


@pytest.mark.parametrize("line,error", [
    (b'{"text": ""}', r"in\.jsonl:2: field 'text': empty text"),
    (b'{"body": "hi"}', r"in\.jsonl:2: no 'text' field"),
    (b'{"text": "a\\u0000b"}', r"in\.jsonl:2: field 'text': binary data"),
    (b'{"text": "M\xfcller"}', r"in\.jsonl:2: not valid UTF-8"),
    (b'not json', r"in\.jsonl:2: not valid JSON"),
    (b'[1, 2]', r"in\.jsonl:2: expected a JSON object"),
])
def test_bad_jsonl_lines_name_file_and_line(tmp_path, line, error):
    path = _write(tmp_path / "in.jsonl", b'{"text": "fine"}\n' + line + b"\n")
    with pytest.raises(DataError, match=error):
        list(iter_jsonl(path))


def test_streaming_masks_in_order_with_bounded_batches(tmp_path):
    rows = [{"id": i, "text": f"row {i}: mail u{i}@example.com"} for i in range(7)]
    path = tmp_path / "in.jsonl.gz"
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    finder = _AtWords()
    masker = Masker(finder, MaskOptions(merge="model"))
    items = iter_jsonl(path)
    out = masker.mask_stream(items, batch_size=3)
    first = next(out)  # a generator: the rest of the file is not read yet
    assert first[0].endswith("in.jsonl.gz:1") and first[2].text == "row 0: mail [EMAIL]"
    rest = list(out)
    assert [r[1]["id"] for r in rest] == list(range(1, 7))
    assert finder.calls == [3, 3, 1]  # never more than batch_size texts at a time


def test_output_formats():
    r = Masker(options=MaskOptions(merge="patterns")).mask_text("mail a@example.com")
    assert output_record(r, "text") == "mail [EMAIL]"
    spans = json.loads(output_record(r, "spans", {"id": 7, "text": "mail a@example.com"}))
    assert spans == {"id": 7, "spans": [{"start": 5, "end": 18, "type": "EMAIL", "score": 1.0, "source": "patterns"}]}
    both = json.loads(output_record(r, "both", {"id": 7, "text": "mail a@example.com"}))
    assert both["text"] == "mail [EMAIL]" and both["spans"] == spans["spans"]
    assert "a@example.com" not in json.dumps(both)  # no raw values in the output
