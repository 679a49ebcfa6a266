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
    exact: bool = True
    """Outputs equal a batch-1 greedy loop's: generate in fp32 and re-decode near-tied rows alone.
    false: the model's dtype (bf16 on AMX, faster there) and no re-decoding."""


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


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        if not key:  # a check across keys (e.g. adapter.r with adapter.method=prefix): the message names them
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


def _allowed_keys(section_path: tuple) -> list[str]:
    model: type[BaseModel] = RunConfig
    for part in section_path:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return sorted(model.model_fields)
        model = field.annotation
    return sorted(model.model_fields)


def parse_override(item: str) -> tuple[list[str], Any]:
    """'train.lr=1e-4' -> (['train', 'lr'], 0.0001). Values are parsed as YAML scalars/lists."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value (e.g. train.steps=100)")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(
            f"override key {key!r} must be section.key with section one of: {', '.join(RunConfig.model_fields)}"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, (dict,)):  # 'a: b' would parse as a mapping; the user meant a string
        value = raw
    return parts, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for item in overrides:
        (section, key), value = parse_override(item)
        if section not in RunConfig.model_fields:
            raise ConfigError(
                f"override {item!r}: unknown section {section!r}; allowed: {', '.join(RunConfig.model_fields)}"
            )
        data.setdefault(section, {})
        if not isinstance(data[section], dict):
            raise ConfigError(f"config section {section!r} must be a mapping")
        data[section][key] = value
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config (or the defaults when path is None) and apply ``section.key=value`` overrides."""
    data: dict = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
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
        data = loaded
    if overrides:
        data = apply_overrides(data, overrides)
        source += " + overrides"
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, source)) from None
