"""The masker users call: model spans (chunked for long texts) + validated patterns, merged, then
rendered as placeholders, numbered identities or pseudonyms, optionally with a reversible mapping.

    masker = Masker.from_model(model, tokenizer, cfg.data, bias=2.0)   # or Masker() for patterns only
    result = masker.mask_text("Mail john@example.com")                  # MaskResult(text, spans)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from loraforge.pii import patterns as pat
from loraforge.pii.conform import conform
from loraforge.pii.defaults import DEFAULT_LONE_MIN_SCORE
from loraforge.pii.organisations import organisation_lines, typed_by_header
from loraforge.pii.chunking import DEFAULT_CHUNK_CHARS, DEFAULT_OVERLAP_CHARS, find_chunked
from loraforge.pii.identities import IdentityTable
from loraforge.pii.io import check_text
from loraforge.pii.mapping import build_mapping
from loraforge.pii.pseudonym import Pseudonymizer
from loraforge.pii.spans import MERGE_MODES, MaskResult, Span, merge_spans

STYLES = ("placeholder", "numbered", "pseudonym")


def _overlaps(span: Span, ranges: list[tuple[int, int]]) -> bool:
    return any(a < span.end and span.start < b for a, b in ranges)


def _vouched(text: str, found: list[Span], model_spans: list[Span], found_tables) -> list[Span]:
    """The patterns' spans a union keeps: a phone found by its length alone (``patterns.length_only``) where the
    model or a column's header agrees, typed as the model typed it; a phone or an email in a text where the model
    found no personal data only under a column's header that types it (``_NEED_A_PERSON``) or, a phone, when it is a
    mobile number written with its country's code (``patterns.international_mobile``); the rest as found."""
    typed = [(a, b) for a, b, _ in pat.typed_cells(found_tables)]
    agree = [(m.start, m.end) for m in model_spans] + typed
    kept = []
    for p in found:
        if pat.length_only(text, p):
            if not _overlaps(p, agree):
                continue
            p = _model_typed(p, model_spans)
        elif not model_spans and _needs_a_person(text, p, typed):
            continue
        kept.append(p)
    return kept


def _needs_a_person(text: str, found: Span, typed: list[tuple[int, int]]) -> bool:
    """A phone or an email the union keeps only in a text that shows personal data (``_NEED_A_PERSON``): not one under
    a column's header that types it, nor a mobile number with its country's code (``patterns.international_mobile``)."""
    if found.type not in _NEED_A_PERSON or _overlaps(found, typed):
        return False
    return not (found.type == "PHONE" and pat.international_mobile(text[found.start:found.end]))


def _unless_lone_and_unsure(model_spans: list[Span], found: list[Span], min_score: float) -> list[Span]:
    """The model's spans, less a text's only one when it is a word (``_LONE_WORD_TYPES``), the model is unsure of it
    (score below ``min_score``) and no validated pattern finds it. The bias makes the model mask unsure words, which
    pays where a text shows personal data; a text whose only find is one unsure word most often shows none (a
    heading, a greeting, a product). Gone with it is what it vouched for (``_vouched``): an organisation's phone in
    such a text stays unmasked too. A secret or a number stays masked however unsure: a leaked key costs more."""
    if len(model_spans) == 1 and model_spans[0].type in _LONE_WORD_TYPES and model_spans[0].score < min_score \
            and not _overlaps(model_spans[0], [(p.start, p.end) for p in found]):
        return []
    return model_spans


_LONE_WORD_TYPES = {"NAME", "USERNAME"}


def _model_typed(phone: Span, model_spans: list[Span]) -> Span:
    """A phone the patterns found by its length alone, typed as the model typed the same digits (``national_id=
    07048805803``: an ID): bare digits are a phone to the patterns by length only, the model reads the context."""
    same = [m for m in model_spans if m.start <= phone.start and phone.end <= m.end and m.type != "PHONE"]
    return replace(phone, type=same[0].type) if len(same) == 1 and same[0].type in _DIGIT_TYPES else phone


_DIGIT_TYPES = {"SSN", "CREDIT_CARD", "DATE_OF_BIRTH"}
# A phone or a mailbox is a person's (RULES.md): in a text where the model found no personal data at all, one the
# patterns found is an organisation's line or role mailbox, or no phone. On development rounds 1-7 and pii:dev the
# model had found each of the 568 real phones and emails the patterns found; 114 the patterns found alone were not
# personal (bench/results/pii-pattern-agreement-rules24.json). Where the model finds a person, the patterns' phones
# and emails stay, the safety net where one is missed. A mobile with its country's code stays anyway (rules 34): on
# rounds 11-20 and pii:dev the organisations' numbers dropped in that form were fixed lines, and a person's mobile,
# alone in its text, was among the drops.
_NEED_A_PERSON = {"PHONE", "EMAIL"}


def model_finder(model, tokenizer, data_cfg, bias: float | None = None, batch_size: int = 8, **decode_kwargs):
    """The span finder over a tuned PII model: a tagger's ``TagFinder`` (``model.head=tagger``), else
    copy-or-mask decoding prompted as training prompted it (``data_cfg``: the run's ``DataConfig``).
    ``bias`` None: the finder's own default (``default_bias``)."""
    if getattr(model, "is_token_tagger", False):
        from loraforge.pii.tagger import DEFAULT_TAG_BIAS, TagFinder

        return TagFinder(model, tokenizer, DEFAULT_TAG_BIAS if bias is None else bias, batch_size=max(batch_size, 16))
    from loraforge.pii.decode import DEFAULT_BIAS, ConstrainedMasker

    return ConstrainedMasker.from_config(model, tokenizer, data_cfg, bias=DEFAULT_BIAS if bias is None else bias,
                                         batch_size=batch_size, **decode_kwargs)


@dataclass
class MaskOptions:
    merge: str = "union"
    """union (model + patterns) | model | patterns."""
    patterns: tuple[str, ...] | None = None
    """Validated patterns to use (``patterns.PATTERN_NAMES``); None = all."""
    style: str = "placeholder"
    """placeholder ([NAME]) | numbered ([NAME_1], same identity = same number) | pseudonym (Faker values)."""
    locale: str = "en_US"
    seed: int = 0
    chunk_chars: int = DEFAULT_CHUNK_CHARS
    overlap_chars: int = DEFAULT_OVERLAP_CHARS
    across_batch: bool = False
    """Numbers and pseudonyms consistent across all texts masked by this Masker (else per text)."""
    lone_min_score: float = DEFAULT_LONE_MIN_SCORE
    """A text's only model span is kept when its score is at least this or a validated pattern finds it too
    (``_unless_lone_and_unsure``); 0 keeps every span."""

    def __post_init__(self) -> None:
        if self.merge not in MERGE_MODES:
            raise ValueError(f"pii merge must be one of {MERGE_MODES}, got {self.merge!r}")
        if self.style not in STYLES:
            raise ValueError(f"pii style must be one of {STYLES}, got {self.style!r}")
        pat.select(self.patterns)  # unknown names fail now, not mid-file
        if not 0.0 <= self.lone_min_score <= 1.0:
            raise ValueError(f"pii lone_min_score is a probability in [0, 1], got {self.lone_min_score!r}")


class Masker:
    """``model``: a finder (``model_finder``: ``decode.ConstrainedMasker`` or ``tagger.TagFinder``, or anything
    with ``find_spans(texts)``); None = patterns only."""

    def __init__(self, model=None, options: MaskOptions | None = None):
        self.model = model
        self.options = options or MaskOptions()
        if self.model is None and self.options.merge == "model":
            raise ValueError("pii merge 'model' needs a model; use 'patterns' or give one")
        self.patterns = pat.select(self.options.patterns)
        self._table = IdentityTable()
        self._pseudo = Pseudonymizer(self.options.locale, self.options.seed)

    @classmethod
    def from_model(cls, model, tokenizer, data_cfg, options: MaskOptions | None = None, **decode_kwargs) -> "Masker":
        """A masker over a tuned PII model (``model_finder``); ``decode_kwargs``: ``bias``, ``batch_size``
        (and for copy-or-mask decoding ``window``)."""
        return cls(model_finder(model, tokenizer, data_cfg, **decode_kwargs), options)

    @property
    def bias(self) -> float | None:
        return getattr(self.model, "bias", None)

    @bias.setter
    def bias(self, value: float) -> None:
        self.model.bias = value

    # --- finding --------------------------------------------------------------------------------
    def model_spans(self, texts: list[str]) -> list[list[Span]]:
        o = self.options
        if self.model is None or o.merge == "patterns":
            return [[] for _ in texts]
        short = [i for i, t in enumerate(texts) if len(t) <= o.chunk_chars]
        out: list[list[Span]] = [[] for _ in texts]
        for i, spans in zip(short, self.model.find_spans([texts[i] for i in short])):
            out[i] = spans
        for i, t in enumerate(texts):
            if len(t) > o.chunk_chars:
                out[i] = find_chunked(t, self.model.find_spans, o.chunk_chars, o.overlap_chars)
        return out

    def find_spans(self, texts: list[str]) -> list[list[Span]]:
        """Merged, non-overlapping spans per text (character offsets)."""
        return [self.combine(t, m) for t, m in zip(texts, self.model_spans(texts))]

    def combine(self, text: str, model_spans: list[Span]) -> list[Span]:
        """The model's spans for ``text`` put to the annotation rules, merged with the patterns' (per
        ``options.merge``; in a union, a phone the patterns found by its length alone only where the model or a
        column's header agrees: ``patterns.length_only``; their phones and emails only in a text where the model
        found personal data or a column's header types them: ``_NEED_A_PERSON``); then what the text's tables and lines say: the type
        a column's header names (``organisations.typed_by_header``), the phones of organisations' lines dropped
        (``organisations.organisation_lines``)."""
        o = self.options
        found = conform(text, pat.find(text, self.patterns)) if o.merge != "model" else []
        model_spans, found_tables = conform(text, model_spans), pat.tables(text)
        model_spans = _unless_lone_and_unsure(model_spans, found, o.lone_min_score)
        if o.merge == "union" and self.model is not None and found:
            found = _vouched(text, found, model_spans, found_tables)
        merged = merge_spans(model_spans, found, o.merge, text)
        return organisation_lines(text, typed_by_header(merged, found_tables), found_tables,
                                  people_found=o.merge != "patterns")

    # --- rendering ------------------------------------------------------------------------------
    def _replacements(self, text: str, spans: list[Span]) -> list[str]:
        o = self.options
        if o.style == "placeholder":
            return [f"[{s.type}]" for s in spans]
        if o.style == "numbered":
            table = self._table if o.across_batch else IdentityTable()
            return [table.placeholder(s.type, text[s.start:s.end]) for s in spans]
        pseudo = self._pseudo if o.across_batch else Pseudonymizer(o.locale, o.seed)
        return [pseudo.fake(s.type, text[s.start:s.end]) for s in spans]

    def render(self, text: str, spans: list[Span], with_mapping: bool = False) -> MaskResult:
        reps = self._replacements(text, spans)
        masked, mapping = build_mapping(text, spans, reps, self.options.style)
        return MaskResult(masked, spans, reps, mapping if with_mapping else None)

    def mask(self, texts: list[str], with_mapping: bool = False, where: str = "text") -> list[MaskResult]:
        """Masked texts; ``with_mapping`` attaches the reversible mapping (personal data: see ``mapping``)."""
        for i, t in enumerate(texts):
            check_text(t, where if len(texts) == 1 else f"{where} {i + 1}")
        return [self.render(t, s, with_mapping) for t, s in zip(texts, self.find_spans(texts))]

    def mask_text(self, text: str, with_mapping: bool = False) -> MaskResult:
        return self.mask([text], with_mapping)[0]

    def mask_stream(self, items: Iterable[tuple[str, dict]], field: str = "text", batch_size: int = 16,
                    with_mapping: bool = False) -> Iterator[tuple[str, dict, MaskResult]]:
        """(where, record, result) per input item, ``batch_size`` records in memory at a time
        (``items``: e.g. ``io.iter_jsonl(path)``)."""
        batch: list[tuple[str, dict]] = []
        for item in items:
            batch.append(item)
            if len(batch) >= batch_size:
                yield from self._mask_batch(batch, field, with_mapping)
                batch = []
        if batch:
            yield from self._mask_batch(batch, field, with_mapping)

    def _mask_batch(self, batch, field, with_mapping):
        texts = [check_text(rec[field], f"{where}: field {field!r}") for where, rec in batch]
        for (where, rec), t, spans in zip(batch, texts, self.find_spans(texts)):
            yield where, rec, self.render(t, spans, with_mapping)
