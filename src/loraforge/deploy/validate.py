"""Offline validation of rendered manifests: core kinds with kubernetes-validate, custom resources
against the openAPIV3Schema of the CRDs shipped in ``deploy/crds/`` (copies, Apache-2.0).

CRD schemas leave objects open, but the API server *prunes* unknown fields of structural schemas
silently; a typo would vanish without an error. So objects that list ``properties`` are closed here
(``additionalProperties: false``) unless they say ``x-kubernetes-preserve-unknown-fields``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

from loraforge.config import ConfigError

K8S_VERSION = "1.33"
CRD_FILES = {
    ("kaito.sh", "Workspace"): "kaito.sh_workspaces.yaml",
    ("kubeflow.org", "PyTorchJob"): "kubeflow.org_pytorchjobs.yaml",
    ("trainer.kubeflow.org", "TrainJob"): "trainer.kubeflow.org_trainjobs.yaml",
}
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ManifestError(ConfigError):
    """A rendered or user-supplied manifest that the cluster would reject (or silently prune)."""


def crd_text(filename: str) -> str:
    return resources.files("loraforge.deploy").joinpath("crds", filename).read_text(encoding="utf-8")


def _closed(schema):
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _closed(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@lru_cache(maxsize=None)
def crd_schema(group: str, kind: str, version: str) -> dict:
    filename = CRD_FILES.get((group, kind))
    if filename is None:
        raise ManifestError(f"no CRD shipped for {kind} ({group}); known: "
                            + ", ".join(f"{k} ({g})" for g, k in CRD_FILES))
    crd = next(d for d in yaml.load_all(crd_text(filename), Loader=_Loader) if d)
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            schema = _closed(v["schema"]["openAPIV3Schema"])
            schema["properties"]["metadata"] = {"type": "object"}  # checked separately below
            return schema
    raise ManifestError(f"{kind} has no version {version!r} in {filename}; "
                        f"served: {', '.join(v['name'] for v in crd['spec']['versions'])}")


def _check_metadata(doc: dict, where: str) -> None:
    meta = doc.get("metadata") or {}
    name = meta.get("name")
    if not name or len(name) > 63 or not _DNS1123.match(name):
        raise ManifestError(f"{where}: metadata.name {name!r} must be a DNS-1123 label (a-z, 0-9, '-', <= 63)")


def validate_doc(doc: dict, where: str = "manifest") -> str:
    """Validate one resource; return how ('kubernetes-validate <ver>' or 'CRD <file>')."""
    if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
        raise ManifestError(f"{where}: not a Kubernetes resource (apiVersion and kind are required)")
    where = f"{where} ({doc['kind']} {(doc.get('metadata') or {}).get('name')})"
    _check_metadata(doc, where)
    group, _, version = doc["apiVersion"].rpartition("/")
    if (group, doc["kind"]) in CRD_FILES:
        try:
            jsonschema.Draft7Validator(crd_schema(group, doc["kind"], version)).validate(doc)
        except jsonschema.ValidationError as e:
            path = ".".join(str(p) for p in e.absolute_path) or "(top)"
            raise ManifestError(f"{where}: {path}: {e.message}") from None
        return f"CRD {CRD_FILES[(group, doc['kind'])]}"
    try:
        version_used = kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path) or "(top)"
        raise ManifestError(f"{where}: {path}: {e.message}") from None
    except kubernetes_validate.SchemaNotFoundError as e:
        raise ManifestError(f"{where}: {e.message}") from None
    return f"kubernetes-validate {version_used}"


def validate_docs(docs: list[dict], where: str = "manifest") -> list[str]:
    return [validate_doc(d, f"{where}[{i}]") for i, d in enumerate(docs)]


def validate_file(path: str | Path) -> list[str]:
    """Validate every resource of a (multi-document) YAML file; one 'kind/name: how' line each."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    try:
        docs = [d for d in yaml.load_all(path.read_text(encoding="utf-8"), Loader=_Loader) if d]
    except yaml.YAMLError as e:
        raise ManifestError(f"{path}: not valid YAML: {e}") from None
    if not docs:
        raise ManifestError(f"{path}: no resources")
    hows = validate_docs(docs, str(path))
    return [f"{d['kind']}/{d['metadata']['name']}: ok ({how})" for d, how in zip(docs, hows)]
