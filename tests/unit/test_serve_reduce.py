"""Blockwise argmax/top-k: the same answers as torch's own ops, row by row."""

import torch

from loraforge.serve.reduce import _block, argmax_rows, topk_indices

VOCAB = 128 * 160  # blocks of 160 (a divisor near the square root)


def test_block_is_a_divisor_near_the_square_root():
    assert _block(262144) == 512
    assert VOCAB % _block(VOCAB) == 0
    assert _block(50257) is None  # prime-ish sizes fall back to torch's ops


def test_argmax_matches_torch_including_ties_and_nan():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, VOCAB, generator=g)
    x[1, 5], x[1, VOCAB - 3] = 50.0, 50.0  # a tie across blocks: the first index wins
    x[2, 700], x[2, 701] = 50.0, 50.0  # a tie inside one block
    x[3, 9000] = float("nan")  # NaN counts as the largest
    x[4] = -float("inf")
    x[4, VOCAB - 1] = 0.0
    assert torch.equal(argmax_rows(x), x.argmax(-1))
    view = torch.randn(3, 1, VOCAB, generator=g)[:, -1]  # the engine passes logits[:, -1]
    assert torch.equal(argmax_rows(view), view.argmax(-1))


def test_topk_is_the_same_set_as_torch():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, VOCAB, generator=g)
    x[0, :40] = 100 + torch.arange(40.0)  # all of the top in one block
    for k in (1, 8, 32):
        ours, theirs = topk_indices(x, k), x.topk(k, dim=1).indices
        assert torch.equal(ours.sort(1).values, theirs.sort(1).values), k


def test_rows_do_not_depend_on_their_batch_mates():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(8, VOCAB, generator=g)
    alone = [topk_indices(x[i:i + 1], 32).sort(1).values for i in range(8)]
    assert torch.equal(topk_indices(x, 32).sort(1).values, torch.cat(alone))
    assert torch.equal(argmax_rows(x), torch.cat([argmax_rows(x[i:i + 1]) for i in range(8)]))


def test_small_vocabularies_use_torch_directly():
    x = torch.randn(3, 1000)
    assert torch.equal(argmax_rows(x), x.argmax(-1))
    assert torch.equal(topk_indices(x, 5).sort(1).values, x.topk(5, dim=1).indices.sort(1).values)
