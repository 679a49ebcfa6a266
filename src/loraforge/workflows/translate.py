"""``loraforge translate``: run a base model or a trained adapter on texts (for PII runs: mask them).

A multi-task run (``data.tasks``) runs one of its tasks, with that task's direction, template, system
prompt and markup handling: the one named by ``task`` (``--task``), else its first translate task.

``translate`` returns the outputs and which of them were cut by their token budget;
``translate_texts`` returns the texts alone and reports each cut one through ``on_cut`` (by default
a warning on stderr naming the segment and how to raise the budget).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from loraforge.config import RunConfig, load_config

if TYPE_CHECKING:
    from loraforge.runs import AdapterRef

CutHandler = Callable[[int, int], None]
"""Called as ``on_cut(index, budget)`` for each output that hit its token budget (0-based index)."""


@dataclass
class Translation:
    outputs: list[str]
    cut: list[int] = field(default_factory=list)
    """0-based indices of outputs that hit their token budget before the model ended them."""
    budget: int = 256
    """The most new tokens any output could have (``max_new_tokens``)."""


def warn_cut(index: int, budget: int) -> None:
    """The default ``on_cut``: one line on stderr per cut output."""
    print(f"[loraforge] warning: segment {index + 1} was cut at its budget of {budget} new tokens before the model "
          "finished it (with eval.unfinished_keeps_source a translation comes back as its source); raise the budget with "
          "--max-new-tokens (Python: max_new_tokens=)", file=sys.stderr, flush=True)


def run_config(adapter: str | Path | AdapterRef | None, model: str | None, config_path: str | Path | None,
               task: str | None = None) -> RunConfig:
    """The config that decides template, task and model: the given file, else the adapter's own run's,
    else the defaults; ``model`` replaces the base model. Narrowed to one task (``task_config``)."""
    from loraforge.eval.inference import task_run_config
    from loraforge.runs import resolve_adapter

    ref = resolve_adapter(adapter) if adapter is not None else None  # a wrong path fails before any load
    if config_path:
        cfg = load_config(config_path)
    elif ref is not None and ref.run is not None:
        cfg = ref.run.config()
    else:
        cfg = RunConfig()
    if model:
        cfg.model.name = model
    if task is None and not cfg.data.tasks:
        return cfg  # a single-task run runs its one task, whatever it is
    _, data = cfg.data.task_config(task, "translate" if task is None else None)
    return task_run_config(cfg, data)


def translate(texts: list[str], adapter: str | Path | None = None, model: str | None = None,
              config_path: str | Path | None = None, batch_size: int = 32, max_new_tokens: int = 256,
              task: str | None = None) -> Translation:
    """Outputs for ``texts`` in order, and which were cut. An output cut by its task budget (about
    the source's length, for translation) is generated again with the whole ``max_new_tokens``, so
    only outputs longer than ``max_new_tokens`` come back cut; one that ends in a repetition loop is cut
    after the loop's first pass instead (as page translation and evaluation with
    ``eval.unfinished_keeps_source`` do)."""
    from loraforge.eval.inference import generate_restored, load_for_inference
    from loraforge.runs import resolve_adapter

    ref = resolve_adapter(adapter) if adapter is not None else None  # once: run_config and the load take it
    cfg = run_config(ref, model, config_path, task)
    if not texts:
        return Translation([], [], max_new_tokens)
    loaded, net = load_for_inference(cfg, ref)
    out, _ = generate_restored(loaded, net, cfg, texts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                               progress=len(texts) > batch_size, widen_cut=True, trim_loops=True, keep_unfit=True)
    return Translation(out.texts, out.cut, max_new_tokens)


def translate_texts(texts: list[str], adapter: str | Path | None = None, model: str | None = None,
                    config_path: str | Path | None = None, batch_size: int = 32, max_new_tokens: int = 256,
                    on_cut: CutHandler | None = warn_cut, task: str | None = None) -> list[str]:
    """Translate (or, for other tasks, transform) texts with the base model or a trained adapter.
    Each output that hit the ``max_new_tokens`` budget is passed to ``on_cut`` (None: ignore)."""
    result = translate(texts, adapter, model, config_path, batch_size, max_new_tokens, task)
    if on_cut is not None:
        for i in result.cut:
            on_cut(i, result.budget)
    return result.outputs
