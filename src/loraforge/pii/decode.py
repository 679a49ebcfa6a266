"""Copy-or-mask decoding: a masking model that cannot rewrite, drop or invent text.

At every step the model may only (a) continue copying the source from a pointer, (b) write a
placeholder ``[TYPE]`` from a fixed set, or, right after a placeholder, (c) resume copying at a
later source position of its choice (within ``window`` bytes): the span it skipped is the masked
entity. The output is therefore always the source with some spans replaced, and the spans come out
in the source's own offsets. Faithfulness is 100% by construction, not by training.

How: a small nondeterministic automaton over bytes (copy at p / inside a placeholder / placeholder
closed, resume pending) is advanced by each candidate token's bytes; tokens with no surviving state
are not allowed. Candidates come from indexes (``vocab.VocabIndex``), never from a vocabulary scan.
Ambiguity (the source already holds ``[NAME]``; where exactly the copy resumed) is kept as several
live states and resolved as later tokens arrive, preferring the reading with fewer spans.

The recall knob ``bias`` is added to the logits of every token that commits to one more placeholder
(``_Row.candidates``): positive masks more (fewer leaks, more over-masking), negative less. Each
span's ``score`` is the model's probability (over the allowed tokens, before the bias) of committing
to a placeholder at the step where it did.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from loraforge.pii.defaults import DEFAULT_BIAS
from loraforge.pii.spans import TYPES, Span, trim
from loraforge.pii.vocab import VocabIndex, vocab_index

DEFAULT_WINDOW = 384  # bytes a masked span may cover (long enough for addresses and JWTs)
_LB = ord("[")
_C, _P, _R = 0, 1, 2  # copying at pos / writing a placeholder opened at pos / closed, resume pending


@dataclass
class Decoded:
    spans: list[Span]  # trimmed of surrounding whitespace: what masking uses
    raw: list[Span]  # exactly what the model skipped: ``render(text, raw) == output``
    output: str  # the text the model wrote (for checks; equal to the source with ``raw`` replaced)


@dataclass(frozen=True)
class _State:
    kind: int
    pos: int  # _C: next source byte; _P/_R: where the masked span starts
    ph: bytes  # _P: the placeholder so far; _R: the whole placeholder
    spans: tuple  # ((start, end, type, score), ...) in bytes; score None until the step's p_open is known
    score: float | None = None  # _P/_R: p_open of the step that committed to the placeholder


def _placeholders(st: _State) -> int:
    return len(st.spans) + (st.kind != _C)


class _Row:
    """The automaton of one source text."""

    def __init__(self, source: str, index: VocabIndex, placeholders: dict[bytes, str], window: int):
        self.text = source
        self.src = source.encode("utf-8")
        self.n = len(self.src)
        self.index, self.window = index, window
        self.full = placeholders
        self.prefixes = {p[:k] for p in placeholders for k in range(1, len(p))}
        self.boundary = [(b & 0xC0) != 0x80 for b in self.src] + [True]
        self.at: dict[int, list[int]] = {}
        for q, b in enumerate(self.src):
            if self.boundary[q]:
                self.at.setdefault(b, []).append(q)
        self.states = [_State(_C, 0, b"", ())]
        self.result: tuple | None = None
        self.emitted = bytearray()

    # --- the automaton ----------------------------------------------------------------------
    def _advance(self, st: _State, tb: bytes, i: int, out: list) -> None:
        kind, pos, ph, spans, sc = st.kind, st.pos, st.ph, st.spans, st.score
        src, n = self.src, self.n
        while i < len(tb):
            b = tb[i]
            if kind == _C:
                if b == _LB and pos < n and self.boundary[pos]:
                    self._advance(_State(_P, pos, b"[", spans, None), tb, i + 1, out)
                if pos < n and src[pos] == b:
                    pos += 1
                    i += 1
                    continue
                return
            if kind == _P:
                ph = ph + tb[i:i + 1]
                if ph in self.full:
                    kind = _R
                elif ph not in self.prefixes:
                    return
                i += 1
                continue
            # _R: resume copying at a later position q (the span [pos, q) is masked)
            qs = self.at.get(b, [])
            lo = bisect.bisect_right(qs, pos)
            hi = bisect.bisect_right(qs, min(n - 1, pos + self.window))
            for q in qs[lo:hi]:
                done = spans + ((pos, q, self.full[ph], sc),)
                self._advance(_State(_C, q + 1, b"", done), tb, i + 1, out)
            return
        out.append(_State(kind, pos, ph, spans, sc))

    def advance(self, tb: bytes) -> list[_State]:
        """States after ``tb``, deduplicated (the reading with fewer placeholders kept)."""
        raw: list[_State] = []
        for st in self.states:
            self._advance(st, tb, 0, raw)
        best: dict[tuple, _State] = {}
        for st in raw:
            key = (st.kind, st.pos, st.ph)
            if key not in best or len(st.spans) < len(best[key].spans):
                best[key] = st
        return list(best.values())

    def stop_spans(self) -> tuple | None:
        """The spans if the text may end here (fewest spans first), else None."""
        ends = []
        for st in self.states:
            if st.kind == _C and st.pos == self.n:
                ends.append(st.spans)
            elif st.kind == _R and self.n - st.pos <= self.window:
                ends.append(st.spans + ((st.pos, self.n, self.full[st.ph], st.score),))
        return min(ends, key=len) if ends else None

    # --- candidate tokens -------------------------------------------------------------------
    def _lookup(self, pos: int, ids: set[int], with_open: bool) -> None:
        idx, src = self.index, self.src
        for k in range(1, min(idx.max_len, self.n - pos) + 1):
            key = src[pos:pos + k]
            ids.update(idx.by_bytes.get(key, ()))
            if with_open:
                ids.update(idx.by_open.get(key, ()))
        if with_open:
            ids.update(idx.by_open.get(b"", ()))

    def candidates(self) -> dict[int, tuple[list[_State], bool]]:
        """token -> (states after it, whether it commits to one more placeholder than any reading so far).

        "Commits" is what the bias acts on: ``[`` where the source has ``[`` commits to nothing yet
        (it may be copied); ``EMAIL`` after it, where the source says ``NAME``, does."""
        ids: set[int] = set()
        idx = self.index
        for st in self.states:
            if st.kind == _C:
                self._lookup(st.pos, ids, True)
            elif st.kind == _P:
                for full in self.full:
                    if full.startswith(st.ph):
                        rem = full[len(st.ph):]
                        for k in range(1, len(rem)):
                            ids.update(idx.by_bytes.get(rem[:k], ()))
                        ids.update(idx.by_close.get(rem, ()))
            else:
                for q in range(st.pos + 1, min(self.n - 1, st.pos + self.window) + 1):
                    if self.boundary[q]:
                        self._lookup(q, ids, True)
        base = min(_placeholders(s) for s in self.states)
        out = {}
        for i in ids:
            states = self.advance(idx.token_bytes[i])
            if states:
                out[i] = (states, min(_placeholders(s) for s in states) > base)
        return out

    # --- finishing ----------------------------------------------------------------------------
    def force_finish(self) -> tuple:
        """Out of budget (or of tokens): end faithfully, erring towards masking the unfinished part."""
        st = min(self.states, key=lambda s: (s.kind != _C, len(s.spans)))
        if st.kind == _C:
            return st.spans
        ptype = self.full.get(st.ph) or next(t for p, t in self.full.items() if p.startswith(st.ph))
        return st.spans + ((st.pos, self.n, ptype, st.score if st.score is not None else 0.0),)

    def char_spans(self, spans: tuple, source: str = "model", strip: bool = True) -> list[Span]:
        starts = [0] * (self.n + 1)
        c = -1
        for i in range(self.n):
            if self.boundary[i]:
                c += 1
            starts[i] = c
        starts[self.n] = len(self.text)
        out = []
        for a, b, t, sc in spans:
            s = Span(starts[a], starts[b], t, float(sc if sc is not None else 0.0), source)
            s = trim(self.text, s) if strip else s
            if s is not None:
                out.append(s)
        return out


class ConstrainedMasker:
    """Copy-or-mask decoding over a causal LM with a KV cache (greedy, batched).

    ``prompt(source) -> str`` builds what the model sees before its answer (the training template;
    ``from_config`` uses ``data.templates.prompt_text``). ``types``: the placeholder set.
    """

    def __init__(self, model, tokenizer, prompt, stop_ids: list[int], bias: float = DEFAULT_BIAS,
                 window: int = DEFAULT_WINDOW, types: tuple[str, ...] = TYPES, batch_size: int = 8,
                 max_steps_per_byte: float = 2.0):
        self.model, self.tokenizer, self.prompt = model, tokenizer, prompt
        self.default_bias = DEFAULT_BIAS
        self.stop_ids = list(stop_ids)
        if not self.stop_ids:
            raise ValueError("constrained decoding needs at least one stop token id (EOS or end of turn)")
        self.bias, self.window, self.batch_size = bias, window, batch_size
        self.placeholders = {f"[{t}]".encode(): t for t in types}
        self.max_steps_per_byte = max_steps_per_byte
        self.index = vocab_index(tokenizer)

    @classmethod
    def from_config(cls, model, tokenizer, data_cfg, **kwargs) -> "ConstrainedMasker":
        """Prompts and stop tokens exactly as training and ``loraforge eval`` build them."""
        from loraforge.data.templates import prompt_text, stop_token_ids

        return cls(model, tokenizer, lambda s: prompt_text(tokenizer, s, data_cfg),
                   stop_token_ids(tokenizer, data_cfg.template), **kwargs)

    def find_spans(self, texts: list[str]) -> list[list[Span]]:
        """The model's spans per text, in character offsets of that text."""
        return [d.spans for d in self.decode(texts)]

    def decode(self, texts: list[str]) -> list[Decoded]:
        """Spans and the model's own output per text, in batches of similar length."""
        out = [Decoded([], [], t) for t in texts]
        todo = [i for i, t in enumerate(texts) if t.strip()]
        todo.sort(key=lambda i: -len(texts[i]))
        for s in range(0, len(todo), self.batch_size):
            idx = todo[s:s + self.batch_size]
            for i, d in zip(idx, self._decode([texts[i] for i in idx])):
                out[i] = d
        return out

    def _choose(self, row: _Row, logits) -> int | None:
        """The row's next token (None when it has stopped); advances the row."""
        import torch

        cands = row.candidates()
        stop = row.stop_spans()
        ids = list(cands) + ([self.stop_ids[0]] if stop is not None else [])
        if not ids:
            row.result = row.force_finish()
            return None
        scores = logits[torch.tensor(ids, device=logits.device)].float()
        opens = torch.tensor([i in cands and cands[i][1] for i in ids] if ids else [], device=scores.device)
        p_open = float(torch.softmax(scores, -1)[opens].sum())
        pick = ids[int((scores + self.bias * opens.float()).argmax())]
        if pick not in cands:  # the stop token
            row.result = stop
            return None
        states, commits = cands[pick]
        row.emitted += self.index.token_bytes[pick]
        if commits:  # the placeholders this token decided get the step's probability of deciding one
            states = [_State(s.kind, s.pos, s.ph,
                             tuple((a, b, t, p_open if sc is None else sc) for a, b, t, sc in s.spans),
                             p_open if s.kind != _C and s.score is None else s.score) for s in states]
        row.states = states
        return pick

    def _decode(self, texts: list[str]) -> list[Decoded]:
        import torch
        from transformers import DynamicCache

        model, tok = self.model, self.tokenizer
        rows = [_Row(t, self.index, self.placeholders, self.window) for t in texts]
        budgets = [int(self.max_steps_per_byte * r.n) + 16 for r in rows]
        side = tok.padding_side
        tok.padding_side = "left"
        try:
            enc = tok([self.prompt(t) for t in texts], return_tensors="pt", padding=True, add_special_tokens=False)
        finally:
            tok.padding_side = side
        device = next(model.parameters()).device
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                cache = DynamicCache(config=model.config)
                logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                               use_cache=True, logits_to_keep=1).logits[:, -1]
                positions = positions[:, -1:]
                live = list(range(len(rows)))
                step = 0
                while live:
                    keep, nxt = [], []
                    for j, r in enumerate(live):
                        if step >= budgets[r]:
                            rows[r].result = rows[r].force_finish()
                            continue
                        t = self._choose(rows[r], logits[j])
                        if t is not None:
                            keep.append(j)
                            nxt.append(t)
                    step += 1
                    if not keep:
                        break
                    if len(keep) < len(live):
                        sel = torch.tensor(keep, device=device)
                        cache.batch_select_indices(sel)
                        mask, positions = mask[sel], positions[sel]
                        live = [live[j] for j in keep]
                    mask = torch.cat([mask, mask.new_ones((len(live), 1))], dim=1)
                    positions = positions + 1
                    logits = model(input_ids=torch.tensor(nxt, device=device)[:, None], attention_mask=mask,
                                   position_ids=positions, past_key_values=cache, use_cache=True).logits[:, -1]
        finally:
            model.train(was_training)
        return [Decoded(r.char_spans(r.result or ()), r.char_spans(r.result or (), strip=False),
                        r.emitted.decode("utf-8", errors="replace")) for r in rows]
