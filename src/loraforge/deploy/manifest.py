"""What every Kubernetes target shares: names, metadata, the rendered result and its options.

Its own module so ``k8s`` (Job, PyTorchJob, TrainJob, serve) and ``kaito`` both import it and
neither imports the other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from loraforge.config import ConfigError, RunConfig
from loraforge.deploy.validate import validate_docs


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the ConfigMaps' YAML files) as readable block literals."""


_Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None))


def dump_docs(docs: list[dict]) -> str:
    return "---\n".join(yaml.dump(d, Dumper=_Dumper, sort_keys=False, allow_unicode=True) for d in docs)


@dataclass
class Rendered:
    """Resources for one target, and what a human must know (or do) before applying them.

    ``notes`` are in the file's header and are also for the terminal: the CLI prints them.
    """

    target: str
    docs: list[dict]
    notes: list[str] = field(default_factory=list)

    def to_yaml(self) -> str:
        head = [f"# loraforge deploy k8s --target {self.target}"] + [f"# NOTE: {n}" for n in self.notes]
        return "\n".join(head) + "\n---\n" + dump_docs(self.docs)

    def terminal_notes(self) -> list[str]:
        """The notes as the CLI prints them (stderr), one line each."""
        return [f"note: {n}" for n in self.notes]

    def validate(self) -> list[str]:
        return validate_docs(self.docs, f"{self.target} manifest")


@dataclass
class Options:
    name: str | None = None
    image: str | None = None
    nodes: int = 1
    procs: int = 1
    gpus: int = 0
    """GPUs per node (nvidia.com/gpu); 0 = CPU training."""
    namespace: str | None = None
    storage: str = "20Gi"
    storage_class: str | None = None
    kaito_preset: str | None = None
    kaito_instance_type: str | None = None
    adapter_image: str | None = None
    """KAITO: where tuning pushes the adapter image, and where inference pulls it."""
    push_secret: str | None = None
    int8: bool = False
    """serve: run `loraforge serve --int8` (every layer in int8 on the CPU; answers may differ from fp32's)."""


def resource_name(cfg: RunConfig, name: str | None = None) -> str:
    """A DNS-1123 label from --name or the run directory's name ('runs/demo' -> 'loraforge-demo')."""
    raw = name or f"loraforge-{Path(cfg.output.dir).name}"
    label = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")[:52].strip("-")
    if not label:
        raise ConfigError(f"cannot make a Kubernetes name from {raw!r}; pass --name")
    return label


def metadata(name: str, opts: Options, **labels) -> dict:
    meta = {"name": name, "labels": {"app.kubernetes.io/name": "loraforge", "app.kubernetes.io/instance": name,
                                     **labels}}
    if opts.namespace:
        meta["namespace"] = opts.namespace
    return meta


def pvc(name: str, opts: Options, shared: bool) -> dict:
    spec = {"accessModes": ["ReadWriteMany" if shared else "ReadWriteOnce"],
            "resources": {"requests": {"storage": opts.storage}}}
    if opts.storage_class:
        spec["storageClassName"] = opts.storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata(name, opts), "spec": spec}
