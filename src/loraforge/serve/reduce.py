"""Row-wise argmax and top-k over a large vocabulary, exact and several times faster on a CPU.

Why: torch's CPU ``argmax`` and ``topk`` over a 262k-token row cost about ten times an ``amax`` of the
same row (``python -m loraforge.bench.int8_kernels`` shows where a decoding step goes). Splitting each
row into blocks, taking the blocks' maxima (one fast ``amax``), and finishing inside the few blocks
that matter gives the same answer: the first maximum lies in the first block whose maximum is the
row's maximum, and the k largest values lie in the k blocks with the largest maxima (any block
holding one of them has a maximum at least as large as it, and fewer than k blocks can beat that).
Rows are reduced independently, so a row's result never depends on its batch mates.
"""

from __future__ import annotations

import math

import torch

MIN_VOCAB = 16384  # below this torch's own ops are fast enough


def _block(vocab: int) -> int | None:
    """A divisor of ``vocab`` near its square root (blocks and block count both small), or None."""
    root = math.isqrt(vocab)
    for delta in range(root // 2):
        for size in (root + delta, root - delta):
            if size > 1 and vocab % size == 0:
                return size
    return None


def argmax_rows(x: torch.Tensor) -> torch.Tensor:
    """``x.argmax(-1)`` of a (rows, vocab) tensor: the same indices (first maximum, NaN counts as largest)."""
    rows, vocab = x.shape
    block = _block(vocab) if vocab >= MIN_VOCAB and x.device.type == "cpu" else None
    if block is None:
        return x.argmax(-1)
    blocks = x.reshape(rows, vocab // block, block)
    best = blocks.amax(2).argmax(1)  # amax and argmax both propagate NaN as the largest value
    inside = blocks[torch.arange(rows, device=x.device), best].argmax(1)
    return best * block + inside


def topk_indices(x: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest values of each row (as a set: the order is unspecified; ties at the
    k-th value may pick other equal entries than ``torch.topk`` would)."""
    rows, vocab = x.shape
    k = min(k, vocab)
    block = _block(vocab) if vocab >= MIN_VOCAB and x.device.type == "cpu" else None
    if block is None or vocab // block <= k:
        return x.topk(k, dim=1).indices
    blocks = x.reshape(rows, vocab // block, block)
    best = blocks.amax(2).topk(k, dim=1).indices  # (rows, k): the blocks holding the k largest values
    candidates = blocks.gather(1, best[:, :, None].expand(-1, -1, block)).reshape(rows, k * block)
    inside = candidates.topk(k, dim=1).indices
    return best.gather(1, inside // block) * block + inside % block
