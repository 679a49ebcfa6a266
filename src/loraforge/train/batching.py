"""Which examples go in which micro-batch, as a pure function of (seed, position).

Because the order is computed, never stored, a resumed run sees exactly the batches the interrupted
run would have seen, and every DDP rank can find its share without talking to the others. The same
holds for what is in each example (per-epoch source noise: ``data.splits.TrainExamples``) and, in a
multi-task run, for which task each example comes from (``MixtureStream``).
"""

from __future__ import annotations

from collections import Counter

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


def _example(examples, i: int, epoch: int) -> Encoded:
    """Example i as epoch ``epoch`` sees it: a plain list is the same every epoch, ``TrainExamples``
    (``data.splits``) may re-encode it (source noise)."""
    return examples[i] if isinstance(examples, list) else examples.at(i, epoch)


def _lengths(examples) -> list[int]:
    return examples.lengths if hasattr(examples, "lengths") else [len(e.input_ids) for e in examples]


def batch_work(lengths: list[int], packed: bool) -> int:
    """Token positions a micro-batch of these example lengths computes: the sum when packed (no padding),
    else rows x the longest. A step's time grows with it, which is what the time budget forecasts from."""
    return sum(lengths) if packed else len(lengths) * max(lengths)


class BatchStream:
    """Micro-batch number g of an endless sequence of epochs; rank r of w takes g = k*w + r."""

    def __init__(self, examples, batch_size: int, seed: int, grouping: bool, packed: bool = False):
        """``examples``: a list of ``Encoded``, or ``TrainExamples`` (encoded anew per epoch)."""
        self.examples, self.packed = examples, packed
        self.lengths = _lengths(examples)
        self.batch_size, self.seed, self.grouping = batch_size, seed, grouping
        self._cache: dict[int, list[list[int]]] = {}
        self.per_epoch = len(epoch_batches(self.lengths, batch_size, seed, 0, grouping))

    def indices(self, g: int) -> list[int]:
        epoch, i = divmod(g, self.per_epoch)
        if epoch not in self._cache:
            self._cache = {epoch: epoch_batches(self.lengths, self.batch_size, self.seed, epoch, self.grouping)}
        return self._cache[epoch][i]

    def work(self, g: int) -> int:
        """``batch_work`` of micro-batch g, from the lengths alone (nothing is encoded or collated)."""
        return batch_work([self.lengths[i] for i in self.indices(g)], self.packed)

    def batch(self, g: int, pad_id: int, family: str) -> dict:
        epoch = g // self.per_epoch
        examples = [_example(self.examples, i, epoch) for i in self.indices(g)]
        if self.packed:
            return collate_packed(examples)
        return collate(examples, pad_id, family)


class MixtureStream:
    """Micro-batch g of a multi-task run: the examples drawn at positions [g*B, (g+1)*B) of a
    ``data.mixture.Mixture`` (task by temperature or weights, then that task's next example). With
    grouping, each window of ``GROUP_SPAN`` batches is sorted by length, cut, and its batches shuffled,
    all seeded by the window: still a pure function of g."""

    def __init__(self, mix, batch_size: int, seed: int, grouping: bool, packed: bool = False):
        """``mix``: a ``data.splits.TaskMix`` (each task's ``TrainExamples`` and probability)."""
        from loraforge.data.mixture import Mixture

        self.sets, self.packed = mix.sets, packed
        self.mixture = Mixture({k: len(v) for k, v in mix.sets.items()}, mix.probabilities, seed)
        self.batch_size, self.seed, self.grouping = batch_size, seed, grouping
        self._window: tuple[int, list[list[int]]] | None = None

    def positions(self, g: int) -> list[int]:
        """The mixture positions in micro-batch g."""
        if not self.grouping:
            return list(range(g * self.batch_size, (g + 1) * self.batch_size))
        w, i = divmod(g, GROUP_SPAN)
        if self._window is None or self._window[0] != w:
            span = self.batch_size * GROUP_SPAN
            first = w * span
            order = sorted(range(first, first + span), key=lambda p: -self._length(p))
            batches = [order[s:s + self.batch_size] for s in range(0, span, self.batch_size)]
            gen = torch.Generator().manual_seed(self.seed * 100_003 + w)
            self._window = (w, [batches[j] for j in torch.randperm(len(batches), generator=gen).tolist()])
        return self._window[1][i]

    def _length(self, p: int) -> int:
        task, _, index = self.mixture.locate(p)
        return self.sets[task].lengths[index]

    def work(self, g: int) -> int:
        """``batch_work`` of micro-batch g, from the lengths alone."""
        return batch_work([self._length(p) for p in self.positions(g)], self.packed)

    def tasks(self, g: int) -> list[str]:
        return [self.mixture.locate(p)[0] for p in self.positions(g)]

    def task_counts(self, n_batches: int) -> dict[str, int]:
        """Examples per task in micro-batches [0, n_batches): the mix a run of that length actually saw."""
        counts = Counter(t for g in range(n_batches) for t in self.tasks(g))
        return {k: counts[k] for k in sorted(self.sets)}

    def batch(self, g: int, pad_id: int, family: str) -> dict:
        examples = []
        for p in self.positions(g):
            task, epoch, index = self.mixture.locate(p)
            examples.append(_example(self.sets[task], index, epoch))
        if self.packed:
            return collate_packed(examples)
        return collate(examples, pad_id, family)


def make_stream(train_set, batch_size: int, seed: int, grouping: bool, packed: bool = False):
    """The stream a training set calls for: ``MixtureStream`` for a multi-task ``TaskMix``, else ``BatchStream``."""
    if hasattr(train_set, "probabilities"):
        return MixtureStream(train_set, batch_size, seed, grouping, packed)
    return BatchStream(train_set, batch_size, seed, grouping, packed)


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
