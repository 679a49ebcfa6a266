"""``loraforge translate-page`` and ``loraforge eval-pages``: whole Kubernetes doc pages, as the zh-cn
localization team ships them (``loraforge.localize`` does the page work; this module only supplies
the model as a batched segment translator).

The model loads on the first batch of segments, after every page has been parsed and checked, so a
bad page is reported in a second, not after a model load.
"""

from __future__ import annotations

from pathlib import Path

from loraforge.config import RunConfig, load_config
from loraforge.runs import AdapterRef, atomic_write, resolve_adapter


def run_config(adapter: str | Path | AdapterRef | None, model: str | None, config_path: str | Path | None) -> RunConfig:
    """The config whose template and system prompt translate: --config, else the adapter's run, else defaults;
    of a multi-task run, its en->zh task (else its first translate task)."""

    if config_path:
        cfg = load_config(config_path)
    else:
        ref = resolve_adapter(adapter) if adapter else None
        cfg = ref.run.config() if ref and ref.run else RunConfig()
    if model:
        cfg.model.name = model
    return _page_task(cfg) if cfg.data.tasks else cfg


def _page_task(cfg: RunConfig) -> RunConfig:
    """A multi-task run narrowed to the task pages need: English to Chinese (``DataConfig.task_config``)."""
    from loraforge.eval.inference import task_run_config

    en_zh = [n for n, d in cfg.data.task_configs() if d.task == "translate" and (d.src_lang, d.tgt_lang) == ("en", "zh")]
    return task_run_config(cfg, cfg.data.task_config(en_zh[0] if en_zh else None, "translate")[1])


class SegmentTranslator:
    """``translator(segments) -> translations`` over loraforge's batched generator (progress bar
    included); the model loads on the first call. A segment that ends in a repetition loop is cut
    after the loop's first pass (not re-decoded at the whole budget), and one far shorter than its
    source (with ``eval.unfinished_keeps_source``, also one still cut by ``max_new_tokens``) is kept in
    English (``keep_source_if_unfit``); ``stats`` counts segments, looped ones, short ones and ones still cut."""

    def __init__(self, cfg: RunConfig, adapter: str | Path | AdapterRef | None, batch_size: int, max_new_tokens: int):
        self.cfg, self.adapter, self.batch_size, self.max_new_tokens = cfg, adapter, batch_size, max_new_tokens
        self.model = None  # (loaded base, model to run), on the first call
        self.stats = {"segments": 0, "segments_looped": 0, "segments_short": 0, "segments_cut": 0}

    def __call__(self, segments: list[str]) -> list[str]:
        from loraforge.eval.inference import generate_answers, load_for_inference

        if not segments:
            return []
        if self.model is None:
            self.model = load_for_inference(self.cfg, self.adapter)
        loaded, net = self.model
        out = generate_answers(loaded, net, self.cfg, segments, max_new_tokens=self.max_new_tokens,
                               batch_size=self.batch_size, progress=True, widen_cut=True, trim_loops=True,
                               keep_unfit=True)
        self.stats["segments"] += len(segments)
        self.stats["segments_looped"] += len(out.looped)
        self.stats["segments_short"] += len(out.short)
        self.stats["segments_cut"] += len(out.cut)
        return out.texts


def segment_translator(adapter: str | Path | None = None, model: str | None = None,
                       config_path: str | Path | None = None, batch_size: int = 32,
                       max_new_tokens: int = 256) -> SegmentTranslator:
    """The page translator of a run (or a base model): its config now, so a bad path fails before any
    page work; its model on the first call."""
    ref = resolve_adapter(adapter) if adapter else None  # once: the config and the model load take it
    return SegmentTranslator(run_config(ref, model, config_path), ref, batch_size, max_new_tokens)


def _options(comments: bool, code_comments: bool, glossary: str | None, fragment: bool):
    from loraforge.localize import PageOptions, default_glossary, load_glossary

    return PageOptions(comments=comments, code_comments=code_comments, fragments=fragment,
                       glossary=load_glossary(glossary) if glossary else default_glossary())


def translate_page_run(src: str, out: str, adapter: str | None = None, model: str | None = None,
                       config_path: str | None = None, previous: str | None = None, overwrite: bool = False,
                       comments: bool = True, code_comments: bool = False, glossary: str | None = None,
                       fragment: bool = False, batch_size: int = 32, max_new_tokens: int = 256) -> dict:
    """Translate an English page (or a folder of pages) into zh-cn; with ``previous`` (an existing
    zh-cn page or folder built the same way), reuse every block whose English is unchanged."""
    from loraforge.localize import translate_pages

    fn = segment_translator(adapter, model, config_path, batch_size, max_new_tokens)
    result = translate_pages(src, out, fn, _options(comments, code_comments, glossary, fragment),
                             previous=previous, overwrite=overwrite)
    return {**result.as_dict(), **fn.stats}


def eval_pages_run(data: str, adapter: str | None = None, model: str | None = None, config_path: str | None = None,
                   split: str = "test", limit: int | None = None, hugo: bool = False, glossary: str | None = None,
                   out: str | None = None, batch_size: int = 32, max_new_tokens: int = 256) -> dict:
    """Translate every English page of the ``split`` documents under ``data`` (a kubernetes/website
    checkout's content folder parent) and score them against the real zh-cn pages: page chrF,
    structure checks, glossary term accuracy, and (``hugo``) a real Hugo build."""
    from loraforge.localize import eval_pages

    fn = segment_translator(adapter, model, config_path, batch_size, max_new_tokens)
    options = _options(True, False, glossary, fragment=True)  # generated includes have no front matter
    result = eval_pages(Path(data), fn, options, split=split, limit=limit, hugo=hugo, glossary=options.glossary)
    metrics = {**result.metrics(), **{f"pages_{k}": v for k, v in fn.stats.items()}}
    if out:
        import json

        atomic_write(out, json.dumps({**result.as_dict(), "metrics": metrics}, indent=2, ensure_ascii=False))
    return metrics
