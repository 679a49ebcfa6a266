"""Checkpoints that resume exactly: trainable weights, optimizer, scheduler, RNG and data position.

Everything is safetensors or JSON (never pickle), written to a temporary folder and renamed into
place (``runs.atomic_dir``), so a crash mid-write leaves the previous checkpoint intact and never a
half one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from loraforge.runs.files import atomic_dir

KEEP = 2  # checkpoints kept on disk; older ones are deleted after a newer one is complete
TRAINABLE_FILE = "trainable.safetensors"  # a checkpoint's trainable weights, under the model's parameter names


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, s in state["state"].items():
        for key, value in s.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value.contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def save_checkpoint(run_dir: Path, step: int, model, optimizer, scheduler, meta: dict) -> Path:
    root = run_dir / "checkpoints"
    final = root / f"step-{step:06d}"
    with atomic_dir(final) as tmp:
        save_file(trainable_state(model), str(tmp / TRAINABLE_FILE))
        opt_tensors, opt_meta = _optimizer_tensors(optimizer)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        save_file({"torch": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
        state = {"step": step, "optimizer": opt_meta, "scheduler": scheduler.state_dict(), **meta}
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
    for old in kept_checkpoints(run_dir)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def kept_checkpoints(run_dir: Path) -> list[Path]:
    """The run's complete checkpoints, oldest first (a half-written one is never under its final name)."""
    return sorted((Path(run_dir) / "checkpoints").glob("step-*"))


def latest_checkpoint(run_dir: Path) -> Path | None:
    done = kept_checkpoints(run_dir)
    return done[-1] if done else None


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict:
    """Restore into already-built objects; returns the saved trainer state (step, history, ...)."""
    weights = load_file(str(path / TRAINABLE_FILE))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(weights) != set(params):
        raise ValueError(f"{path}: checkpoint does not match this model/adapter config (trainable weights differ)")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(weights[name])
    state = json.loads((path / "trainer_state.json").read_text())
    tensors = load_file(str(path / "optimizer.safetensors"))
    opt_state: dict = {}
    for key, value in list(tensors.items()) + list(state["optimizer"]["scalars"].items()):
        idx, name = key.split(".", 1)
        opt_state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": state["optimizer"]["param_groups"]})
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(load_file(str(path / "rng.safetensors"))["torch"])
    return state
