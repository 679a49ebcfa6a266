"""Batched greedy generation: per-row budgets, stop tokens, and re-decoding of near ties."""

import pytest
import torch

from conftest import tiny_causal
from loraforge.eval.generate import _cut, TieTracker, generate, generate_ids

PROMPTS = ["A Pod is", "Use kubectl to list all the pods in the default namespace", "Kubernetes", "A Service"]


def _batch1(model, tok, prompts, budgets, stops):
    out = []
    for p, b in zip(prompts, budgets):
        enc = tok(p, return_tensors="pt", add_special_tokens=False)
        ids = model.generate(**enc, max_new_tokens=b, do_sample=False, eos_token_id=stops, pad_token_id=tok.pad_token_id)
        out.append(_cut(ids[0, enc["input_ids"].shape[1]:].tolist(), b, stops))
    return out


def test_cut_keeps_the_budget_and_the_first_stop_token():
    assert _cut([7, 7, 5, 1, 0, 0], 10, [1]) == [7, 7, 5, 1]
    assert _cut([7, 7, 5, 6, 8, 9], 4, [1]) == [7, 7, 5, 6]
    assert _cut([7, 1, 5], 1, [1]) == [7] and _cut([7, 7], 5, None) == [7, 7]


def test_tie_tracker_records_the_smallest_gap_while_a_row_is_live():
    t = TieTracker(budgets=[3, 1], stop_ids=[9])
    steps = [torch.tensor([[0.0, 5.0, 1.0] + [0.0] * 7, [0.0, 4.0, 3.9] + [0.0] * 7]),   # row 1 near-tied
             torch.tensor([[0.0] * 9 + [6.0], [0.0, 1.0, 1.0] + [0.0] * 7]),            # row 0 stops; row 1 over budget
             torch.tensor([[0.0, 1.0, 1.0] + [0.0] * 7, [0.0, 1.0, 1.0] + [0.0] * 7])]  # nobody is live
    for s in steps:
        assert torch.equal(t(None, s), s)  # the scores are untouched
    torch.testing.assert_close(t.gap, torch.tensor([4.0, 0.1]))
    torch.testing.assert_close(torch.tensor(t.row_gaps(1)), torch.tensor([0.1, 0.0, 0.0]))  # every step, live or not


def test_gap_noise_compares_only_steps_with_a_shared_prefix():
    from loraforge.bench.generate import gap_noise

    single, batched = [[1.0, 2.0, 3.0], [0.5, 0.5]], {0: [1.25, 2.0, 9.0], 1: [0.5, 0.75]}
    # prompt 0 diverges at its second token: step 2 (prefix [5, 6] vs [5, 7]) is not comparable
    assert gap_noise(single, [[5, 6, 1], [4, 1]], batched, [[5, 7, 1], [4, 1]]) == [0.25, 0.0, 0.0, 0.25]
    assert gap_noise(single, [[5, 6, 1]], {}, [[5, 6, 1]]) == []  # untracked rows give nothing


def test_batched_greedy_equals_batch_one_with_per_row_budgets(tiny_tokenizer):
    model = tiny_causal("gemma3", vocab_size=len(tiny_tokenizer)).eval()
    budgets, stops = [3, 9, 5, 1], [tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")]
    ref = _batch1(model, tiny_tokenizer, PROMPTS, budgets, stops)
    stats = {}
    # an infinite margin re-decodes every row alone: the batch-1 result by construction
    assert generate_ids(model, tiny_tokenizer, PROMPTS, 16, 4, stop_ids=stops, budgets=budgets, progress=False,
                        tie_margin=float("inf"), stats=stats) == ref
    assert stats["redecoded"] == 4
    fast = generate_ids(model, tiny_tokenizer, PROMPTS, 16, 4, stop_ids=stops, budgets=budgets, progress=False,
                        stats=stats)
    assert [len(x) <= b for x, b in zip(fast, budgets)] == [True] * 4  # each row stops at its own budget
    assert fast == ref and stats["redecoded"] < 4
    texts = generate(model, tiny_tokenizer, PROMPTS, 16, 2, stop_ids=stops, budgets=budgets, progress=False)
    assert texts == [tiny_tokenizer.decode(x, skip_special_tokens=True).strip() for x in ref]


def test_full_precision_generates_in_fp32_and_restores_every_dtype_exactly(tiny_tokenizer):
    from loraforge.adapters import apply_adapter
    from loraforge.config import AdapterConfig
    from loraforge.eval.generate import full_precision
    from loraforge.eval.inference import merged_for_inference

    model = apply_adapter(tiny_causal("gemma3", vocab_size=len(tiny_tokenizer)).to(torch.bfloat16), AdapterConfig(r=4))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    before = {n: t.clone() for n, t in list(model.named_parameters()) + list(model.named_buffers())}
    seen = []
    with full_precision(model), merged_for_inference(model):
        seen = {p.dtype for p in model.parameters()}
        out = generate(model, tiny_tokenizer, PROMPTS[:2], 4, 2, progress=False)
    assert seen == {torch.float32} and len(out) == 2
    after = dict(list(model.named_parameters()) + list(model.named_buffers()))
    for n, t in before.items():
        assert after[n].dtype == t.dtype and torch.equal(after[n], t), n  # LoRA stays fp32, base bf16, exact
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # still tied
    with full_precision(model, enabled=False):
        assert {p.dtype for p in model.parameters() if not p.requires_grad} == {torch.bfloat16}


def test_rows_leave_the_batch_when_done_and_match_batch_one(tiny_tokenizer):
    """shrinking_greedy: a row that has its budget (or stop token) leaves the batch and the KV cache;
    the rest continue with the same tokens batch 1 gives them, and the tie tracker sees only live rows."""
    from loraforge.eval.generate import shrinking_greedy

    model = tiny_causal("gemma3", vocab_size=len(tiny_tokenizer)).eval()
    prompts, budgets = PROMPTS[:3], [1, 3, 5]
    side, tiny_tokenizer.padding_side = tiny_tokenizer.padding_side, "left"
    batch = tiny_tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    tiny_tokenizer.padding_side = side
    widths = []
    model.register_forward_pre_hook(lambda m, args, kw: widths.append(kw["input_ids"].shape[0]), with_kwargs=True)
    ties = TieTracker(budgets, [])
    out = shrinking_greedy(model, batch["input_ids"], batch["attention_mask"], budgets, [], ties)
    assert widths == [3, 2, 2, 1, 1]  # prefill, then rows 0 and 1 leave after their budgets
    assert [len(x) for x in out] == budgets
    assert out == _batch1(model, tiny_tokenizer, prompts, budgets, [])
    assert [len(ties.row_gaps(r)) for r in range(3)] == [5, 5, 5]
    assert all(g != g for g in ties.row_gaps(0)[1:]) and ties.gap[0] == ties.row_gaps(0)[0]  # NaN once gone


def test_grouped_prefill_gives_the_one_call_cache_and_batch_one_outputs(tiny_tokenizer, monkeypatch):
    """Prefilling a few rows at a time, each group cut to its longest prompt, gives the KV cache and
    logits of one padded call (pad slots zero), and the same tokens as batch 1."""
    import loraforge.eval.generate as gen

    model = tiny_causal("gemma3", vocab_size=len(tiny_tokenizer)).eval()
    prompts = sorted(PROMPTS + ["Pods", "A Deployment manages a replicated set of Pods in the cluster"], key=len,
                     reverse=True)
    side, tiny_tokenizer.padding_side = tiny_tokenizer.padding_side, "left"
    batch = tiny_tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    tiny_tokenizer.padding_side = side
    ids, mask = batch["input_ids"], batch["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    widths = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: widths.append(tuple(kw["input_ids"].shape)),
                                           with_kwargs=True)
    with torch.no_grad():
        one_logits, one_cache = gen._prefill(model, ids, mask, positions)
        monkeypatch.setattr(gen, "PREFILL_ROWS", 2)
        logits, cache = gen._prefill(model, ids, mask, positions)
    hook.remove()
    lengths = mask.sum(1).tolist()
    assert widths == [tuple(ids.shape)] + [(2, max(lengths[s:s + 2])) for s in range(0, 6, 2)]
    assert widths[2][1] < ids.shape[1]  # later groups are narrower than the batch
    torch.testing.assert_close(logits, one_logits, rtol=1e-5, atol=1e-5)
    real = mask.bool()[:, None, :, None]
    for ours, one in zip(cache.layers, one_cache.layers):
        assert ours.keys.shape == one.keys.shape and ours.get_seq_length() == one.get_seq_length()
        torch.testing.assert_close(ours.keys * real, one.keys * real, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.values * real, one.values * real, rtol=1e-5, atol=1e-5)
    budgets = [6, 2, 5, 4, 3, 6]
    out = gen.shrinking_greedy(model, ids, mask, budgets, [])
    assert out == _batch1(model, tiny_tokenizer, prompts, budgets, [])
    # a sliding window the batch reaches would crop the groups' caches differently: one call
    narrow = tiny_causal("gemma3", vocab_size=len(tiny_tokenizer), sliding_window=4).eval()
    calls = []
    narrow.register_forward_pre_hook(lambda m, a, kw: calls.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    with torch.no_grad():
        gen._prefill(narrow, ids, mask, positions)
    assert calls == [tuple(ids.shape)]


def test_prefix_tuned_models_prefill_in_one_call(tiny_tokenizer, monkeypatch):
    """PEFT's prefix tuning builds the inputs and cache itself: grouped prefill steps aside."""
    import loraforge.eval.generate as gen
    from loraforge.adapters import apply_adapter
    from loraforge.config import AdapterConfig

    model = apply_adapter(tiny_causal("gemma3", vocab_size=len(tiny_tokenizer)),
                          AdapterConfig(method="prefix", num_virtual_tokens=4), "causal").eval()
    one = generate_ids(model, tiny_tokenizer, PROMPTS, 5, 4, progress=False, tie_margin=None)
    monkeypatch.setattr(gen, "PREFILL_ROWS", 2)
    assert generate_ids(model, tiny_tokenizer, PROMPTS, 5, 4, progress=False, tie_margin=None) == one


def _sft_cfg(task: str, cap: int):
    from loraforge.config import load_config

    return load_config(None, [f"data.task={task}", "data.template=chatml", f"eval.max_new_tokens={cap}",
                              "eval.batch_size=1"])


def test_output_budgets_come_from_the_task(tiny_tokenizer):
    from loraforge.eval.inference import output_budgets

    sources = ["A Pod is the smallest deployable unit. Use kubectl get pods to list them."]
    n = len(tiny_tokenizer(sources[0], add_special_tokens=False)["input_ids"])
    assert output_budgets(tiny_tokenizer, sources, 500, "sft") == [500]  # an answer may be far longer
    assert output_budgets(tiny_tokenizer, sources, 500, "translate") == [int(1.25 * n) + 16]
    assert output_budgets(tiny_tokenizer, sources, 500, "pii") == [int(1.25 * n) + 16]
    assert output_budgets(tiny_tokenizer, sources, 10, "translate") == [10]  # the cap still caps


def test_an_sft_answer_three_times_its_prompt_is_generated_whole(tiny_tokenizer):
    """An sft answer 3x the source's length comes out whole; a translation budget (1.25x + 16) would
    have cut it, which is what evaluation did to every task before."""
    from loraforge.data.formats import Example
    from loraforge.eval.inference import evaluate, generate_answers
    from scripted_model import scripted_model

    source = "A Pod is the smallest deployable unit. Use kubectl get pods to list them."
    n_source = len(tiny_tokenizer(source, add_special_tokens=False)["input_ids"])
    token = tiny_tokenizer.convert_tokens_to_ids("Pod")
    n = 3 * n_source
    assert n > int(1.25 * n_source) + 16  # the old budget would cut this answer
    answer = tiny_tokenizer.decode([token] * n).strip()
    loaded = scripted_model(tiny_tokenizer, token, n)
    metrics, hyps = evaluate(loaded, loaded.model, _sft_cfg("sft", 256), [Example(source, answer)], progress=False)
    assert hyps == [answer] and metrics["n"] == 1
    out = generate_answers(loaded, loaded.model, _sft_cfg("translate", 256), [source], progress=False)
    assert out.cut == [0] and len(tiny_tokenizer(out.texts[0], add_special_tokens=False)["input_ids"]) < n


def test_the_configs_beams_reach_every_caller_of_generate_answers(tiny_tokenizer, monkeypatch):
    """``eval.num_beams`` (4 in the k8s presets) decodes evaluation, ``translate`` and pages alike: all of them
    call ``generate_answers``; a sampler (back-translation) still draws, never beams."""
    import loraforge.eval.generate as gen
    from loraforge.eval.generate import Sampler
    from loraforge.eval.inference import generate_answers
    from scripted_model import scripted_model

    seen = []
    real = gen.generate_ids
    monkeypatch.setattr(gen, "generate_ids", lambda *a, **k: seen.append(k["num_beams"]) or real(*a, **k))
    token = tiny_tokenizer.convert_tokens_to_ids("Pod")
    loaded = scripted_model(tiny_tokenizer, token, 3)
    cfg = _sft_cfg("translate", 16)
    for beams in (1, 4):
        cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"num_beams": beams})})
        generate_answers(loaded, loaded.model, cfg, ["A Pod."], progress=False)
    generate_answers(loaded, loaded.model, cfg, ["A Pod."], progress=False, sampler=Sampler(0.7, 0.9, seed=1))
    assert seen == [1, 4, 1]


def test_loop_end_finds_a_trailing_repetition_and_nothing_else():
    from loraforge.eval.generate import loop_end

    assert loop_end([1, 2, 3] + [4, 5, 6] * 10) == 6  # keep the loop's first pass
    assert loop_end([7] * 30) == 1
    assert loop_end([9] + [1, 2, 3] * 8 + [1]) == 4  # the last pass may be partial
    assert loop_end(list(range(60))) is None  # no repetition
    assert loop_end([1, 2, 3, 4] * 2 + list(range(10, 40))) is None  # an early repeat is not a loop at the end
    assert loop_end([5, 6] * 5) is None  # 10 tokens: under min_span, may be legitimate


def test_looping_rows_are_cut_after_one_pass_and_not_widened(tiny_tokenizer):
    from loraforge.eval.inference import generate_answers
    from scripted_model import scripted_model

    source = "A Pod is the smallest deployable unit."
    phrase = list(dict.fromkeys(tiny_tokenizer("Pods run on nodes", add_special_tokens=False)["input_ids"]))[:3]
    assert len(phrase) == 3 and tiny_tokenizer.unk_token_id not in phrase
    n_source = len(tiny_tokenizer(source, add_special_tokens=False)["input_ids"])
    ratio_budget = int(1.25 * n_source) + 16
    cfg = _sft_cfg("translate", 64)
    looping = scripted_model(tiny_tokenizer, phrase, None)  # Pod Service Node Pod Service Node ...
    out = generate_answers(looping, looping.model, cfg, [source], progress=False, widen_cut=True)
    assert out.cut == [0] and out.looped == [] and out.budgets == [64]  # without the guard: widened, cut
    out = generate_answers(looping, looping.model, cfg, [source], progress=False, widen_cut=True, trim_loops=True)
    assert out.looped == [0] and out.cut == [] and out.budgets == [ratio_budget]  # not widened
    assert out.texts == [tiny_tokenizer.decode(phrase).strip()]
    token = tiny_tokenizer.convert_tokens_to_ids("Pod")
    finishes = scripted_model(tiny_tokenizer, [token, phrase[1]], 7)  # ends by itself: nothing trimmed
    out = generate_answers(finishes, finishes.model, cfg, [source], progress=False, widen_cut=True, trim_loops=True)
    assert out.looped == [] and out.cut == [] and out.texts == [tiny_tokenizer.decode([token, phrase[1]] * 3 + [token]).strip()]


def test_cut_outputs_are_reported_and_widened_to_the_cap(tiny_tokenizer):
    from loraforge.eval.inference import generate_answers
    from scripted_model import scripted_model

    source = "A Pod is the smallest deployable unit."
    token = tiny_tokenizer.convert_tokens_to_ids("Pod")
    n_source = len(tiny_tokenizer(source, add_special_tokens=False)["input_ids"])
    ratio_budget = int(1.25 * n_source) + 16
    cfg = _sft_cfg("translate", 64)
    finishes = scripted_model(tiny_tokenizer, token, ratio_budget + 5)  # longer than its task budget, under the cap
    out = generate_answers(finishes, finishes.model, cfg, [source], progress=False)
    assert out.cut == [0] and out.budgets == [ratio_budget]
    out = generate_answers(finishes, finishes.model, cfg, [source], progress=False, widen_cut=True)
    assert out.cut == [] and out.texts == [tiny_tokenizer.decode([token] * (ratio_budget + 5)).strip()]
    endless = scripted_model(tiny_tokenizer, token, None)
    out = generate_answers(endless, endless.model, cfg, [source], progress=False, widen_cut=True)
    assert out.cut == [0] and out.budgets == [64]


def test_the_sampler_draws_from_the_nucleus_reproducibly():
    from loraforge.eval.generate import Sampler

    logits = torch.tensor([[4.0, 3.9, 0.0, -1.0]] * 4000)
    draws = Sampler(1.0, 1.0, seed=1)(logits)
    assert draws.tolist() == Sampler(1.0, 1.0, seed=1)(logits).tolist() != Sampler(1.0, 1.0, seed=2)(logits).tolist()
    counts = torch.bincount(draws, minlength=4).float() / len(draws)
    want = torch.softmax(logits[0], -1)
    assert torch.allclose(counts, want, atol=0.03)  # top_p=1: the model's distribution
    assert set(Sampler(1.0, 0.5, seed=1)(logits).tolist()) == {0}  # the top token alone holds 0.5
    assert set(Sampler(1.0, 0.9, seed=1)(logits).tolist()) == {0, 1}  # the two near-tied tokens
    assert set(Sampler(0.005, 1.0, seed=1)(logits).tolist()) == {0}  # a cold temperature is greedy here


def test_sampled_generation_uses_the_shrinking_batch_and_is_seeded(tiny_tokenizer):
    """generate_ids with a sampler: per-row budgets and stop tokens as greedy, the same ids for the same
    seed and batch, other ids for another seed; a near-zero temperature gives the greedy ids."""
    from loraforge.eval.generate import Sampler

    model = tiny_causal("gemma3", vocab_size=len(tiny_tokenizer)).eval()
    budgets = [3, 6, 9, 12]
    run = lambda sampler: generate_ids(model, tiny_tokenizer, PROMPTS, budgets=budgets, progress=False,  # noqa: E731
                                       tie_margin=None, sampler=sampler)
    # a hot temperature: the tiny random model is too sure of itself for seeds to differ otherwise
    a, b, c = run(Sampler(5.0, 1.0, seed=5)), run(Sampler(5.0, 1.0, seed=5)), run(Sampler(5.0, 1.0, seed=6))
    assert a == b != c and [len(x) for x in a] == budgets
    assert run(Sampler(1e-4, 1.0, seed=5)) == run(None)


def test_beam_search_gives_each_rows_batch_one_beam_result_and_scores_at_least_greedy(tiny_tokenizer):
    """num_beams > 1: every row is model.generate's beam-search result for that prompt alone (same
    budget), and its sequence log-probability is never below the greedy row's."""
    # a small init spreads the tiny model's next-token probabilities: beams then find other rows than greedy
    model = tiny_causal("gemma3", vocab_size=len(tiny_tokenizer), initializer_range=0.1).eval()
    stops, budget = [tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")], 6
    beams = generate_ids(model, tiny_tokenizer, PROMPTS, budget, 4, stop_ids=stops, progress=False, num_beams=3)
    greedy = generate_ids(model, tiny_tokenizer, PROMPTS, budget, 4, stop_ids=stops, progress=False)
    for prompt, row, g in zip(PROMPTS, beams, greedy):
        enc = tiny_tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        alone = model.generate(**enc, max_new_tokens=budget, num_beams=3, early_stopping=True, do_sample=False,
                               eos_token_id=stops, pad_token_id=tiny_tokenizer.pad_token_id)
        assert row == _cut(alone[0, enc["input_ids"].shape[1]:].tolist(), budget, stops)

        def logprob(ids):
            full = torch.cat([enc["input_ids"][0], torch.tensor(ids)])[None]
            with torch.no_grad():
                logp = model(full).logits[0, :-1].float().log_softmax(-1)
            n = enc["input_ids"].shape[1]
            return float(logp[n - 1:].gather(-1, full[0, n:, None]).sum())

        if len(row) == len(g) == budget:  # same length: beam search keeps the likelier sequence
            assert logprob(row) >= logprob(g) - 1e-4
    assert beams != greedy  # on this model at least one row differs, else the test checks nothing
    calls = []  # a batch holds batch_size sequences: batch_size // num_beams prompts of num_beams beams each
    real = model.generate
    model.generate = lambda **kw: calls.append(kw["input_ids"].shape[0]) or real(**kw)
    two_at_a_time = generate_ids(model, tiny_tokenizer, PROMPTS, budget, 4, stop_ids=stops, progress=False, num_beams=2)
    assert calls == [2] * (len(PROMPTS) // 2) + [1] * (len(PROMPTS) % 2)
    calls.clear()
    assert generate_ids(model, tiny_tokenizer, PROMPTS, budget, 1, stop_ids=stops, progress=False, num_beams=2) \
        == two_at_a_time and calls == [1] * len(PROMPTS)  # batch 1 < num_beams: still one prompt at a time
    from loraforge.eval.generate import Sampler

    with pytest.raises(ValueError, match="exclusive"):
        generate_ids(model, tiny_tokenizer, PROMPTS, budget, progress=False, num_beams=2, sampler=Sampler())


def test_a_translation_far_shorter_than_its_source_is_replaced_by_the_source(tiny_tokenizer):
    """A model that stops after a few tokens of a long paragraph dropped most of it: evaluation (and
    ``translate``, pages) keep the English instead and count the row; a short source's one-word
    translation, other tasks and ``eval.min_output_ratio=0`` are left alone."""
    from loraforge.config import load_config
    from loraforge.data.formats import Example
    from loraforge.eval.inference import SHORT_MIN_TOKENS, Generated, evaluate, keep_source_if_unfit
    from scripted_model import scripted_model

    long_source = " ".join(["Pods run containers and the scheduler places them on nodes."] * 6)
    n_long = len(tiny_tokenizer(long_source, add_special_tokens=False)["input_ids"])
    assert n_long >= SHORT_MIN_TOKENS
    token = tiny_tokenizer.convert_tokens_to_ids("Pod")
    loaded = scripted_model(tiny_tokenizer, token, 4)  # four tokens, then EOS
    cfg = _sft_cfg("translate", 256)
    metrics, hyps = evaluate(loaded, loaded.model, cfg, [Example(long_source, "x"), Example("Pods.", "Pod")],
                             progress=False)
    assert hyps[0] == long_source and hyps[1] != "Pods." and metrics["segments_short"] == 1
    assert hyps.notes == {0: {"kept_source": "short"}}  # the run's outputs file says the row is its English

    def outputs(task: str, ratio: float, texts: list[str]) -> Generated:
        cfg = load_config(None, [f"data.task={task}", f"eval.min_output_ratio={ratio}"])
        return keep_source_if_unfit(tiny_tokenizer, [long_source] * len(texts), Generated(list(texts), []), cfg)

    half = tiny_tokenizer.decode([token] * (n_long // 2 + 1))
    assert outputs("translate", 0.5, [half, "Pod"]).short == [1]  # half the length is a translation
    assert outputs("translate", 0.5, [half, "Pod"]).texts == [half, long_source]
    assert outputs("translate", 0.0, ["Pod"]).short == [] and outputs("sft", 0.5, ["Pod"]).texts == ["Pod"]


@pytest.mark.parametrize("keep", [True, False])
def test_a_translation_its_budget_cut_is_replaced_by_the_source(tiny_tokenizer, keep):
    """A model that never ends a row (a loop, a run-on) fills its budget: with ``eval.unfinished_keeps_source``
    evaluation keeps the English and counts the row (``segments_unfinished``); a row the model ended is kept,
    other tasks are left alone, and by default the cut output stands."""
    from loraforge.config import load_config
    from loraforge.data.formats import Example
    from loraforge.eval.inference import Generated, evaluate, keep_source_if_unfit, source_budgets
    from scripted_model import scripted_model

    source = "Pods run containers."
    budget = source_budgets(tiny_tokenizer, [source], 64)[0]
    token = tiny_tokenizer.convert_tokens_to_ids("Pod")
    cfg = _sft_cfg("translate", 64).model_copy(deep=True)
    cfg.eval.unfinished_keeps_source = keep
    plain = [i for i in range(len(tiny_tokenizer)) if i not in tiny_tokenizer.all_special_ids][20:85]
    endless = scripted_model(tiny_tokenizer, [token] + plain, None)  # never ends, never repeats
    metrics, hyps = evaluate(endless, endless.model, cfg, [Example(source, "x")], progress=False)
    assert metrics["segments_unfinished"] == int(keep) and metrics["segments_short"] == 0
    cut = tiny_tokenizer.decode([token] + plain[:budget - 1]).strip()
    assert hyps == ([source] if keep else [cut])
    # with the check, evaluation decodes as the products do: a row that ends past its budget but under the
    # cap is decoded again and kept whole (by default it stays cut there), a looping row is cut after one pass
    late = scripted_model(tiny_tokenizer, plain, budget + 5)
    metrics, hyps = evaluate(late, late.model, cfg, [Example(source, "x")], progress=False)
    assert hyps == [tiny_tokenizer.decode(plain[:budget + 5 if keep else budget]).strip()]
    assert metrics["segments_unfinished"] == 0 and metrics.get("segments_looped", 0) == 0
    phrase = list(dict.fromkeys(tiny_tokenizer("Pods run on nodes", add_special_tokens=False)["input_ids"]))[:3]
    looping = scripted_model(tiny_tokenizer, phrase, None)
    metrics, hyps = evaluate(looping, looping.model, cfg, [Example(source, "x")], progress=False)
    assert metrics.get("segments_looped", 0) == int(keep) and metrics["segments_unfinished"] == 0
    assert hyps.notes == ({0: {"loop_cut": True}} if keep else {})
    one_pass = tiny_tokenizer.decode(phrase).strip()
    assert (hyps == [one_pass]) if keep else (hyps[0].startswith(one_pass) and len(hyps[0]) > 2 * len(one_pass))

    both = Generated(["Pod Pod", "Pod"], [4, 4], cut=[0])
    cfg = load_config(None, ["data.task=translate", "eval.unfinished_keeps_source=true"])
    assert keep_source_if_unfit(tiny_tokenizer, ["a b", "c d"], both, cfg).texts == ["a b", "Pod"]
    assert both.unfinished == [0]
    sft = Generated(["Pod Pod"], [4], cut=[0])
    cfg = load_config(None, ["data.task=sft", "eval.unfinished_keeps_source=true"])
    assert keep_source_if_unfit(tiny_tokenizer, ["a b"], sft, cfg).texts == ["Pod Pod"]
    off = Generated(["Pod Pod"], [4], cut=[0])  # the default: what the model wrote
    assert keep_source_if_unfit(tiny_tokenizer, ["a b"], off, load_config(None, ["data.task=translate"])).texts == ["Pod Pod"]
