"""Fuzzy matches from a translation memory, shown to the model beside each segment (``data.memory``).

Localizers translate with a translation memory: the closest segment already translated, shown beside
the new one. The Kubernetes docs repeat themselves (44% of ``k8s:test`` rows have a training segment
at word-level similarity >= 0.5, 18% at >= 0.8, though none is an exact match), so the model gets the
same help: in training and at generation the source carries the closest pair from the memory, the
task's own training pairs. A training pair is never matched to a pair of its own page, because test
pages are unseen and the model must learn how far a match from another page can be trusted.

The lookup is ours (word IDF overlap picks candidates, rapidfuzz's word-level edit similarity ranks
them): candidate generation over tens of thousands of pairs needs an inverted index, which rapidfuzz
does not keep, and the whole thing is forty lines of numpy.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, replace

import numpy as np
from rapidfuzz.distance import Indel

from loraforge.data.formats import Example

_WORD = re.compile(r"\w+", re.UNICODE)
_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)  # words and punctuation: the units of the match score
# the best sources by IDF overlap (Dice-like), then ranked by edit similarity; more find a few more, linearly slower
CANDIDATES = 64
COMMON = 0.05   # words in more than this share of a large memory pick no candidates ("the", "a", "is")


@dataclass(frozen=True)
class Match:
    source: str
    target: str
    score: float  # word-level edit similarity of the two sources (Indel, as rapidfuzz computes it), 0-1


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


class TranslationMemory:
    """Pairs (source, target, page) with a lookup of the closest source above ``min_score``."""

    def __init__(self, examples: list[Example], min_score: float):
        self.min_score = min_score
        self.sources = [e.source for e in examples]
        self.targets = [e.target for e in examples]
        self.pages = [e.meta.get("source") for e in examples]
        self._tokens = [_tokens(text) for text in self.sources]
        postings: dict[str, list[int]] = defaultdict(list)
        for i, text in enumerate(self.sources):
            for w in _words(text):
                postings[w].append(i)
        n = max(len(examples), 1)
        self._postings = {w: (np.asarray(ids), math.log(n / len(ids)))
                          for w, ids in postings.items() if len(ids) <= max(COMMON * n, 1000)}
        self._mass = np.zeros(len(self.sources))  # each source's IDF weight: overlap / mass is Dice-like
        for ids, idf in self._postings.values():
            self._mass[ids] += idf

    def __len__(self) -> int:
        return len(self.sources)

    def lookup(self, source: str, page: str | None = None) -> Match | None:
        """The closest pair whose page is not ``page``, or None when none reaches ``min_score``."""
        hits = [self._postings[w] for w in _words(source) if w in self._postings]
        if not hits:
            return None
        ids = np.concatenate([ids for ids, _ in hits])
        weights = np.concatenate([np.full(len(ids), idf) for ids, idf in hits])
        overlap = np.bincount(ids, weights=weights, minlength=len(self.sources))
        overlap /= self._mass + sum(idf for _, idf in hits)
        top = np.argpartition(-overlap, min(CANDIDATES, len(overlap) - 1))[:CANDIDATES]
        tokens, best, best_score = _tokens(source), None, self.min_score
        for i in sorted(top.tolist(), key=lambda i: -overlap[i]):
            if overlap[i] <= 0 or (page is not None and self.pages[i] == page):
                continue
            score = Indel.normalized_similarity(tokens, self._tokens[i], score_cutoff=best_score)
            if score >= best_score and (best is None or score > best_score):
                best, best_score = i, score
        if best is None:
            return None
        return Match(self.sources[best], self.targets[best], best_score)


def with_match(source: str, match: Match | None) -> str:
    """The source as the model reads it: the memory's pair first, then the segment to translate."""
    if match is None:
        return source
    return (f"Translation memory ({round(match.score * 100)}% match):\n{match.source}\n=> {match.target}\n\n"
            f"Translate:\n{source}")


UNMATCHED = "unmatched_source"  # meta key: the source without its match, for rows the match makes too long


def attach_matches(examples: list[Example], memory: TranslationMemory) -> list[Example]:
    """Each example's source with its closest pair from another page (training and dev rows)."""
    out = []
    for e in examples:
        match = memory.lookup(e.source, e.meta.get("source"))
        out.append(e if match is None else replace(e, source=with_match(e.source, match),
                                                   meta={**e.meta, UNMATCHED: e.source}))
    return out


def unmatched_if_too_long(examples: list[Example], encoded: list, encode) -> tuple[list[Example], list]:
    """Rows that only the match made longer than data.max_length train without it, instead of being
    dropped: dropping them would take the longest segments out of training."""
    examples, encoded = list(examples), list(encoded)
    redo = [i for i, (e, x) in enumerate(zip(examples, encoded)) if x.too_long and UNMATCHED in e.meta]
    plain = [replace(examples[i], source=examples[i].meta[UNMATCHED]) for i in redo]
    for i, e, x in zip(redo, plain, encode(plain) if plain else []):
        examples[i], encoded[i] = e, x
    return examples, encoded

