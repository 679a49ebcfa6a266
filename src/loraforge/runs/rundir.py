"""The run directory: the one contract between train, eval, report, export, compare, estimate and serve.

    run_dir/config.yaml          the resolved config
    run_dir/adapter/             the trained adapter (PEFT format; bottleneck or full-model folders too)
    run_dir/checkpoints/         resumable checkpoints (step-NNNNNN/)
    run_dir/metrics.json         RunMetrics: before/after metrics and training statistics
    run_dir/metrics_before.json  the base model's metrics, kept so a resume does not re-score it
    run_dir/history.jsonl        one line per optimizer step
    run_dir/outputs_before.jsonl, outputs_after.jsonl   test-set outputs of the base and tuned model
    run_dir/report.md|.html, loss.png                   the report

Every path is a property here, and ``resolve_adapter`` is the only code that turns what a user typed
(a run directory, an adapter folder, a file inside one) into an adapter folder.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from loraforge.config import ConfigError, RunConfig, load_config
from loraforge.runs.files import atomic_write
from loraforge.runs.metrics import RunMetrics


class RunDirError(ConfigError):
    """A path that is not what the command needs, with what to do instead."""


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __init__(self, path: str | os.PathLike):
        object.__setattr__(self, "path", Path(path))

    # A RunDir stands wherever a path to the run directory did: open(), Path(run), str(run), run / "x".
    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # --- layout ---------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def metrics_before_path(self) -> Path:
        return self.path / "metrics_before.json"

    @property
    def history_path(self) -> Path:
        return self.path / "history.jsonl"

    def outputs_path(self, stage: str) -> Path:
        """``stage`` is 'before' (base model) or 'after' (tuned model)."""
        return self.path / f"outputs_{stage}.jsonl"

    @property
    def report_md(self) -> Path:
        return self.path / "report.md"

    @property
    def report_html(self) -> Path:
        return self.path / "report.html"

    @property
    def loss_png(self) -> Path:
        return self.path / "loss.png"

    # --- state ----------------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.path.is_dir()

    def is_finished(self) -> bool:
        return self.metrics_path.is_file() and self.config_path.is_file()

    def has_checkpoint(self) -> bool:
        return self.checkpoints_dir.is_dir() and any(self.checkpoints_dir.glob("step-*"))

    def is_interrupted(self) -> bool:
        """Started (config written) but not finished: ``--resume`` continues it."""
        return self.config_path.is_file() and not self.metrics_path.is_file()

    # --- reading and writing --------------------------------------------------------------------
    def config(self) -> RunConfig:
        if not self.config_path.is_file():
            raise RunDirError(f"{self.path}: no config.yaml (not a loraforge run directory)")
        return load_config(self.config_path)

    def write_config(self, cfg: RunConfig) -> Path:
        return atomic_write(self.config_path, cfg.to_yaml())

    def metrics(self) -> RunMetrics:
        if not self.metrics_path.is_file():
            hint = " (an interrupted run: continue it with `loraforge train ... --resume`)" if self.is_interrupted() else ""
            raise RunDirError(f"{self.path}: no metrics.json, not a finished run{hint}")
        try:
            return RunMetrics.model_validate_json(self.metrics_path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise RunDirError(f"{self.metrics_path}: not a loraforge metrics file: {e}") from None

    def write_metrics(self, metrics: RunMetrics) -> Path:
        return atomic_write(self.metrics_path, metrics.to_json())

    def metrics_before(self) -> dict | None:
        """The base model's scores saved by an earlier attempt of this run (None when absent)."""
        if not self.metrics_before_path.is_file():
            return None
        return json.loads(self.metrics_before_path.read_text(encoding="utf-8"))

    def write_metrics_before(self, scores: dict) -> Path:
        return atomic_write(self.metrics_before_path, json.dumps(scores, indent=2))

    def history(self) -> list[dict]:
        if not self.history_path.is_file():
            return []
        return [json.loads(line) for line in self.history_path.read_text(encoding="utf-8").splitlines() if line]

    def write_history(self, rows: list[dict]) -> Path:
        return atomic_write(self.history_path, "".join(json.dumps(r) + "\n" for r in rows))

    def outputs(self, stage: str) -> dict[str, str]:
        """{example id: output} of a stage's test-set outputs ({} when absent)."""
        path = self.outputs_path(stage)
        if not path.is_file():
            return {}
        return {r["id"]: r["output"] for r in map(json.loads, path.read_text(encoding="utf-8").splitlines()) if r}

    def write_outputs(self, stage: str, ids: list[str | None], outputs: list[str]) -> Path:
        """One line per row: its id, its output, and what evaluation's guards did to it where they did (``outputs``
        as ``eval.inference.Outputs``: ``kept_source``, ``loop_cut``)."""
        notes = getattr(outputs, "notes", {})
        lines = [json.dumps({"id": i, "output": o, **notes.get(k, {})}, ensure_ascii=False)
                 for k, (i, o) in enumerate(zip(ids, outputs))]
        return atomic_write(self.outputs_path(stage), "\n".join(lines) + "\n")

    def prepare(self, resume: bool, overwrite: bool) -> None:
        """Never overwrite a run silently: an existing, non-empty directory needs --resume or --overwrite."""
        if resume:
            if self.is_finished():
                raise RunDirError(f"{self.path} is a finished run (metrics.json exists); nothing to resume. "
                                  "Use --overwrite to train it again, or another --out")
            if not self.has_checkpoint():
                raise RunDirError(f"{self.path}: no checkpoint to resume from (checkpoints/step-*); "
                                  "train without --resume (add --overwrite to replace what is there)")
            return
        if self.path.exists() and any(self.path.iterdir()):
            if not overwrite:
                raise RunDirError(f"{self.path} already exists; use --resume to continue it, --overwrite to "
                                  "replace it, or another output.dir (--out)")
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)


# --- adapters ---------------------------------------------------------------------------------

ADAPTER_MARKERS = {"adapter_config.json": "peft", "bottleneck_config.json": "bottleneck", "config.json": "full"}
"""The file that says what kind of adapter folder it is (checked in this order)."""


TAGGER_FILE = "tagger.json"
"""Beside a PEFT adapter: it trains a token-tagging head (``models/tagger.py``), its labels and attention."""


def tagger_meta(adapter_dir: str | Path) -> dict | None:
    """A tagger adapter's labels and attention (``{"labels": [...], "bidirectional": bool, "lookahead": int}``;
    adapters from before lookahead have none: 0), else None."""
    path = Path(adapter_dir) / TAGGER_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


@dataclass(frozen=True)
class AdapterRef:
    """An adapter folder, what kind it is, and the run it came from (None for a bare folder)."""

    dir: Path
    kind: str  # 'peft', 'bottleneck' or 'full' (a whole transformers model)
    run: RunDir | None

    def peft_config(self) -> dict:
        """adapter_config.json as PEFT wrote it ({"peft_type": "FULL"} for a whole model)."""
        if self.kind == "peft":
            return json.loads((self.dir / "adapter_config.json").read_text(encoding="utf-8"))
        if self.kind == "full":
            return {"peft_type": "FULL"}
        return {"peft_type": "BOTTLENECK"}


def _adapter_kind(folder: Path) -> str | None:
    for marker, kind in ADAPTER_MARKERS.items():
        if (folder / marker).is_file():
            return kind
    return None


def resolve_adapter(path: str | Path | AdapterRef) -> AdapterRef:
    """A run directory, its ``adapter/`` folder or a bare adapter folder -> ``AdapterRef`` (one already resolved
    comes back as it is, so a caller can resolve early and pass the result on).

    Errors say what to pass instead: a file inside an adapter folder names the folder; a run that
    was interrupted before it saved its adapter suggests ``--resume``.
    """
    if isinstance(path, AdapterRef):
        return path
    path = Path(path)
    if path.is_file():
        hint = f"; pass its folder: {path.parent}" if _adapter_kind(path.parent) else ""
        raise RunDirError(f"{path} is a file; --adapter takes a folder (a run directory or an adapter folder){hint}")
    if not path.exists():
        raise RunDirError(f"adapter not found: {path} (expected a run directory or an adapter folder)")
    run = RunDir(path)
    if run.adapter_dir.is_dir():
        kind = _adapter_kind(run.adapter_dir)
        if kind:
            return AdapterRef(run.adapter_dir, kind, run)
    kind = _adapter_kind(path)
    if kind and not (kind == "full" and run.config_path.is_file()):
        parent = RunDir(path.parent)
        return AdapterRef(path, kind, parent if parent.config_path.is_file() else None)
    if run.config_path.is_file() or run.checkpoints_dir.is_dir():
        raise RunDirError(f"{path}: this run has no adapter yet (interrupted?); continue it with "
                          f"`loraforge train {run.config_path} --out {path} --resume`")
    raise RunDirError(f"{path}: not an adapter folder (no {', '.join(ADAPTER_MARKERS)}) or run directory")
