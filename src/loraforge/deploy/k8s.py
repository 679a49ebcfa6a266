"""Kubernetes resources for a run config: one function per target, every one validated offline.

All targets run the same container image and the same ``loraforge train`` as a laptop, with the
run's config mounted from a ConfigMap. Multi-node targets launch it through ``torchrun``, which
reads the rendezvous settings the operators inject (``PET_NNODES``, ``PET_NPROC_PER_NODE``,
``PET_NODE_RANK``, master address and port); our training loop then joins that process group
(gloo on CPU, NCCL on GPU) and DDP averages gradients. Rank 0 writes the run directory, so the
output volume must be shared (ReadWriteMany) across nodes.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from loraforge.config import ConfigError, RunConfig
from loraforge.deploy.validate import crd_text, validate_docs

TARGETS = ("kaito", "pytorchjob", "trainjob", "job", "serve")
DEFAULT_IMAGE = "ghcr.io/loraforge/loraforge-train:0.1.0"
DEFAULT_SERVE_IMAGE = "ghcr.io/loraforge/loraforge-serve:0.1.0"
CONFIG_DIR = "/etc/loraforge"
RUNS_DIR = "/workspace/runs"
DATA_DIR = "/data"
CACHE_DIR = "/cache"
SERVE_PORT = 8000
UID = 1000  # the non-root user of our images


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the ConfigMaps' YAML files) as readable block literals."""


_Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None))


def dump_docs(docs: list[dict]) -> str:
    return "---\n".join(yaml.dump(d, Dumper=_Dumper, sort_keys=False, allow_unicode=True) for d in docs)


@dataclass
class Rendered:
    """Resources for one target, and what a human must know (or do) before applying them."""

    target: str
    docs: list[dict]
    notes: list[str] = field(default_factory=list)

    def to_yaml(self) -> str:
        head = [f"# loraforge deploy k8s --target {self.target}"] + [f"# NOTE: {n}" for n in self.notes]
        return "\n".join(head) + "\n---\n" + dump_docs(self.docs)

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


def resource_name(cfg: RunConfig, name: str | None = None) -> str:
    """A DNS-1123 label from --name or the run directory's name ('runs/demo' -> 'loraforge-demo')."""
    raw = name or f"loraforge-{Path(cfg.output.dir).name}"
    label = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")[:52].strip("-")
    if not label:
        raise ConfigError(f"cannot make a Kubernetes name from {raw!r}; pass --name")
    return label


def _is_local_path(spec: str | None) -> bool:
    return bool(spec) and not spec.startswith("k8s:") and ("/" in spec or Path(spec).suffix != "")


def cluster_config(cfg: RunConfig, name: str) -> tuple[RunConfig, list[str]]:
    """The config as the pod sees it: outputs under the runs volume, local files under /data."""
    inside = cfg.model_copy(deep=True)
    notes = []
    inside.output.dir = f"{RUNS_DIR}/{name}"
    for key in ("train", "dev", "test"):
        spec = getattr(inside.data, key)
        if _is_local_path(spec):
            target = f"{DATA_DIR}/{Path(spec).name}"
            setattr(inside.data, key, target)
            notes.append(f"data.{key}: copy {spec} into the data volume as {target}")
    if Path(cfg.model.name).is_dir():
        inside.model.name = f"{DATA_DIR}/models/{Path(cfg.model.name).name}"
        notes.append(f"model.name: copy the folder {cfg.model.name} into the data volume as {inside.model.name}")
    return inside, notes


def _meta(name: str, opts: Options, **labels) -> dict:
    meta = {"name": name, "labels": {"app.kubernetes.io/name": "loraforge", "app.kubernetes.io/instance": name,
                                     **labels}}
    if opts.namespace:
        meta["namespace"] = opts.namespace
    return meta


def config_map(cfg: RunConfig, name: str, opts: Options) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(f"{name}-config", opts),
            "data": {"config.yaml": cfg.to_yaml()}}


def pvc(name: str, opts: Options, shared: bool) -> dict:
    spec = {"accessModes": ["ReadWriteMany" if shared else "ReadWriteOnce"],
            "resources": {"requests": {"storage": opts.storage}}}
    if opts.storage_class:
        spec["storageClassName"] = opts.storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": _meta(name, opts), "spec": spec}


def _resources(cfg: RunConfig, opts: Options, procs: int) -> dict:
    from loraforge.deploy.estimate import estimate

    device = "gpu" if opts.gpus else "cpu"
    try:
        peak_mb = estimate(cfg, device).peak_mb
    except ConfigError:  # a model we cannot size offline: a generous default
        peak_mb = 16 * 1024
    host_mb = peak_mb if device == "cpu" else peak_mb / 2 + 2048  # GPU runs keep a host copy while loading
    mem_gi = max(2, int(host_mb * procs * 1.25 / 1024) + 1)
    res = {"requests": {"cpu": str(2 * procs), "memory": f"{mem_gi}Gi"}, "limits": {"memory": f"{mem_gi}Gi"}}
    if opts.gpus:
        res["limits"]["nvidia.com/gpu"] = opts.gpus
    return res


def _security() -> tuple[dict, dict]:
    pod = {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID}
    container = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    return pod, container


def _volumes(name: str, claim: str, cache_on_claim: bool) -> tuple[list[dict], list[dict]]:
    volumes = [{"name": "config", "configMap": {"name": f"{name}-config"}},
               {"name": "work", "persistentVolumeClaim": {"claimName": claim}}]
    mounts = [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
              {"name": "work", "mountPath": RUNS_DIR, "subPath": "runs"},
              {"name": "work", "mountPath": DATA_DIR, "subPath": "data"}]
    if cache_on_claim:
        mounts.append({"name": "work", "mountPath": CACHE_DIR, "subPath": "cache"})
    else:  # one cache per pod: ranks on different nodes must not race on one dequantization
        volumes.append({"name": "cache", "emptyDir": {}})
        mounts.append({"name": "cache", "mountPath": CACHE_DIR})
    return volumes, mounts


def _env(extra: dict | None = None) -> list[dict]:
    env = {"LORAFORGE_HOME": CACHE_DIR, "HF_HOME": f"{CACHE_DIR}/huggingface", "PYTHONUNBUFFERED": "1"}
    env.update(extra or {})
    return [{"name": k, "value": v} for k, v in env.items()]


def train_args() -> list[str]:
    return ["loraforge", "train", f"{CONFIG_DIR}/config.yaml"]


def torchrun_command(nodes: int, procs: int, master_from_env: bool) -> list[str]:
    """torchrun runs `loraforge train` M times per node; PET_* variables give it the node rank."""
    cmd = ["torchrun", f"--nnodes={nodes}", f"--nproc-per-node={procs}"]
    if master_from_env:  # Training Operator v1 sets MASTER_ADDR/PORT, not PET_MASTER_*
        cmd += ["--master-addr=$(MASTER_ADDR)", "--master-port=$(MASTER_PORT)"]
    return cmd + ["--no-python"] + train_args()


def _pod(cfg, name, opts, command, claim, cache_on_claim, procs, restart="Never", container_name="trainer"):
    pod_sec, c_sec = _security()
    volumes, mounts = _volumes(name, claim, cache_on_claim)
    container = {"name": container_name, "image": opts.image or DEFAULT_IMAGE, "command": command,
                 "env": _env({"OMP_NUM_THREADS": "2"} if not opts.gpus else None),
                 "resources": _resources(cfg, opts, procs), "volumeMounts": mounts, "securityContext": c_sec}
    return {"metadata": {"labels": {"app.kubernetes.io/instance": name}},
            "spec": {"restartPolicy": restart, "securityContext": pod_sec, "containers": [container],
                     "volumes": volumes}}


def render_job(cfg: RunConfig, opts: Options) -> Rendered:
    name = resource_name(cfg, opts.name)
    inside, notes = cluster_config(cfg, name)
    claim = f"{name}-work"
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": _meta(name, opts),
           "spec": {"backoffLimit": 2,
                    "template": _pod(inside, name, opts, train_args(), claim, True, 1, "OnFailure")}}
    notes.append(f"outputs land in the PVC {claim} under runs/{name}; a rerun resumes nothing unless you "
                 "add train --resume (the run directory is kept)")
    return Rendered("job", [pvc(claim, opts, shared=False), config_map(inside, name, opts), job], notes)


def render_pytorchjob(cfg: RunConfig, opts: Options) -> Rendered:
    name = resource_name(cfg, opts.name)
    inside, notes = cluster_config(cfg, name)
    claim = f"{name}-shared"
    template = _pod(inside, name, opts, torchrun_command(opts.nodes, opts.procs, True), claim, False,
                    opts.procs, container_name="pytorch")  # the operator requires this container name
    replicas = {"Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": template}}
    if opts.nodes > 1:
        replicas["Worker"] = {"replicas": opts.nodes - 1, "restartPolicy": "OnFailure",
                              "template": copy.deepcopy(template)}
    job = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": _meta(name, opts),
           "spec": {"nprocPerNode": str(opts.procs), "runPolicy": {"cleanPodPolicy": "None", "backoffLimit": 2},
                    "pytorchReplicaSpecs": replicas}}
    notes.append(f"{opts.nodes} node(s) x {opts.procs} process(es): global batch = "
                 f"{cfg.train.batch_size} x {cfg.train.grad_accum} accum x {opts.nodes * opts.procs} ranks")
    notes.append(f"PVC {claim} must be ReadWriteMany (Azure Files, NFS, EFS...): rank 0 writes runs/{name}")
    return Rendered("pytorchjob", [pvc(claim, opts, shared=True), config_map(inside, name, opts), job], notes)


def _runtime() -> tuple[str, str, str]:
    """(runtime name, replicated job name, container name) of the shipped torch-distributed runtime."""
    rt = yaml.safe_load(crd_text("kubeflow-runtime-torch-distributed.yaml"))
    job = rt["spec"]["template"]["spec"]["replicatedJobs"][0]
    container = job["template"]["spec"]["template"]["spec"]["containers"][0]["name"]
    return rt["metadata"]["name"], job["name"], container


def render_trainjob(cfg: RunConfig, opts: Options) -> Rendered:
    name = resource_name(cfg, opts.name)
    inside, notes = cluster_config(cfg, name)
    claim = f"{name}-shared"
    runtime, target_job, container = _runtime()
    pod = _pod(inside, name, opts, [], claim, False, opts.procs)["spec"]
    c = pod["containers"][0]
    trainer = {"image": opts.image or DEFAULT_IMAGE, "command": torchrun_command(opts.nodes, opts.procs, False),
               "numNodes": opts.nodes, "numProcPerNode": opts.procs, "env": c["env"],
               "resourcesPerNode": c["resources"]}
    job = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "metadata": _meta(name, opts),
           "spec": {"runtimeRef": {"name": runtime, "apiGroup": "trainer.kubeflow.org",
                                   "kind": "ClusterTrainingRuntime"},
                    "trainer": trainer,
                    "podSpecOverrides": [{"targetJobs": [{"name": target_job}], "volumes": pod["volumes"],
                                          "containers": [{"name": container,
                                                          "volumeMounts": c["volumeMounts"]}]}]}}
    notes.append(f"needs the ClusterTrainingRuntime '{runtime}' (Kubeflow Trainer v2) installed in the cluster")
    notes.append(f"PVC {claim} must be ReadWriteMany: rank 0 writes runs/{name}")
    return Rendered("trainjob", [pvc(claim, opts, shared=True), config_map(inside, name, opts), job], notes)


def render_serve(cfg: RunConfig, opts: Options) -> Rendered:
    """Deployment + Service for `loraforge serve`, reading the adapter the `job` target trained."""
    name = resource_name(cfg, opts.name)
    inside, notes = cluster_config(cfg, name)
    claim = f"{name}-work"
    adapter = f"{RUNS_DIR}/{name}/adapter"
    command = ["loraforge", "serve", "--base", inside.model.name, "--adapter", f"{name}={adapter}",
               "--host", "0.0.0.0", "--port", str(SERVE_PORT)]
    serve_opts = copy.copy(opts)
    serve_opts.image = opts.image or DEFAULT_SERVE_IMAGE
    template = _pod(inside, f"{name}-serve", serve_opts, command, claim, True, 1, "Always", "serve")
    template["spec"]["volumes"] = [v for v in template["spec"]["volumes"] if v["name"] != "config"]
    c = template["spec"]["containers"][0]
    c["volumeMounts"] = [m for m in c["volumeMounts"] if m["name"] != "config"]
    c["resources"] = {"requests": {"cpu": "2", "memory": "3Gi"}, "limits": {"memory": "6Gi"}}
    if opts.gpus:
        c["resources"]["limits"]["nvidia.com/gpu"] = opts.gpus
    c["ports"] = [{"name": "http", "containerPort": SERVE_PORT}]
    probe = {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10}
    c["readinessProbe"] = {**probe, "initialDelaySeconds": 20}
    c["livenessProbe"] = {**probe, "initialDelaySeconds": 120, "failureThreshold": 6}
    labels = {"app.kubernetes.io/instance": f"{name}-serve"}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(f"{name}-serve", opts),
                  "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": template}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": _meta(f"{name}-serve", opts),
               "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}
    notes.append(f"serves the adapter trained by --target job from PVC {claim} ({adapter}) as model '{name}'; "
                 f"OpenAI API at http://{name}-serve/v1")
    return Rendered("serve", [deployment, service], notes)


def render(cfg: RunConfig, target: str, opts: Options | None = None) -> Rendered:
    """Render ``target`` for ``cfg``; the result is validated before it is returned."""
    from loraforge.deploy.kaito import render_kaito

    opts = opts or Options()
    if opts.nodes < 1 or opts.procs < 1 or opts.gpus < 0:
        raise ConfigError("--nodes and --procs must be >= 1, --gpus >= 0")
    renderers = {"kaito": render_kaito, "pytorchjob": render_pytorchjob, "trainjob": render_trainjob,
                 "job": render_job, "serve": render_serve}
    if target not in renderers:
        raise ConfigError(f"unknown target {target!r}; choose one of: {', '.join(TARGETS)}")
    if target in ("job", "serve", "kaito") and (opts.nodes > 1):
        raise ConfigError(f"--target {target} runs on one node; use pytorchjob or trainjob for --nodes {opts.nodes}")
    rendered = renderers[target](cfg, opts)
    rendered.validate()
    return rendered
