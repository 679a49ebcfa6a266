"""Containers, Kubernetes manifests and sizing. Imports only config: no torch."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write(path: str | Path, text: str) -> Path:
    """Write a text file whole or not at all (tmp + os.replace): a half-written manifest is worse than none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
