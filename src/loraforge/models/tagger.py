"""A token-tagging head on a causal LM's decoder stack (``model.head: tagger``).

The head is one linear layer over the last hidden states, one logit per label (``data.pii_tags.LABELS``),
laid out like transformers' ``*ForTokenClassification`` (the stack as ``model``, the head as
``score``), so PEFT trains the stack's adapter and saves the head beside it (``modules_to_save``).
Where the architecture supports it (Gemma 3's ``use_bidirectional_attention``, what EmbeddingGemma
uses) the stack can attend both ways (``model.bidirectional``), so a tag also depends on the words
after it. On pii:dev the left-to-right tagger scored higher after the same 130 steps, so the
layers' own attention is the default. A lighter way to let a tag see what follows keeps the layers
left to right and gives the head the next few tokens' hidden states too (``model.tagger_lookahead``).

A saved tagger adapter is a PEFT folder plus ``tagger.json`` (labels, attention: ``runs.tagger_meta``);
``load_adapter`` rebuilds the head from it before loading the weights.
"""

from __future__ import annotations

import torch


def supports_bidirectional(config) -> bool:
    return hasattr(config, "use_bidirectional_attention")


def set_bidirectional(stack: torch.nn.Module) -> None:
    """Let every token attend to every other (Gemma 3: the config flag its mask builder reads, and
    each attention layer's ``is_causal`` that SDPA reads)."""
    stack.config.use_bidirectional_attention = True
    for module in stack.modules():
        if hasattr(module, "is_causal"):
            module.is_causal = False


class TokenTagger(torch.nn.Module):
    """``model``: the decoder stack; ``score``: hidden -> label logits. ``forward`` returns
    transformers' ``TokenClassifierOutput`` (logits only; the training step sums the loss itself)."""

    is_token_tagger = True  # read through PEFT's wrappers: ``getattr(model, "is_token_tagger", False)``

    def __init__(self, stack: torch.nn.Module, labels: tuple[str, ...], bidirectional: bool, lookahead: int = 0):
        super().__init__()
        self.model = stack
        self.config = stack.config
        self.labels = tuple(labels)
        self.bidirectional = bidirectional
        self.lookahead = lookahead
        self.score = torch.nn.Linear(stack.config.hidden_size * (1 + lookahead), len(labels), dtype=torch.float32,
                                     device=next(stack.parameters()).device)
        torch.nn.init.zeros_(self.score.weight)  # every label equally likely until trained
        torch.nn.init.zeros_(self.score.bias)
        if bidirectional:
            set_bidirectional(stack)

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        from transformers.modeling_outputs import TokenClassifierOutput

        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        hidden = with_lookahead(hidden.to(self.score.weight.dtype), self.lookahead, attention_mask)
        return TokenClassifierOutput(logits=self.score(hidden))

    def meta(self) -> dict:
        return {"labels": list(self.labels), "bidirectional": self.bidirectional, "lookahead": self.lookahead}


def with_lookahead(hidden: torch.Tensor, k: int, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """[h_i, h_{i+1}, ..., h_{i+k}] per position (batch, seq, hidden * (k + 1)); positions past the text
    (the end, or padding) read zeros, so a tag never depends on pad tokens or on how a batch was padded."""
    if not k:
        return hidden
    if attention_mask is not None:
        hidden = hidden * attention_mask[..., None].to(hidden.dtype)
    pad = hidden.new_zeros(hidden.shape[0], k, hidden.shape[-1])
    padded = torch.cat([hidden, pad], dim=1)
    n = hidden.shape[1]
    return torch.cat([padded[:, j:j + n] for j in range(k + 1)], dim=-1)


def build_tagger(causal_lm: torch.nn.Module, labels: tuple[str, ...], bidirectional: bool | None = None,
                 lookahead: int = 0) -> TokenTagger:
    """A tagger over ``causal_lm``'s decoder stack (shared, not copied; its LM head is left out).
    ``bidirectional``: None = where the architecture supports it. ``lookahead``: next tokens the head reads."""
    from loraforge.config import ConfigError

    stack = getattr(causal_lm, "model", None)
    if stack is None or not hasattr(stack, "layers"):
        raise ConfigError(f"model.head=tagger needs a decoder-only model with a layer stack; "
                          f"{type(causal_lm).__name__} has none")
    possible = supports_bidirectional(stack.config)
    if bidirectional and not possible:
        raise ConfigError(f"a bidirectional tagger needs an architecture with bidirectional attention (Gemma 3); "
                          f"{type(stack.config).__name__} has none")
    return TokenTagger(stack, labels, possible if bidirectional is None else bidirectional, lookahead)


def tag_texts(model: torch.nn.Module, tokenizer, texts: list[str], bias: float = 0.0, batch_size: int = 16) -> list:
    """Spans ``(start, end, type, score)`` per text from a tagger (PEFT-wrapped or merged), read entity
    by entity (``data.pii_tags.decode_entities``). ``bias`` is taken from every token's ``O`` logit
    (higher tags more)."""
    from loraforge.data.pii_tags import decode_entities

    return [decode_entities(text, offsets, probs, bias)
            for text, (offsets, probs) in zip(texts, tag_probabilities(model, tokenizer, texts, batch_size))]


def tag_probabilities(model: torch.nn.Module, tokenizer, texts: list[str], batch_size: int = 16) -> list:
    """Per text, its tokens' character offsets and label probabilities ``(offsets, probs)``, in batches of
    similar length: what ``tag_texts`` decodes, kept apart so one pass can be decoded at several biases."""
    out: list = [None] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad little
    device = next(model.parameters()).device
    for k in range(0, len(order), batch_size):
        rows = order[k:k + batch_size]
        # never truncated: an untagged tail would leak (maskers chunk long texts before they get here)
        enc = tokenizer([texts[i] for i in rows], return_offsets_mapping=True, padding=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(input_ids=enc["input_ids"].to(device),
                           attention_mask=enc["attention_mask"].to(device)).logits
        probs = torch.softmax(logits.float(), dim=-1).cpu()
        for r, i in enumerate(rows):
            keep = enc["attention_mask"][r].bool()
            out[i] = ([tuple(o) for o in enc["offset_mapping"][r][keep].tolist()], probs[r][keep].tolist())
    return out
