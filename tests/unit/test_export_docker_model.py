"""--format docker-model: the GGUF as the OCI artifact `docker model package --gguf` pushes, pushed to
the in-memory registry of test_oci_refusals and pulled back digest-checked."""

from __future__ import annotations

import hashlib
import json

import pytest

from test_export import make_run
from test_oci_refusals import REF, registry  # noqa: F401  (the fixture)

from loraforge.export.docker_model import CONFIG_TYPE, GGUF_TYPE
from loraforge.export.oci import RegistryError, pull_verified
from loraforge.export.run import ExportError, export_run


def test_push_pull_back_digests_and_media_types(tmp_path, tiny_model_dir, registry):  # noqa: F811
    run = make_run(tmp_path, tiny_model_dir)
    res = export_run(run, "docker-model", tmp_path / "out", push=REF, gguf_type="q8_0")
    gguf = (tmp_path / "out").glob("*.gguf").__next__().read_bytes()
    assert res["pushed"]["digest"] == res["digest"] and res["pushed"]["pinned"].endswith(res["digest"])
    pulled = pull_verified(REF)
    assert pulled["manifest_digest"] == res["digest"]
    manifest = pulled["manifest"]
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == CONFIG_TYPE == "application/vnd.docker.ai.model.config.v0.1+json"
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == GGUF_TYPE == "application/vnd.docker.ai.gguf.v3"
    assert pulled["blobs"][layer["digest"]] == gguf  # the GGUF itself, uncompressed
    config = json.loads(pulled["blobs"][manifest["config"]["digest"]])
    assert config["rootfs"] == {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(gguf).hexdigest()]}
    c = config["config"]
    assert c["format"] == "gguf" and c["architecture"] == "gemma3" and c["quantization"] == "Q8_0"
    assert c["gguf"]["general.architecture"] == "gemma3" and "tokenizer.ggml.tokens" not in c["gguf"]
    assert c["size"].endswith("KiB") and c["parameters"].endswith("K")


def test_same_gguf_same_digest(tmp_path, tiny_model_dir):
    from loraforge.export.docker_model import build_model_layout

    run = make_run(tmp_path, tiny_model_dir)
    gguf = export_run(run, "gguf", tmp_path / "g", gguf_type="f16")["path"]
    assert build_model_layout(gguf, tmp_path / "a").manifest_digest == build_model_layout(gguf, tmp_path / "b").manifest_digest


def test_a_tampered_layer_is_refused(tmp_path, tiny_model_dir, registry):  # noqa: F811
    registry.tamper = lambda kind, data: data[:-1] + b"\0" if kind == "blob" and data[:4] == b"GGUF" else data
    with pytest.raises(RegistryError, match="does not match"):
        export_run(make_run(tmp_path, tiny_model_dir), "docker-model", tmp_path / "out", push=REF)


def test_refuses_what_gguf_cannot_carry(tmp_path, tiny_model_dir):
    with pytest.raises(ExportError, match="cannot be merged"):
        export_run(make_run(tmp_path, tiny_model_dir, "prompt"), "docker-model", tmp_path / "out")
