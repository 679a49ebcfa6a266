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
