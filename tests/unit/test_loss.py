import pytest
import torch

from loraforge.data.templates import IGNORE
from loraforge.train.loss import full_logits_ce, target_only_ce


def _case(seed=0, vocab=97, dim=16, trainable_weight=False):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(3, 11, dim, generator=g, dtype=torch.float64, requires_grad=True)
    head = torch.nn.Linear(dim, vocab, bias=False).double()
    head.weight.requires_grad_(trainable_weight)
    labels = torch.randint(0, vocab, (3, 11), generator=g)
    labels[0, :5] = IGNORE
    labels[2, 7:] = IGNORE
    return hidden, head, labels


@pytest.mark.parametrize("chunk", [1, 4, 1024])
@pytest.mark.parametrize("softcap", [None, 5.0])
def test_matches_full_logits_loss_and_gradients(chunk, softcap):
    hidden, head, labels = _case(trainable_weight=True)
    loss, n = target_only_ce(hidden, head, labels, chunk=chunk, softcap=softcap)
    (2 * loss).backward()
    gh, gw = hidden.grad.clone(), head.weight.grad.clone()
    hidden.grad, head.weight.grad = None, None
    logits = head(hidden)
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    ref, n_ref = full_logits_ce(logits, labels)
    (2 * ref).backward()
    assert n == n_ref == int((labels[:, 1:] != IGNORE).sum())
    torch.testing.assert_close(loss.double(), ref.double())
    torch.testing.assert_close(gh, hidden.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gw, head.weight.grad, rtol=1e-5, atol=1e-6)


def test_no_labels_gives_zero_loss_and_zero_count():
    hidden, head, labels = _case()
    labels[:] = IGNORE
    loss, n = target_only_ce(hidden, head, labels)
    assert n == 0 and float(loss.detach()) == 0.0
