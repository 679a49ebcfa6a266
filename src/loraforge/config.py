"""Typed run configuration: one YAML file per run, every key overridable as ``section.key=value``.

The config knows nothing about torch: it is imported by the CLI, by ``deploy`` (which renders
Kubernetes manifests without ML dependencies) and by every workflow. Unknown keys are errors,
never silently ignored, because a typo in a hyper-parameter is the most expensive bug there is;
so is a key the chosen method does not read (``adapter.r`` with ``adapter.method=prefix``).

The one module of ours it imports is ``loraforge.methods.registry`` (torch-free; it imports nothing
of ours at module level): the allowed ``adapter.method`` values and the keys each method reads come
from there, so adding a method never edits this file.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, ValidationError,
                      ValidatorFunctionWrapHandler, field_validator, model_serializer, model_validator)
from pydantic_core import PydanticCustomError

from loraforge.methods import registry
from loraforge.errors import ConfigError  # noqa: F401  (defined low, so the registry can raise it too)

DEFAULT_MODEL = "gemma3-270m"  # the embedded default: Gemma 3 270M from the PyPI package
DEFAULT_SYSTEM_PROMPT = (
    "You are a professional translator who can translate English to Chinese accurately "
    "while preserving the original formatting and technical terms."
)





class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    name: str = DEFAULT_MODEL
    """Hugging Face directory or hub id, a local .gguf file, or 'gemma3-270m' (the embedded default)."""
    family: Literal["auto", "causal", "seq2seq"] = "auto"
    """Detected from the model config when 'auto'."""
    dtype: Literal["auto", "bf16", "fp32", "fp16"] = "auto"
    """'auto' picks bf16 where the hardware has fast bf16 (AMX CPUs, Ampere+ GPUs), else fp32."""
    revision: str | None = None
    head: Literal["lm", "tagger"] = "lm"
    """'lm': the model writes its answer (every task). 'tagger': a token-tagging head over the decoder
    stack (PII only: it reads the text once and tags personal data in place instead of writing a
    masked copy; models/tagger.py)."""
    bidirectional: bool = False
    """Tagger only: let the layers attend both ways (Gemma 3). Off by default: on pii:dev the
    left-to-right tagger scored higher (docs/benchmarks.md#pii-masking)."""
    tagger_lookahead: int = Field(0, ge=0, le=8)
    """Tagger only: the head reads each token's hidden state and the next N tokens', so a left-to-right
    stack's tag also sees a little of what follows (is 'Name' a label before a value, or the value?)."""

    def trained_family(self, detected: str) -> str:
        """What training encodes examples for and the loop trains: 'tagger' for a tagging head, else the
        model's family (``family``, or ``detected`` from its config when 'auto'). Training, ``data check``
        and ``data augment`` all ask here, so they encode the same way."""
        if self.head == "tagger":
            return "tagger"
        return detected if self.family == "auto" else self.family


class NoiseConfig(_Section):
    """Source-side noise, drawn anew each epoch from (data.seed, epoch, example) (data/augment.py): the
    source only, never the target, never protected markup (inline code, links, URLs, shortcodes, tags)."""

    dropout: float = Field(0.0, ge=0, lt=1)
    """Probability that a source word is dropped."""
    shuffle_k: int = Field(0, ge=0)
    """Each source word moves at most k places (0 = no shuffle)."""
    insertion: float = Field(0.0, ge=0, lt=1)
    """Probability, per word, of inserting another word of the same source after it."""


class BackTranslationConfig(_Section):
    """A cached set of (synthetic source, real target) pairs, made once by
    ``loraforge data augment CONFIG --back-translate REVERSE_RUN --mono FILE --out FILE``."""

    file: str
    """The synthetic pair file (jsonl(.gz) with the source/target language fields; provenance beside it)."""
    ratio: float = Field(1.0, ge=0)
    """Synthetic pairs per real pair (1.0 = real:synthetic 1:1; drawn with replacement past the cache's size)."""
    tagged: bool = False
    """Put the back-translation tag before each synthetic source (tagged back-translation)."""


class AugmentConfig(_Section):
    noise: NoiseConfig = Field(default_factory=NoiseConfig)
    back_translation: BackTranslationConfig | None = None

    @property
    def active(self) -> bool:
        n = self.noise
        return bool(n.dropout or n.shuffle_k or n.insertion or self.back_translation)


class MemoryConfig(_Section):
    """Translate: the closest pair of the task's own training data (a translation memory) shown before
    each source, in training and at generation (data/memory.py)."""

    min_score: float = Field(0.5, gt=0, le=1)
    """The least similarity of the two sources (word-level edit similarity, 0-1) for a match to be shown."""


TASK_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"

INHERITED = ("source_field", "target_field", "src_lang", "tgt_lang", "template", "system_prompt", "task_prefix",
             "max_length", "max_train_examples", "max_dev_examples", "protect_markup", "augment", "memory")
"""Keys a ``data.tasks`` entry takes from ``data.*`` unless it sets them itself."""


class TaskConfig(_Section):
    """One dataset of a multi-task run (``data.tasks``). Keys it does not set come from ``data.*``
    (``INHERITED``); train/dev/test never do: each task names its own."""

    name: str | None = Field(None, pattern=TASK_NAME)
    """Shown in metrics and the report; default: 'SRC-TGT' for translate (e.g. en-zh), else the task."""
    task: Literal["translate", "pii", "sft"] = "translate"
    train: str
    dev: str | None = None
    test: str | None = None
    source_field: str | None = None
    target_field: str | None = None
    src_lang: str = "en"
    tgt_lang: str = "zh"
    """The direction: with k8s:* data, src_lang=zh tgt_lang=en reads the same pairs flipped (zh->en)."""
    template: Literal["auto", "chatml", "gemma", "plain", "model"] = "auto"
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    task_prefix: str | None = None
    max_length: int = Field(256, ge=8)
    """This task's own limit, e.g. long PII texts beside short translation segments in one run."""
    max_train_examples: int | None = Field(None, ge=1)
    max_dev_examples: int | None = Field(64, ge=1)
    protect_markup: bool = False
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    memory: MemoryConfig | None = None

    @model_serializer(mode="wrap")
    def _only_set_keys(self, handler: SerializerFunctionWrapHandler) -> dict:
        """A saved config lists what the entry set, so what it inherits still comes from data.*."""
        data = handler(self)
        return {k: v for k, v in data.items() if k in self.model_fields_set or k == "train"}


class DataConfig(_Section):
    task: Literal["translate", "pii", "sft"] = "translate"
    train: str = "k8s:train"
    """A file (jsonl/json/csv/parquet) or a packaged split such as 'k8s:train'."""
    dev: str | None = "k8s:dev"
    test: str | None = "k8s:test"
    source_field: str | None = None
    """Field holding the input; None guesses from common shapes (en/zh, source/target, prompt/completion, messages)."""
    target_field: str | None = None
    src_lang: str = "en"
    tgt_lang: str = "zh"
    template: Literal["auto", "chatml", "gemma", "plain", "model"] = "auto"
    """'model' = the tokenizer's own chat template; 'auto' = the model's template if it has one, else ChatML."""
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    task_prefix: str | None = None
    """T5-style prefix put before the source (seq2seq), e.g. 'translate English to Chinese: '."""
    max_length: int = Field(256, ge=8)
    """Examples longer than this (prompt + target, in tokens) are dropped, never silently truncated."""
    max_train_examples: int | None = Field(None, ge=1)
    max_dev_examples: int | None = Field(64, ge=1)
    seed: int = 0
    protect_markup: bool = False
    """Translate: replace inline code, link targets, URLs, HTML tags and shortcode syntax by {n}
    placeholders before the model sees them, in training data and at generation, and put them back
    after (loraforge.data.markup). Pairs whose target lost some markup are dropped from training."""
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    """Translate: source noise per epoch and back-translated pairs (data/augment.py)."""
    memory: MemoryConfig | None = None
    """Translate: show each source's closest training pair (a translation memory match) in the prompt."""
    tasks: list[TaskConfig] | None = None
    """Several datasets trained into one adapter, each with its own task, direction, template and
    system prompt (or task prefix); unset = the one task data.* describes."""
    task_temperature: float = Field(1.0, gt=0)
    """With data.tasks: task i is sampled with p_i ∝ n_i^(1/T); 1 = proportional, larger = flatter."""
    task_weights: dict[str, float] | None = None
    """With data.tasks: explicit sampling weights by task name (replace the temperature)."""
    exclude_sources: list[str] = []
    """Page-path prefixes (e.g. 'docs/tutorials/'): train and dev rows whose ``source`` starts with one
    are dropped before training (test never), so a whole section can be held out (k8s:tutorials).
    Every task of data.tasks drops them; a prefix that matches no training row is an error."""

    SINGLE_ONLY: typing.ClassVar[tuple[str, ...]] = ("task", "train", "dev", "test")
    MULTI_ONLY: typing.ClassVar[tuple[str, ...]] = ("tasks", "task_temperature", "task_weights")

    @field_validator("exclude_sources")
    @classmethod
    def _prefixes(cls, value: list[str]) -> list[str]:
        """An empty prefix would drop every row; a repeated one is a typo's twin."""
        if any(not p.strip() for p in value):
            raise ValueError("an empty prefix would drop every row; give page-path prefixes such as 'docs/tutorials/'")
        dupes = sorted({p for p in value if value.count(p) > 1})
        if dupes:
            raise ValueError(f"{', '.join(dupes)} listed twice")
        return value

    @model_validator(mode="after")
    def _tasks_consistent(self) -> DataConfig:
        """Keys nobody reads, duplicate names, weights for unknown tasks, augmentation outside
        translation: each an error naming the key."""
        if not self.tasks:
            unread = [k for k in self.MULTI_ONLY if k in self.model_fields_set and k != "tasks"]
            if self.tasks is not None:
                raise _keys_error("data.tasks: an empty list; list at least one task, or remove the key")
            if unread:
                raise _keys_error(f"{', '.join('data.' + k for k in unread)}: only read with data.tasks")
            if self.task != "translate" and self.augment.active:
                raise _keys_error(f"data.augment: augmentation applies to data.task=translate, not {self.task}")
            if self.task != "translate" and self.memory is not None:
                raise _keys_error(f"data.memory: a translation memory applies to data.task=translate, not {self.task}")
            return self
        unread = [k for k in self.SINGLE_ONLY if k in self.model_fields_set]
        if unread:
            raise _keys_error(f"{', '.join('data.' + k for k in unread)}: not read when data.tasks is set; give each "
                              "entry of data.tasks its own task/train/dev/test")
        names = [name for name, _ in self.task_configs()]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise _keys_error(f"data.tasks: two tasks are named {', '.join(dupes)}; set data.tasks[i].name to tell "
                              "them apart")
        for i, (name, cfg) in enumerate(self.task_configs()):
            if cfg.task != "translate" and cfg.augment.active:
                where = f"data.tasks[{i}].augment" if "augment" in self.tasks[i].model_fields_set else "data.augment"
                raise _keys_error(f"{where}: augmentation applies to translate tasks, not {name} ({cfg.task}); "
                                  "set augment on the translate entries of data.tasks instead")
            if cfg.task != "translate" and cfg.memory is not None:
                where = f"data.tasks[{i}].memory" if "memory" in self.tasks[i].model_fields_set else "data.memory"
                raise _keys_error(f"{where}: a translation memory applies to translate tasks, not {name} ({cfg.task}); "
                                  "set memory on the translate entries of data.tasks instead")
        if self.task_weights is not None:
            unknown = sorted(set(self.task_weights) - set(names))
            if unknown:
                raise _keys_error(f"data.task_weights: unknown task(s) {', '.join(unknown)}; tasks: {', '.join(names)}")
            if any(w < 0 for w in self.task_weights.values()) or not sum(self.task_weights.values()) > 0:
                raise _keys_error("data.task_weights: weights must be >= 0 and not all 0")
        return self

    @model_serializer(mode="wrap")
    def _only_read_keys(self, handler: SerializerFunctionWrapHandler) -> dict:
        """A saved config.yaml must load back under the checks above: single-task runs dump no
        multi-task keys (their config.yaml is what it was), multi-task runs no single-task ones."""
        data = handler(self)
        drop = self.SINGLE_ONLY if self.tasks else self.MULTI_ONLY
        return {k: v for k, v in data.items() if k not in drop}

    def task_configs(self) -> list[tuple[str, DataConfig]]:
        """(name, the data settings of that task alone) per task; one pair (data.task, self) without
        data.tasks. Everything downstream (encoding, prompts, evaluation) reads one such config."""
        if not self.tasks:
            return [(self.task, self)]
        base = {k: getattr(self, k) for k in type(self).model_fields if k not in (*self.SINGLE_ONLY, *self.MULTI_ONLY)}
        out = []
        for entry in self.tasks:
            own = {k: getattr(entry, k) for k in entry.model_fields_set if k != "name"}
            cfg = DataConfig.model_construct(**{**base, "task": entry.task, "train": entry.train, "dev": entry.dev,
                                                "test": entry.test, "tasks": None, "task_temperature": 1.0,
                                                "task_weights": None, **own})
            name = entry.name or (f"{cfg.src_lang}-{cfg.tgt_lang}" if cfg.task == "translate" else cfg.task)
            out.append((name, cfg))
        return out

    def split_names(self, split: str) -> str:
        """The datasets of one split (train, dev, test) for people to read: "k8s:train", or per task
        "en-zh: k8s:train, pii: pii:train" for a multi-task config."""
        tasks = self.task_configs()
        if not self.tasks:
            return str(getattr(self, split))
        return ", ".join(f"{name}: {getattr(d, split)}" for name, d in tasks if getattr(d, split))

    def task_config(self, name: str | None = None, kind: str | None = None) -> tuple[str, DataConfig]:
        """(name, settings) of the one task a command runs: the task named ``name``, else the first
        of kind ``kind`` (translate, pii, sft), else the first. Every command that runs one task of a
        multi-task run (translate, mask, serving defaults) chooses here, so a wrong choice fails the
        same way everywhere: a ConfigError listing the tasks."""
        tasks = self.task_configs()
        listing = ", ".join(f"{n} ({d.task})" for n, d in tasks)
        if name is not None:
            match = [(n, d) for n, d in tasks if n == name]
            if not match:
                raise ConfigError(f"task {name!r}: no such task; this run's tasks: {listing}")
            if kind is not None and match[0][1].task != kind:
                raise ConfigError(f"task {name!r} is a {match[0][1].task} task, not {kind}; this run's tasks: "
                                  f"{listing}")
            return match[0]
        match = [(n, d) for n, d in tasks if kind is None or d.task == kind]
        if not match:
            raise ConfigError(f"this run has no {kind} task; its tasks: {listing}")
        return match[0]


class AdapterConfig(_Section):
    method: Literal[registry.names()] = "lora"  # type: ignore[valid-type]  # the registry's methods
    """The fine-tuning method (methods/registry.py); each reads only its own keys below."""
    r: int = Field(16, ge=1)
    """LoRA/DoRA/QLoRA rank."""
    alpha: float = Field(32, gt=0)
    """LoRA/DoRA/QLoRA scale numerator (the delta is scaled by alpha / r)."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """LoRA/DoRA/QLoRA dropout on the adapter's input."""
    target_modules: str | list[str] = "all-linear"
    """LoRA/DoRA/QLoRA/IA3: 'all-linear', or module-name suffixes such as ['q_proj', 'v_proj']."""
    num_virtual_tokens: int = Field(20, ge=1)
    """Prefix and prompt tuning."""
    bottleneck_size: int = Field(64, ge=1)
    """Bottleneck (Houlsby) adapters."""

    @field_validator("method", mode="wrap")
    @classmethod
    def _registered(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> str:
        """Methods registered after this module was imported (plugins, tests) are valid too."""
        if isinstance(value, str) and value in registry.names():
            return value
        return handler(value)

    @model_serializer(mode="wrap")
    def _only_used_keys(self, handler: SerializerFunctionWrapHandler) -> dict:
        """Dump only the keys the method reads: a saved config.yaml must load back under the
        unused-key check, and says what the run really used."""
        data = handler(self)
        if self.method not in registry.names():
            return data
        used = set(registry.get(self.method).fields) | {"method"}
        return {k: v for k, v in data.items() if k in used}

    def unused_keys(self) -> list[str]:
        """Keys set explicitly (YAML or override) that the method does not read; a key set to its
        default value is accepted (configs written before 0.2 list every key)."""
        return registry.unused_fields(self)

    def for_method(self, method: str) -> AdapterConfig:
        """This config with another method: the keys the new method does not read go back to their
        defaults (``compare`` runs one config under every method)."""
        keep = {k: getattr(self, k) for k in self.model_fields_set if k in registry.get(method).fields}
        return AdapterConfig(method=method, **keep)


class TrainConfig(_Section):
    steps: int = Field(300, ge=1)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(10, ge=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    max_grad_norm: float | None = 1.0
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    """Training loss only: the target keeps 1 - this much probability, the rest spread over the vocabulary
    (or the tags), as torch's ``cross_entropy(label_smoothing=)``. Dev loss stays plain cross-entropy."""
    loraplus_lr_ratio: float | None = Field(None, ge=1)
    """LoRA+ (Hayou et al., 2024): LoRA's B matrices (and DoRA's magnitudes) learn at lr x this ratio,
    A at lr (PEFT's create_loraplus_optimizer). None: one lr for every trainable weight. Methods that
    train A and B only (the registry's ``low_rank_pairs``)."""
    max_minutes: float | None = Field(None, gt=0)
    """A wall-clock budget for the optimizer steps (``train.seconds`` in metrics.json). After the first
    ``BUDGET_PROBE_STEPS`` steps the run fixes its length to what fits at their pace per token position over
    the batches still to come (never more than
    ``steps``) and ends its schedule there; a run that still outgrows it stops at the budget. A slower host
    trains fewer steps: the same config is the same recipe, not the same adapter, on another machine."""
    eval_every: int = Field(100, ge=0)
    """Dev loss every N optimizer steps (0 = only at the end)."""
    save_every: int = Field(100, ge=0)
    """Checkpoint every N optimizer steps (0 = only at the end)."""
    seed: int = 0
    # Speed levers; each switchable so `loraforge bench` can show what it buys.
    target_only_logits: bool = True
    """Compute LM-head logits only where a label exists, in chunks (Gemma's 262k vocabulary)."""
    logits_chunk: int = Field(256, ge=16)
    """Rows of logits that exist at once in the target-only loss."""
    length_grouping: bool = True
    """Batch examples of similar length together (less padding)."""
    packing: bool | Literal["auto"] = "auto"
    """Concatenate each micro-batch into one row with no padding; attention runs per sequence
    (FlashAttention varlen on CUDA, one call per sequence elsewhere). Needs a causal model with adapters
    inside its layers. auto: packed on CUDA where possible; padded on CPU, where length-grouped padded
    batches measured faster (`loraforge bench train --ablation`)."""
    matmul_attention: bool = True
    """On the CPU, attend short sequences through two batched matmuls instead of SDPA's CPU kernel
    (faster there for bf16); CUDA and long sequences keep SDPA. See train/attention.py."""
    compile: bool = True
    """torch.compile the loss's softmax/gradient kernel (falls back to eager if compiling fails)."""
    compile_model: bool = False
    """torch.compile each decoder layer too (one shared graph per layer type): faster steps after a
    compiling first step (19 to 67 s for Gemma 3 270M on 2 CPU cores; see the README's bench notes)."""
    activation_checkpointing: bool = False
    """Recompute each decoder layer in the backward pass: far less memory, slower steps."""
    freed_memory: Literal["keep", "release", "default"] = "keep"
    """What training does with freed memory (glibc malloc; no-op elsewhere). keep: large blocks stay
    in the heap for reuse, not page-faulted in anew each step (fastest). release: returned to the
    kernel after every step (least RSS). default: glibc's own policy. See train/heap.py."""


class EvalConfig(_Section):
    max_examples: int | None = Field(100, ge=1)
    batch_size: int = Field(32, ge=1)
    max_new_tokens: int = Field(256, ge=1)
    before: bool = True
    """Also evaluate the base model, for the before/after table."""
    samples_in_report: int = Field(8, ge=0)
    extra_tests: dict[str, str] = {}
    """More test sets scored beside data.test with the same settings and metrics, by name: e.g.
    {tutorials: k8s:tutorials}, a docs section the run holds out with data.exclude_sources. Each is
    its own block of metrics.json (``extra_tests``) and the report, flagged when training saw its pages."""
    exact: bool = True
    """Outputs equal a batch-1 greedy loop's: generate in fp32 and re-decode near-tied rows alone.
    false: the model's dtype (bf16 on AMX, faster there) and no re-decoding."""
    min_output_ratio: float = Field(0.5, ge=0, lt=1)
    """A translation shorter than this share of its source's tokens (sources of 32 tokens or more) is
    replaced by the source and counted (``segments_short``): the model stopped early and dropped
    content, which a reviewer misses, where an English block is seen. 0.5 is under the 0.1st percentile
    of k8s:train's Chinese/English token ratios (16 of 12,114 pairs). 0 turns it off."""
    unfinished_keeps_source: bool = False
    """true: a translation the model did not end within its budget is replaced by the source and
    counted (``segments_unfinished``): it looped or ran on past any real translation's length
    (evaluation's budget, 1.25x the source's tokens + 16, fits every k8s:dev reference), and its end is
    missing or garbage. ``translate``, pages and (with this on) evaluation first decode such a row again
    with the whole ``max_new_tokens`` and cut a loop after its first pass (``segments_looped``); only a
    row still unfinished then keeps its source, so evaluation scores what the products ship. On in the
    k8s presets (a localizer should get English, not a garbled paragraph); off by default, where a base
    model that rarely ends a row would come back as its input."""
    num_beams: int = Field(1, ge=1)
    """Beam search with this many beams instead of greedy decoding, wherever a run's outputs are
    generated from its config (eval, ``translate``, page localization); 1 is greedy. Costs about
    num_beams x the decoding time or more (4 beams: about 5x greedy on k8s:test, docs/training.md). The
    server decodes greedily or by sampling, whatever this says."""

    @field_validator("extra_tests")
    @classmethod
    def _test_names(cls, value: dict[str, str]) -> dict[str, str]:
        """Names become file and metric names (outputs, ``<name>.chrf`` in ablate)."""
        bad = [n for n in value if not re.fullmatch(TASK_NAME, n)]
        if bad:
            raise ValueError(f"names {bad}: letters, digits, '.', '_', '-' (they name files and metrics)")
        empty = [n for n, spec in value.items() if not str(spec).strip()]
        if empty:
            raise ValueError(f"{', '.join(empty)}: no split given (a file or packaged split such as k8s:tutorials)")
        return value


class OutputConfig(_Section):
    dir: str = "runs/latest"
    overwrite: bool = False
    """An existing run directory is never overwritten unless this is set (or --resume is used)."""


class RunConfig(_Section):
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    adapter: AdapterConfig = Field(default_factory=AdapterConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)

    @model_validator(mode="after")
    def _method_reads_every_key(self) -> RunConfig:
        """A key the method does not read would be silently ignored: an error naming key and method."""
        unused = self.adapter.unused_keys()
        if unused:
            spec = registry.get(self.adapter.method)
            keys = ", ".join(f"adapter.{k}" for k in unused)
            verb = "is" if len(unused) == 1 else "are"
            uses = ", ".join(spec.fields) or "no other adapter keys"
            raise PydanticCustomError("unused_key", f"{keys} {verb} not used by method {spec.name} (it uses: {uses}); "
                                      "remove it or choose a method that reads it")
        return self

    @model_validator(mode="after")
    def _loraplus_needs_lora(self) -> RunConfig:
        if self.train.loraplus_lr_ratio is not None and not registry.get(self.adapter.method).low_rank_pairs:
            pairs = ", ".join(n for n in registry.names() if registry.get(n).low_rank_pairs)
            raise _keys_error(f"train.loraplus_lr_ratio needs adapter.method in {pairs} "
                              f"(it sets the lr of LoRA's B matrices), not {self.adapter.method}")
        return self

    @model_validator(mode="after")
    def _tagger_fits(self) -> RunConfig:
        """model.head=tagger tags PII in the text itself: one PII task, LoRA or DoRA, a causal model."""
        if self.model.head != "tagger":
            if self.model.bidirectional or self.model.tagger_lookahead:
                raise _keys_error("model.bidirectional and model.tagger_lookahead are read only with model.head=tagger")
            return self
        problems = []
        if self.data.tasks or self.data.task != "pii":
            problems.append("data.task must be pii (one task, no data.tasks)")
        if self.adapter.method not in ("lora", "dora"):
            problems.append(f"adapter.method must be lora or dora, not {self.adapter.method}")
        if self.model.family == "seq2seq":
            problems.append("model.family must be causal")
        if problems:
            raise _keys_error("model.head=tagger: " + "; ".join(problems))
        return self


def _keys_error(message: str) -> PydanticCustomError:
    """A check across keys: the message names them (printed as is, not under the section's name)."""
    return PydanticCustomError("config_keys", message)


def _key(loc: tuple) -> str:
    """('data', 'tasks', 1, 'task') -> 'data.tasks[1].task'."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for e in err.errors():
        key = _key(e["loc"])
        msg = e["msg"]
        if not key or e["type"] == "config_keys":  # a check across keys: the message names them
            lines.append(f"  {msg}")
            continue
        if e["type"] == "extra_forbidden":
            section = e["loc"][:-1]
            allowed = _allowed_keys(section)
            msg = f"unknown key; allowed here: {', '.join(allowed)}"
        elif e["type"] == "literal_error" and "expected" in e.get("ctx", {}):
            msg = f"got {e.get('input')!r}; allowed values: {e['ctx']['expected']}"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The section class inside an annotation (``X``, ``X | None``, ``list[X] | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for a in typing.get_args(annotation) if (m := _section_model(a)) is not None), None)


def _allowed_keys(section_path: tuple) -> list[str]:
    model: type[BaseModel] = RunConfig
    for part in section_path:
        if isinstance(part, int):  # an item of a list of sections (data.tasks[1])
            continue
        field = model.model_fields.get(str(part))
        sub = _section_model(field.annotation) if field is not None else None
        if sub is None:
            break
        model = sub
    return sorted(model.model_fields)


def parse_override(item: str) -> tuple[list[str], Any]:
    """'train.lr=1e-4' -> (['train', 'lr'], 0.0001); nested sections too ('data.augment.noise.dropout=0.1').
    Values are parsed as YAML scalars, lists and {flow: mappings}."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value (e.g. train.steps=100)")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(
            f"override key {key!r} must be section.key with section one of: {', '.join(RunConfig.model_fields)}"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, dict) and not raw.strip().startswith("{"):  # 'a: b' parses as a mapping; meant a string
        value = raw
    return parts, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for item in overrides:
        parts, value = parse_override(item)
        if parts[0] not in RunConfig.model_fields:
            raise ConfigError(
                f"override {item!r}: unknown section {parts[0]!r}; allowed: {', '.join(RunConfig.model_fields)}"
            )
        node = data
        for depth, part in enumerate(parts[:-1]):
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                raise ConfigError(f"config section {'.'.join(parts[:depth + 1])!r} must be a mapping")
            node = node[part]
        node[parts[-1]] = value
    return data


def read_config_file(path: str | Path) -> dict:
    """A YAML config file's mapping of sections, unvalidated; a missing file or bad YAML is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return loaded


def config_from(data: dict, overrides: list[str] | None = None, source: str = "defaults") -> RunConfig:
    """A validated RunConfig from a mapping of sections and ``section.key=value`` overrides; errors
    name ``source`` (the file, or what the mapping was made from)."""
    if overrides:
        data = apply_overrides(data, overrides)
        source += " + overrides"
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, source)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config (or the defaults when path is None) and apply ``section.key=value`` overrides."""
    if path is None:
        return config_from({}, overrides)
    return config_from(read_config_file(path), overrides, str(path))
