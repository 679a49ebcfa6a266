"""Which examples go in which micro-batch, as a pure function of (seed, position).

Because the order is computed, never stored, a resumed run sees exactly the batches the interrupted
run would have seen, and every DDP rank can find its share without talking to the others.
"""

from __future__ import annotations

import torch

from loraforge.data.templates import IGNORE, Encoded
from loraforge.train.packing import collate_packed

GROUP_SPAN = 64  # length grouping sorts within windows of this many batches, so order stays random


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, grouping: bool) -> list[list[int]]:
    """A shuffled epoch, cut into batches; with grouping, similar lengths share a batch (less padding)."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(lengths), generator=gen).tolist()
    if grouping:
        span = batch_size * GROUP_SPAN
        order = [i for s in range(0, len(order), span) for i in sorted(order[s:s + span], key=lambda j: -lengths[j])]
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    if grouping:  # the sorted windows would otherwise always start with their longest batch
        perm = torch.randperm(len(batches), generator=gen).tolist()
        batches = [batches[i] for i in perm]
    return batches


class BatchStream:
    """Micro-batch number g of an endless sequence of epochs; rank r of w takes g = k*w + r."""

    def __init__(self, examples: list[Encoded], batch_size: int, seed: int, grouping: bool, packed: bool = False):
        self.examples, self.packed = examples, packed
        self.lengths = [len(e.input_ids) for e in examples]
        self.batch_size, self.seed, self.grouping = batch_size, seed, grouping
        self._cache: dict[int, list[list[int]]] = {}
        self.per_epoch = len(epoch_batches(self.lengths, batch_size, seed, 0, grouping))

    def indices(self, g: int) -> list[int]:
        epoch, i = divmod(g, self.per_epoch)
        if epoch not in self._cache:
            self._cache = {epoch: epoch_batches(self.lengths, self.batch_size, self.seed, epoch, self.grouping)}
        return self._cache[epoch][i]

    def batch(self, g: int, pad_id: int, family: str) -> dict:
        examples = [self.examples[i] for i in self.indices(g)]
        if self.packed:
            return collate_packed(examples)
        return collate(examples, pad_id, family)


def collate(examples: list[Encoded], pad_id: int, family: str = "causal") -> dict[str, torch.Tensor]:
    """Right-padded tensors; padding is masked by position (attention 0, label IGNORE), never by id,
    so a pad id equal to EOS cannot hide the trained EOS."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    if family == "seq2seq":
        label_width = max(len(e.labels) for e in examples)
        labels = torch.full((len(examples), label_width), IGNORE, dtype=torch.long)
    else:
        labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, e in enumerate(examples):
        ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
        mask[row, : len(e.input_ids)] = 1
        labels[row, : len(e.labels)] = torch.tensor(e.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
