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
@pytest.mark.parametrize("compile", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_matches_full_logits_loss_and_gradients(chunk, softcap, compile, smoothing):
    """Loss and gradients equal torch's cross-entropy on full logits (with its label smoothing too)."""
    hidden, head, labels = _case(trainable_weight=True)
    loss, n = target_only_ce(hidden, head, labels, chunk=chunk, softcap=softcap, compile=compile,
                             label_smoothing=smoothing)
    (2 * loss).backward()
    gh, gw = hidden.grad.clone(), head.weight.grad.clone()
    hidden.grad, head.weight.grad = None, None
    logits = head(hidden)
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    ref, n_ref = full_logits_ce(logits, labels, label_smoothing=smoothing)
    (2 * ref).backward()
    assert n == n_ref == int((labels[:, 1:] != IGNORE).sum())
    torch.testing.assert_close(loss.double(), ref.double(), rtol=1e-6, atol=0)  # the reference sums in fp32
    torch.testing.assert_close(gh, hidden.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gw, head.weight.grad, rtol=1e-5, atol=1e-6)


def test_no_labels_gives_zero_loss_and_zero_count():
    hidden, head, labels = _case()
    labels[:] = IGNORE
    loss, n = target_only_ce(hidden, head, labels)
    assert n == 0 and float(loss.detach()) == 0.0


def test_compiled_kernel_matches_eager_in_bf16():
    """The fused (torch.compile) softmax/gradient kernel gives eager's numbers on bf16 logits."""
    from loraforge.train import loss as loss_mod

    g = torch.Generator().manual_seed(1)
    z = (3 * torch.randn(37, 1000, generator=g)).bfloat16()
    y = torch.randint(0, 1000, (37,), generator=g)
    eager = loss_mod.softmax_xent(z, y)
    fused = loss_mod._xent(z, y, None, compile=True, grad=True)
    assert loss_mod._compiled not in (None, False)  # it really compiled
    torch.testing.assert_close(fused[0], eager[0], rtol=1e-5, atol=1e-3)
    assert fused[1].dtype == torch.bfloat16
    torch.testing.assert_close(fused[1].float(), eager[1].float(), rtol=0, atol=2e-3)
    # the gradient rows sum to 0 (softmax minus one-hot)
    assert eager[1].float().sum(-1).abs().max() < 0.05


def test_a_failing_compiler_falls_back_to_eager_with_a_warning(monkeypatch):
    from loraforge.train import loss as loss_mod

    def broken(fn, **kw):
        def run(*a, **k):
            raise RuntimeError("no C++ compiler")
        return run

    monkeypatch.setattr(loss_mod, "_compiled", None)
    monkeypatch.setattr(torch, "compile", broken)
    hidden, head, labels = _case()
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler"):
        loss, _ = target_only_ce(hidden, head, labels, compile=True)
    assert loss_mod._compiled is False
    ref, _ = target_only_ce(hidden, head, labels, compile=False)
    torch.testing.assert_close(loss, ref)


@pytest.mark.parametrize("compile", [False, True])
def test_without_gradients_the_loss_is_the_same_and_no_gradient_is_made(compile, monkeypatch):
    """Evaluation (nothing needs a gradient): the same loss, and the kernel is asked for none."""
    from loraforge.train import loss as loss_mod

    hidden, head, labels = _case()
    with_grad, n = target_only_ce(hidden, head, labels, chunk=4, compile=compile)
    asked = []
    real = loss_mod._xent
    monkeypatch.setattr(loss_mod, "_xent", lambda *a: asked.append(a[-1]) or real(*a))
    with torch.no_grad():
        without, n2 = target_only_ce(hidden, head, labels, chunk=4, compile=compile)
    assert asked and not any(asked) and n2 == n
    torch.testing.assert_close(without, with_grad.detach())
    assert loss_mod.softmax_xent(torch.randn(2, 5), torch.tensor([0, 3]), grad=False)[1] is None


def test_label_smoothing_changes_the_training_loss_only():
    """``train.label_smoothing`` raises the training loss of a confident model; the dev loss (no grad) is plain CE."""
    from loraforge.config import TrainConfig
    from loraforge.train.loop import TrainStep

    class Causal(torch.nn.Module):  # a tiny LM: embedding then head, full logits
        def __init__(self):
            super().__init__()
            self.emb, self.head = torch.nn.Embedding(13, 8), torch.nn.Linear(8, 13, bias=False)

        def forward(self, input_ids, attention_mask=None, **_):
            return type("Out", (), {"logits": self.head(self.emb(input_ids))})()

    torch.manual_seed(0)
    model = Causal()
    ids = torch.randint(0, 13, (2, 6))
    plain = TrainStep(model, "causal", TrainConfig(target_only_logits=False))
    smoothed = TrainStep(model, "causal", TrainConfig(target_only_logits=False, label_smoothing=0.2))
    for step in (plain, smoothed):
        step.compute_dtype = None
    train_plain, _ = plain(ids, torch.ones_like(ids), ids)
    train_smoothed, _ = smoothed(ids, torch.ones_like(ids), ids)
    assert not torch.isclose(train_plain, train_smoothed)
    with torch.no_grad():
        assert torch.isclose(plain(ids, torch.ones_like(ids), ids)[0], smoothed(ids, torch.ones_like(ids), ids)[0])
