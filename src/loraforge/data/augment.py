"""Data augmentation for translation: source-side noise and back-translation.

Source noise (word dropout, local shuffle, random insertion) is a pure function of
``(seed, epoch, example index)``: a resumed run and every DDP rank see the same noised source for the
same position without storing anything, and each epoch sees a different one. It touches the
source side only, never the target, and never protected markup (inline code, links, URLs,
shortcodes, HTML tags): those stay whole and in place relative to their neighbours' order.

Back-translation turns monolingual target-language text into (synthetic source, real target) pairs
with a reverse model; the pairs are cached as a dataset file with their provenance, so the expensive
generation runs once. Sampled generation (temperature, top-p) is the default: it is the published
better choice outside very low-resource settings (Edunov et al., 2018); greedy is supported to
compare. "Tagged" back-translation (Caswell et al., 2019) prefixes synthetic sources with a marker.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from loraforge.data.formats import DataError, Example

BT_TAG = "<BT> "
"""The marker that tagged back-translation puts before a synthetic source."""

# Spans that must survive noise whole. Kept deliberately simple and conservative: anything that looks
# like markup is one atomic "word". (Page translation protects markup with placeholders instead.)
PROTECTED = re.compile(
    r"`[^`\n]+`"                        # inline code
    r"|\{\{[<%].*?[>%]\}\}"             # Hugo shortcodes
    r"|!?\[[^\]\n]*\]\([^)\n]*\)"       # links and images, text and target together
    r"|<[^>\n]+>"                       # HTML tags
    r"|https?://\S+"                    # bare URLs
    r"|\{\d+\}"                          # placeholders of protected markup (data.protect_markup)
    r"|⟦[^⟧]*⟧"
)


def _units(text: str) -> list[tuple[str, bool]]:
    """(unit, protected) pairs: whitespace words, with protected spans as single units."""
    units: list[tuple[str, bool]] = []
    pos = 0
    for m in PROTECTED.finditer(text):
        units += [(w, False) for w in text[pos:m.start()].split()]
        units.append((m.group(0), True))
        pos = m.end()
    units += [(w, False) for w in text[pos:].split()]
    return units


@dataclass(frozen=True)
class SourceNoise:
    """Word dropout (probability ``dropout``), shuffle within distance ``shuffle_k`` (Lample et al.,
    2018: each word moves at most k places) and random insertion of another word of the same source
    (probability ``insertion`` per word). All zero = the identity."""

    dropout: float = 0.0
    shuffle_k: int = 0
    insertion: float = 0.0
    seed: int = 0

    def __post_init__(self):
        for name in ("dropout", "insertion"):
            if not 0 <= getattr(self, name) < 1:
                raise DataError(f"data.augment.noise.{name}={getattr(self, name)}: must be in [0, 1)")
        if self.shuffle_k < 0:
            raise DataError(f"data.augment.noise.shuffle_k={self.shuffle_k}: must be >= 0")

    @property
    def active(self) -> bool:
        return bool(self.dropout or self.shuffle_k or self.insertion)

    def rng(self, epoch: int, index: int) -> random.Random:
        key = f"{self.seed}:{epoch}:{index}".encode()
        return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))

    def apply(self, text: str, epoch: int, index: int) -> str:
        """The noised source of example ``index`` in ``epoch`` (deterministic)."""
        if not self.active:
            return text
        rng = self.rng(epoch, index)
        units = _units(text)
        plain = [u for u, protected in units if not protected]
        out: list[tuple[float, str]] = []
        for pos, (unit, protected) in enumerate(units):
            if not protected and self.dropout and rng.random() < self.dropout and len(plain) > 1:
                continue
            # shuffle: sort by position + uniform(0, k+1) noise; protected units do not move
            key = pos + (rng.uniform(0, self.shuffle_k + 1) if self.shuffle_k and not protected else 0.5)
            out.append((key, unit))
            if self.insertion and plain and rng.random() < self.insertion:
                out.append((key + 1e-3, rng.choice(plain)))
        if not out:  # never return an empty source
            return text
        return " ".join(u for _, u in sorted(out, key=lambda t: t[0]))


def noised(examples: list[Example], noise: SourceNoise, epoch: int) -> list[Example]:
    """The examples of one epoch with noised sources (targets untouched)."""
    return [Example(noise.apply(e.source, epoch, i), e.target, e.id, e.system, {**e.meta, "noised": True})
            for i, e in enumerate(examples)]


# --- back-translation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BackTranslation:
    """How synthetic sources are made from monolingual targets."""

    sampling: bool = True
    temperature: float = 1.0
    top_p: float = 0.95
    tagged: bool = False
    seed: int = 0

    def provenance(self, reverse_adapter: str, monolingual: str) -> dict:
        return {"kind": "back-translation", "reverse_adapter": reverse_adapter, "monolingual": monolingual,
                "sampling": self.sampling, "temperature": self.temperature, "top_p": self.top_p,
                "tagged": self.tagged, "seed": self.seed}


def flipped(examples: Iterable[Example]) -> list[Example]:
    """The same pairs in the other direction: what a reverse (zh→en) adapter trains on."""
    return [Example(e.target, e.source, e.id, e.system, dict(e.meta)) for e in examples]


def back_translate(targets: list[str], translate_fn: Callable[[list[str]], list[str]], bt: BackTranslation,
                   ids: list[str] | None = None, pages: list[str | None] | None = None) -> list[Example]:
    """(synthetic source, real target) pairs; empty generations are dropped. ``pages``: each target's
    page path, kept as ``meta['source']`` so data.exclude_sources and the held-out checks see it."""
    sources = translate_fn(targets)
    if len(sources) != len(targets):
        raise DataError(f"back-translation returned {len(sources)} outputs for {len(targets)} inputs")
    ids = ids or [f"bt-{i:06d}" for i in range(len(targets))]
    pages = pages or [None] * len(targets)
    tag = BT_TAG if bt.tagged else ""
    return [Example(tag + s.strip(), t, i, None, {"synthetic": True} | ({"source": p} if p else {}))
            for s, t, i, p in zip(sources, targets, ids, pages) if s.strip()]


def write_synthetic(path: str | Path, pairs: list[Example], provenance: dict, src_lang: str = "en",
                    tgt_lang: str = "zh") -> Path:
    """Cache synthetic pairs as a dataset file (jsonl.gz, loadable as training data) plus a
    ``.provenance.json`` beside it that says how they were made."""
    from loraforge.runs import atomic_write

    path = Path(path)
    lines = [json.dumps({"id": e.id, src_lang: e.source, tgt_lang: e.target, "synthetic": True}
                        | ({"source": e.meta["source"]} if e.meta.get("source") else {}), ensure_ascii=False)
             for e in pairs]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    atomic_write(path, gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    atomic_write(path.with_name(path.name + ".provenance.json"),
                 json.dumps({**provenance, "pairs": len(pairs)}, indent=2))
    return path


def read_provenance(path: str | Path) -> dict | None:
    """The provenance of a cached synthetic set (None when there is none: not cached by us)."""
    side = Path(path).with_name(Path(path).name + ".provenance.json")
    return json.loads(side.read_text()) if side.is_file() else None


def mix(real: list[Example], synthetic: list[Example], ratio: float, seed: int = 0) -> list[Example]:
    """Real pairs plus ``ratio`` synthetic pairs per real pair (sampled without replacement while
    there are enough, then with), shuffled deterministically."""
    if ratio < 0:
        raise DataError(f"data.augment.back_translation.ratio={ratio}: must be >= 0")
    rng = random.Random(seed)
    want = round(ratio * len(real))
    if not synthetic or want == 0:
        return list(real)
    pool = rng.sample(synthetic, min(want, len(synthetic)))
    pool += [rng.choice(synthetic) for _ in range(want - len(pool))]
    out = list(real) + pool
    rng.shuffle(out)
    return out
