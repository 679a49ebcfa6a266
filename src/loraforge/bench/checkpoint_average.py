"""A run's adapter with its trainable weights averaged over its kept checkpoints and its final weights.

A screen for ``docs/benchmarks.md`` (#19): whether the uniform mean of the last checkpoints of one run (the
last 40% of a 200-step cosine schedule, with ``save_every: 40`` and two checkpoints kept) lowers the
seed-to-seed spread of the PII tagger. It writes a run-like folder (``adapter/`` + the run's ``config.yaml``)
that ``loraforge mask`` and ``python -m loraforge.bench.pii_errors --adapter`` read like any run:

    python -m loraforge.bench.checkpoint_average runs/pii-tagger-v13 --out runs/pii-tagger-v13-avg
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from loraforge.runs import RunDir
from loraforge.runs.files import atomic_dir
from loraforge.train.checkpoint import TRAINABLE_FILE, kept_checkpoints


def adapter_key(checkpoint_key: str) -> str:
    """A training checkpoint's parameter name as PEFT saves it in the adapter file (no adapter name). PEFT's
    ``get_peft_model_state_dict`` does this on a loaded model; here no model is built, only files are read."""
    return checkpoint_key.replace("modules_to_save.default.", "").replace(".default.", ".")


def average(run: RunDir) -> tuple[dict[str, torch.Tensor], int]:
    """The mean of the final adapter's weights and every kept checkpoint's, and how many states went in."""
    final = load_file(str(run.adapter_dir / "adapter_model.safetensors"))
    states = [final]
    for checkpoint in kept_checkpoints(run.path):
        weights = load_file(str(checkpoint / TRAINABLE_FILE))
        states.append({adapter_key(k): v for k, v in weights.items()})
        if set(states[-1]) != set(final):
            raise ValueError(f"{checkpoint}: its trainable weights are not the adapter's ({run.adapter_dir})")
    mean = {k: torch.stack([s[k].float() for s in states]).mean(0).to(final[k].dtype).contiguous() for k in final}
    return mean, len(states)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=RunDir)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.out.exists():
        raise SystemExit(f"{args.out} exists; name another folder")
    mean, n = average(args.run)
    with atomic_dir(args.out) as tmp:
        out = RunDir(tmp)
        shutil.copytree(args.run.adapter_dir, out.adapter_dir)
        save_file(mean, str(out.adapter_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
        shutil.copy(args.run.config_path, out.config_path)
    print(f"{args.out}: the mean of {n} states of {args.run}")


if __name__ == "__main__":
    main()
