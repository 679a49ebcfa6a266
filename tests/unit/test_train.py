"""The training loop on tiny random-weight models: correctness of the fast path, learning, resume."""

import copy

import pytest
import torch

from conftest import tiny_causal
from loraforge.adapters import apply_adapter
from loraforge.config import AdapterConfig, DataConfig, TrainConfig
from loraforge.data.formats import Example
from loraforge.data.templates import encode_examples
from loraforge.train.batching import collate
from loraforge.train.loop import TrainStep, train

PAIRS = [("A Pod is the smallest unit.", "Pod 是最小的单元。"), ("Use `kubectl get pods`.", "使用 `kubectl get pods`。"),
         ("Kubernetes is an open source system.", "Kubernetes 是一个开源系统。"), ("A Service exposes Pods.", "Service 公开 Pod。")]


def encoded(tok, n=4):
    examples = [Example(source=s, target=t) for s, t in PAIRS * n]
    return encode_examples(tok, examples, DataConfig(template="chatml"))


@pytest.mark.parametrize("arch", ["gemma3", "qwen2", "llama"])
def test_fast_path_matches_full_logits(arch, tiny_tokenizer):
    model = apply_adapter(tiny_causal(arch, vocab_size=len(tiny_tokenizer)), AdapterConfig(r=4))
    with torch.no_grad():  # make the adapter non-zero so its gradients are informative
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    batch = collate(encoded(tiny_tokenizer)[:4], tiny_tokenizer.pad_token_id)
    grads, losses = [], []
    for fast in (True, False):
        model.zero_grad()
        step = TrainStep(model, "causal", TrainConfig(target_only_logits=fast, logits_chunk=16))
        assert step.fast == fast
        loss, n = step(**batch)
        loss.backward()
        losses.append((float(loss), int(n)))
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad})
    assert losses[0][1] == losses[1][1] > 0
    assert losses[0][0] == pytest.approx(losses[1][0], rel=1e-5)
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], rtol=1e-3, atol=1e-4)


def _lora_grads(model, batch, cfg):
    model.zero_grad()
    loss, n = TrainStep(model, "causal", cfg)(**batch)
    loss.backward()
    return float(loss) / int(n), {k: p.grad.float().clone() for k, p in model.named_parameters() if p.requires_grad}


def _nonzero_lora(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    return model


def test_bf16_base_with_fp32_adapter_computes_in_bf16_and_matches_fp32(tiny_tokenizer):
    """Mixed precision: frozen bf16 weights, fp32 LoRA weights (for the optimizer), bf16 matmuls.
    Loss and gradients agree with the all-fp32 model to bf16 accuracy."""
    from loraforge.train.loop import mixed_precision_dtype

    base = tiny_causal("gemma3", vocab_size=len(tiny_tokenizer))
    batch = collate(encoded(tiny_tokenizer)[:4], tiny_tokenizer.pad_token_id)
    torch.manual_seed(0)
    ref_model = _nonzero_lora(apply_adapter(copy.deepcopy(base), AdapterConfig(r=4)))
    torch.manual_seed(0)
    mixed = _nonzero_lora(apply_adapter(copy.deepcopy(base).to(torch.bfloat16), AdapterConfig(r=4)))
    assert {p.dtype for p in mixed.parameters() if p.requires_grad} == {torch.float32}  # PEFT upcasts them
    assert mixed_precision_dtype(mixed) == torch.bfloat16 and mixed_precision_dtype(ref_model) is None
    seen = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: seen.append(args[0].dtype))
             for n, m in mixed.named_modules() if n.endswith("lora_A.default")]
    loss, grads = _lora_grads(mixed, batch, TrainConfig(logits_chunk=16))
    for h in hooks:
        h.remove()
    assert seen and set(seen) == {torch.bfloat16}  # PEFT's cast of LoRA inputs to fp32 is off
    ref_loss, ref_grads = _lora_grads(ref_model, batch, TrainConfig(logits_chunk=16))
    assert loss == pytest.approx(ref_loss, rel=2e-2)
    for k in ref_grads:
        cos = torch.nn.functional.cosine_similarity(grads[k].flatten(), ref_grads[k].flatten(), dim=0)
        assert cos > 0.98, k
    # after the step, the model works outside autocast again (PEFT's casting restored)
    assert all(m.cast_input_dtype_enabled for n, m in mixed.named_modules() if hasattr(m, "cast_input_dtype_enabled"))


def test_activation_checkpointing_gives_the_same_gradients(tiny_tokenizer, tmp_path):
    from loraforge.train.loop import activation_checkpointing

    model = _nonzero_lora(apply_adapter(tiny_causal("gemma3", vocab_size=len(tiny_tokenizer)), AdapterConfig(r=4)))
    batch = collate(encoded(tiny_tokenizer)[:4], tiny_tokenizer.pad_token_id)
    model.train()
    plain = _lora_grads(model, batch, TrainConfig())
    with activation_checkpointing(model, True):
        assert model.get_base_model().is_gradient_checkpointing
        recomputed = _lora_grads(model, batch, TrainConfig())
    assert not model.get_base_model().is_gradient_checkpointing  # switched off again afterwards
    assert recomputed[0] == pytest.approx(plain[0], rel=1e-6)
    for k in plain[1]:
        torch.testing.assert_close(recomputed[1][k], plain[1][k], rtol=1e-5, atol=1e-7)
    cfg = TrainConfig(steps=2, batch_size=4, eval_every=0, save_every=0, activation_checkpointing=True)
    result = train(model, encoded(tiny_tokenizer, 1), [], cfg, tmp_path, tiny_tokenizer.pad_token_id, progress=False)
    assert result.steps == 2 and not model.get_base_model().is_gradient_checkpointing


def test_compiled_decoder_stack_matches_eager(tiny_tokenizer):
    """train.compile_model: the same loss and gradients as eager; evaluation stays eager."""
    model = _nonzero_lora(apply_adapter(tiny_causal("gemma3", vocab_size=len(tiny_tokenizer)), AdapterConfig(r=4)))
    batch = collate(encoded(tiny_tokenizer)[:4], tiny_tokenizer.pad_token_id)
    model.train()
    keys_before = list(model.state_dict())
    eager = _lora_grads(model, batch, TrainConfig())
    step = TrainStep(model, "causal", TrainConfig(compile_model=True))
    assert step.compiled_layers is not None
    calls = []
    step.compiled_layers[0].register_forward_pre_hook(lambda *a: calls.append(1))
    model.zero_grad()
    loss, n = step(**batch)
    loss.backward()
    assert calls == [1]  # the step went through the compiled stack
    assert float(loss) / int(n) == pytest.approx(eager[0], rel=1e-5)
    for k, p in model.named_parameters():
        if p.requires_grad:
            # fused kernels round in another order (on the AMD kind a 2e-6 element of a 1e-2 gradient)
            torch.testing.assert_close(p.grad, eager[1][k], rtol=1e-4, atol=1e-4 * float(eager[1][k].abs().max()))
    with torch.no_grad():
        step(**batch)
    assert calls == [1]  # no-grad evaluation took the eager stack
    assert all(not isinstance(m, torch._dynamo.eval_frame.OptimizedModule) for m in model.modules())
    assert list(model.state_dict()) == keys_before  # the wrappers never stay in the model


@pytest.mark.parametrize("extra", [{"activation_checkpointing": True}, {"packing": True}])
def test_compiled_layers_train_like_eager_with_checkpointing_and_packing(extra, tiny_tokenizer, tmp_path):
    """Compiled layers inside HF's checkpointing, and around packed attention (which stays eager)."""
    losses = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = apply_adapter(tiny_causal("gemma3", vocab_size=len(tiny_tokenizer)), AdapterConfig(r=4))
        cfg = TrainConfig(steps=3, batch_size=4, eval_every=2, save_every=0, lr=1e-2, compile_model=compiled, **extra)
        result = train(model, encoded(tiny_tokenizer), encoded(tiny_tokenizer)[:2], cfg, tmp_path / str(compiled),
                       tiny_tokenizer.pad_token_id, progress=False)
        losses[compiled] = [row.get("loss", row.get("dev_loss")) for row in result.history]
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


@pytest.mark.parametrize("arch", ["gemma3", "qwen2", "llama"])
def test_loss_decreases_on_a_repeated_batch(arch, tiny_tokenizer, tmp_path):
    model = apply_adapter(tiny_causal(arch, vocab_size=len(tiny_tokenizer)), AdapterConfig(r=8))
    data = encoded(tiny_tokenizer, n=1)
    cfg = TrainConfig(steps=30, batch_size=4, lr=3e-2, warmup_steps=0, eval_every=0, save_every=0)
    result = train(model, data, data, cfg, tmp_path, tiny_tokenizer.pad_token_id, progress=False)
    losses = [r["loss"] for r in result.history if "loss" in r]
    assert losses[-1] < 0.5 * losses[0]
    assert result.history[-1]["dev_loss"] < losses[0]


def test_only_adapter_weights_change(tiny_tokenizer, tmp_path):
    base = tiny_causal("gemma3", vocab_size=len(tiny_tokenizer))
    frozen = {k: v.clone() for k, v in base.state_dict().items()}
    model = apply_adapter(base, AdapterConfig(r=4))
    cfg = TrainConfig(steps=3, batch_size=4, lr=1e-2, eval_every=0, save_every=0)
    train(model, encoded(tiny_tokenizer, 1), [], cfg, tmp_path, tiny_tokenizer.pad_token_id, progress=False)
    for name, p in model.named_parameters():
        if "lora_" in name:
            continue
        key = name.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(p, frozen[key]), name


def test_grad_accumulation_equals_a_bigger_batch(tiny_tokenizer, tmp_path):
    """One step over the same 4 examples: as one batch of 4, or as 2 micro-batches of 2."""
    data = encoded(tiny_tokenizer, 1)
    base = tiny_causal("gemma3", vocab_size=len(tiny_tokenizer))
    results = []
    for bs, accum in ((4, 1), (2, 2)):
        torch.manual_seed(0)
        model = apply_adapter(copy.deepcopy(base), AdapterConfig(r=4))
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.fill_(0.01)
        cfg = TrainConfig(steps=1, batch_size=bs, grad_accum=accum, lr=1e-2, warmup_steps=0, eval_every=0,
                          save_every=0, length_grouping=False, max_grad_norm=None)
        train(model, data, [], cfg, tmp_path / f"{bs}", tiny_tokenizer.pad_token_id, progress=False)
        results.append({k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad})
    for k in results[0]:
        torch.testing.assert_close(results[0][k], results[1][k], rtol=1e-4, atol=1e-6)


def _one_adam_step(tiny_tokenizer, tmp_path, ratio):
    """Weight changes after one AdamW step at lr 1e-3 (Adam's first step moves each weight by about lr)."""
    model = apply_adapter(tiny_causal("gemma3", vocab_size=len(tiny_tokenizer)), AdapterConfig(r=4))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.fill_(0.01)  # B starts at zero, which would leave A without a gradient
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    cfg = TrainConfig(steps=1, batch_size=4, lr=1e-3, warmup_steps=0, schedule="constant", eval_every=0,
                      save_every=0, max_grad_norm=None, loraplus_lr_ratio=ratio)
    train(model, encoded(tiny_tokenizer, 1), [], cfg, tmp_path, tiny_tokenizer.pad_token_id, progress=False)
    moved = {"A": 0.0, "B": 0.0}
    for n, p in model.named_parameters():
        if p.requires_grad:
            key = "B" if "lora_B" in n else "A"
            moved[key] = max(moved[key], (p.detach() - before[n]).abs().max().item())
    return moved


def test_loraplus_moves_b_by_the_ratio(tiny_tokenizer, tmp_path):
    plain = _one_adam_step(tiny_tokenizer, tmp_path / "plain", None)
    plus = _one_adam_step(tiny_tokenizer, tmp_path / "plus", 16.0)
    assert plain["A"] == pytest.approx(1e-3, rel=0.05) and plain["B"] == pytest.approx(1e-3, rel=0.05)
    assert plus["A"] == pytest.approx(1e-3, rel=0.05)
    assert plus["B"] == pytest.approx(16e-3, rel=0.05)


def test_loraplus_is_refused_for_methods_without_b_matrices():
    from loraforge.config import RunConfig
    from pydantic import ValidationError

    RunConfig.model_validate({"adapter": {"method": "dora"}, "train": {"loraplus_lr_ratio": 16}})
    with pytest.raises(ValidationError, match="loraplus_lr_ratio needs adapter.method"):
        RunConfig.model_validate({"adapter": {"method": "ia3"}, "train": {"loraplus_lr_ratio": 16}})


class _Clock:
    """``time`` for the loop: each step takes ``pace`` seconds (``slower`` after step ``slow_after``); raises
    after step ``fail_after``, as a killed process would stop."""

    def __init__(self, pace, slow_after=None, slower=None, fail_after=None):
        self.t, self.calls, self.pace, self.slow_after, self.slower, self.fail_after = 0.0, 0, pace, slow_after, slower, fail_after

    def perf_counter(self):
        self.calls += 1
        if self.calls % 2 == 0:  # a step's end (its start is the odd call)
            step = self.calls // 2
            if self.fail_after is not None and step > self.fail_after:
                raise RuntimeError("killed")
            self.t += self.slower if self.slow_after is not None and step > self.slow_after else self.pace
        return self.t


def _budget_run(monkeypatch, tiny_tokenizer, run_dir, model, clock, resume=False):
    import loraforge.train.loop as loop

    monkeypatch.setattr(loop, "time", clock)
    data = encoded(tiny_tokenizer, n=2)
    cfg = TrainConfig(steps=100, batch_size=4, lr=1e-2, warmup_steps=5, eval_every=0, save_every=5, max_minutes=0.25)
    return train(model, data, [], cfg, run_dir, tiny_tokenizer.pad_token_id, resume=resume, progress=False)


def test_a_time_budget_fixes_the_runs_length_and_ends_its_schedule_there(monkeypatch, tiny_tokenizer, tmp_path):
    """train.max_minutes: 0.5 s a step over the first 20 steps, 15 s of budget: 30 steps, not 100, with the
    cosine schedule ending at step 30 (its learning rate reaches 0 there, as a 30-step run's does)."""
    from loraforge.train.loop import BUDGET_PROBE_STEPS

    model = apply_adapter(tiny_causal("gemma3", vocab_size=len(tiny_tokenizer)), AdapterConfig(r=4))
    result = _budget_run(monkeypatch, tiny_tokenizer, tmp_path / "a", model, _Clock(0.5))
    rows = [r for r in result.history if "loss" in r]
    assert result.steps == len(rows) == 30 and result.train_seconds == pytest.approx(15.0)
    assert rows[BUDGET_PROBE_STEPS - 1]["budgeted_steps"] == 30
    assert rows[-1]["lr"] == pytest.approx(0.0, abs=1e-12) and rows[BUDGET_PROBE_STEPS]["lr"] > 0


def test_a_run_that_slows_after_the_probe_stops_at_its_budget(monkeypatch, tiny_tokenizer, tmp_path):
    model = apply_adapter(tiny_causal("gemma3", vocab_size=len(tiny_tokenizer)), AdapterConfig(r=4))
    result = _budget_run(monkeypatch, tiny_tokenizer, tmp_path / "a", model, _Clock(0.5, slow_after=20, slower=2.0))
    rows = [r for r in result.history if "loss" in r]
    assert result.steps == len(rows) == 23 and rows[-1].get("budget_stop")  # 10 s + 3 x 2 s >= 15 s
    assert result.train_seconds == pytest.approx(16.0)


def test_a_resumed_budgeted_run_keeps_the_length_it_fixed_and_gives_the_same_adapter(monkeypatch, tiny_tokenizer,
                                                                                        tmp_path):
    """The length was fixed from the first host's pace: a resumed run does not guess again (here its steps are
    50 times faster), so it ends where the uninterrupted run did, with the same weights."""
    initial = apply_adapter(tiny_causal("gemma3", vocab_size=len(tiny_tokenizer)), AdapterConfig(r=4))
    whole = _budget_run(monkeypatch, tiny_tokenizer, tmp_path / "whole", model := copy.deepcopy(initial), _Clock(0.5))
    reference = {k: v.clone() for k, v in model.named_parameters() if v.requires_grad}
    with pytest.raises(RuntimeError, match="killed"):
        _budget_run(monkeypatch, tiny_tokenizer, tmp_path / "cut", copy.deepcopy(initial), _Clock(0.5, fail_after=27))
    resumed = copy.deepcopy(initial)
    result = _budget_run(monkeypatch, tiny_tokenizer, tmp_path / "cut", resumed, _Clock(0.01), resume=True)
    assert result.steps == whole.steps == 30
    for k, v in resumed.named_parameters():
        if v.requires_grad:
            torch.testing.assert_close(v, reference[k], rtol=1e-5, atol=1e-7)


def test_the_budget_forecast_follows_the_batches_still_to_come():
    """Length grouping makes some steps long and some short. 20 probe steps of 2 units of work took 20 s:
    0.5 s a unit. With 30 s of budget the 10 s left buy 20 one-unit steps (40 in all), not the 10 (30 in all)
    that the probe's mean step time would give; a run whose later steps are longer gets fewer."""
    from loraforge.train.loop import budgeted_steps

    cfg = TrainConfig(steps=100, max_minutes=0.5)
    assert budgeted_steps(cfg, 20.0, 20) == 30
    assert budgeted_steps(cfg, 20.0, 20, lambda s: 2 if s <= 20 else 1) == 40
    assert budgeted_steps(cfg, 20.0, 20, lambda s: 2 if s <= 20 else 4) == 25
    assert budgeted_steps(cfg, 20.0, 20, lambda s: 1) == 30
    assert budgeted_steps(TrainConfig(steps=25, max_minutes=0.5), 20.0, 20, lambda s: 1) == 25  # never past steps
    assert budgeted_steps(cfg, 40.0, 20, lambda s: 1) == 20  # already over: at least the steps done


def test_the_forecast_replay_scores_a_pace_per_token_exact_when_time_follows_the_work():
    """bench.budget_forecast: steps whose seconds are exactly proportional to their work are forecast
    exactly per token position; the per-step pace errs by how far the probe's batches differ from the rest."""
    from loraforge.bench.budget_forecast import forecast_errors

    work = [4] * 20 + [2] * 80
    row = forecast_errors([0.5 * w for w in work], work, probe=20)
    assert row["per_token_error_pct"] == 0.0 and row["seconds"] == 120.0
    assert row["per_step_error_pct"] == pytest.approx(100 * (200 / 120 - 1), abs=0.1)
