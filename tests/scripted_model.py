"""A tiny causal model whose greedy output is scripted: ``token`` n times, then EOS (``token`` may be
a list of tokens, emitted in turn: a repetition loop when ``n`` is None).

For tests about output length (budgets, cut outputs), where a random model's output length is
whatever its weights make it. Generate with batch_size=1: the script counts decode steps of one row.
"""

from __future__ import annotations

import torch

from conftest import tiny_causal
from loraforge.models.load import LoadedModel


class ScriptedHead(torch.nn.Module):
    def __init__(self, vocab: int, token: int | list[int], n: int | None, stop: int):
        super().__init__()
        self.vocab, self.token, self.n, self.stop, self.made = vocab, token, n, stop, 0

    def forward(self, hidden):
        logits = torch.zeros(*hidden.shape[:-1], self.vocab, dtype=hidden.dtype)
        tokens = self.token if isinstance(self.token, list) else [self.token]
        logits[..., tokens[self.made % len(tokens)] if self.n is None or self.made < self.n else self.stop] = 10.0
        self.made += 1
        return logits


def scripted_model(tokenizer, token: int | list[int], n: int | None) -> LoadedModel:
    """Emits ``token`` ``n`` times and then EOS (``n=None``: never stops)."""
    model = tiny_causal("gemma3", vocab_size=len(tokenizer)).eval()
    head = ScriptedHead(len(tokenizer), token, n, tokenizer.eos_token_id)
    model.lm_head = head

    def restart(module, args, kwargs):  # a prefill (more than one new position) starts a new output
        if kwargs["input_ids"].shape[1] > 1:
            head.made = 0

    model.register_forward_pre_hook(restart, with_kwargs=True)
    return LoadedModel(model=model, tokenizer=tokenizer, family="causal", name="scripted", path="")
