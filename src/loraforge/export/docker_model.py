"""The merged GGUF as a Docker Model Runner artifact: what ``docker model package --gguf`` pushes.

Docker Model Runner (docker/model-runner, ``pkg/distribution/types``) stores a model as an OCI
manifest whose config has media type ``application/vnd.docker.ai.model.config.v0.1+json`` and holds
``{"config": {format, quantization, parameters, architecture, size, gguf}, "descriptor": {...},
"rootfs": {"type": "layers", "diff_ids": [...]}}``, and whose one layer is the GGUF file itself,
uncompressed, as ``application/vnd.docker.ai.gguf.v3`` (so its diff_id is its digest). ``docker model
pull`` / ``docker model run`` and llama.cpp's ``-dr`` read exactly that. We leave out the creation
time, so the same GGUF always gets the same digest.
"""

from __future__ import annotations

from pathlib import Path

from loraforge.export.oci import Layout, push_layout, write_layout

CONFIG_TYPE = "application/vnd.docker.ai.model.config.v0.1+json"
GGUF_TYPE = "application/vnd.docker.ai.gguf.v3"


def _human(n: float, units: tuple[str, ...], step: float) -> str:
    for unit in units[:-1]:
        if abs(n) < step:
            return f"{n:.2f} {unit}" if unit else f"{n:.2f}"
        n /= step
    return f"{n:.2f} {units[-1]}"


def model_config(gguf_path: str | Path) -> dict:
    """The config Docker Model Runner writes for a GGUF: the fields ``docker model inspect`` shows,
    and the GGUF's scalar metadata (arrays such as the vocabulary are left out, as Docker does)."""
    import json

    import numpy as np
    from gguf import GGUFReader, GGUFValueType, LlamaFileType

    reader = GGUFReader(gguf_path)
    meta = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or not field.types or field.types[0] == GGUFValueType.ARRAY:
            continue
        value = field.contents()
        meta[key] = value if isinstance(value, str) else json.dumps(value.item() if isinstance(value, np.generic)
                                                                    else value)
    params = sum(int(np.prod(t.shape)) for t in reader.tensors)
    file_type = meta.get("general.file_type")
    quant = LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_").removeprefix("ALL_") if file_type else ""
    size = Path(gguf_path).stat().st_size
    return {"config": {"format": "gguf", "quantization": quant,
                       "parameters": _human(params, ("", "K", "M", "B"), 1000),
                       "architecture": meta.get("general.architecture", ""),
                       "size": _human(size, ("B", "KiB", "MiB", "GiB"), 1024), "gguf": meta},
            "descriptor": {}}


def build_model_layout(gguf_path: str | Path, out: str | Path) -> Layout:
    """An OCI layout holding ``gguf_path`` as a Docker model (config v0.1, one gguf.v3 layer)."""
    import hashlib
    import json

    gguf_path = Path(gguf_path)
    data = gguf_path.read_bytes()
    cfg = model_config(gguf_path)
    cfg["rootfs"] = {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(data).hexdigest()]}
    config = json.dumps(cfg, sort_keys=True).encode()
    title = {"org.opencontainers.image.title": gguf_path.name}
    return write_layout(out, CONFIG_TYPE, config, [(GGUF_TYPE, data, title)])


def export_docker_model(gguf_path: str | Path, push: str | None = None, plain_http: bool = False) -> dict:
    """Write the layout beside the GGUF (``oci/``) and, with ``push``, push it and pull it back checked."""
    gguf_path = Path(gguf_path)
    layout = build_model_layout(gguf_path, gguf_path.parent / "oci")
    result = {"format": "docker-model", "path": str(layout.path), "gguf": str(gguf_path),
              "digest": layout.manifest_digest}
    if push:
        result["pushed"] = push_layout(layout, push, plain_http=plain_http)
        result["run"] = f"docker model run {result['pushed']['ref']}"
    return result
