"""A run config's data splits (train, dev, test) as ``Example`` lists, and their encoded form.

Read and validated before any model loads, so a malformed line costs a second, not a model load.
The train, evaluate and inspect workflows all read splits through here, so none imports another.
"""

from __future__ import annotations

from dataclasses import dataclass

from loraforge.config import RunConfig
from loraforge.data.formats import DataError, Example, load_examples


@dataclass
class Splits:
    train: list[Example]
    dev: list[Example]
    test: list[Example]


@dataclass
class Datasets:
    """What training consumes: encoded train/dev (over-long examples dropped, counted) and raw test."""

    train: list
    dev: list
    test: list[Example]
    dropped_too_long: dict[str, int]


def split_examples(cfg: RunConfig, spec: str | None, limit: int | None = None) -> list[Example]:
    """The examples of one split spec (a file or packaged split) with the config's field settings."""
    if not spec:
        return []
    d = cfg.data
    return load_examples(spec, d.source_field, d.target_field, d.src_lang, d.tgt_lang, limit=limit)


def test_examples(cfg: RunConfig) -> list[Example]:
    """The test split (``eval.max_examples`` rows); an unset ``data.test`` is an error here."""
    if not cfg.data.test:
        raise DataError("data.test is not set: nothing to evaluate")
    return split_examples(cfg, cfg.data.test, cfg.eval.max_examples)


def load_splits(cfg: RunConfig) -> Splits:
    """Every split the config names, read whole: a bad line anywhere fails here, naming file:line.
    With ``data.protect_markup`` train and dev carry placeholders; test stays raw (generation
    protects and restores it, so it is scored against the real references)."""
    d = cfg.data
    train, dev = split_examples(cfg, d.train, d.max_train_examples), split_examples(cfg, d.dev, d.max_dev_examples)
    if d.protect_markup:
        from loraforge.data.markup import protect_examples

        train, _ = protect_examples(train)
        dev, _ = protect_examples(dev)
        if not train:
            raise DataError(f"{d.train}: no example left after data.protect_markup (every target lost markup)")
    return Splits(train, dev, split_examples(cfg, d.test, cfg.eval.max_examples))


def encode_splits(cfg: RunConfig, splits: Splits, tokenizer, family: str) -> Datasets:
    """Encode train/dev; examples over data.max_length are dropped (and counted), never truncated."""
    from loraforge.data.templates import encode_examples

    encoded, dropped = {}, {}
    for split, examples in (("train", splits.train), ("dev", splits.dev)):
        enc = encode_examples(tokenizer, examples, cfg.data, family)
        encoded[split] = [e for e in enc if not e.too_long]
        dropped[split] = len(enc) - len(encoded[split])
    if not encoded["train"]:
        raise DataError(f"{cfg.data.train}: every example is longer than data.max_length={cfg.data.max_length}")
    return Datasets(encoded["train"], encoded["dev"], splits.test, dropped)


def prepare_datasets(cfg: RunConfig, tokenizer, family: str) -> Datasets:
    """``load_splits`` then ``encode_splits``."""
    return encode_splits(cfg, load_splits(cfg), tokenizer, family)
