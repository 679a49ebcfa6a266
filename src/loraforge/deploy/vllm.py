"""vLLM's OpenAI server with the run's LoRA adapter: the GPU and cluster-scale serving path.

``loraforge serve`` is the CPU and development server; on GPUs vLLM batches many adapters over one
base model (``--enable-lora``, ``--lora-modules NAME=PATH``). The base model and the adapter come
from the same PVC layout the ``job`` and ``serve`` targets use (``data/`` and ``runs/<name>/adapter``),
or the adapter comes from the OCI image ``loraforge export --format oci`` pushed: an init container
(crane) copies that image's ``data/`` folder into an emptyDir, as KAITO's puller does.
"""

from __future__ import annotations

import shlex

from loraforge.config import RunConfig
from loraforge.deploy.manifest import Options, Rendered, metadata, resource_name

VLLM_IMAGE = "vllm/vllm-openai:v0.10.1.1"
"""Pinned: vLLM's CLI flags change between releases; bump it together with the flags below."""
CRANE_IMAGE = "gcr.io/go-containerregistry/crane/debug:v0.20.2"
"""crane with a busybox shell (the :debug variant), to export the adapter image's filesystem."""
PORT = 8000
ADAPTERS_DIR = "/adapters"
RUNS_DIR = "/workspace/runs"
DATA_DIR = "/data"
CACHE_DIR = "/cache"


def vllm_args(base: str, adapter_name: str, adapter_path: str, rank: int, gpus: int) -> list[str]:
    """``vllm serve`` arguments: the base model, LoRA on, the one adapter under its run name."""
    args = [base, "--host", "0.0.0.0", "--port", str(PORT), "--enable-lora",
            "--lora-modules", f"{adapter_name}={adapter_path}",
            "--max-lora-rank", str(_max_lora_rank(rank)), "--max-loras", "1"]
    if gpus > 1:
        args += ["--tensor-parallel-size", str(gpus)]
    return args


def _max_lora_rank(rank: int) -> int:
    """vLLM accepts only these ranks as --max-lora-rank (default 16, too small for r > 16)."""
    allowed = (8, 16, 32, 64, 128, 256, 320, 512)
    return next((r for r in allowed if r >= rank), allowed[-1])


def _init_container(image_ref: str, target: str) -> dict:
    """Copies ``data/`` of the adapter image (no base image, so it cannot run itself) to ``target``."""
    script = (f"set -e; mkdir -p /tmp/x; crane export {shlex.quote(image_ref)} - | tar -xf - -C /tmp/x; "
              f"cp /tmp/x/data/* {shlex.quote(target)}/; ls -l {shlex.quote(target)}")
    return {"name": "fetch-adapter", "image": CRANE_IMAGE, "command": ["sh", "-c", script],
            "volumeMounts": [{"name": "adapter", "mountPath": target}],
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}}


def render_vllm(cfg: RunConfig, base: str, opts: Options) -> Rendered:
    """Deployment + Service; ``base`` is the model path or hub id as the pod sees it (cluster_config)."""
    name = resource_name(cfg, opts.name)
    app = f"{name}-vllm"
    claim = f"{name}-work"
    gpus = max(opts.gpus, 1)
    notes = []
    volumes = [{"name": "work", "persistentVolumeClaim": {"claimName": claim}},
               {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}]
    mounts = [{"name": "work", "mountPath": DATA_DIR, "subPath": "data", "readOnly": True},
              {"name": "work", "mountPath": CACHE_DIR, "subPath": "cache"},
              {"name": "shm", "mountPath": "/dev/shm"}]
    init = []
    if opts.adapter_image:
        adapter = f"{ADAPTERS_DIR}/{name}"
        volumes.append({"name": "adapter", "emptyDir": {}})
        mounts.append({"name": "adapter", "mountPath": adapter, "readOnly": True})
        init = [_init_container(opts.adapter_image, adapter)]
        notes.append(f"the init container copies the adapter from {opts.adapter_image} (pushed by `loraforge "
                     "export --format oci`); add imagePullSecrets-style registry auth to it if the registry is private")
    else:
        adapter = f"{RUNS_DIR}/{name}/adapter"
        mounts.append({"name": "work", "mountPath": RUNS_DIR, "subPath": "runs", "readOnly": True})
        notes.append(f"serves the adapter trained by --target job from PVC {claim} ({adapter})")
    env = {"HF_HOME": f"{CACHE_DIR}/huggingface", "HOME": CACHE_DIR, "VLLM_CACHE_ROOT": f"{CACHE_DIR}/vllm"}
    container = {"name": "vllm", "image": opts.image or VLLM_IMAGE, "command": ["vllm", "serve"],
                 "args": vllm_args(base, name, adapter, cfg.adapter.r, gpus),
                 "env": [{"name": k, "value": v} for k, v in env.items()],
                 "ports": [{"name": "http", "containerPort": PORT}],
                 "resources": {"requests": {"cpu": "4", "memory": "16Gi"},
                               "limits": {"memory": "32Gi", "nvidia.com/gpu": gpus}},
                 "volumeMounts": mounts,
                 "securityContext": {"allowPrivilegeEscalation": False}}
    probe = {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10}
    container["readinessProbe"] = {**probe, "initialDelaySeconds": 30, "failureThreshold": 3}
    container["livenessProbe"] = {**probe, "initialDelaySeconds": 300, "failureThreshold": 6}
    container["startupProbe"] = {**probe, "failureThreshold": 90}  # model download + CUDA graphs: up to 15 min
    labels = {"app.kubernetes.io/instance": app}
    pod = {"metadata": {"labels": labels},
           "spec": {"containers": [container], "volumes": volumes,
                    "securityContext": {"fsGroup": 1000}}}
    if init:
        pod["spec"]["initContainers"] = init
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(app, opts),
                  "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": pod}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": metadata(app, opts),
               "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}
    if opts.gpus == 0:
        notes.append("vLLM needs a GPU: requesting nvidia.com/gpu: 1 (pass --gpus N for tensor parallelism)")
    notes.append(f"base model {base}: a hub id is downloaded into the PVC's cache/; a local folder must be in "
                 f"its data/ (see the job target's notes)")
    notes.append(f"OpenAI API at http://{app}/v1, model '{name}' (the adapter) or '{base}' (the base); "
                 "on GPUs and at cluster scale use this (or KAITO); `loraforge serve` is the CPU/dev path")
    return Rendered("vllm", [deployment, service], notes)
