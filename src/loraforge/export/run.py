"""``loraforge export RUN_DIR --format ...``: one entry point, one check of what each target can take.

A run directory holds ``adapter/`` (PEFT format), ``config.yaml`` and ``metrics.json``; a bare
adapter folder works too (then the base model comes from ``adapter_config.json``). Every target is
checked before any weight is loaded, so an impossible export fails in a second with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from loraforge.config import ConfigError, RunConfig, load_config

FORMATS = ("adapter", "merged", "gguf", "oci")
MERGEABLE = {"LORA", "IA3", "LOHA", "LOKR", "ADALORA", "FULL"}  # PEFT types with merge_and_unload; FULL: nothing to merge


class ExportError(ConfigError):
    """A run that the chosen export target cannot take, with the reason."""


@dataclass
class RunInfo:
    adapter_dir: Path
    run_dir: Path | None
    cfg: RunConfig
    adapter_config: dict  # adapter_config.json as written by PEFT

    @property
    def peft_type(self) -> str:
        return self.adapter_config.get("peft_type", "")

    @property
    def method(self) -> str:
        if self.adapter_config.get("use_dora"):
            return "dora"
        return self.peft_type.lower() or self.cfg.adapter.method


def read_run(path: str | Path) -> RunInfo:
    """Locate adapter folder, config and base model of a run directory (or a bare adapter folder)."""
    path = Path(path)
    if (path / "adapter").is_dir():
        adapter_dir, run_dir = path / "adapter", path
    elif path.is_dir():
        adapter_dir = path
        run_dir = path.parent if (path.parent / "config.yaml").is_file() else None
    else:
        raise FileNotFoundError(f"run directory not found: {path}")
    if (adapter_dir / "bottleneck_config.json").is_file():
        raise ExportError(f"{adapter_dir}: bottleneck adapters (adapter.method=adapter) are loraforge-only; "
                          "no export target can take them: retrain with lora")
    cfg_file = adapter_dir / "adapter_config.json"
    if cfg_file.is_file():
        adapter_config = json.loads(cfg_file.read_text())
    elif (adapter_dir / "config.json").is_file():  # adapter.method=full saves the whole model here
        adapter_config = {"peft_type": "FULL"}
    else:
        raise FileNotFoundError(f"{adapter_dir}: no adapter_config.json (not a run directory or PEFT adapter folder)")
    cfg = load_config(run_dir / "config.yaml") if run_dir else RunConfig()
    if run_dir is None and adapter_config.get("base_model_name_or_path"):
        cfg.model.name = adapter_config["base_model_name_or_path"]
    return RunInfo(adapter_dir, run_dir, cfg, adapter_config)


def check_target(info: RunInfo, fmt: str) -> None:
    """Refuse early what ``fmt`` cannot represent."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    ptype = info.peft_type
    if ptype == "FULL" and fmt in ("adapter", "oci"):
        raise ExportError(f"full fine-tuning produced a whole model, not an adapter; --format {fmt} needs an "
                          "adapter: use --format merged or gguf")
    if fmt in ("merged", "gguf") and ptype not in MERGEABLE:
        raise ExportError(
            f"{info.method} adapters cannot be merged into the weights ({ptype} adds virtual tokens, not weight "
            f"deltas); export --format adapter or oci instead")
    if fmt == "oci" and info.method != "lora":
        raise ExportError(f"KAITO serves LoRA adapters only (vLLM/transformers runtimes); this run is {info.method}")
    if fmt == "gguf" and info.adapter_config.get("task_type") == "SEQ_2_SEQ_LM":
        raise ExportError("GGUF export supports decoder-only models; this is a seq2seq run: use --format merged")
    if fmt in ("oci", "gguf") and info.adapter_config.get("modules_to_save"):
        raise ExportError(f"the adapter trains whole modules {info.adapter_config['modules_to_save']} "
                          f"(e.g. new tokens); --format {fmt} cannot carry them: use --format merged")


def _fmt_metrics(metrics: dict) -> list[str]:
    rows = []
    for stage in ("before", "after"):
        vals = metrics.get(stage)
        if isinstance(vals, dict):
            nums = {k: v for k, v in vals.items() if isinstance(v, (int, float))}
            rows.append(f"| {stage} | " + " | ".join(f"{k}={v:.4g}" for k, v in sorted(nums.items())) + " |")
    return rows


def model_card(info: RunInfo) -> str:
    """README.md for the exported adapter: what it is, what it was trained on, how well it does."""
    cfg, a = info.cfg, info.adapter_config
    metrics = {}
    if info.run_dir and (info.run_dir / "metrics.json").is_file():
        metrics = json.loads((info.run_dir / "metrics.json").read_text())
    lines = [
        "---", "library_name: peft", f"base_model: {a.get('base_model_name_or_path') or cfg.model.name}",
        "tags: [loraforge, " + info.method + "]", "---", "",
        f"# {info.run_dir.name if info.run_dir else info.adapter_dir.name}", "",
        f"A {info.method} adapter trained with loraforge.", "",
        f"- base model: `{cfg.model.name}`",
        f"- method: {info.method}" + (f" (r={a['r']}, alpha={a.get('lora_alpha')}, targets={a.get('target_modules')})"
                                      if a.get("r") else ""),
        f"- task: {cfg.data.task} ({cfg.data.src_lang} -> {cfg.data.tgt_lang})" if cfg.data.task == "translate"
        else f"- task: {cfg.data.task}",
        f"- data: train `{cfg.data.train}`, test `{cfg.data.test}`",
        f"- prompt template: {cfg.data.template}; system prompt: {cfg.data.system_prompt!r}",
        f"- training: {cfg.train.steps} steps, batch {cfg.train.batch_size} x {cfg.train.grad_accum}, lr {cfg.train.lr}",
    ]
    rows = _fmt_metrics(metrics)
    if rows:
        lines += ["", "## Metrics (test split)", "", "| model | metrics |", "|---|---|", *rows]
    lines += ["", "## Use", "", "```", f"loraforge serve --base {cfg.model.name} --adapter mine=.", "```", ""]
    return "\n".join(lines)


def _fresh_dir(out: Path) -> Path:
    """A temporary sibling of ``out``; ``_publish`` moves it into place, so readers never see half an export."""
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _publish(tmp: Path, out: Path) -> Path:
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def export_adapter(info: RunInfo, out: Path) -> Path:
    tmp = _fresh_dir(out)
    for f in info.adapter_dir.iterdir():
        if f.is_file():
            shutil.copy2(f, tmp / f.name)
    (tmp / "README.md").write_text(model_card(info), encoding="utf-8")
    return _publish(tmp, out)


def merged_model(info: RunInfo, dtype: str = "fp32"):
    """(merged transformers model, tokenizer): base + adapter with the deltas folded into the weights."""
    from loraforge.adapters import load_adapter
    from loraforge.models.load import load_model

    if info.peft_type == "FULL":  # the run saved the fine-tuned model itself; the tokenizer is the base's
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        from loraforge.models.load import resolve_dtype, resolve_model_path

        cls = AutoModelForSeq2SeqLM if info.cfg.model.family == "seq2seq" else AutoModelForCausalLM
        model = cls.from_pretrained(info.adapter_dir, dtype=resolve_dtype(dtype))
        return model, AutoTokenizer.from_pretrained(resolve_model_path(info.cfg.model.name))
    loaded = load_model(info.cfg.model.name, dtype=dtype, family=info.cfg.model.family)
    model = load_adapter(loaded.model, info.adapter_dir).merge_and_unload()
    return model, loaded.tokenizer


def export_merged(info: RunInfo, out: Path, dtype: str = "fp32") -> Path:
    model, tokenizer = merged_model(info, dtype)
    tmp = _fresh_dir(out)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "README.md").write_text(model_card(info).replace("library_name: peft", "library_name: transformers"),
                                   encoding="utf-8")
    return _publish(tmp, out)


def export_run(run: str | Path, fmt: str, out: str | Path, push: str | None = None, gguf_type: str = "f16",
               plain_http: bool = False) -> dict:
    """Export a run in one format; returns what was written (paths, digest) for the CLI to print."""
    info = read_run(run)
    check_target(info, fmt)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "adapter":
        return {"format": fmt, "path": str(export_adapter(info, out))}
    if fmt == "merged":
        return {"format": fmt, "path": str(export_merged(info, out))}
    if fmt == "gguf":
        from loraforge.export.gguf import check_gguf_type, write_gguf

        check_gguf_type(gguf_type)
        model, tokenizer = merged_model(info)
        tmp = _fresh_dir(out)
        name = f"{info.run_dir.name if info.run_dir else 'model'}-{gguf_type}.gguf"
        write_gguf(model, tokenizer, tmp / name, gguf_type, name=name.removesuffix(".gguf"))
        (tmp / "README.md").write_text(model_card(info), encoding="utf-8")
        _publish(tmp, out)
        return {"format": fmt, "path": str(out / name)}
    from loraforge.export.oci import build_layout, push_layout

    layout = build_layout(info.adapter_dir, out, readme=model_card(info))
    result = {"format": fmt, "path": str(layout.path), "digest": layout.manifest_digest}
    if push:
        result["pushed"] = push_layout(layout, push, plain_http=plain_http)
    return result
