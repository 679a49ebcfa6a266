"""OCI push/pull refuse content that does not match its digest. The registry here is an in-memory
OCI distribution API behind httpx.MockTransport, so a test can make it lie; test_export.py runs the
honest round trip against a real registry where one is installed."""

from __future__ import annotations

import hashlib
import json
import uuid

import httpx
import pytest
from safetensors.torch import save_file

from loraforge.export.oci import RegistryError, build_layout, pull, push_layout

REF = "127.0.0.1:5000/adapters/k8s:v1"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Registry:
    """Blobs and manifests by digest, tags to manifests; ``tamper`` rewrites what a GET returns."""

    def __init__(self):
        self.blobs: dict[str, bytes] = {}
        self.tags: dict[str, bytes] = {}
        self.tamper = lambda kind, data: data
        self.stored_digest = None  # a docker-content-digest to report instead of the true one

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        assert path.startswith("/v2/adapters/k8s/"), path
        rest = path.removeprefix("/v2/adapters/k8s/")
        if rest == "blobs/uploads/" and method == "POST":
            return httpx.Response(202, headers={"location": f"/v2/adapters/k8s/blobs/uploads/{uuid.uuid4()}"})
        if rest.startswith("blobs/uploads/") and method == "PUT":
            want = request.url.params["digest"]
            if digest(request.content) != want:
                return httpx.Response(400, text="digest invalid")
            self.blobs[want] = request.content
            return httpx.Response(201)
        if rest.startswith("blobs/"):
            data = self.blobs.get(rest.removeprefix("blobs/"))
            if data is None:
                return httpx.Response(404)
            return httpx.Response(200, content=b"" if method == "HEAD" else self.tamper("blob", data))
        if rest.startswith("manifests/"):
            tag = rest.removeprefix("manifests/")
            if method == "PUT":
                self.tags[tag] = request.content
                return httpx.Response(201, headers={"docker-content-digest":
                                                    self.stored_digest or digest(request.content)})
            if tag not in self.tags:
                return httpx.Response(404)
            return httpx.Response(200, content=self.tamper("manifest", self.tags[tag]))
        return httpx.Response(405)


@pytest.fixture
def registry(monkeypatch):
    reg = Registry()
    real = httpx.Client
    monkeypatch.setattr(httpx, "Client", lambda **kw: real(transport=httpx.MockTransport(reg), **kw))
    return reg


@pytest.fixture
def layout(tmp_path):
    import torch

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    save_file({"w": torch.arange(8, dtype=torch.float32)}, str(adapter / "adapter_model.safetensors"))
    return build_layout(adapter, tmp_path / "oci")


def test_an_honest_registry_round_trips(registry, layout, tmp_path):
    """The fake registry is faithful: what the refusals below see is only the tampering."""
    res = push_layout(layout, REF)
    assert res["digest"] == layout.manifest_digest
    got = pull(REF, out=tmp_path / "pulled")
    assert got["manifest_digest"] == layout.manifest_digest
    assert (tmp_path / "pulled" / "adapter_model.safetensors").read_bytes() == \
        (tmp_path / "adapter" / "adapter_model.safetensors").read_bytes()


def test_push_refuses_a_pulled_back_manifest_that_is_not_the_pushed_one(registry, layout):
    def retagged(kind, data):  # a valid manifest with the same blobs, but not ours (someone re-tagged)
        if kind != "manifest":
            return data
        m = json.loads(data)
        m["annotations"]["org.opencontainers.image.title"] = "someone-else"
        return json.dumps(m, sort_keys=True).encode()

    registry.tamper = retagged
    with pytest.raises(RegistryError, match=f"pulled manifest sha256:[0-9a-f]{{64}} != pushed {layout.manifest_digest}"):
        push_layout(layout, REF)


def test_push_refuses_a_registry_that_reports_another_manifest_digest(registry, layout):
    registry.stored_digest = "sha256:" + "0" * 64
    with pytest.raises(RegistryError, match=f"registry stored manifest sha256:0{{64}}, expected {layout.manifest_digest}"):
        push_layout(layout, REF)


def test_pull_refuses_a_blob_whose_content_does_not_match_its_digest(registry, layout, tmp_path):
    push_layout(layout, REF)
    layer = json.loads(layout.manifest)["layers"][0]["digest"]
    registry.tamper = lambda kind, data: data[:-1] + bytes([data[-1] ^ 1]) if kind == "blob" and digest(data) == layer \
        else data
    with pytest.raises(RegistryError, match=f"blob {layer}: content does not match its digest"):
        pull(REF, out=tmp_path / "pulled")
    assert not (tmp_path / "pulled").exists()  # nothing unpacked from a tampered image
