"""Copy-or-mask decoding on tiny random models: the output is the source with spans replaced, always."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_causal
from loraforge.config import DataConfig
from loraforge.pii.decode import ConstrainedMasker
from loraforge.pii.spans import render

TEXTS = [
    "Hi John Smith, mail john@x.com now.",
    "Kubernetes 是一个开源系统 [NAME] ok",  # multi-byte characters and a placeholder already present
    "A Pod is the smallest deployable unit.\n  kubectl get pods",
    "x",
]
CFG = DataConfig(task="pii", system_prompt="Mask personal data.")


def _masker(model, tok, **kw):
    return ConstrainedMasker.from_config(model, tok, CFG, **kw)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("bias", [-2.0, 0.0, 3.0])
def test_output_is_source_with_spans_replaced(tiny_tokenizer, seed, bias):
    model = tiny_causal(vocab_size=len(tiny_tokenizer), seed=seed)
    for text, d in zip(TEXTS, _masker(model, tiny_tokenizer, bias=bias, batch_size=3).decode(TEXTS)):
        assert d.output == render(text, d.raw)  # what the model wrote = source with the raw spans replaced
        for raw, s in zip(d.raw, d.spans):
            assert raw.start <= s.start < s.end <= raw.end
            assert not text[s.start].isspace() and not text[s.end - 1].isspace()
        ends = [(s.start, s.end) for s in d.spans]
        assert ends == sorted(ends) and all(a[1] <= b[0] for a, b in zip(ends, ends[1:]))  # no overlaps


def test_batched_equals_one_by_one(tiny_tokenizer):
    model = tiny_causal(vocab_size=len(tiny_tokenizer), seed=3)
    batched = _masker(model, tiny_tokenizer, batch_size=4).find_spans(TEXTS)
    alone = [_masker(model, tiny_tokenizer, batch_size=1).find_spans([t])[0] for t in TEXTS]
    def key(xs):
        return [[(s.start, s.end, s.type) for s in x] for x in xs]

    assert key(batched) == key(alone)


def test_bias_is_the_recall_knob(tiny_tokenizer):
    model = tiny_causal(vocab_size=len(tiny_tokenizer), seed=0)
    never = _masker(model, tiny_tokenizer, bias=-1e4).decode(TEXTS)
    assert all(d.spans == [] and d.output == t for t, d in zip(TEXTS, never))
    always = _masker(model, tiny_tokenizer, bias=1e4).decode(TEXTS)
    assert all(d.raw and d.raw[0].start == 0 for d in always)  # it opens a placeholder at once


class _Steer(torch.nn.Module):
    """A tiny model pushed (+50 logits) towards writing ``target``: stands in for a tuned masker."""

    def __init__(self, model, token_bytes, target: str):
        super().__init__()
        self.inner, self.tb, self.target, self.config = model, token_bytes, target.encode(), model.config
        self.written = b""

    def forward(self, input_ids, past_key_values=None, **kw):
        out = self.inner(input_ids=input_ids, past_key_values=past_key_values, **kw)
        if input_ids.shape[1] == 1:
            self.written += self.tb[int(input_ids[0, 0])]
        rest = self.target[len(self.written):]
        best = max((i for i, b in enumerate(self.tb) if b and rest.startswith(b)), key=lambda i: len(self.tb[i]),
                   default=None)
        if best is not None:
            out.logits[0, -1, best] += 50
        return out


@pytest.mark.parametrize("source,target,expected", [
    ("Hi John Smith, mail john@x.com now.", "Hi [NAME], mail [EMAIL] now.",
     [("John Smith", "NAME"), ("john@x.com", "EMAIL")]),
    ("联系 张伟 电话 13812345678。", "联系 [NAME] 电话 [PHONE]。",
     [("张伟", "NAME"), ("13812345678", "PHONE")]),
    ("Use [NAME] for Pod names, John.", "Use [NAME] for Pod names, [NAME].", [("John", "NAME")]),
])
def test_spans_follow_the_model_in_character_offsets(tiny_tokenizer, source, target, expected):
    from loraforge.pii.vocab import vocab_index

    steer = _Steer(tiny_causal(vocab_size=len(tiny_tokenizer)), vocab_index(tiny_tokenizer).token_bytes, target)
    d = _masker(steer, tiny_tokenizer, bias=0.0, batch_size=1).decode([source])[0]
    assert d.output == target
    assert [(source[s.start:s.end], s.type) for s in d.spans] == expected
    assert all(0 < s.score <= 1 for s in d.spans)


def test_a_model_that_drops_text_cannot(tiny_tokenizer):
    """Steered to skip a sentence without a placeholder, the output still holds every source byte."""
    from loraforge.pii.vocab import vocab_index

    source = "Keep this. Drop this? No."
    tb = vocab_index(tiny_tokenizer).token_bytes
    steer = _Steer(tiny_causal(vocab_size=len(tiny_tokenizer)), tb, "Keep this. No.")
    d = _masker(steer, tiny_tokenizer, bias=-1e4, batch_size=1).decode([source])[0]
    assert d.output == source and d.spans == []
