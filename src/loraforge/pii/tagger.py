"""The tagging masker's finder: a tuned ``models.tagger.TokenTagger`` read once per batch of texts,
its tags decoded into character spans (``data/pii_tags.py``).

The recall knob ``bias`` is subtracted from the ``O`` ("not personal data") logit of every token
before the argmax: positive masks more (fewer leaks, more over-masking), negative less, the same
meaning as the copy-or-mask decoder's bias. A span's ``score`` is its least confident token's
probability of being personal data (before the bias).
"""

from __future__ import annotations

from loraforge.pii.defaults import DEFAULT_TAG_BIAS
from loraforge.pii.spans import Span


class TagFinder:
    """``find_spans(texts)`` over a tuned tagger (PEFT-wrapped or merged)."""

    def __init__(self, model, tokenizer, bias: float = DEFAULT_TAG_BIAS, batch_size: int = 16):
        self.model, self.tokenizer = model, tokenizer
        self.bias, self.batch_size = bias, batch_size
        self.default_bias = DEFAULT_TAG_BIAS
        self.memo: dict | None = None
        """{text: (offsets, probabilities)} when set to a dict: texts tagged once, decoded at each bias
        (a curve over biases reads the model once); None (the default) keeps nothing."""

    def find_spans(self, texts: list[str]) -> list[list[Span]]:
        from loraforge.data.pii_tags import decode_entities
        from loraforge.models.tagger import tag_probabilities

        memo = {} if self.memo is None else self.memo
        todo = list(dict.fromkeys(t for t in texts if t not in memo))
        memo.update(zip(todo, tag_probabilities(self.model, self.tokenizer, todo, self.batch_size)))
        found = [decode_entities(t, *memo[t], self.bias) for t in texts]
        return [[Span(a, b, t, score, "model") for a, b, t, score in spans] for spans in found]
