"""Cross-entropy on target positions only, through the LM head in chunks, without storing logits.

Why our own: Gemma 3 has a 262,144-token vocabulary. The LM head is ~60% of the forward FLOPs, and
full logits for 8x512 tokens are 4 GiB in fp32 before their gradient. Prompt tokens have no label,
so their logits are wasted work. Here the head runs only on labelled positions, chunk by chunk, and
the backward pass is computed in the same sweep (the gradient of softmax-CE is ``softmax - onehot``),
so peak memory is one chunk of logits instead of all of them, and nothing is recomputed.

The elementwise part (softmax, log-sum-exp, the gradient) reads a chunk of logits several times in
eager PyTorch; ``torch.compile`` fuses those passes (``loraforge bench train --ablation``, row
``loraforge-no-compile``, shows what it buys). Without a working compiler it falls back to eager with
a warning: same numbers, slower.
"""

from __future__ import annotations

import warnings

import torch

from loraforge.data.templates import IGNORE


def softmax_xent(z: torch.Tensor, y: torch.Tensor, softcap: float | None = None,
                 grad: bool = True, smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(summed CE of logits ``z`` (rows, vocab) against ``y``, d loss / d z in z's dtype or None when
    ``grad`` is false), in fp32 or wider. ``smoothing``: label smoothing as torch's ``cross_entropy``
    (the target ``1 - smoothing`` plus ``smoothing / vocab`` everywhere)."""
    zf = z.to(torch.promote_types(z.dtype, torch.float32))
    if softcap:
        t = torch.tanh(zf / softcap)
        zf = t * softcap
    m = zf.amax(-1, keepdim=True)
    e = torch.exp(zf - m)
    s = e.sum(-1, keepdim=True)
    target = zf.gather(1, y[:, None]).squeeze(1)
    if smoothing:
        target = (1 - smoothing) * target + smoothing * zf.mean(-1)
    loss = (torch.log(s) + m).squeeze(1) - target
    if not grad:  # evaluation: the gradient would be a second full pass over the logits, unused
        return loss.sum(), None
    g = e / s - smoothing / z.shape[1] if smoothing else e / s
    g = torch.where(torch.arange(z.shape[1], device=z.device)[None, :] == y[:, None], g - (1 - smoothing), g)
    if softcap:
        g = g * (1 - t * t)
    return loss.sum(), g.to(z.dtype)


_compiled = None  # torch.compile(softmax_xent), made on first use; False once compiling has failed


def _xent(z, y, softcap, compile: bool, grad: bool, smoothing: float = 0.0):
    global _compiled
    if compile and _compiled is not False:
        if _compiled is None:
            _compiled = torch.compile(softmax_xent, dynamic=True)
        try:
            return _compiled(z, y, softcap, grad, smoothing)
        except Exception as e:  # no C++ compiler, unsupported platform: eager gives the same numbers
            warnings.warn(f"torch.compile of the loss failed ({type(e).__name__}: {str(e)[:200]}); "
                          "using eager PyTorch (slower). train.compile=false silences this.", stacklevel=2)
            _compiled = False
    return softmax_xent(z, y, softcap, grad, smoothing)


class _ChunkedLinearCE(torch.autograd.Function):
    """sum_i CE(softcap(h_i @ W^T), y_i) with grads for h (and W if it is trainable), chunk by chunk."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk: int, softcap: float | None, compile: bool, smoothing: float):
        loss = torch.zeros((), dtype=torch.promote_types(hidden.dtype, torch.float32), device=hidden.device)
        grad_h = torch.empty_like(hidden) if hidden.requires_grad else None
        grad_w = (torch.zeros_like(weight, dtype=torch.promote_types(weight.dtype, torch.float32))
                  if weight.requires_grad else None)
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start:start + chunk]
            part, g = _xent(h @ weight.T, targets[start:start + chunk], softcap, compile,
                            grad_h is not None or grad_w is not None, smoothing)
            loss += part
            if grad_h is not None:
                grad_h[start:start + chunk] = g @ weight
            if grad_w is not None:
                grad_w += (g.T @ h).to(grad_w.dtype)
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w = ctx.saved_tensors
        gh = grad_h * grad_loss.to(grad_h.dtype) if grad_h is not None else None
        gw = (grad_w * grad_loss).to(ctx.weight_dtype) if grad_w is not None else None
        return gh, gw, None, None, None, None, None


def target_only_ce(hidden: torch.Tensor, lm_head: torch.nn.Linear, labels: torch.Tensor, chunk: int = 256,
                   softcap: float | None = None, compile: bool = False,
                   label_smoothing: float = 0.0) -> tuple[torch.Tensor, int]:
    """Summed next-token loss over labelled positions, and how many there were.

    ``hidden`` is the final hidden state (batch, seq, dim); ``labels`` (batch, seq) holds IGNORE where
    nothing is trained. Position t predicts labels[t + 1]. ``chunk`` rows of logits exist at a time
    (256 x 262k fp32 = 256 MiB for Gemma 3).
    """
    shifted = labels[:, 1:]
    mask = shifted != IGNORE
    h = hidden[:, :-1][mask]
    y = shifted[mask]
    if y.numel() == 0:
        return hidden.sum() * 0.0, 0
    if lm_head.bias is not None:
        raise NotImplementedError("target_only_logits needs an LM head without bias; set train.target_only_logits=false")
    return _ChunkedLinearCE.apply(h, lm_head.weight, y, chunk, softcap, compile, label_smoothing), int(y.numel())


def full_logits_ce(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> tuple[torch.Tensor, int]:
    """The reference: summed CE from full logits (what transformers computes), shifted for causal LMs."""
    shifted = labels[:, 1:].reshape(-1)
    z = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    n = int((shifted != IGNORE).sum())
    return torch.nn.functional.cross_entropy(z, shifted, ignore_index=IGNORE, reduction="sum",
                                             label_smoothing=label_smoothing), n
