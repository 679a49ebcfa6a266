"""Atomic file and folder writes: a reader (or a crash) never sees half a file or half a folder.

The one helper every module uses (run directories, exports, datasets, manifests, checkpoints).
Files are written 0644 and folders 0755, as other ML tools do, so a container running as another
uid (the serve image runs as uid 1000) can read a mounted adapter.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

FILE_MODE = 0o644
DIR_MODE = 0o755


def atomic_write(path: str | Path, data: str | bytes, mode: int = FILE_MODE) -> Path:
    """Write ``data`` to ``path`` whole or not at all (temporary sibling + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def make_readable(root: str | Path) -> None:
    """Files 0644 and folders 0755 under ``root`` (libraries such as safetensors may write 0600)."""
    root = Path(root)
    if root.is_file():
        os.chmod(root, FILE_MODE)
        return
    os.chmod(root, DIR_MODE)
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), DIR_MODE)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), FILE_MODE)


@contextlib.contextmanager
def atomic_dir(path: str | Path, replace: bool = True) -> Iterator[Path]:
    """Yield an empty temporary sibling folder; on success it replaces ``path`` in one rename.

    On an exception the temporary folder is removed and ``path`` is left as it was. With
    ``replace=False`` an existing ``path`` is an error (``FileExistsError``), checked up front.
    """
    path = Path(path)
    if path.exists() and not replace:
        raise FileExistsError(f"{path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        make_readable(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
