"""``loraforge export RUN_DIR --format ...``: one entry point, one check of what each target can take.

A run directory holds ``adapter/`` (PEFT format), ``config.yaml`` and ``metrics.json``; a bare
adapter folder works too (then the base model comes from ``adapter_config.json``). Every target is
checked before any weight is loaded, so an impossible export fails in a second with the reason.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from loraforge.methods.registry import MethodSpec, spec_for_saved
from loraforge.config import ConfigError, DataConfig, RunConfig
from loraforge.export.card import model_card as render_card
from loraforge.runs import RunDir, RunDirError, atomic_dir, resolve_adapter, tagger_meta

FORMATS = ("adapter", "merged", "gguf", "oci", "gguf-lora", "docker-model")
DTYPES = ("bf16", "fp16", "fp32")
_TORCH_NAMES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


class ExportError(ConfigError):
    """A run that the chosen export target cannot take, with the reason."""


@dataclass
class RunInfo:
    adapter_dir: Path
    run_dir: Path | None
    cfg: RunConfig
    adapter_config: dict  # adapter_config.json as written by PEFT ({"peft_type": "FULL"} for a whole model)
    spec: MethodSpec  # the method that wrote it (methods.registry)

    @property
    def peft_type(self) -> str:
        return self.adapter_config.get("peft_type", "")

    @property
    def method(self) -> str:
        return self.spec.name

    @property
    def family(self) -> str:
        if self.cfg.model.family != "auto":
            return self.cfg.model.family
        return "seq2seq" if self.adapter_config.get("task_type") == "SEQ_2_SEQ_LM" else "causal"

    @property
    def data(self) -> DataConfig:
        """The data settings serving and standalone exports prompt with by default: the run's task, or a
        multi-task run's first (a request's own system prompt chooses another)."""
        return self.cfg.data.task_config()[1]

    def metrics(self) -> dict[str, dict]:
        """{'before': ..., 'after': ...} test metrics of the run ({} for a bare adapter folder); a
        multi-task run's {'tasks': {name: {'before', 'after', 'baseline'}}}."""
        if self.run_dir is None:
            return {}
        try:
            m = RunDir(self.run_dir).metrics()
        except RunDirError:
            return {}
        if m.tasks:
            return {"tasks": {name: {k: v for k, v in (("before", t.before), ("after", t.after),
                                                      ("baseline", t.baseline)) if v} for name, t in m.tasks.items()}}
        return {k: v for k, v in (("before", m.before), ("after", m.after)) if v}

    def trained_dtype(self) -> str | None:
        """The dtype the run trained its base weights in (metrics.json), or the configured one."""
        if self.run_dir is not None:
            try:
                train = RunDir(self.run_dir).metrics().train
            except RunDirError:
                train = None
            if train is not None and train.dtype in _TORCH_NAMES:
                return _TORCH_NAMES[train.dtype]
        return None if self.cfg.model.dtype == "auto" else self.cfg.model.dtype


def read_run(path: str | Path) -> RunInfo:
    """Locate adapter folder, config and base model of a run directory (or a bare adapter folder)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"run directory not found: {path}")
    ref = resolve_adapter(path)
    adapter_config = ref.peft_config()
    spec = spec_for_saved(adapter_config)
    cfg = ref.run.config() if ref.run else RunConfig()
    if ref.run is None and adapter_config.get("base_model_name_or_path"):
        cfg.model.name = adapter_config["base_model_name_or_path"]
    return RunInfo(ref.dir, ref.run.path if ref.run else None, cfg, adapter_config, spec)


def check_target(info: RunInfo, fmt: str) -> None:
    """Refuse early what ``fmt`` cannot represent; the method's registry entry says what it can do."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    spec = info.spec
    if spec.trains_base and fmt in ("adapter", "oci"):
        raise ExportError(f"full fine-tuning produced a whole model, not an adapter; --format {fmt} needs an "
                          "adapter: use --format merged or gguf")
    if not spec.trains_base and not spec.peft_format:
        raise ExportError(f"{info.adapter_dir}: {spec.name} adapters are loraforge-only (not PEFT format); no "
                          "export target can take them: serve them with `loraforge serve --adapter`, or retrain with lora")
    if fmt in ("merged", "gguf", "docker-model") and not spec.merges:
        why = "it adds virtual tokens, not weight deltas" if spec.prompt_learning else "it adds non-linear layers"
        raise ExportError(f"{spec.name} adapters cannot be merged into the weights ({why}); "
                          "export --format adapter instead")
    if fmt == "oci" and not spec.serves_as_adapter:
        raise ExportError(f"KAITO serves LoRA adapters only (vLLM/transformers runtimes); this run is {spec.name}")
    if fmt == "gguf-lora" and spec.name != "lora":
        raise ExportError(f"GGUF LoRA adapters (llama.cpp --lora, Ollama ADAPTER) carry plain LoRA only; this run "
                          f"is {spec.name}: use --format gguf (merged)")
    if fmt in ("gguf", "gguf-lora", "docker-model") and info.family == "seq2seq":
        raise ExportError(f"--format {fmt} supports decoder-only models (llama.cpp); this is a seq2seq run: "
                          "use --format merged")
    if fmt != "adapter" and tagger_meta(info.adapter_dir) is not None:
        raise ExportError(f"{info.adapter_dir} is a PII tagger (model.head=tagger): it tags tokens and writes no text, "
                          f"so no LLM runtime can run it; --format {fmt} is refused. Use --format adapter, or mask with "
                          "`loraforge mask --adapter RUN` / `loraforge serve` (POST /v1/mask)")
    if fmt in ("oci", "gguf", "gguf-lora", "docker-model") and info.adapter_config.get("modules_to_save"):
        raise ExportError(f"the adapter trains whole modules {info.adapter_config['modules_to_save']} "
                          f"(e.g. new tokens); --format {fmt} cannot carry them: use --format merged")


def model_card(info: RunInfo, kind: str = "adapter", dtype: str | None = None, gguf_type: str | None = None,
               files: list[str] | None = None) -> str:
    """README.md for the export: what it is, what it was trained on, how well it does, how to use it."""
    title = info.run_dir.name if info.run_dir else info.adapter_dir.name
    return render_card(info.cfg, title, info.method, kind, info.family, info.adapter_config, info.metrics(),
                       dtype=dtype, gguf_type=gguf_type, files=files)


def portable_adapter_config(info: RunInfo) -> dict:
    """adapter_config.json with the base model as a hub id when one is known (not a local cache path)."""
    from loraforge.export.card import hub_base_model

    config = dict(info.adapter_config)
    hub = hub_base_model(info.cfg.model.name)
    if hub and config.get("base_model_name_or_path"):
        config["base_model_name_or_path"] = hub
    return config


def export_adapter(info: RunInfo, out: Path) -> Path:
    with atomic_dir(out) as tmp:
        for f in info.adapter_dir.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
        if (tmp / "adapter_config.json").is_file():
            (tmp / "adapter_config.json").write_text(json.dumps(portable_adapter_config(info), indent=2))
        (tmp / "README.md").write_text(model_card(info, "adapter"), encoding="utf-8")
    return out


def merged_model(info: RunInfo):
    """(merged transformers model in fp32, tokenizer): base + adapter with the deltas folded into the
    weights. Merging happens in fp32, so casting the result to the training dtype rounds only once."""
    from loraforge.adapters import load_adapter
    from loraforge.adapters.build import merge_adapter
    from loraforge.models.load import load_model

    if info.spec.trains_base:  # the run saved the fine-tuned model itself; the tokenizer is the base's
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        from loraforge.models.load import resolve_dtype, resolve_model_path

        cls = AutoModelForSeq2SeqLM if info.family == "seq2seq" else AutoModelForCausalLM
        model = cls.from_pretrained(info.adapter_dir, dtype=resolve_dtype("fp32"))
        return model, AutoTokenizer.from_pretrained(resolve_model_path(info.cfg.model.name))
    loaded = load_model(info.cfg.model.name, dtype="fp32", family=info.cfg.model.family, device="cpu")
    return merge_adapter(load_adapter(loaded.model, info.adapter_dir)), loaded.tokenizer


def merged_dtype(info: RunInfo, dtype: str | None) -> str:
    """--dtype, else the dtype the run trained in, else fp32."""
    if dtype is not None and dtype not in DTYPES:
        raise ExportError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    return dtype or info.trained_dtype() or "fp32"


def export_merged(info: RunInfo, out: Path, dtype: str | None = None) -> Path:
    """A standalone model folder: weights at the training dtype (or ``dtype``), tokenizer with the run's
    chat template, generation_config.json with its stop tokens, and a card saying it is merged."""
    from loraforge.export.standalone import make_standalone
    from loraforge.models.load import resolve_dtype

    dtype = merged_dtype(info, dtype)
    model, tokenizer = merged_model(info)
    model = model.to(resolve_dtype(dtype))
    make_standalone(model, tokenizer, info.data, info.family)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(info, "merged", dtype=dtype), encoding="utf-8")
    return out


def export_gguf(info: RunInfo, out: Path, gguf_type: str) -> Path:
    from loraforge.export.gguf import check_gguf_type, write_gguf
    from loraforge.export.standalone import make_standalone

    check_gguf_type(gguf_type)
    model, tokenizer = merged_model(info)
    make_standalone(model, tokenizer, info.data, info.family)  # the chat template goes into the GGUF
    name = f"{info.run_dir.name if info.run_dir else 'model'}-{gguf_type}.gguf"
    with atomic_dir(out) as tmp:
        write_gguf(model, tokenizer, tmp / name, gguf_type, name=name.removesuffix(".gguf"))
        (tmp / "README.md").write_text(model_card(info, "gguf", gguf_type=gguf_type, files=[name]), encoding="utf-8")
    return out / name


def export_gguf_lora(info: RunInfo, out: Path, gguf_type: str = "f16", base_gguf: str | None = None) -> Path:
    """``adapter.gguf`` for llama.cpp ``--lora`` / Ollama ``ADAPTER``, with a Modelfile and a README beside it."""
    from loraforge.export.gguf_lora import write_gguf_lora

    config, tokenizer = base_config_and_tokenizer(info)
    base_gguf = base_gguf or base_gguf_path(info.cfg.model.name)
    with atomic_dir(out) as tmp:
        write_gguf_lora(info.adapter_dir, config, tmp / "adapter.gguf", gguf_type,
                        name=info.run_dir.name if info.run_dir else info.adapter_dir.name)
        (tmp / "Modelfile").write_text(ollama_modelfile(info, tokenizer, base_gguf or "./base.gguf"), encoding="utf-8")
        (tmp / "README.md").write_text(gguf_lora_readme(info, base_gguf), encoding="utf-8")
    return out / "adapter.gguf"


def base_config_and_tokenizer(info: RunInfo):
    from transformers import AutoConfig, AutoTokenizer

    from loraforge.models.load import resolve_model_path

    path = resolve_model_path(info.cfg.model.name)
    return AutoConfig.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def base_gguf_path(model: str) -> str | None:
    """The base model's GGUF when the run trained on one (the embedded model or a .gguf file), else None."""
    from loraforge.models.load import EMBEDDED_MODELS, _embedded_gguf

    if model in EMBEDDED_MODELS:
        return str(_embedded_gguf(model).resolve())
    return str(Path(model).resolve()) if model.endswith(".gguf") else None


def ollama_modelfile(info: RunInfo, tokenizer, base_gguf: str) -> str:
    from loraforge.data.templates import resolve_template, stop_token_ids
    from loraforge.export.gguf_lora import OLLAMA_TEMPLATES, modelfile

    name = resolve_template(tokenizer, info.data.template)
    stops = [tokenizer.decode([t]) for t in stop_token_ids(tokenizer, info.data.template)]
    return modelfile(base_gguf, "adapter.gguf", OLLAMA_TEMPLATES.get(name), stops, info.data.system_prompt)


def gguf_lora_readme(info: RunInfo, base_gguf: str | None) -> str:
    title = info.run_dir.name if info.run_dir else info.adapter_dir.name
    base = base_gguf or f"a GGUF of {info.cfg.model.name} (llama.cpp's convert_hf_to_gguf.py), saved as ./base.gguf"
    return (f"# {title} (GGUF LoRA adapter)\n\nThe {info.method} adapter of this run, applied at load time over "
            f"the base model's GGUF: {base}.\n\n"
            f"- llama.cpp: `llama-cli -m BASE.gguf --lora adapter.gguf` (or `llama-server ... --lora adapter.gguf`)\n"
            f"- Ollama: `ollama create {title} -f Modelfile && ollama run {title}`\n")


def export_run(run: str | Path, fmt: str, out: str | Path, push: str | None = None, gguf_type: str = "f16",
               plain_http: bool = False, dtype: str | None = None) -> dict:
    """Export a run in one format; returns what was written (paths, digest) for the CLI to print.

    ``dtype`` (merged only): the saved weights' dtype; default the dtype the run trained in.
    """
    info = read_run(run)
    check_target(info, fmt)
    if dtype is not None and fmt != "merged":
        raise ExportError(f"--dtype applies to --format merged (gguf: use --gguf-type); got --format {fmt}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "adapter":
        return {"format": fmt, "path": str(export_adapter(info, out))}
    if fmt == "merged":
        dtype = merged_dtype(info, dtype)
        return {"format": fmt, "path": str(export_merged(info, out, dtype)), "dtype": dtype}
    if fmt == "gguf":
        return {"format": fmt, "path": str(export_gguf(info, out, gguf_type))}
    if fmt == "gguf-lora":
        return {"format": fmt, "path": str(export_gguf_lora(info, out, gguf_type))}
    if fmt == "docker-model":
        from loraforge.export.docker_model import export_docker_model

        return export_docker_model(export_gguf(info, out, gguf_type), push, plain_http=plain_http)
    from loraforge.export.oci import build_layout, push_layout

    layout = build_layout(info.adapter_dir, out, readme=model_card(info, "oci"))
    result = {"format": fmt, "path": str(layout.path), "digest": layout.manifest_digest}
    if push:
        result["pushed"] = push_layout(layout, push, plain_http=plain_http)
    return result
