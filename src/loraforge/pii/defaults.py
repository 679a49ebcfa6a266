"""The maskers' default recall knobs, in a module with no imports so the CLI can print them in its help
without loading the decoders (``cli.commands`` is built on every ``loraforge`` command)."""

DEFAULT_BIAS = 2.0  # copy-or-mask decoder, logits; favours masking: a leak costs more than an over-masked word

# tagger, logits; of the biases whose leak rate stays <= 2% on the hand-written development set and on the train
# contexts held out of training (``bench.pii_contexts``, splits 7 and 8), the one with the best typed F1 on the
# development set (docs/benchmarks.md, "A second round of hand-written training texts")
DEFAULT_TAG_BIAS = 1.0

# a text's only model find is masked when the model's score for it (its probability, before the bias) is at least
# this, or when a validated pattern finds it too: the bias favours masking in a text that shows personal data, not
# one unsure word in a text that shows none (docs/benchmarks.md, "A text's only find, when the model is unsure")
DEFAULT_LONE_MIN_SCORE = 0.5
