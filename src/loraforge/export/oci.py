"""Package an adapter as an OCI image and push it with the OCI distribution API (plain httpx).

The layout is the one KAITO's own fine-tuning pusher writes and its puller expects for
``inference.adapters[].source.image``: one ``tar+gzip`` layer holding ``data/adapter_config.json``
and ``data/adapter_model.safetensors`` (we add the model card), an image config listing the
layer's ``diff_id``, no base image. KAITO's init container copies the image, unpacks the layers and
moves ``data/`` to ``/mnt/adapter/<name>``. Layers are built reproducibly (fixed mtimes and owners),
so the same adapter always gets the same digest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from loraforge.config import ConfigError

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class RegistryError(ConfigError):
    """A push or pull the registry refused, with its status and message."""


@dataclass
class Layout:
    path: Path
    manifest_digest: str
    manifest: bytes
    blobs: dict[str, tuple[str, Path]]  # digest -> (media type, file)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(adapter_dir: Path, readme: str | None) -> tuple[bytes, bytes]:
    """(uncompressed tar, gzip) of ``data/<files>``, byte-for-byte reproducible."""
    files = {name: (adapter_dir / name).read_bytes() for name in ADAPTER_FILES}
    if readme:
        files["README.md"] = readme.encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("data")
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
        tar.addfile(info)
        for name in sorted(files):
            info = tarfile.TarInfo(f"data/{name}")
            info.size, info.mode, info.mtime = len(files[name]), 0o644, 0
            tar.addfile(info, io.BytesIO(files[name]))
    raw = buf.getvalue()
    return raw, gzip.compress(raw, compresslevel=9, mtime=0)


def build_layout(adapter_dir: str | Path, out: str | Path, readme: str | None = None) -> Layout:
    """Write an OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256/``) under ``out``."""
    adapter_dir, out = Path(adapter_dir), Path(out)
    missing = [f for f in ADAPTER_FILES if not (adapter_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{adapter_dir}: missing {', '.join(missing)} (KAITO needs both)")
    raw, gz = _layer(adapter_dir, readme)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [_digest(raw)]}}, sort_keys=True).encode()
    adapter_cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    annotations = {"org.opencontainers.image.title": adapter_dir.name,
                   "org.opencontainers.image.description": "LoRA adapter (PEFT) packaged by loraforge",
                   "loraforge.base_model": str(adapter_cfg.get("base_model_name_or_path") or "")}
    return write_layout(out, CONFIG, config, [(LAYER, gz, None)], annotations)


def write_layout(out: str | Path, config_type: str, config: bytes, layers: list[tuple[str, bytes, dict | None]],
                 annotations: dict | None = None) -> Layout:
    """An OCI image layout of one manifest: ``config`` and ``layers`` ((media type, bytes, annotations)),
    written beside ``out`` and moved into place, so a failed export leaves no half layout."""
    out = Path(out)
    descs = []
    for media, data, notes in layers:
        desc = {"mediaType": media, "digest": _digest(data), "size": len(data)}
        if notes:
            desc["annotations"] = notes
        descs.append(desc)
    body = {"schemaVersion": 2, "mediaType": MANIFEST,
            "config": {"mediaType": config_type, "digest": _digest(config), "size": len(config)}, "layers": descs}
    if annotations:
        body["annotations"] = annotations
    manifest = json.dumps(body, sort_keys=True).encode()
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    blobs_dir = tmp / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True, exist_ok=True)
    for data in (*(d for _, d, _ in layers), config, manifest):
        (blobs_dir / _digest(data).split(":")[1]).write_bytes(data)
    (tmp / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": MANIFEST, "digest": _digest(manifest), "size": len(manifest),
                            "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}
    (tmp / "index.json").write_text(json.dumps(index, indent=2))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    os.replace(tmp, out)
    blob = lambda d: out / "blobs" / "sha256" / d.split(":")[1]  # noqa: E731
    blobs = {d["digest"]: (d["mediaType"], blob(d["digest"])) for d in descs}
    blobs[_digest(config)] = (config_type, blob(_digest(config)))
    return Layout(out, _digest(manifest), manifest, blobs)


REF_RE = re.compile(r"^(?P<host>[^/]+)/(?P<repo>[a-z0-9]+(?:[._/-][a-z0-9]+)*)(?::(?P<tag>[\w][\w.-]{0,127}))?$")


def parse_ref(ref: str) -> tuple[str, str, str]:
    """'host[:port]/repo/name[:tag]' -> (host, repo, tag); the host part is required (no Docker Hub guess)."""
    m = REF_RE.match(ref)
    if not m or ("." not in m["host"] and ":" not in m["host"] and m["host"] != "localhost"):
        raise ConfigError(f"--push {ref!r}: expected REGISTRY/REPOSITORY[:TAG], e.g. 127.0.0.1:5000/adapters/k8s:v1")
    return m["host"], m["repo"], m["tag"] or "latest"


def _base_url(host: str, plain_http: bool) -> str:
    local = host.split(":")[0] in ("localhost", "127.0.0.1", "[::1]")
    return f"{'http' if plain_http or local else 'https'}://{host}"


def _check(r, what: str, ok=(200, 201, 202)) -> None:
    if r.status_code not in ok:
        raise RegistryError(f"{what}: HTTP {r.status_code} {r.text[:300]}")


def push_layout(layout: Layout, ref: str, plain_http: bool = False, timeout: float = 120) -> dict:
    """Upload blobs (skipping ones the registry has) and the manifest; pull back and check digests."""
    import httpx

    host, repo, tag = parse_ref(ref)
    base = f"{_base_url(host, plain_http)}/v2/{repo}"
    with httpx.Client(timeout=timeout) as client:
        for digest, (_, path) in layout.blobs.items():
            if client.head(f"{base}/blobs/{digest}").status_code == 200:
                continue
            r = client.post(f"{base}/blobs/uploads/")
            _check(r, f"start upload to {repo}")
            location = httpx.URL(base).join(r.headers["location"]).copy_merge_params({"digest": digest})
            r = client.put(location, content=path.read_bytes(),
                           headers={"content-type": "application/octet-stream"})
            _check(r, f"upload blob {digest}")
        r = client.put(f"{base}/manifests/{tag}", content=layout.manifest, headers={"content-type": MANIFEST})
        _check(r, f"put manifest {repo}:{tag}")
        remote = r.headers.get("docker-content-digest")
        if remote and remote != layout.manifest_digest:
            raise RegistryError(f"registry stored manifest {remote}, expected {layout.manifest_digest}")
    pulled = pull_verified(ref, plain_http=plain_http, timeout=timeout)
    if pulled["manifest_digest"] != layout.manifest_digest:
        raise RegistryError(f"pulled manifest {pulled['manifest_digest']} != pushed {layout.manifest_digest}")
    return {"ref": f"{host}/{repo}:{tag}", "digest": layout.manifest_digest,
            "pinned": f"{host}/{repo}@{layout.manifest_digest}"}


def pull_verified(ref: str, plain_http: bool = False, timeout: float = 120) -> dict:
    """Manifest and blobs of ``ref``, every blob checked against its digest and size.

    Returns {'manifest_digest', 'manifest' (parsed), 'blobs' (digest -> bytes)}.
    """
    import httpx

    host, repo, tag = parse_ref(ref)
    base = f"{_base_url(host, plain_http)}/v2/{repo}"
    with httpx.Client(timeout=timeout) as client:
        r = client.get(f"{base}/manifests/{tag}", headers={"accept": MANIFEST})
        _check(r, f"get manifest {repo}:{tag}", ok=(200,))
        manifest = json.loads(r.content)
        blobs = {}
        for desc in [manifest["config"], *manifest["layers"]]:
            b = client.get(f"{base}/blobs/{desc['digest']}", follow_redirects=True)
            _check(b, f"get blob {desc['digest']}", ok=(200,))
            if _digest(b.content) != desc["digest"] or len(b.content) != desc["size"]:
                raise RegistryError(f"blob {desc['digest']}: content does not match its digest/size")
            blobs[desc["digest"]] = b.content
    return {"manifest_digest": _digest(r.content), "manifest": manifest, "blobs": blobs}


def pull(ref: str, out: str | Path | None = None, plain_http: bool = False, timeout: float = 120) -> dict:
    """Fetch manifest and blobs, verify every digest; with ``out``, unpack ``data/`` there like KAITO's puller."""
    pulled = pull_verified(ref, plain_http=plain_http, timeout=timeout)
    manifest, blobs = pulled["manifest"], pulled["blobs"]
    files = {}
    for desc in manifest["layers"]:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blobs[desc["digest"]]))) as tar:
            for m in tar.getmembers():
                if m.isfile() and m.name.startswith("data/") and "/" not in m.name[5:]:
                    files[m.name[5:]] = tar.extractfile(m).read()
    if out:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (out / name).write_bytes(data)
    return {"manifest_digest": pulled["manifest_digest"], "files": sorted(files),
            "sha256": {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}}
