"""``loraforge data stats``: what is in a dataset file, and what is wrong with it.

Lengths are counted in tokens of a chosen tokenizer when one is given (what the model will see,
so it sets ``data.max_length``), otherwise with a cheap proxy: whitespace-separated words plus one
per CJK character. Problems are listed with the file and line, so they can be fixed at the source.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from loraforge.data.formats import DataError, example_problems, iter_examples, resolve_spec

CJK_CHARS = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
APPROX_TOKEN = re.compile(f"[{CJK_CHARS}]|[^\\s{CJK_CHARS}]+")
HAS_CJK = re.compile(f"[{CJK_CHARS}]")
PERCENTILES = (50, 90, 95, 99)
MAX_LOCATIONS = 5  # locations listed per problem; the count is always complete
RATIO_FACTOR = 4.0  # a pair whose length ratio is this far from the file's median is suspect
RATIO_MIN_CHARS = 20  # ratios of very short pairs (headings) say nothing
STATS_FIELD_HINT = "--source-field and --target-field"  # what `loraforge data stats` takes


def approx_tokens(text: str) -> int:
    """Whitespace words plus one per CJK character: close enough to subword counts to compare files."""
    return len(APPROX_TOKEN.findall(text))


def token_counter(tokenizer: Any | None) -> tuple[Callable[[list[str]], list[int]], str]:
    """(count function over a batch, unit name). ``tokenizer``: None, a tokenizer object, or a
    Hugging Face directory / hub id (the CLI resolves names like 'gemma3-270m' to a directory)."""
    if tokenizer is None:
        return (lambda texts: [approx_tokens(t) for t in texts]), "approx. tokens (words + CJK chars)"
    name = None
    if isinstance(tokenizer, (str, Path)):
        from transformers import AutoTokenizer  # only when a tokenizer is asked for

        name = str(tokenizer)
        try:
            tokenizer = AutoTokenizer.from_pretrained(name)
        except (OSError, ValueError) as e:
            raise DataError(f"cannot load tokenizer {name!r}: {e}") from None

    def count(texts: list[str]) -> list[int]:
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    return count, f"tokens ({name or getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__})"


def percentiles(values: list[int]) -> dict[str, float]:
    """Nearest-rank percentiles, mean and max; zeros for an empty list."""
    if not values:
        return {**{f"p{p}": 0 for p in PERCENTILES}, "mean": 0.0, "max": 0}
    v = sorted(values)
    out: dict[str, float] = {f"p{p}": v[min(len(v) - 1, max(0, -(-p * len(v) // 100) - 1))] for p in PERCENTILES}
    out["mean"] = round(sum(v) / len(v), 1)
    out["max"] = v[-1]
    return out


def data_stats(
    path: str | Path,
    tokenizer: Any | None = None,
    source_field: str | None = None,
    target_field: str | None = None,
    src_lang: str = "en",
    tgt_lang: str = "zh",
    field_hint: str = STATS_FIELD_HINT,
) -> dict:
    """Counts, length percentiles and problems (with locations) of one dataset file or packaged
    split. Malformed records stop with a ``DataError`` naming the line, as in training; errors about
    which fields to read name ``field_hint`` (the command's own flags by default)."""
    rows = list(iter_examples(path, source_field, target_field, src_lang, tgt_lang, field_hint))
    if not rows:
        raise DataError(f"{resolve_spec(path)}: no examples found (empty file?)")
    count, unit = token_counter(tokenizer)
    sources = [ex.source for _, ex in rows]
    targets = [ex.target for _, ex in rows]
    problems: dict[str, list[str]] = {}

    def flag(name: str, where: str) -> None:
        problems.setdefault(name, []).append(where)

    seen_pairs: dict[tuple[str, str], str] = {}
    for where, ex in rows:
        for problem in example_problems(ex):
            flag(problem, where)
        key = (ex.source, ex.target)
        if key in seen_pairs:
            flag("duplicate pair", f"{where} (same as {seen_pairs[key]})")
        else:
            seen_pairs[key] = where
    # The target script check only makes sense for a CJK-target dataset: decide by majority.
    cjk = [bool(HAS_CJK.search(t)) for t in targets]
    cjk_target = sum(cjk) * 2 >= len(cjk)
    if cjk_target:
        for (where, ex), has in zip(rows, cjk):
            if not has and ex.target.strip():
                flag("target has no CJK", where)
    ratios = [(w, len(ex.target) / len(ex.source)) for w, ex in rows
              if len(ex.source) >= RATIO_MIN_CHARS and ex.target.strip()]
    if ratios:
        median = sorted(r for _, r in ratios)[len(ratios) // 2]
        for where, r in ratios:
            if r > median * RATIO_FACTOR or r < median / RATIO_FACTOR:
                flag("extreme length ratio", f"{where} (target/source chars {r:.2f}, median {median:.2f})")
    kinds = Counter(str(ex.meta["kind"]) for _, ex in rows if "kind" in ex.meta)
    return {
        "file": str(resolve_spec(path)),
        "examples": len(rows),
        "unique_pairs": len(seen_pairs),
        "unit": unit,
        "source": percentiles(count(sources)),
        "target": percentiles(count(targets)),
        "kinds": dict(kinds.most_common()),
        "cjk_target": cjk_target,
        "problems": {k: {"count": len(v), "where": v[:MAX_LOCATIONS]} for k, v in problems.items()},
    }


def format_stats(stats: dict) -> str:
    """A short human-readable report of ``data_stats``."""
    cols = [f"p{p}" for p in PERCENTILES] + ["mean", "max"]
    lines = [
        f"{stats['file']}",
        f"examples: {stats['examples']}  (unique pairs: {stats['unique_pairs']})",
        f"length in {stats['unit']}:",
        "  " + " " * 8 + "".join(f"{c:>8}" for c in cols),
    ]
    for side in ("source", "target"):
        lines.append(f"  {side:<8}" + "".join(f"{stats[side][c]:>8}" for c in cols))
    if stats["kinds"]:
        lines.append("kinds: " + ", ".join(f"{k} {n}" for k, n in stats["kinds"].items()))
    if not stats["problems"]:
        lines.append("problems: none found")
    else:
        lines.append("problems:")
        for name, p in stats["problems"].items():
            lines.append(f"  {name}: {p['count']}")
            lines.extend(f"    {w}" for w in p["where"])
            if p["count"] > len(p["where"]):
                lines.append(f"    ... and {p['count'] - len(p['where'])} more")
    return "\n".join(lines)
