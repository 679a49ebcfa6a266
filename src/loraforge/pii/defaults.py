"""The maskers' default recall knobs, in a module with no imports so the CLI can print them in its help
without loading the decoders (``cli.commands`` is built on every ``loraforge`` command)."""

DEFAULT_BIAS = 2.0  # copy-or-mask decoder, logits; favours masking: a leak costs more than an over-masked word

# tagger, logits; the lowest bias whose leak rate stays <= 0.5% (a quarter of the 2% target) on train contexts held
# out of training (``bench.pii_contexts``, splits 7 and 8; docs/benchmarks.md, "The operating point and a lookahead head")
DEFAULT_TAG_BIAS = 0.0
