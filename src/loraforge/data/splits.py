"""A run config's data splits (train, dev, test) as ``Example`` lists, and their encoded form.

Read and validated before any model loads, so a malformed line costs a second, not a model load.
The train, evaluate and inspect workflows all read splits through here, so none imports another.
A multi-task config (``data.tasks``) is read task by task, each with its own settings
(``DataConfig.task_configs``); a single-task config is the one task ``data.*`` describes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from loraforge.config import DataConfig, RunConfig
from loraforge.data.formats import DataError, Example, load_examples


@dataclass
class Splits:
    train: list[Example]
    dev: list[Example]
    test: list[Example]
    data: DataConfig | None = None
    """The settings these splits were read (and are encoded) with."""
    tasks: dict[str, Splits] | None = None
    """Multi-task: each task's splits; train/dev/test above are then their concatenations."""
    excluded: dict[str, Counter] = field(default_factory=dict)
    """Rows data.exclude_sources dropped, per split (train, dev) and prefix; summed over tasks."""
    synthetic_copies: int = 0
    """Back-translated pairs dropped because the synthetic source is the target (``synthetic_examples``)."""


class TrainExamples:
    """One task's training examples as the trainer sees them: encoded once, or, with source noise, the
    example ``i`` of ``epoch`` re-encoded from its noised source (a pure function of seed, epoch and i,
    so a resumed run sees the same). A noised example over data.max_length falls back to its clean
    encoding; synthetic (back-translated) sources are not noised again."""

    def __init__(self, examples: list[Example], encoded: list, noise=None,
                 encode: Callable[[list[Example]], list] | None = None):
        self.examples, self.encoded, self.noise, self.encode = examples, encoded, noise, encode
        self.lengths = [len(e.input_ids) for e in encoded]

    def __len__(self) -> int:
        return len(self.encoded)

    def _noised(self, i: int, epoch: int) -> Example | None:
        ex = self.examples[i]
        if self.noise is None or not self.noise.active or ex.meta.get("synthetic"):
            return None
        return Example(self.noise.apply(ex.source, epoch, i), ex.target, ex.id, ex.system, {**ex.meta, "noised": True})

    def at(self, i: int, epoch: int):
        """The encoded example ``i`` as ``epoch`` trains on it."""
        noisy = self._noised(i, epoch)
        if noisy is None:
            return self.encoded[i]
        enc = self.encode([noisy])[0]
        return self.encoded[i] if enc.too_long else enc

    def example_at(self, i: int, epoch: int) -> Example:
        """The example ``i`` as ``epoch`` trains on it, as text (``data check``, ``data augment``)."""
        noisy = self._noised(i, epoch)
        return self.examples[i] if noisy is None or self.encode([noisy])[0].too_long else noisy


@dataclass
class TaskMix:
    """Several tasks' training sets and the probability each is drawn with (data/mixture.py)."""

    sets: dict[str, TrainExamples]
    probabilities: dict[str, float]

    def __len__(self) -> int:
        return sum(len(s) for s in self.sets.values())


@dataclass
class TaskData:
    """One task of a multi-task run: its settings, encoded train/dev and raw test."""

    data: DataConfig
    train: TrainExamples
    dev: list
    test: list[Example]
    dropped_too_long: dict[str, int]


@dataclass
class Datasets:
    """What training consumes: encoded train/dev (over-long examples dropped, counted) and raw test.
    ``train`` is a list of encoded examples, ``TrainExamples`` (source noise) or ``TaskMix`` (data.tasks)."""

    train: list | TrainExamples | TaskMix
    dev: list
    test: list[Example]
    dropped_too_long: dict[str, int]
    tasks: dict[str, TaskData] | None = field(default=None)
    """Multi-task: each task's data (its test split is scored with its own settings and metrics)."""


def _data(cfg: RunConfig | DataConfig) -> DataConfig:
    return cfg if isinstance(cfg, DataConfig) else cfg.data


def split_examples(cfg: RunConfig | DataConfig, spec: str | None, limit: int | None = None) -> list[Example]:
    """The examples of one split spec (a file or packaged split) with the config's field settings."""
    if not spec:
        return []
    d = _data(cfg)
    return load_examples(spec, d.source_field, d.target_field, d.src_lang, d.tgt_lang, limit=limit)


def excluded_page(source, prefixes: list[str] | tuple[str, ...]) -> str | None:
    """The prefix of data.exclude_sources a page path starts with (None for no path or no match)."""
    if not isinstance(source, str):
        return None
    return next((p for p in prefixes if source.startswith(p)), None)


def excluded_by(example: Example, prefixes: list[str]) -> str | None:
    """The prefix of data.exclude_sources the example's page path (``meta['source']``) starts with."""
    return excluded_page(example.meta.get("source"), prefixes)


def drop_excluded(examples: list[Example], prefixes: list[str]) -> tuple[list[Example], Counter]:
    """(the examples outside data.exclude_sources, dropped rows by prefix)."""
    kept, dropped = [], Counter()
    for e in examples:
        prefix = excluded_by(e, prefixes)
        if prefix is None:
            kept.append(e)
        else:
            dropped[prefix] += 1
    return kept, dropped


def read_split(d: DataConfig, split: str) -> tuple[list[Example], Counter]:
    """Train or dev of one task, rows under data.exclude_sources dropped before data.max_*_examples
    cuts: (kept rows, dropped rows by prefix). Every row dropped from train is an error, not an empty run."""
    spec, limit = getattr(d, split), getattr(d, f"max_{split}_examples")
    if not d.exclude_sources:
        return split_examples(d, spec, limit), Counter()
    kept, dropped = drop_excluded(split_examples(d, spec), d.exclude_sources)
    if split == "train" and not kept:
        raise DataError(f"{spec}: data.exclude_sources ({', '.join(d.exclude_sources)}) drops every training row")
    return kept[:limit], dropped


def check_exclusions(d: DataConfig, train: dict[str, tuple[list[Example], Counter]]) -> None:
    """Each data.exclude_sources prefix must drop some training row (of some task): one that drops none
    is a typo ('docs/tutorial/') that would leave the section in training while its test looks held out.
    ``train``: {task name: (kept rows, dropped rows by prefix)}."""
    unmatched = [p for p in d.exclude_sources if not sum(c[p] for _, c in train.values())]
    if not unmatched:
        return
    seen = next((e.meta.get("source") for rows, _ in train.values() for e in rows
                 if isinstance(e.meta.get("source"), str)), None)
    where = ", ".join(t.train for _, t in d.task_configs())
    hint = f"sources look like {seen!r}" if seen else "its rows carry no 'source' field (a page path) to match"
    raise DataError(f"data.exclude_sources: {', '.join(repr(p) for p in unmatched)} matches no training row "
                    f"({where}); {hint}. Fix the prefix or remove it")


def test_examples(cfg: RunConfig) -> list[Example]:
    """The test split (``eval.max_examples`` rows); an unset ``data.test`` is an error here, and so is
    a multi-task config (each task has its own: ``task_tests``)."""
    if cfg.data.tasks:
        raise DataError("data.tasks is set: each task has its own test split (data.tasks[i].test); this command "
                        "scores one task: give it that task's settings as a single-task config")
    if not cfg.data.test:
        raise DataError("data.test is not set: nothing to evaluate")
    return split_examples(cfg, cfg.data.test, cfg.eval.max_examples)


def task_tests(cfg: RunConfig) -> dict[str, tuple[DataConfig, list[Example]]]:
    """Multi-task: {task name: (its settings, its test examples)} for every task with a test split."""
    return {name: (d, split_examples(d, d.test, cfg.eval.max_examples))
            for name, d in cfg.data.task_configs() if d.test}


def extra_tests(cfg: RunConfig) -> dict[str, tuple[DataConfig, list[Example]]]:
    """eval.extra_tests as {name: (the settings it is scored with, its examples)}, the shape of
    ``task_tests``, so the same per-task evaluation scores them: the run's data settings (multi-task:
    its first translate task's, else its first task's), eval.max_examples rows each."""
    if not cfg.eval.extra_tests:
        return {}
    kinds = [d.task for _, d in cfg.data.task_configs()]
    _, d = cfg.data.task_config(kind="translate" if "translate" in kinds else None)
    return {name: (d, split_examples(d, spec, cfg.eval.max_examples)) for name, spec in cfg.eval.extra_tests.items()}


def synthetic_examples(d: DataConfig) -> tuple[list[Example], int]:
    """The cached back-translated pairs of ``data.augment.back_translation``, untagged (whatever the
    cache was written with; ``tag_synthetic`` marks them), and how many copies were dropped: a pair
    whose source is its target (the reverse model copied, or markup restoration fell back to the
    input) would teach copying."""
    from loraforge.data.augment import BT_TAG

    bt = d.augment.back_translation
    if bt is None:
        return [], 0
    out, copies = [], 0
    for e in load_examples(bt.file, d.source_field, d.target_field, d.src_lang, d.tgt_lang):
        source = e.source[len(BT_TAG):] if e.source.startswith(BT_TAG) else e.source
        if source.strip() == e.target.strip():
            copies += 1
            continue
        out.append(Example(source, e.target, e.id, e.system, {**e.meta, "synthetic": True}))
    return out, copies


def tag_synthetic(examples: list[Example], tagged: bool) -> list[Example]:
    """Synthetic sources with the tagged back-translation marker when ``tagged``. Applied after markup
    protection: ``<BT>`` looks like an HTML tag, and protecting it would give every synthetic source a
    placeholder its target lacks, so each pair would be dropped."""
    from loraforge.data.augment import BT_TAG

    return [replace(e, source=BT_TAG + e.source) for e in examples] if tagged else examples


_MEMORIES: dict = {}


def task_memory(d: DataConfig, train: list[Example] | None = None):
    """The translation memory of ``data.memory``: the task's training pairs as training reads them
    (data.exclude_sources dropped, markup protected when data.protect_markup), so generation matches
    against exactly what training matched against. Built once per process and data settings."""
    from loraforge.data.memory import TranslationMemory

    key = d.model_dump_json()
    if key not in _MEMORIES:
        if train is None:
            train, _ = read_split(d, "train")
            if d.protect_markup:
                from loraforge.data.markup import protect_examples

                train, _ = protect_examples(train)
        _MEMORIES[key] = TranslationMemory(train, d.memory.min_score)
    return _MEMORIES[key]


def load_task(d: DataConfig, max_test: int | None) -> Splits:
    """One task's splits. With ``data.protect_markup`` train and dev carry placeholders; test stays raw
    (generation protects and restores it, so it is scored against the real references). Back-translated
    pairs join train in the configured ratio."""
    from loraforge.data.augment import mix

    (train, drop_train), (dev, drop_dev) = read_split(d, "train"), read_split(d, "dev")
    synthetic, copies = synthetic_examples(d)
    synthetic, drop_synthetic = drop_excluded(synthetic, d.exclude_sources)  # like a real row
    drop_train += drop_synthetic
    if d.protect_markup:
        from loraforge.data.markup import protect_examples

        train, _ = protect_examples(train)
        dev, _ = protect_examples(dev)
        synthetic, _ = protect_examples(synthetic)
        if not train:
            raise DataError(f"{d.train}: no example left after data.protect_markup (every target lost markup)")
    if d.memory is not None:
        from loraforge.data.memory import attach_matches

        memory = task_memory(d, train)
        train, dev = attach_matches(train, memory), attach_matches(dev, memory)
    if synthetic:
        bt = d.augment.back_translation
        train = mix(train, tag_synthetic(synthetic, bt.tagged), bt.ratio, seed=d.seed)
    return Splits(train, dev, split_examples(d, d.test, max_test), data=d,
                  excluded={"train": drop_train, "dev": drop_dev}, synthetic_copies=copies)


def load_splits(cfg: RunConfig) -> Splits:
    """Every split the config names, read whole: a bad line anywhere fails here, naming file:line."""
    tasks = {name: load_task(d, cfg.eval.max_examples) for name, d in cfg.data.task_configs()}
    check_exclusions(cfg.data, {name: (s.train, s.excluded["train"]) for name, s in tasks.items()})
    if not cfg.data.tasks:
        return next(iter(tasks.values()))
    excluded = {split: sum((s.excluded[split] for s in tasks.values()), Counter()) for split in ("train", "dev")}
    return Splits([e for s in tasks.values() for e in s.train], [e for s in tasks.values() for e in s.dev],
                  [e for s in tasks.values() for e in s.test], tasks=tasks, excluded=excluded)


def encode_task(d: DataConfig, splits: Splits, tokenizer, family: str, noise_seed: int,
                limit_key: str = "data.max_length") -> TaskData:
    """Encode one task's train/dev; examples over the task's max_length are dropped (and counted), never
    truncated. ``limit_key``: the config key that set that limit, for the error."""
    from loraforge.data.augment import SourceNoise
    from loraforge.data.templates import encode_examples

    def encode(examples: list[Example]) -> list:
        return encode_examples(tokenizer, examples, d, family)

    train_rows, train_enc = splits.train, encode(splits.train)
    dev_rows, dev_enc = splits.dev, encode(splits.dev)
    if d.memory is not None:
        from loraforge.data.memory import unmatched_if_too_long

        train_rows, train_enc = unmatched_if_too_long(train_rows, train_enc, encode)
        dev_rows, dev_enc = unmatched_if_too_long(dev_rows, dev_enc, encode)
    kept = [(e, x) for e, x in zip(train_rows, train_enc) if not x.too_long]
    if not kept:
        raise DataError(f"{d.train}: every example is longer than {limit_key}={d.max_length}")
    dev = [x for x in dev_enc if not x.too_long]
    n = d.augment.noise
    noise = SourceNoise(n.dropout, n.shuffle_k, n.insertion, seed=noise_seed)
    train = TrainExamples([e for e, _ in kept], [x for _, x in kept], noise if noise.active else None, encode)
    dropped = {"train": len(train_enc) - len(kept), "dev": len(splits.dev) - len(dev)}
    return TaskData(d, train, dev, splits.test, dropped)


def encode_splits(cfg: RunConfig, splits: Splits, tokenizer, family: str) -> Datasets:
    """Encode train/dev (per task with data.tasks, sampled by temperature or weights: data/mixture.py)."""
    from loraforge.data.mixture import task_probabilities

    if splits.tasks is None:
        one = encode_task(splits.data or cfg.data, splits, tokenizer, family, cfg.data.seed)
        train = one.train if one.train.noise is not None else one.train.encoded
        return Datasets(train, one.dev, one.test, one.dropped_too_long)
    configs = dict(cfg.data.task_configs())
    limit_keys = {name: f"data.tasks[{i}].max_length" if "max_length" in entry.model_fields_set else "data.max_length"
                  for i, (name, entry) in enumerate(zip(configs, cfg.data.tasks))}
    tasks = {name: encode_task(configs[name], s, tokenizer, family, cfg.data.seed, limit_keys[name])
             for name, s in splits.tasks.items()}
    probabilities = task_probabilities({k: len(t.train) for k, t in tasks.items()}, cfg.data.task_temperature,
                                       cfg.data.task_weights)
    dropped = {split: sum(t.dropped_too_long[split] for t in tasks.values()) for split in ("train", "dev")}
    return Datasets(TaskMix({k: t.train for k, t in tasks.items()}, probabilities),
                    [x for t in tasks.values() for x in t.dev], [e for t in tasks.values() for e in t.test],
                    dropped, tasks)


def prepare_datasets(cfg: RunConfig, tokenizer, family: str) -> Datasets:
    """``load_splits`` then ``encode_splits``."""
    return encode_splits(cfg, load_splits(cfg), tokenizer, family)
