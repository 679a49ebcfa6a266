import torch

from loraforge.data.templates import IGNORE, Encoded
from loraforge.train.batching import BatchStream, collate, epoch_batches


def test_epoch_covers_every_example_once_and_is_deterministic():
    lengths = [5 + (i * 7) % 40 for i in range(103)]
    for grouping in (False, True):
        a = epoch_batches(lengths, 8, seed=1, epoch=0, grouping=grouping)
        assert a == epoch_batches(lengths, 8, seed=1, epoch=0, grouping=grouping)
        assert sorted(i for b in a for i in b) == list(range(103))
        assert a != epoch_batches(lengths, 8, seed=1, epoch=1, grouping=grouping)


def test_length_grouping_reduces_padding():
    lengths = [5 + (i * 37) % 200 for i in range(512)]

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    plain = padding(epoch_batches(lengths, 8, 0, 0, grouping=False))
    grouped = padding(epoch_batches(lengths, 8, 0, 0, grouping=True))
    assert grouped < plain / 4


def test_stream_continues_into_the_next_epoch():
    examples = [Encoded([1] * (i + 2), [IGNORE] + [1] * (i + 1)) for i in range(10)]
    stream = BatchStream(examples, batch_size=4, seed=0, grouping=False)
    assert stream.per_epoch == 3
    first_epoch = [stream.indices(g) for g in range(3)]
    second_epoch = [stream.indices(g) for g in range(3, 6)]
    assert sorted(sum(first_epoch, [])) == sorted(sum(second_epoch, [])) == list(range(10))


def test_collate_masks_padding_by_position_even_when_pad_is_eos():
    eos = 1
    a = Encoded([5, 6, eos], [IGNORE, 6, eos])
    b = Encoded([5, eos], [IGNORE, eos])
    batch = collate([a, b], pad_id=eos)
    assert batch["input_ids"].tolist() == [[5, 6, eos], [5, eos, eos]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, eos], [IGNORE, eos, IGNORE]]
    assert batch["labels"].dtype == torch.long


class _Encoded:
    """A ``TrainExamples`` stand-in for ``MixtureStream``: lengths, and each example by index."""

    def __init__(self, examples):
        self.examples, self.lengths = examples, [len(e.input_ids) for e in examples]

    def __len__(self):
        return len(self.examples)

    def at(self, i, epoch):
        return self.examples[i]


def test_a_streams_work_is_the_token_positions_its_batch_computes():
    """The time budget forecasts from ``work(g)`` without building batches: it must equal what the batch
    holds (rows x longest when padded, the one packed row's length when packed) for either stream."""
    from types import SimpleNamespace

    from loraforge.train.batching import MixtureStream

    examples = [Encoded([1] * (3 + (i * 13) % 40), [IGNORE] * (3 + (i * 13) % 40)) for i in range(50)]
    mix = SimpleNamespace(sets={"a": _Encoded(examples[:30]), "b": _Encoded(examples[30:])},
                          probabilities={"a": 0.5, "b": 0.5})
    for packed in (False, True):
        for stream in (BatchStream(examples, batch_size=4, seed=0, grouping=True, packed=packed),
                       MixtureStream(mix, batch_size=4, seed=0, grouping=True, packed=packed)):
            works = [stream.work(g) for g in range(30)]
            assert works == [stream.batch(g, 0, "causal")["input_ids"].numel() for g in range(30)]
            assert len(set(works)) > 5  # grouped batches differ: the forecast has something to follow
