"""Translation metrics: sacreBLEU's BLEU (Chinese tokenizer), chrF and TER, plus markup preservation.

Markup preservation is ours because no library measures it, and documentation translation lives or
dies by it: inline code, link targets and Hugo shortcodes must come through verbatim.
"""

from __future__ import annotations

import re

INLINE_CODE = re.compile(r"`[^`\n]+`")
LINK_TARGET = re.compile(r"\]\(([^)\s]+)\)")
SHORTCODE = re.compile(r"\{\{[<%]\s*/?\s*([\w-]+)([^}]*?)[%>]\}\}")
_TRANSLATABLE_ATTR = re.compile(r"\s*\b(text|title|alt)=\"[^\"]*\"")


def markup_items(text: str) -> list[str]:
    """What must survive translation unchanged. Shortcode attributes that hold prose (text=, title=)
    are translated by the Kubernetes translators themselves, so they are left out of the signature."""
    items = INLINE_CODE.findall(text)
    items += [f"]({t})" for t in LINK_TARGET.findall(text)]
    items += [f"{{{{{name}{_TRANSLATABLE_ATTR.sub('', attrs).rstrip()}}}}}" for name, attrs in SHORTCODE.findall(text)]
    return items


def markup_preservation(sources: list[str], hyps: list[str]) -> float | None:
    """Share of the sources' markup items found verbatim in the outputs (None when there are none)."""
    found = total = 0
    for src, hyp in zip(sources, hyps):
        wanted = markup_items(src)
        have = markup_items(hyp) + [hyp]
        pool = " ".join(have)
        for item in wanted:
            total += 1
            found += item in pool
    return found / total if total else None


def translation_metrics(sources: list[str], hyps: list[str], refs: list[str], tgt_lang: str = "zh") -> dict:
    import sacrebleu

    tokenize = {"zh": "zh", "ja": "ja-mecab", "ko": "ko-mecab"}.get(tgt_lang, "13a")
    try:
        bleu = sacrebleu.corpus_bleu(hyps, [refs], tokenize=tokenize)
    except (ImportError, RuntimeError):  # mecab tokenizers are optional extras
        bleu = sacrebleu.corpus_bleu(hyps, [refs], tokenize="char" if tgt_lang in ("ja", "ko") else "13a")
    chrf = sacrebleu.corpus_chrf(hyps, [refs])
    ter = sacrebleu.metrics.TER(asian_support=tgt_lang in ("zh", "ja", "ko")).corpus_score(hyps, [refs])
    markup = markup_preservation(sources, hyps)
    out = {
        "bleu": round(bleu.score, 2),
        "chrf": round(chrf.score, 2),
        "ter": round(ter.score, 2),
        "markup": None if markup is None else round(100 * markup, 2),
        "n": len(hyps),
    }
    if tgt_lang == "zh":  # the shipped glossary is the zh-cn team's (from the docs' glossary pages)
        from loraforge.localize.glossary import default_glossary, term_accuracy

        out["term_accuracy"] = term_accuracy(sources, hyps, default_glossary())["term_accuracy"]
    return out


def worst_segments(examples: list, hyps: list[str], n: int) -> list[dict]:
    """The ``n`` outputs with the lowest sentence chrF, worst first: where a tuned translator fails
    (cut, looping, or plain mistranslation), for error analysis rather than a score."""
    import sacrebleu

    scored = [{"id": e.id, "chrf": round(sacrebleu.sentence_chrf(h, [e.target]).score, 2), "source": e.source,
               "reference": e.target, "output": h} for e, h in zip(examples, hyps)]
    return sorted(scored, key=lambda r: r["chrf"])[:n]


def task_metrics(task: str, sources: list[str], hyps: list[str], refs: list[str], tgt_lang: str = "zh") -> dict:
    if task == "pii":
        from loraforge.eval.pii import pii_metrics

        return pii_metrics(sources, hyps, refs)
    if task == "translate":
        return translation_metrics(sources, hyps, refs, tgt_lang)
    import sacrebleu  # generic SFT: overlap metrics plus exact match

    exact = sum(h.strip() == r.strip() for h, r in zip(hyps, refs)) / max(len(hyps), 1)
    return {"chrf": round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2), "exact_match": round(100 * exact, 2),
            "n": len(hyps)}


HIGHER_IS_BETTER = {"bleu": True, "chrf": True, "ter": False, "markup": True, "term_accuracy": True, "exact_match": True,
                    "placeholders_repaired": False, "segments_repaired": False, "segments_fallback": False,
                    "segments_short": False, "segments_unfinished": False, "segments_looped": False,
                    "leak_rate": False, "over_masking": False}
