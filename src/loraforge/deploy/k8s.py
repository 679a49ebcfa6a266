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
import shlex
from pathlib import Path

import yaml

from loraforge.config import ConfigError, RunConfig
from loraforge.deploy.docker import IMAGES
from loraforge.deploy.kaito import render_kaito
from loraforge.deploy.manifest import Options, Rendered, dump_docs, metadata, pvc, resource_name
from loraforge.deploy.validate import crd_text
from loraforge.deploy.vllm import VLLM_IMAGE
from loraforge.deploy.vllm import render_vllm as _render_vllm

__all__ = ["TARGETS", "Options", "Rendered", "dump_docs", "render", "resource_name", "torchrun_command"]

TARGETS = {
    "job": "one pod runs `loraforge train` (batch/v1 Job; retries resume from the last checkpoint)",
    "pytorchjob": "multi-node DDP with the Kubeflow Training Operator v1 (PyTorchJob, torchrun)",
    "trainjob": "multi-node DDP with Kubeflow Trainer v2 (TrainJob on the torch-distributed runtime)",
    "kaito": "KAITO tuning + inference Workspaces (KAITO's own trainer; preset models only)",
    "serve": "Deployment + Service running `loraforge serve` on the adapter the job target trained",
    "vllm": "Deployment + Service running vLLM's OpenAI server (--enable-lora) on GPUs, adapter from PVC or "
            "--adapter-image",
}
"""Every deploy target, with one line of help (the CLI's --target choices and help come from here)."""
# The images `loraforge deploy docker` writes Dockerfiles for, under the tags the README builds them with.
DEFAULT_IMAGE = IMAGES["train-cpu"]["tag"]
DEFAULT_GPU_IMAGE = IMAGES["train-cuda"]["tag"]
DEFAULT_SERVE_IMAGE = IMAGES["serve"]["tag"]
CONFIG_DIR = "/etc/loraforge"
RUNS_DIR = "/workspace/runs"
DATA_DIR = "/data"
CACHE_DIR = "/cache"
SERVE_PORT = 8000
UID = 1000  # the non-root user of our images


def image_note(image: str, default: bool) -> str:
    """How --image works, for the notes the CLI prints."""
    if default:
        return (f"image {image} is the local tag the README builds (`loraforge deploy docker`, then docker build "
                f"-t {image}); push it to a registry the cluster can pull from and pass --image "
                f"REGISTRY/{image}, or load it into the nodes (kind load docker-image {image})")
    return f"image {image} (--image): every node must be able to pull it"


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


def config_map(cfg: RunConfig, name: str, opts: Options) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(f"{name}-config", opts),
            "data": {"config.yaml": cfg.to_yaml()}}


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


def train_script(run_dir: str) -> str:
    """The container's shell command: a retry (backoffLimit) resumes from the last checkpoint, or starts
    over when the crash came before the first one; a finished run is never trained again."""
    run = shlex.quote(run_dir)
    train = f"loraforge train {CONFIG_DIR}/config.yaml"
    return (f'if [ -f {run}/metrics.json ]; then echo "loraforge: {run_dir} is finished (metrics.json); '
            f'delete it to train again" >&2; exit 1; fi; '
            f"if ls {run}/checkpoints/step-* >/dev/null 2>&1; then exec {train} --resume; fi; "
            f"exec {train} --overwrite")


def train_args(run_dir: str) -> list[str]:
    return ["sh", "-c", train_script(run_dir)]


def torchrun_command(nodes: int, procs: int, master_from_env: bool, run_dir: str = f"{RUNS_DIR}/run") -> list[str]:
    """torchrun runs the train script M times per node; PET_* variables give it the node rank."""
    cmd = ["torchrun", f"--nnodes={nodes}", f"--nproc-per-node={procs}"]
    if master_from_env:  # Training Operator v1 sets MASTER_ADDR/PORT, not PET_MASTER_*
        cmd += ["--master-addr=$(MASTER_ADDR)", "--master-port=$(MASTER_PORT)"]
    return cmd + ["--no-python"] + train_args(run_dir)


def default_image(opts: Options) -> str:
    return opts.image or (DEFAULT_GPU_IMAGE if opts.gpus else DEFAULT_IMAGE)


def _pod(cfg, name, opts, command, claim, cache_on_claim, procs, restart="Never", container_name="trainer"):
    pod_sec, c_sec = _security()
    volumes, mounts = _volumes(name, claim, cache_on_claim)
    container = {"name": container_name, "image": default_image(opts), "command": command,
                 "env": _env({"OMP_NUM_THREADS": "2"} if not opts.gpus else None),
                 "resources": _resources(cfg, opts, procs), "volumeMounts": mounts, "securityContext": c_sec}
    return {"metadata": {"labels": {"app.kubernetes.io/instance": name}},
            "spec": {"restartPolicy": restart, "securityContext": pod_sec, "containers": [container],
                     "volumes": volumes}}


def render_job(cfg: RunConfig, opts: Options) -> Rendered:
    name = resource_name(cfg, opts.name)
    inside, notes = cluster_config(cfg, name)
    claim = f"{name}-work"
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata(name, opts),
           "spec": {"backoffLimit": 2,
                    "template": _pod(inside, name, opts, train_args(inside.output.dir), claim, True, 1,
                                     "OnFailure")}}
    notes.append(f"outputs land in the PVC {claim} under runs/{name}; a retry (backoffLimit 2) resumes from the "
                 "last checkpoint")
    return Rendered("job", [pvc(claim, opts, shared=False), config_map(inside, name, opts), job], notes)


def render_pytorchjob(cfg: RunConfig, opts: Options) -> Rendered:
    name = resource_name(cfg, opts.name)
    inside, notes = cluster_config(cfg, name)
    claim = f"{name}-shared"
    template = _pod(inside, name, opts, torchrun_command(opts.nodes, opts.procs, True, inside.output.dir), claim, False,
                    opts.procs, container_name="pytorch")  # the operator requires this container name
    replicas = {"Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": template}}
    if opts.nodes > 1:
        replicas["Worker"] = {"replicas": opts.nodes - 1, "restartPolicy": "OnFailure",
                              "template": copy.deepcopy(template)}
    job = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": metadata(name, opts),
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
    trainer = {"image": default_image(opts), "command": torchrun_command(opts.nodes, opts.procs, False,
                                                                          inside.output.dir),
               "numNodes": opts.nodes, "numProcPerNode": opts.procs, "env": c["env"],
               "resourcesPerNode": c["resources"]}
    job = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "metadata": metadata(name, opts),
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
               "--host", "0.0.0.0", "--port", str(SERVE_PORT)] + (["--int8"] if opts.int8 else [])
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
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(f"{name}-serve", opts),
                  "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": template}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": metadata(f"{name}-serve", opts),
               "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}
    notes.append(f"serves the adapter trained by --target job from PVC {claim} ({adapter}) as model '{name}'; "
                 f"OpenAI API at http://{name}-serve/v1")
    return Rendered("serve", [deployment, service], notes)


def render_vllm(cfg: RunConfig, opts: Options) -> Rendered:
    """vLLM with the run's adapter; the base model as the pod sees it (the same PVC layout as job)."""
    from loraforge.export.card import hub_base_model  # no torch: the card's table of embedded models

    inside, notes = cluster_config(cfg, resource_name(cfg, opts.name))
    base = inside.model.name
    if not Path(cfg.model.name).is_dir():
        base = hub_base_model(cfg.model.name) or base  # vLLM loads the hub model our embedded GGUF quantizes
    if base.endswith(".gguf"):
        raise ConfigError(f"--target vllm: model.name {cfg.model.name} is a GGUF file; vLLM applies LoRA over Hugging "
                          "Face weights: set model.name to the hub id or a model folder")
    rendered = _render_vllm(cfg, base, opts)
    rendered.notes[:0] = [n for n in notes if n.startswith("model.name")]
    return rendered


def render(cfg: RunConfig, target: str, opts: Options | None = None) -> Rendered:
    """Render ``target`` for ``cfg``; the result is validated before it is returned."""
    opts = opts or Options()
    if opts.nodes < 1 or opts.procs < 1 or opts.gpus < 0:
        raise ConfigError("--nodes and --procs must be >= 1, --gpus >= 0")
    renderers = {"kaito": render_kaito, "pytorchjob": render_pytorchjob, "trainjob": render_trainjob,
                 "job": render_job, "serve": render_serve, "vllm": render_vllm}
    if target not in renderers:
        raise ConfigError(f"unknown target {target!r}; choose one of: {', '.join(TARGETS)}")
    if target in ("job", "serve", "kaito", "vllm") and (opts.nodes > 1):
        raise ConfigError(f"--target {target} runs on one node; use pytorchjob or trainjob for --nodes {opts.nodes}")
    if opts.int8 and (target != "serve" or opts.gpus):
        raise ConfigError("--int8 is loraforge serve's CPU path: it applies to --target serve without --gpus "
                          "(on GPUs use --target vllm)")
    rendered = renderers[target](cfg, opts)
    if target != "kaito":  # KAITO runs its own images; --image is the trainer's or server's
        image = opts.image or {"serve": DEFAULT_SERVE_IMAGE, "vllm": VLLM_IMAGE}.get(target) or default_image(opts)
        note = (f"image {image}: vLLM's official image, pinned (--image to change)"
                if target == "vllm" and opts.image is None else image_note(image, default=opts.image is None))
        rendered.notes.insert(0, note)
    rendered.validate()
    return rendered
