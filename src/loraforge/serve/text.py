"""Text on the HTTP side of the engine: prompts to token ids, token ids to streamed text deltas.

Kept out of the generation thread: the engine hands out token ids only, and each request turns its
own ids into text while the next forward runs.
"""

from __future__ import annotations


class Codec:
    """The tokenizer's two directions as the server uses them."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        bos = tokenizer.bos_token_id
        self.bos = [bos] if bos is not None and tokenizer.encode("a")[:1] == [bos] else []

    def encode(self, prompt: str) -> list[int]:
        """A chat template may already start with BOS; never add a second one."""
        ids = self.tokenizer.encode(prompt, add_special_tokens=False)
        return ids if self.bos and ids[:1] == self.bos else self.bos + ids

    def stream(self, stops: list[str]) -> "TextStream":
        return TextStream(self.tokenizer, stops)


class TextStream:
    """Token ids -> text deltas for one request.

    Incremental: each token decodes a short window (the tokens since the last emitted text), not the
    whole answer. Held back until known: half a UTF-8 character, and a tail that may be the start of
    a stop string, so a stop string never leaks into a stream. ``stopped`` turns true at a stop
    string; the text is cut before it.
    """

    def __init__(self, tokenizer, stops: list[str]):
        self.tokenizer, self.stops = tokenizer, [s for s in stops if s]
        self.tokens: list[int] = []
        self.text = ""  # emitted so far
        self.stopped = False
        self._prefix = self._read = 0  # token offsets: decoded context, first token not yet turned into text
        self._held = ""  # decoded, not yet emitted

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token: int) -> str:
        """Add one generated token; returns the text it releases (maybe empty)."""
        self.tokens.append(token)
        before = self._decode(self.tokens[self._prefix:self._read])
        now = self._decode(self.tokens[self._prefix:])
        if len(now) <= len(before) or now.endswith("\ufffd"):
            return ""
        self._prefix, self._read = self._read, len(self.tokens)
        return self._release(now[len(before):])

    def finish(self) -> str:
        """The answer ended: release what was held back (an unfinished character included)."""
        if self.stopped:
            return ""
        rest = self._decode(self.tokens[self._prefix:])[len(self._decode(self.tokens[self._prefix:self._read])):]
        self._prefix = self._read = len(self.tokens)
        out = self._release(rest, final=True)
        return out

    def _release(self, chunk: str, final: bool = False) -> str:
        buf = self._held + chunk
        cuts = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if cuts:
            out, self._held, self.stopped = buf[:min(cuts)], "", True
        else:
            keep = 0 if final else max((k for s in self.stops for k in range(1, len(s)) if buf.endswith(s[:k])),
                                       default=0)
            out, self._held = buf[:len(buf) - keep], buf[len(buf) - keep:]
        self.text += out
        return out
