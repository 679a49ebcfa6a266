"""The LoRA adapter alone as a GGUF adapter: llama.cpp's ``--lora`` and Ollama's ``ADAPTER`` apply it
over the base model's GGUF at load time, so one base file serves many adapters.

The layout is the one llama.cpp's ``convert_lora_to_gguf.py`` writes and ``llama-adapter.cpp`` reads:
``general.type = adapter``, ``adapter.type = lora``, ``adapter.lora.alpha``; for each adapted weight
``W`` (named as in the base GGUF, e.g. ``blk.0.attn_q.weight``) two tensors ``W.lora_a`` (numpy
shape ``[r, in]``) and ``W.lora_b`` (``[out, r]``); llama.cpp scales ``b @ a`` by ``alpha / r``.
The same per-architecture rewrites as the base export apply to ``lora_b`` (Llama q/k row permutation).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from loraforge.config import ConfigError

PEFT_PREFIX = "base_model.model."


def lora_pairs(state: dict) -> dict[str, tuple]:
    """{'model.layers.0.self_attn.q_proj': (lora_A, lora_B)} from a PEFT adapter state dict."""
    pairs: dict[str, dict] = {}
    for key, t in state.items():
        for side in ("lora_A", "lora_B"):
            marker = f".{side}.weight"
            if key.endswith(marker):
                module = key.removeprefix(PEFT_PREFIX).removesuffix(marker)
                pairs.setdefault(module, {})[side] = t
                break
        else:
            raise ConfigError(f"adapter tensor {key!r} is not a LoRA A/B matrix (embedding LoRA, DoRA magnitude, "
                              "trained bias?); GGUF LoRA adapters carry only linear LoRA: use --format gguf")
    return {m: (p["lora_A"], p["lora_B"]) for m, p in pairs.items()}


def lora_alpha(adapter_config: dict) -> tuple[float, float]:
    """(alpha to write, factor folded into every lora_b) so that llama.cpp's alpha/r equals PEFT's scale."""
    if adapter_config.get("rank_pattern") or adapter_config.get("alpha_pattern"):
        raise ConfigError("the adapter has per-module ranks/alphas (rank_pattern/alpha_pattern); GGUF LoRA has one "
                          "alpha: use --format gguf (merged)")
    alpha, r = float(adapter_config["lora_alpha"]), int(adapter_config["r"])
    fold = math.sqrt(r) if adapter_config.get("use_rslora") else 1.0  # rsLoRA scales by alpha/sqrt(r)
    return alpha, fold


def write_gguf_lora(adapter_dir: str | Path, config, path: str | Path, gguf_type: str = "f16",
                    name: str = "loraforge-adapter") -> Path:
    """Write the PEFT LoRA adapter in ``adapter_dir`` (base model config ``config``) as a GGUF adapter."""
    import torch
    from gguf import MODEL_ARCH_NAMES, GGUFWriter, Keys, get_tensor_name_map
    from safetensors.torch import load_file

    from loraforge.export.gguf import _encode, _tensor, check_gguf_type, gguf_arch

    check_gguf_type(gguf_type)
    adapter_dir = Path(adapter_dir)
    adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text())
    if adapter_config.get("bias", "none") != "none" or adapter_config.get("use_dora"):
        raise ConfigError("GGUF LoRA adapters carry plain LoRA only (no trained biases, no DoRA): use --format gguf")
    alpha, fold = lora_alpha(adapter_config)
    arch = gguf_arch(config)
    arch_id = next(k for k, v in MODEL_ARCH_NAMES.items() if v == arch)
    names = get_tensor_name_map(arch_id, config.num_hidden_layers)
    pairs = lora_pairs(load_file(str(adapter_dir / "adapter_model.safetensors")))
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    writer = GGUFWriter(tmp, arch)
    writer.add_name(name)
    writer.add_type("adapter")
    writer.add_string(Keys.Adapter.TYPE, "lora")
    writer.add_float32(Keys.Adapter.LORA_ALPHA, alpha)
    for module in sorted(pairs):
        a, b = pairs[module]
        gguf_name = names.get_name(module)
        if gguf_name is None:
            raise ConfigError(f"GGUF LoRA export: no llama.cpp name for adapted module {module!r} ({arch})")
        b = _tensor(arch, f"{module}.weight", b.to(torch.float32) * fold, config)  # the base weight's row order
        a = a.detach().to(torch.float32).cpu().numpy()
        for suffix, w in (("lora_a", a), ("lora_b", b)):
            data, raw_dtype = _encode(np.ascontiguousarray(w), gguf_type)
            writer.add_tensor(f"{gguf_name}.weight.{suffix}", data, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, path)
    return path


# Ollama's Go templates for our built-in prompt formats (the same text as export.standalone._TURNS).
OLLAMA_TEMPLATES = {
    "gemma": ("<start_of_turn>user\n{{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}<end_of_turn>\n"
              "<start_of_turn>model\n{{ .Response }}<end_of_turn>\n"),
    "chatml": ("{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}<|im_start|>user\n"
               "{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n{{ .Response }}<|im_end|>\n"),
    "plain": "{{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}\n{{ .Response }}",
}


def modelfile(base_gguf: str, adapter_file: str, template: str | None, stops: list[str],
              system: str | None = None) -> str:
    """An Ollama Modelfile: the base GGUF, the adapter over it, the prompt format the run trained on."""
    lines = ["# ollama create NAME -f Modelfile && ollama run NAME", f"FROM {base_gguf}",
             f"ADAPTER ./{adapter_file}"]
    if template is not None:
        lines.append(f'TEMPLATE """{template}"""')
    else:
        lines.append("# TEMPLATE: the base GGUF's own chat template (the run used the tokenizer's template)")
    if system:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f"PARAMETER stop {json.dumps(s, ensure_ascii=False)}" for s in stops]
    return "\n".join(lines) + "\n"
