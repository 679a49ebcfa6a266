"""The verified int8 LM head: its error bound holds, and greedy tokens are the fp32 head's, also on
adversarial near-ties where plain int8 picks other tokens; sampling rows see the fp32 distribution."""

from __future__ import annotations

import pytest
import torch

from loraforge.serve.head import TapHead, VerifiedHead, softcap
from loraforge.serve.sampling import sample

pytestmark = pytest.mark.skipif("fbgemm" not in torch.backends.quantized.supported_engines, reason="no fbgemm")


def weights(vocab: int = 3000, dim: int = 64, seed: int = 0) -> torch.Tensor:
    """Rows of very different scales, some with one outlier feature (int8's per-row scale is loose there)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(vocab, dim, generator=g) * torch.rand(vocab, 1, generator=g) * 0.2
    w[::7, 3] *= 40
    return w


def hidden(rows: int, dim: int = 64, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, dim, generator=g) * 3
    x[::3, 5] *= 30  # outlier features, as RMSNorm gains make them
    x[1] *= 1e-3  # a row far smaller than the rest of the batch
    return x


def near_ties(dim: int = 64, rows: int = 16, group: int = 6, seed: int = 2):
    """For each hidden row x_r, a group of tokens v_r + k_j * x_r / |x_r|^2: their logits differ by k_j
    (1e-3 apart, far inside int8's error, far outside fp32 rounding). The best one sits at a random
    place in its group, so picking the first near-best (as a coarse head tends to) is wrong."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, dim, generator=g)
    base = torch.randn(500, dim, generator=g) * 0.05
    blocks = []
    for r in range(rows):
        v = x[r] / x[r].norm() * 2 + torch.randn(dim, generator=g) * 0.05
        k = torch.randperm(group, generator=g).float() * 1e-3
        blocks.append(v[None] + k[:, None] * x[r][None] / x[r].norm() ** 2)
    w = torch.cat([base] + blocks)
    return w[torch.randperm(w.shape[0], generator=g)].contiguous(), x


def test_bound_holds_against_float64():
    w, x = weights(), hidden(12)
    head = VerifiedHead(w)
    approx, a, c, scale = head.approx(x)
    truth = (x.double() @ w.double().T) * scale.double()[:, None]
    err = (approx.double() - truth).abs()
    slack = head.slack(a, c).double()
    assert (err <= slack).all(), (err / slack).max()
    spread = approx.amax(1) - approx.amin(1)
    assert (slack.median(1).values < spread.double() / 20).all(), "a bound this loose excludes nothing"
    assert head.ok


def test_near_ties_give_the_fp32_argmax_where_int8_does_not():
    w, x = near_ties()
    head = VerifiedHead(w)
    ref = torch.nn.functional.linear(x, w).argmax(-1)
    tokens, fell_back, counts = head.greedy(x)
    assert torch.equal(tokens, ref)
    assert not fell_back.any() and (counts < w.shape[0] // 10).all(), "no pruning: the test would prove nothing"
    int8 = torch.ops.quantized.linear_dynamic(x, head.packed, reduce_range=True).argmax(-1)
    assert not torch.equal(int8, ref), "plain int8 should get some of these near-ties wrong"
    for n in (1, 5):  # alone and in smaller batches too
        assert torch.equal(head.greedy(x[:n])[0], ref[:n])


def test_exact_ties_go_to_the_lowest_index_like_argmax():
    w, x = near_ties(rows=4, seed=3)
    best = torch.nn.functional.linear(x, w).argmax(-1)
    w = torch.cat([w, w[best]])  # copies of each row's winner at higher indices
    w[5] = w[best[0]]  # and one copy below row 0's winner
    ref = torch.nn.functional.linear(x, w).argmax(-1)
    assert ref[0] == 5
    assert torch.equal(VerifiedHead(w).greedy(x)[0], ref)


def test_rows_over_the_candidate_limit_fall_back_to_the_full_head():
    w, x = near_ties(rows=4, seed=4)
    head = VerifiedHead(w, max_candidates=2)
    tokens, fell_back, counts = head.greedy(x)
    assert fell_back.all() and (counts > 2).all()
    assert torch.equal(tokens, torch.nn.functional.linear(x, w).argmax(-1))


def test_softcapping_saturated_ties_match_the_capped_fp32_head():
    """With a small cap, large logits all saturate to the same fp32 value: the capped argmax is then the
    lowest index among them, not the uncapped argmax."""
    w, x = near_ties(rows=6, seed=5)
    cap = 0.05
    ref = softcap(torch.nn.functional.linear(x, w), cap).argmax(-1)
    assert not torch.equal(ref, torch.nn.functional.linear(x, w).argmax(-1)), "no saturation: test is moot"
    assert torch.equal(VerifiedHead(w, cap=cap).greedy(x)[0], ref)


def test_sampling_rows_draw_from_the_fp32_distribution():
    w, x = weights(vocab=800), hidden(6)
    head = VerifiedHead(w)
    temp = torch.tensor([0.0, 0.8, 0.0, 1.3, 0.7, 0.0])
    top_p = torch.tensor([1.0, 0.9, 1.0, 1.0, 0.5, 1.0])
    got, rows = head.next_tokens(x, temp, top_p, torch.Generator().manual_seed(7))
    hot = temp > 0
    logits = torch.nn.functional.linear(x, w)
    want = sample(logits[hot], temp[hot], top_p[hot], torch.Generator().manual_seed(7))
    assert torch.equal(got[hot], want)
    assert torch.equal(got[~hot], logits[~hot].argmax(-1))
    assert rows == {"verified": 3, "fallback": 0, "sampled": 3}


def test_tap_hands_over_the_hidden_state_and_otherwise_is_the_linear():
    lin = torch.nn.Linear(8, 20, bias=False)
    model = torch.nn.Module()
    model.lm_head = lin
    model.get_output_embeddings = lambda: model.lm_head
    tap = TapHead.install(model)
    assert tap is lin and isinstance(tap, torch.nn.Linear)
    x = torch.randn(3, 1, 8)
    assert torch.equal(tap(x), x @ lin.weight.T)
    tap.tap = True
    assert tap(x).shape == (3, 1, 0) and tap.hidden is x
    head = VerifiedHead(tap.weight)
    assert not head.stale
    tap.weight.data = tap.weight.data + 1  # e.g. a LoRA merged into tied embeddings
    assert head.stale


# --- in the engine ---------------------------------------------------------------------------------

def _engine_tokens(model, ps, max_tokens, **kw):
    from test_serve_engine import make_engine, request, wait

    engine = make_engine(model, **kw)
    try:
        pairs = [request(p, max_tokens) for p in ps]
        for r, _ in pairs:
            engine.submit(r)
        got = [wait(c).tokens for _, c in pairs]
        counts = dict(engine.metrics.counters.get("loraforge_lm_head_rows_total", {}))
        return got, counts, engine.head
    finally:
        engine.close()


def test_engine_uses_the_verified_head_by_default_with_fp32_tokens():
    """Tiny Gemma 3 (tied head): the engine's verified head gives transformers' own greedy tokens."""
    from conftest import tiny_causal
    from test_serve_engine import alone, prompts

    model = tiny_causal("gemma3", vocab_size=400, sliding_window=8).eval()
    ps = prompts(6)
    expected = [alone(model, p, 8) for p in ps]
    got, counts, head = _engine_tokens(model, ps, 8)
    assert head is not None and got == expected
    assert counts.get((("path", "verified"),), 0) > 0, counts
    off, counts_off, head_off = _engine_tokens(model, ps, 8, verified_lm_head=False)
    assert head_off is None and not counts_off and off == expected


def test_engine_uses_the_models_head_once_the_weight_changes():
    """A tied weight replaced under the engine (as a merged embedding LoRA does): the stale int8 copy is
    not used, the model's fp32 head is."""
    from conftest import tiny_causal
    from test_serve_engine import alone, make_engine, prompts, request, wait

    model = tiny_causal("gemma3", vocab_size=400, sliding_window=8).eval()
    engine = make_engine(model)
    try:
        with torch.no_grad():
            model.get_output_embeddings().weight.data = model.get_output_embeddings().weight.data.flip(0)
        ps = prompts(2)
        expected = [alone(model, p, 6) for p in ps]
        pairs = [request(p, 6) for p in ps]
        for r, _ in pairs:
            engine.submit(r)
        assert [wait(c).tokens for _, c in pairs] == expected
        assert engine.head.stale and not engine.metrics.counters.get("loraforge_lm_head_rows_total")
    finally:
        engine.close()


def test_cold_sampling_on_near_ties_follows_fp32_not_int8():
    """Temperature 1e-4 over logits 1e-3 apart: the fp32 distribution is all but one-hot on the fp32
    argmax; int8 logits would put the mass elsewhere."""
    w, x = near_ties(seed=6)
    head = VerifiedHead(w)
    temp, top_p = torch.full((x.shape[0],), 1e-4), torch.ones(x.shape[0])
    got, rows = head.next_tokens(x, temp, top_p, torch.Generator().manual_seed(0))
    assert torch.equal(got, torch.nn.functional.linear(x, w).argmax(-1)) and rows["sampled"] == x.shape[0]
