"""Dockerfiles for training (CPU, CUDA) and serving, rendered from one template shipped in the package.

One template keeps the three images identical where they should be (base, pins, user, volumes) and
different only where they must be (torch build, entrypoint). The build context is the repository root.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from string import Template

from loraforge.runs import atomic_write

TORCH_VERSION = "2.13.0"  # the pin in pyproject.toml; a test checks they agree
CPU_INDEX = " --index-url https://download.pytorch.org/whl/cpu"
COPIED = ["pyproject.toml", "README.md", "src", "configs"]  # the build's COPY sources
DOCKERIGNORE = "\n".join(["**", *[f"!{p}" for p in COPIED], "**/__pycache__", "**/*.pyc", ""])

IMAGES = {
    "train-cpu": dict(
        title="training image, CPU", tag="loraforge-train:cpu", torch_index=CPU_INDEX,
        torch_comment="The CPU build: a bare PyPI torch is the multi-GB CUDA one.",
        extra_env="", volumes=["/cache", "/workspace/runs"], expose="",
        entrypoint=["loraforge", "train"], cmd=["configs/demo.yaml"]),
    "train-cuda": dict(
        title="training image, CUDA GPUs", tag="loraforge-train:cuda", torch_index="",
        torch_comment="PyPI's Linux torch wheel is the CUDA build, CUDA libraries included: hosts need the driver only.",
        extra_env=" \\\n    NVIDIA_VISIBLE_DEVICES=all \\\n    NVIDIA_DRIVER_CAPABILITIES=compute,utility",
        volumes=["/cache", "/workspace/runs"], expose="",
        entrypoint=["loraforge", "train"], cmd=["configs/k8s-en-zh-gemma3-270m.yaml"]),
    "serve": dict(
        title="OpenAI-compatible server (loraforge serve), CPU", tag="loraforge-serve:cpu", torch_index=CPU_INDEX,
        torch_comment="The CPU build: a bare PyPI torch is the multi-GB CUDA one.",
        extra_env="", volumes=["/cache", "/adapters"], expose="EXPOSE 8000\n",
        entrypoint=["loraforge", "serve"], cmd=["--base", "gemma3-270m", "--host", "0.0.0.0", "--port", "8000"]),
}


def render_dockerfile(kind: str, path: str | None = None) -> str:
    if kind not in IMAGES:
        raise ValueError(f"unknown image {kind!r}; choose one of: {', '.join(IMAGES)}")
    spec = dict(IMAGES[kind])
    for key in ("volumes", "entrypoint", "cmd"):
        spec[key] = json.dumps(spec[key])  # exec form: no shell between docker and loraforge
    template = resources.files("loraforge.deploy").joinpath("templates", "Dockerfile.in").read_text(encoding="utf-8")
    return Template(template).substitute(spec, path=path or f"docker/Dockerfile.{kind}", torch_version=TORCH_VERSION)


def write_dockerfiles(out_dir: str | Path) -> list[Path]:
    """Write Dockerfile.<kind> (and a BuildKit Dockerfile.<kind>.dockerignore) for every image."""
    out_dir = Path(out_dir)
    written = []
    for kind in IMAGES:
        dockerfile = out_dir / f"Dockerfile.{kind}"
        written.append(atomic_write(dockerfile, render_dockerfile(kind, str(dockerfile))))
        written.append(atomic_write(out_dir / f"Dockerfile.{kind}.dockerignore", DOCKERIGNORE))
    return written
