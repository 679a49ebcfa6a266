"""Running a trained (or base) model on texts the way its run was trained, and scoring it.

Prompts and stop tokens come from the data template (``data.templates.generation_prompts``), output
budgets from the task (``output_budgets``), and the adapter is merged into the base weights while
generating. The evaluate, train and translate workflows and the generation bench all call this, so
none of them builds prompts or budgets itself. No torch at import time: the CLI's fast paths import it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from loraforge.config import RunConfig
from loraforge.data.formats import Example

if TYPE_CHECKING:
    from loraforge.runs import AdapterRef

RATIO_TASKS = ("translate", "pii")
"""Tasks whose output is about as long as its input: a translation, a masked copy of the text."""
SOURCE_RATIO, SOURCE_SLACK = 1.25, 16
"""Their budget: on k8s:dev every Chinese reference fits in 1.2x the English tokens + 16."""


def source_budgets(tokenizer, sources: list[str], cap: int) -> list[int]:
    """New-token budget per output for a ``RATIO_TASKS`` task: ``SOURCE_RATIO`` x the source's tokens +
    ``SOURCE_SLACK``, at most ``cap``. A model that never stops then costs a bounded amount per row
    instead of ``cap``. Only for outputs as long as their source; other tasks: ``output_budgets``."""
    ids = tokenizer(sources, add_special_tokens=False)["input_ids"] if sources else []
    return [min(cap, int(SOURCE_RATIO * len(x)) + SOURCE_SLACK) for x in ids]


def output_budgets(tokenizer, sources: list[str], cap: int, task: str) -> list[int]:
    """New-token budget per output, by task: translation and PII masking from the source's length,
    anything else (``sft``: an answer can be far longer than its question) the whole ``cap``."""
    if task in RATIO_TASKS:
        return source_budgets(tokenizer, sources, cap)
    return [cap] * len(sources)


@contextlib.contextmanager
def merged_for_inference(model):
    """LoRA/DoRA/IA3 weights folded into the base weights while generating: every decode step then
    runs one matmul per layer instead of three (PEFT's merge_adapter/unmerge_adapter)."""
    from loraforge.methods.registry import can_merge_model

    mergeable = can_merge_model(model)
    if mergeable:
        model.merge_adapter()
    try:
        yield model
    finally:
        if mergeable:
            model.unmerge_adapter()


@contextlib.contextmanager
def prepared_for_generation(model, exact: bool):
    """fp32 weights when ``exact`` (eval.exact), then the adapter merged (in that order, so the merge
    round-trips exactly); yields the ``tie_margin`` that ``generate`` should use."""
    from loraforge.eval.generate import full_precision

    with full_precision(model, exact), merged_for_inference(model):
        yield "auto" if exact else None


def seq2seq_kwargs(tokenizer, family: str, data_cfg) -> dict:
    """mBART-50 needs the target language code as the first generated token (and the source code on
    the encoder side, which ``set_seq2seq_langs`` sets on the tokenizer)."""
    from loraforge.data.templates import set_seq2seq_langs

    if family != "seq2seq":
        return {}
    forced = set_seq2seq_langs(tokenizer, data_cfg)
    return {} if forced is None else {"forced_bos_token_id": forced}


@dataclass
class Generated:
    """Outputs in input order, each row's new-token budget, and the rows cut by their budget."""

    texts: list[str]
    budgets: list[int]
    cut: list[int] = field(default_factory=list)
    """Indices of outputs that reached their budget before the model ended them (text is cut short)."""
    looped: list[int] = field(default_factory=list)
    """Indices of outputs that ended in a repetition loop, cut after its first pass (``trim_loops``)."""
    short: list[int] = field(default_factory=list)
    """Indices of translations replaced by their source for being too short (``keep_source_if_unfit``)."""
    unfinished: list[int] = field(default_factory=list)
    """Indices of cut translations replaced by their source (``keep_source_if_unfit``)."""


def _cut_rows(ids: list[list[int]], budgets: list[int], stops: set[int]) -> list[int]:
    return [i for i, (row, budget) in enumerate(zip(ids, budgets)) if len(row) >= budget and not stops & set(row)]


def with_memory(sources: list[str], data) -> list[str]:
    """``sources`` with their translation-memory matches when ``data.memory`` is set (as training saw
    them; markup already protected by the caller where the run protects it)."""
    if data.memory is None:
        return sources
    from loraforge.data.memory import with_match
    from loraforge.data.splits import task_memory

    memory = task_memory(data)
    return [with_match(s, memory.lookup(s)) for s in sources]


def generate_answers(loaded, model, cfg: RunConfig, sources: list[str], systems: list[str | None] | None = None,
                     max_new_tokens: int | None = None, batch_size: int | None = None, progress: bool = True,
                     widen_cut: bool = False, trim_loops: bool = False, sampler=None, keep_unfit: bool = False) -> Generated:
    """Greedy (``eval.num_beams`` > 1: beam-search) outputs for ``sources`` under the run's template,
    task budgets and ``eval.exact`` (``sampler``: an ``eval.generate.Sampler`` draws them instead).

    ``max_new_tokens`` (default eval.max_new_tokens) caps every budget. ``widen_cut``: rows cut by
    their task budget (below the cap) are generated again with the whole cap, for callers that want
    whole outputs more than a bounded cost (``translate``); rows still cut are in ``Generated.cut``.
    ``trim_loops``: a cut row that ends in a repetition loop (``loop_end``) is cut after the loop's
    first pass instead, listed in ``Generated.looped`` and not widened (more budget only buys more
    repeats); for page translation, where one looping paragraph otherwise costs the whole cap.
    ``keep_unfit``: translations that cannot be shipped come back as their source (``keep_source_if_unfit``),
    for the callers that ship or score translations (not back-translation, whose source is the other language).
    """
    from loraforge.data.templates import generation_prompts
    from loraforge.eval.generate import generate_ids

    tok, family = loaded.tokenizer, loaded.family
    cap = max_new_tokens or cfg.eval.max_new_tokens
    prompts, stop_ids = generation_prompts(tok, with_memory(sources, cfg.data), cfg.data, family, systems)
    budgets = output_budgets(tok, sources, cap, cfg.data.task)
    stops = set(stop_ids or []) | ({tok.eos_token_id} if tok.eos_token_id is not None else set())
    kwargs = dict(max_new_tokens=cap, batch_size=batch_size or cfg.eval.batch_size, family=family, stop_ids=stop_ids,
                  progress=progress, sampler=sampler, num_beams=1 if sampler else cfg.eval.num_beams,
                  **seq2seq_kwargs(tok, family, cfg.data))
    with prepared_for_generation(model, cfg.eval.exact) as tie_margin:
        ids = generate_ids(model, tok, prompts, budgets=budgets, tie_margin=tie_margin, **kwargs)
        looped = _trim_loops(ids, _cut_rows(ids, budgets, stops)) if trim_loops else []  # trimmed: no longer cut
        short = [i for i in _cut_rows(ids, budgets, stops) if budgets[i] < cap] if widen_cut else []
        if short:
            again = generate_ids(model, tok, [prompts[i] for i in short], budgets=[cap] * len(short),
                                 tie_margin=tie_margin, **kwargs)
            for i, row in zip(short, again):
                ids[i], budgets[i] = row, cap
            if trim_loops:
                looped = sorted(looped + _trim_loops(ids, [i for i in _cut_rows(ids, budgets, stops) if i in short]))
    texts = [tok.decode(row, skip_special_tokens=True).strip() for row in ids]
    out = Generated(texts, budgets, _cut_rows(ids, budgets, stops), looped)
    return keep_source_if_unfit(tok, sources, out, cfg) if keep_unfit else out


SHORT_MIN_TOKENS = 32
"""Sources shorter than this are never judged too short: a heading's translation can be one word."""


def keep_source_if_unfit(tokenizer, sources: list[str], out: Generated, cfg: RunConfig) -> Generated:
    """Translations that cannot be shipped replaced by their source, in place: ones under
    ``eval.min_output_ratio`` x their source's tokens (sources of at least ``SHORT_MIN_TOKENS``), listed
    in ``out.short``, and, with ``eval.unfinished_keeps_source``, ones still cut by their budget
    (``out.cut``: the model never ended them), listed in ``out.unfinished``. Why: a model that stops
    early drops most of a paragraph (seen: 81 tokens for a 406-token source), one that loops writes
    repeats until its budget ends (seen: 2,491 characters for a 1,713-character list), and a shortened
    or garbled translation passes review where an English paragraph does not. Translation only: for any
    other task (and for back-translation, whose source is the other language) the outputs are left alone."""
    if cfg.data.task != "translate" or not sources:
        return out
    ratio = cfg.eval.min_output_ratio
    if ratio:
        src = tokenizer(sources, add_special_tokens=False)["input_ids"]
        hyp = tokenizer(out.texts, add_special_tokens=False)["input_ids"]
        out.short = [i for i, (s, h) in enumerate(zip(src, hyp)) if len(s) >= SHORT_MIN_TOKENS and len(h) < ratio * len(s)]
    out.unfinished = [i for i in out.cut if i not in out.short] if cfg.eval.unfinished_keeps_source else []
    for i in out.short + out.unfinished:
        out.texts[i] = sources[i]
    return out


def _trim_loops(ids: list[list[int]], rows: list[int]) -> list[int]:
    """Cut each of ``rows`` that ends in a repetition loop after the loop's first pass (in place);
    returns the rows cut."""
    from loraforge.eval.generate import loop_end

    trimmed = []
    for i in rows:
        end = loop_end(ids[i])
        if end is not None:
            ids[i] = ids[i][:end]
            trimmed.append(i)
    return trimmed


def generate_restored(loaded, model, cfg: RunConfig, sources: list[str], systems: list[str | None] | None = None,
                      keep_unfit: bool = False, **kwargs) -> tuple[Generated, dict | None]:
    """``generate_answers``, with markup protected and restored when ``data.protect_markup`` is on:
    the model sees {n} placeholders, the caller gets the real markup back, and every placeholder that
    did not come back exactly once is repaired and counted (the second value; None when off).
    ``keep_unfit`` judges the restored translations against the real sources."""
    if not cfg.data.protect_markup:
        return generate_answers(loaded, model, cfg, sources, systems, keep_unfit=keep_unfit, **kwargs), None
    from loraforge.data.markup import protect, restore_batch

    protected = [protect(s) for s in sources]
    out = generate_answers(loaded, model, cfg, [p.text for p in protected], systems, **kwargs)
    restored, stats = restore_batch(protected, out.texts)
    out.texts = [r.text for r in restored]
    if keep_unfit:
        keep_source_if_unfit(loaded.tokenizer, sources, out, cfg)
    return out, stats.as_dict()


class Outputs(list):
    """Outputs in input order, and ``notes``: per row index, what the guards did to it (``kept_source``: ``short``
    or ``unfinished``, the row is its English source; ``loop_cut``: a loop cut after its first pass). The run's
    outputs files carry the notes, so a reader can tell a row kept in English from a translation."""

    def __init__(self, texts: list[str], notes: dict[int, dict] | None = None):
        super().__init__(texts)
        self.notes = notes or {}


def _notes(out: Generated) -> dict[int, dict]:
    notes: dict[int, dict] = {}
    for i in out.looped:
        notes.setdefault(i, {})["loop_cut"] = True
    for kind in ("short", "unfinished"):
        for i in getattr(out, kind):
            notes.setdefault(i, {})["kept_source"] = kind
    return notes


def evaluate(loaded, model, cfg: RunConfig, examples: list[Example], progress: bool = True) -> tuple[dict, Outputs]:
    """Generate on ``examples`` and score against their targets: (metrics, outputs). With markup
    protection, the metrics also count placeholders repaired and segments that fell back. A translation
    run with ``eval.unfinished_keeps_source`` is decoded as ``translate`` and page translation ship it
    (rows cut by their budget again up to the cap, loops cut after one pass, ``segments_looped``) before
    the rows still unfinished keep their source, so the score is the product's."""
    from loraforge.eval.metrics import task_metrics

    sources = [e.source for e in examples]
    if getattr(model, "is_token_tagger", False):  # tags, not text: its spans as placeholders, the model alone
        from loraforge.data.pii_align import replace_spans
        from loraforge.models.tagger import tag_texts

        hyps = [replace_spans(s, [(a, b, f"[{t}]") for a, b, t, *_ in spans])
                for s, spans in zip(sources, tag_texts(model, loaded.tokenizer, sources))]
        return task_metrics(cfg.data.task, sources, hyps, [e.target for e in examples], cfg.data.tgt_lang), hyps
    as_shipped = cfg.data.task == "translate" and cfg.eval.unfinished_keeps_source
    out, repair = generate_restored(loaded, model, cfg, sources, [e.system for e in examples], progress=progress,
                                    widen_cut=as_shipped, trim_loops=as_shipped, keep_unfit=True)
    metrics = task_metrics(cfg.data.task, sources, out.texts, [e.target for e in examples], cfg.data.tgt_lang)
    if cfg.data.task == "translate":
        metrics.update(segments_short=len(out.short), segments_unfinished=len(out.unfinished))
        if as_shipped:
            metrics.update(segments_looped=len(out.looped))
    if repair is not None:
        metrics.update(placeholders=repair["placeholders"], placeholders_repaired=repair["placeholders_repaired"],
                       segments_repaired=repair["segments_repaired"], segments_fallback=repair["segments_fallback"])
    return metrics, Outputs(out.texts, _notes(out))


def load_for_inference(cfg: RunConfig, adapter: AdapterRef | str | Path | None):
    """(loaded base, model to run). ``adapter``: a path, resolved before the (slow) model load so a wrong
    path fails at once, or the ``AdapterRef`` a caller resolved already."""
    from loraforge.adapters import load_adapter
    from loraforge.models.load import load_model
    from loraforge.runs import resolve_adapter

    ref = None if adapter is None else resolve_adapter(adapter)
    loaded = load_model(cfg.model.name, cfg.model.dtype, cfg.model.family)
    model = loaded.model if ref is None else load_adapter(loaded.model, ref.dir)
    return loaded, model


def task_run_config(cfg: RunConfig, data) -> RunConfig:
    """``cfg`` with one task's data settings (``DataConfig.task_configs``): prompts, budgets, metrics
    and markup handling then follow that task, and every single-task helper works unchanged."""
    return cfg.model_copy(update={"data": data})


def evaluate_tasks(loaded, model, cfg: RunConfig, tests: dict[str, tuple], progress: bool = True
                   ) -> dict[str, tuple[dict, list[str]]]:
    """Multi-task: {task name: (metrics, outputs)}, each task generated and scored under its own
    settings (``tests``: {name: (DataConfig, test examples)}, as ``data.splits.task_tests`` gives)."""
    return {name: evaluate(loaded, model, task_run_config(cfg, data), examples, progress)
            for name, (data, examples) in tests.items() if examples}


def sample_answers(loaded, model, cfg: RunConfig, sources: list[str], temperature: float = 1.0, top_p: float = 0.95,
                   seed: int = 0, progress: bool = True) -> list[str]:
    """Sampled (temperature, nucleus top-p) outputs for ``sources`` under the run's template and task
    budgets: back-translation by sampling gives more varied synthetic sources than greedy does
    (Edunov et al., 2018). The same batched decoder as greedy generation (rows sorted by length, each
    leaving the batch when done) and the same markup protection; reproducible for the same seed,
    inputs and eval.batch_size."""
    from loraforge.eval.generate import Sampler

    sampler = Sampler(temperature, top_p, seed)
    return generate_restored(loaded, model, cfg, sources, progress=progress, sampler=sampler)[0].texts
