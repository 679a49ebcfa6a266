"""Run one function in a fresh Python process: ``run_isolated("pkg.module:function", {"arg": 1})``.

Why a process: peak RSS is a per-process high-water mark, so jobs that are compared on memory
(``compare``'s methods, the training bench) must not share one; and a crash or an exhausted heap in
one job must not take the others with it. The child is ``python -m loraforge.runs.isolated TARGET
JSON``: a named function with JSON keyword arguments, never a code string. No torch here.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from typing import IO, Any


def run_isolated(target: str, kwargs: dict[str, Any] | None = None, echo: IO[str] | None = sys.stderr,
                 env: dict[str, str] | None = None) -> str | None:
    """Call ``target`` (``module:function``) with ``kwargs`` in a child process, streaming its stderr
    line by line to ``echo`` (None: keep quiet). Returns None on success, else the error: the last
    line the child wrote to stderr (a traceback ends with the exception), or its exit status."""
    _split(target)  # a malformed target is the caller's bug: fail here, not in the child
    cmd = [sys.executable, "-m", "loraforge.runs.isolated", target, json.dumps(kwargs or {})]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    last = ""
    assert proc.stderr is not None
    for line in proc.stderr:
        if echo is not None:
            echo.write(line)
            echo.flush()
        last = line.strip() or last
    code = proc.wait()
    if code == 0:
        return None
    return last or f"{target} exited with status {code}"


TRAIN_ENTRY = "loraforge.workflows.train:train_config_file"  # ``train_run`` on a config file


def train_isolated(cfg, config_path, who: str, ignore: dict | None = None, force: bool = False) -> str | None:
    """Train ``cfg`` into its ``output.dir`` in a fresh process (``compare``'s methods, ``ablate``'s rows),
    unless that directory already holds a finished run of the same config and not ``force``; ``ignore``:
    config parts that may differ (pydantic ``exclude``; ``output`` always). ``config_path``: where the
    child's config file is written. Returns None, or the error."""
    from pathlib import Path

    from loraforge.runs.files import atomic_write
    from loraforge.runs.rundir import RunDir

    run, ignore = RunDir(cfg.output.dir), {"output": True, **(ignore or {})}
    if not force and run.is_finished() and run.config().model_dump(exclude=ignore) == cfg.model_dump(exclude=ignore):
        print(f"[loraforge] {who}: reusing {run} (same config)", file=sys.stderr)
        return None
    atomic_write(Path(config_path), cfg.to_yaml())
    print(f"[loraforge] {who}: training -> {run}", file=sys.stderr, flush=True)
    return run_isolated(TRAIN_ENTRY, {"config_path": str(config_path)})


def _split(target: str) -> tuple[str, str]:
    module, sep, function = target.partition(":")
    if not (module and sep and function):
        raise ValueError(f"target {target!r} must look like 'package.module:function'")
    return module, function


def main(argv: list[str]) -> None:
    target, kwargs = argv[0], json.loads(argv[1]) if len(argv) > 1 else {}
    module, function = _split(target)
    getattr(importlib.import_module(module), function)(**kwargs)


if __name__ == "__main__":
    main(sys.argv[1:])
