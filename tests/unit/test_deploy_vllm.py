"""The vllm target: vLLM's OpenAI server with the run's LoRA adapter, validated offline."""

from __future__ import annotations

import pytest

from loraforge.config import ConfigError, RunConfig
from loraforge.deploy.k8s import TARGETS, Options, render
from loraforge.deploy.validate import validate_file
from loraforge.deploy.vllm import VLLM_IMAGE


def _deployment(rendered):
    return next(d for d in rendered.docs if d["kind"] == "Deployment")


def _cfg(r: int = 8) -> RunConfig:
    cfg = RunConfig()
    cfg.output.dir = "runs/demo"
    cfg.adapter.r = r
    return cfg


def test_vllm_is_a_target_with_help():
    assert "vllm" in TARGETS and "vLLM" in TARGETS["vllm"]


def test_renders_and_validates_as_a_user_gets_it(tmp_path):
    rendered = render(_cfg(), "vllm")
    out = tmp_path / "vllm.yaml"
    out.write_text(rendered.to_yaml())
    assert len(validate_file(out)) == 2
    assert {d["kind"] for d in rendered.docs} == {"Deployment", "Service"}
    svc = next(d for d in rendered.docs if d["kind"] == "Service")
    assert svc["spec"]["selector"] == _deployment(rendered)["spec"]["selector"]["matchLabels"]


def test_args_enable_lora_with_the_adapter_from_the_pvc():
    cfg = _cfg()
    pod = _deployment(render(cfg, "vllm"))["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["image"] == VLLM_IMAGE and c["command"] == ["vllm", "serve"]
    args = c["args"]
    assert args[0] == "google/gemma-3-270m"  # the default embedded model, as the hub model vLLM can load
    assert "--enable-lora" in args
    assert args[args.index("--lora-modules") + 1] == "loraforge-demo=/workspace/runs/loraforge-demo/adapter"
    assert args[args.index("--port") + 1] == "8000"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/workspace/runs"]["subPath"] == "runs" and mounts["/workspace/runs"]["name"] == "work"
    claim = next(v for v in pod["volumes"] if v["name"] == "work")["persistentVolumeClaim"]["claimName"]
    assert claim == "loraforge-demo-work"  # the PVC the job target writes the adapter into
    assert "initContainers" not in pod


@pytest.mark.parametrize("r,expected", [(8, "8"), (16, "16"), (24, "32"), (64, "64")])
def test_max_lora_rank_covers_the_adapter_rank(r, expected):
    args = _deployment(render(_cfg(r), "vllm"))["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--max-lora-rank") + 1] == expected


def test_gpu_limits_and_tensor_parallelism():
    c = _deployment(render(_cfg(), "vllm"))["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 and "--tensor-parallel-size" not in c["args"]
    c = _deployment(render(_cfg(), "vllm", Options(gpus=4)))["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert c["args"][c["args"].index("--tensor-parallel-size") + 1] == "4"


def test_probes_on_health():
    c = _deployment(render(_cfg(), "vllm"))["spec"]["template"]["spec"]["containers"][0]
    assert c["ports"] == [{"name": "http", "containerPort": 8000}]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}


def test_adapter_image_is_copied_by_an_init_container_into_an_emptydir():
    ref = "reg.example.io/adapters/demo:v1"
    rendered = render(_cfg(), "vllm", Options(adapter_image=ref))
    pod = _deployment(rendered)["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert ref in init["command"][-1] and "/data/" in init["command"][-1]  # the image's data/ folder
    c = pod["containers"][0]
    path = c["args"][c["args"].index("--lora-modules") + 1].split("=", 1)[1]
    assert {m["mountPath"] for m in init["volumeMounts"]} == {path}
    shared = next(m["name"] for m in c["volumeMounts"] if m["mountPath"] == path)
    assert next(v for v in pod["volumes"] if v["name"] == shared) == {"name": shared, "emptyDir": {}}
    assert not any(m["mountPath"] == "/workspace/runs" for m in c["volumeMounts"])
    assert any(ref in n for n in rendered.notes)


def test_init_container_script_unpacks_an_oci_adapter_layer(tmp_path):
    """Run the init script with a fake `crane` emitting the layer our OCI export builds."""
    import os
    import subprocess

    from loraforge.deploy.vllm import _init_container
    from loraforge.export.oci import _layer

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    raw, _ = _layer(adapter, None)
    (tmp_path / "layer.tar").write_bytes(raw)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "crane").write_text(f"#!/bin/sh\ncat {tmp_path / 'layer.tar'}\n")
    (bin_dir / "crane").chmod(0o755)
    target = tmp_path / "mnt"
    target.mkdir()
    script = _init_container("reg.io/a:1", str(target))["command"][-1].replace("/tmp/x", str(tmp_path / "x"))
    subprocess.run(["sh", "-c", script], check=True, capture_output=True,
                   env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert (target / "adapter_model.safetensors").read_bytes() == b"weights"
    assert (target / "adapter_config.json").is_file()


def test_one_node_only():
    with pytest.raises(ConfigError, match="one node"):
        render(_cfg(), "vllm", Options(nodes=2))


def test_embedded_base_model_is_served_from_its_hub_id():
    from loraforge.export.card import hub_base_model

    cfg = _cfg()
    cfg.model.name = "gemma3-270m"
    args = _deployment(render(cfg, "vllm"))["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == hub_base_model("gemma3-270m") and "/" in args[0]


def test_gguf_base_is_refused(tmp_path):
    cfg = _cfg()
    cfg.model.name = str(tmp_path / "base.gguf")
    with pytest.raises(ConfigError, match="GGUF"):
        render(cfg, "vllm")
