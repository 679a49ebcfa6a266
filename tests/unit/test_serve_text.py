"""The text side of serving (incremental detokenization, stop strings) and batch sampling."""

from __future__ import annotations

import torch

from loraforge.serve.sampling import sample
from loraforge.serve.text import TextStream


def test_stream_deltas_add_up_to_the_full_decode(tiny_tokenizer):
    text = "Kubernetes 是一个开源系统。Use `kubectl get pods` to list them."
    ids = tiny_tokenizer.encode(text, add_special_tokens=False)
    s = TextStream(tiny_tokenizer, [])
    deltas = [s.push(t) for t in ids] + [s.finish()]
    assert "".join(deltas) == tiny_tokenizer.decode(ids) == s.text
    assert all("\ufffd" not in d for d in deltas), "half a character was streamed"


def test_a_stop_string_across_tokens_never_reaches_the_stream(tiny_tokenizer):
    text = "A Pod is the smallest deployable unit. Use kubectl"
    ids = tiny_tokenizer.encode(text, add_special_tokens=False)
    s = TextStream(tiny_tokenizer, ["deployable unit"])
    out = ""
    for t in ids:
        out += s.push(t)
        if s.stopped:
            break
    assert s.stopped and out == s.text == "A Pod is the smallest "
    held = TextStream(tiny_tokenizer, ["smallest deployable"])  # a prefix is held back, then released
    out = "".join(held.push(t) for t in tiny_tokenizer.encode("A Pod is the smallest", add_special_tokens=False))
    assert out == "A Pod is the " and held.finish() == "smallest" and not held.stopped


def test_sampling_mixes_greedy_and_top_p_rows_in_one_call():
    torch.manual_seed(0)
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().repeat(4, 1)
    logits[0] = torch.tensor([0.0, 3.0, 1.0, 2.0])  # greedy row: argmax 1
    temperature = torch.tensor([0.0, 1.0, 1.0, 1.0])
    top_p = torch.tensor([1.0, 0.7, 1.0, 0.01])
    seen = [set() for _ in range(4)]
    for _ in range(300):
        for row, tok in enumerate(sample(logits, temperature, top_p).tolist()):
            seen[row].add(tok)
    assert seen[0] == {1}
    assert seen[1] == {0, 1}, "top_p 0.7 keeps exactly the tokens whose mass reaches 0.7"
    assert seen[2] == {0, 1, 2, 3}
    assert seen[3] == {0}, "the top token always stays"
