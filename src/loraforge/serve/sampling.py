"""Next tokens for every running row in one call: greedy, temperature and top-p side by side."""

from __future__ import annotations

import torch

from loraforge.serve.reduce import argmax_rows


def sample(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """(rows, vocab) logits -> (rows,) token ids. Rows with temperature 0 take the argmax; the others
    sample from softmax(logits / T) cut to the smallest set of tokens whose mass reaches ``top_p``
    (rows with top_p 1 keep every token). No Python loop over rows."""
    tokens = argmax_rows(logits)
    hot = temperature > 0
    if not bool(hot.any()):
        return tokens
    rows = hot.nonzero().squeeze(1)
    probs = torch.softmax(logits[rows].float() / temperature[rows, None], dim=-1)
    p = top_p[rows, None]
    if bool((p < 1).any()):
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        before = sorted_probs.cumsum(-1) - sorted_probs  # mass of the tokens ranked above each token
        sorted_probs = sorted_probs.masked_fill(before >= p, 0.0)  # the top token always stays
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    tokens[rows] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    return tokens
