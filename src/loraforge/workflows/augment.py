"""``loraforge data augment``: materialize what augmentation makes, for inspection, or make the
back-translation cache.

Without ``--back-translate``: every training example of the config (each task of a multi-task
config) as epoch N trains on it (noised source, back-translated pairs mixed in), with its original
source beside it. With ``--back-translate REVERSE --mono FILE``: the reverse adapter (tgt->src)
translates the monolingual target-language texts, by sampling or greedily, and the synthetic pairs
are cached with their provenance; ``data.augment.back_translation.file`` then points at the cache.
"""

from __future__ import annotations

import json
from pathlib import Path

from loraforge.config import ConfigError, DataConfig, RunConfig
from loraforge.data.formats import DataError, read_records
from loraforge.runs import AdapterRef, atomic_write


def materialize(cfg: RunConfig, out: str | Path, epoch: int = 0) -> dict:
    """Write the augmented training set of ``epoch`` to ``out`` (jsonl(.gz): task, id, source, target,
    original, synthetic); returns counts. Needs the tokenizer only (data.max_length decides what is kept)."""
    import gzip

    from loraforge.data.splits import encode_task, load_task

    loaded = [(name, d, load_task(d, None)) for name, d in cfg.data.task_configs()]  # bad data fails first
    from loraforge.models.load import load_tokenizer

    tok, family = load_tokenizer(cfg.model)
    lines, summary = [], {"out": str(out), "epoch": epoch, "tasks": {}}
    for name, d, splits in loaded:
        train = encode_task(d, splits, tok, family, d.seed).train
        counts = {"examples": len(train), "noised": 0, "synthetic": 0}
        for i, original in enumerate(train.examples):
            ex = train.example_at(i, epoch)
            counts["noised"] += ex.source != original.source
            counts["synthetic"] += bool(original.meta.get("synthetic"))
            lines.append(json.dumps({"task": name, "id": ex.id, "source": ex.source, "target": ex.target,
                                     "original": original.source, "synthetic": bool(original.meta.get("synthetic"))},
                                    ensure_ascii=False))
        summary["tasks"][name] = counts
    data = ("\n".join(lines) + "\n").encode("utf-8")
    atomic_write(out, gzip.compress(data, mtime=0) if str(out).endswith(".gz") else data)
    return summary


def read_monolingual(path: str | Path, lang: str, limit: int | None = None,
                     exclude: list[str] | tuple[str, ...] = ()) -> tuple[list[str], list[str | None]]:
    """Texts of a monolingual file and each one's page path (a record's ``source``, else None): .txt
    (one per line) or records (jsonl/json/csv/parquet) with a ``lang`` or ``text`` field. Records whose
    page is under an ``exclude`` prefix (data.exclude_sources) are skipped: a held-out section's
    target-language text must not come back as synthetic training pairs."""
    from loraforge.data.formats import resolve_spec
    from loraforge.data.splits import excluded_page

    path = Path(resolve_spec(str(path)))
    if path.name.lower().removesuffix(".gz").endswith(".txt"):
        if not path.is_file():
            raise DataError(f"{path}: file not found")
        rows = [(t, None) for t in path.read_text(encoding="utf-8").splitlines() if t.strip()]
    else:
        rows = []
        for where, rec in read_records(path):
            field = lang if lang in rec else "text" if "text" in rec else None
            if field is None or not isinstance(rec[field], str):
                raise DataError(f"{where}: no string field {lang!r} or 'text' (record keys: {sorted(rec)})")
            page = rec.get("source") if isinstance(rec.get("source"), str) else None
            if excluded_page(page, exclude) is None:
                rows.append((rec[field], page))
    rows = rows[:limit] if limit else rows
    if not rows:
        raise DataError(f"{path}: no monolingual texts" + (f" outside {', '.join(exclude)}" if exclude else ""))
    return [t for t, _ in rows], [p for _, p in rows]


def _forward(cfg: RunConfig, task: str | None) -> tuple[str, DataConfig]:
    """The translate task whose training data the cache is for (``--task``; default: the only one)."""
    tasks = [(n, d) for n, d in cfg.data.task_configs() if d.task == "translate"]
    if task is not None:
        tasks = [(n, d) for n, d in tasks if n == task]
    if len(tasks) != 1:
        names = ", ".join(n for n, _ in cfg.data.task_configs())
        raise ConfigError(f"--task: name the translate task the synthetic pairs are for (tasks: {names})")
    return tasks[0]


def _reverse_config(adapter: str, ref: AdapterRef, forward: DataConfig) -> RunConfig:
    """The reverse run's config (``ref``: ``adapter`` resolved), narrowed to its task that translates tgt->src
    of ``forward``."""
    if ref.run is None:
        raise ConfigError(f"--back-translate {adapter}: a run directory is needed (its config.yaml says how the "
                          "reverse model was prompted)")
    rev = ref.run.config()
    want = (forward.tgt_lang, forward.src_lang)
    match = [d for _, d in rev.data.task_configs() if d.task == "translate" and (d.src_lang, d.tgt_lang) == want]
    if not match:
        raise ConfigError(f"--back-translate {adapter}: that run translates no {want[0]}->{want[1]} (trained on "
                          + ", ".join(f"{d.src_lang}->{d.tgt_lang}" for _, d in rev.data.task_configs()) + ")")
    return rev.model_copy(update={"data": match[0]})


def back_translate_cache(cfg: RunConfig, adapter: str, mono: str, out: str | Path, sampling: bool = True,
                         temperature: float = 1.0, top_p: float = 0.95, limit: int | None = None,
                         task: str | None = None, progress: bool = True) -> dict:
    """Translate ``mono`` (target-language texts) with the reverse ``adapter`` and cache the (synthetic
    source, real target) pairs at ``out`` with their provenance. Untagged: the tag is added at training
    (data.augment.back_translation.tagged), so one cache serves both."""
    from loraforge.data.augment import BackTranslation, back_translate, write_synthetic
    from loraforge.eval.inference import generate_restored, load_for_inference, sample_answers
    from loraforge.runs import resolve_adapter

    name, forward = _forward(cfg, task)
    texts, pages = read_monolingual(mono, forward.tgt_lang, limit, forward.exclude_sources)
    ref = resolve_adapter(adapter)
    rev = _reverse_config(adapter, ref, forward)
    bt = BackTranslation(sampling=sampling, temperature=temperature, top_p=top_p, tagged=False, seed=cfg.data.seed)
    loaded, model = load_for_inference(rev, ref)

    def translate(targets: list[str]) -> list[str]:
        if sampling:
            return sample_answers(loaded, model, rev, targets, temperature, top_p, bt.seed, progress)
        return generate_restored(loaded, model, rev, targets, progress=progress)[0].texts

    pairs = back_translate(texts, translate, bt, ids=[f"bt-{i:06d}" for i in range(len(texts))], pages=pages)
    if not pairs:
        raise DataError(f"{mono}: every back-translation of the {len(texts)} texts came out empty; nothing cached "
                        f"(is {adapter} trained to translate {forward.tgt_lang}->{forward.src_lang}?)")
    write_synthetic(out, pairs, bt.provenance(str(adapter), str(mono)), forward.src_lang, forward.tgt_lang)
    return {"out": str(out), "task": name, "monolingual": len(texts), "pairs": len(pairs), "sampling": sampling,
            "use_with": f"data.augment.back_translation.file={out}"}


def augment_run(cfg: RunConfig, out: str, epoch: int = 0, back_translate: str | None = None,
                mono: str | None = None, sampling: bool = True, temperature: float = 1.0, top_p: float = 0.95,
                limit: int | None = None, task: str | None = None) -> dict:
    """``loraforge data augment``: the augmented training set of one epoch, or (``--back-translate``)
    the back-translation cache."""
    if back_translate is None:
        if mono is not None:
            raise ConfigError("--mono is read with --back-translate REVERSE_RUN")
        return materialize(cfg, out, epoch)
    if mono is None:
        raise ConfigError("--back-translate needs --mono FILE (target-language texts to translate back)")
    return back_translate_cache(cfg, back_translate, mono, out, sampling, temperature, top_p, limit, task)
