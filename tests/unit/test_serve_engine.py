"""The continuous-batching engine, without HTTP: rows joining, leaving and mixing adapters give the
same greedy tokens as each request generated alone by transformers' ``generate`` (fp32, tiny models)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
import torch

from loraforge.serve.engine import Engine, Request, ServeError
from loraforge.serve.lora import BASE

STOP = [1]  # the tiny models' EOS


class Collector:
    """A request's emit(): tokens in order, then its end."""

    def __init__(self):
        self.tokens: list[int] = []
        self.reason: str | None = None
        self.error = None
        self.done = threading.Event()

    def __call__(self, kind, payload):
        if kind == "token":
            self.tokens.append(payload)
        elif kind == "done":
            self.reason = payload
            self.done.set()
        else:
            self.error = payload
            self.done.set()


def request(ids, max_tokens, adapter=BASE, **kw) -> tuple[Request, Collector]:
    c = Collector()
    return Request(adapter=adapter, prompt_ids=list(ids), max_tokens=max_tokens, stop_ids=STOP, emit=c, **kw), c


def wait(c: Collector, timeout: float = 120) -> Collector:
    assert c.done.wait(timeout), "request did not finish"
    return c


@torch.no_grad()
def alone(model, ids, max_tokens) -> list[int]:
    """transformers' own greedy decoding of one prompt (no batch, no padding)."""
    out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                         max_new_tokens=max_tokens, do_sample=False, eos_token_id=STOP, pad_token_id=0)[0, len(ids):]
    toks = out.tolist()
    return toks[:toks.index(1)] if 1 in toks else toks


def prompts(n: int, seed: int = 0, vocab: int = 400) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = [3, 17, 6, 29, 11, 2, 23, 9][:n]
    return [torch.randint(10, vocab, (k,), generator=g).tolist() for k in lengths]


@pytest.fixture(scope="module")
def gemma():
    """Tiny Gemma 3 with a sliding window of 8, shorter than the rows: the sliding layers' view is tested."""
    from conftest import tiny_causal

    model = tiny_causal("gemma3", vocab_size=400, sliding_window=8, tie_word_embeddings=False).eval()
    return model


def make_engine(model, **kw) -> Engine:
    tok = SimpleNamespace(pad_token_id=0)
    return Engine(SimpleNamespace(model=model, tokenizer=tok), **kw)


def test_rows_joining_a_running_batch_match_alone(gemma):
    """A long row runs; others join while it decodes (one with a prompt longer than everything so far,
    so the live rows slide right; a small KV capacity so they also slide left and the cache grows);
    rows with short budgets leave early. Every row's greedy tokens equal generate() alone."""
    ps = prompts(6)
    budgets = [40, 5, 12, 30, 3, 20]
    expected = [alone(gemma, p, b) for p, b in zip(ps, budgets)]
    engine = make_engine(gemma, max_batch=4, batch_wait_ms=0, kv_columns=16)
    try:
        first, c0 = request(ps[0], budgets[0])
        engine.submit(first)
        for _ in range(2000):
            if len(c0.tokens) >= 4:
                break
            time.sleep(0.005)
        assert not c0.done.is_set(), "the first row must still be running when the others join"
        collectors = [c0]
        for p, b in zip(ps[1:], budgets[1:]):
            r, c = request(p, b)
            engine.submit(r)
            collectors.append(c)
        got = [wait(c).tokens for c in collectors]
        assert max(len(b) for b in engine.batches) > 1, "rows never shared a step"
        assert engine.cache.capacity > 16, "the KV capacity never grew"
    finally:
        engine.close()
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"row {i}"
    assert [c.reason for c in collectors] == ["stop" if len(e) < b else "length" for e, b in zip(expected, budgets)]


def test_a_finished_row_leaves_the_others_unaffected(gemma):
    """Rows submitted together finish at different steps (swap-removal moves live rows between slots)."""
    ps = prompts(5, seed=3)
    budgets = [2, 25, 1, 18, 7]
    expected = [alone(gemma, p, b) for p, b in zip(ps, budgets)]
    engine = make_engine(gemma, max_batch=8, batch_wait_ms=200)
    try:
        pairs = [request(p, b) for p, b in zip(ps, budgets)]
        for r, _ in pairs:
            engine.submit(r)
        got = [wait(c).tokens for _, c in pairs]
        assert max(len(b) for b in engine.batches) >= len(ps) - 1, "the rows did not start together"
    finally:
        engine.close()
    assert got == expected


def test_cancellation_frees_the_slot(gemma):
    """With one slot, a cancelled long row makes room for the waiting one at the next step."""
    engine = make_engine(gemma, max_batch=1, batch_wait_ms=0)
    try:
        ps = prompts(2, seed=5)
        long_req, c_long = request(ps[0], 400)
        engine.submit(long_req)
        for _ in range(2000):
            if len(c_long.tokens) >= 2:
                break
            time.sleep(0.005)
        short_req, c_short = request(ps[1], 4)
        engine.submit(short_req)
        time.sleep(0.05)
        assert not c_short.done.is_set(), "the only slot is busy"
        engine.cancel(long_req)
        assert wait(c_long).reason == "cancelled"
        assert wait(c_short).tokens == alone(gemma, ps[1], 4)
        assert len(c_long.tokens) < 400
        for _ in range(200):
            if not engine.rows:
                break
            time.sleep(0.01)
        assert engine.rows == []
    finally:
        engine.close()


@pytest.fixture(scope="module")
def lora_llama(tmp_path_factory):
    return make_lora_llama(tmp_path_factory.mktemp("engine-lora"))


def make_lora_llama(root):
    """Tiny Llama with two LoRA adapters whose B is random, so they change the answers."""
    from peft import LoraConfig, PeftModel, get_peft_model

    from conftest import tiny_causal

    for seed, name in ((1, "alpha"), (2, "beta")):
        base = tiny_causal("llama", vocab_size=400)
        torch.manual_seed(seed)
        peft = get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=16,
                                               target_modules="all-linear", init_lora_weights=False))
        with torch.no_grad():
            for n, p in peft.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 2.0)
        peft.save_pretrained(root / name)
    model = PeftModel.from_pretrained(tiny_causal("llama", vocab_size=400), root / "alpha", adapter_name="alpha")
    model.load_adapter(root / "beta", adapter_name="beta")
    return model.eval()


def expected_for(model, adapter, ids, budget):
    if adapter == BASE:
        with model.disable_adapter():
            return alone(model, ids, budget)
    model.set_adapter(adapter)
    return alone(model, ids, budget)


def engine_with_adapters(model, **kw) -> Engine:
    engine = make_engine(model, **kw)
    engine.adapters.update({"alpha": {"template": "auto"}, "beta": {"template": "auto"}})
    return engine


def test_mixed_adapters_in_one_continuous_batch_match_alone(lora_llama):
    ps = prompts(6, seed=7)
    adapters = ["alpha", "beta", BASE, "beta", "alpha", BASE]
    budgets = [20, 8, 14, 3, 11, 6]
    expected = [expected_for(lora_llama, a, p, b) for a, p, b in zip(adapters, ps, budgets)]
    assert expected[0] != expected_for(lora_llama, "beta", ps[0], budgets[0]), "the adapters must differ"
    engine = engine_with_adapters(lora_llama, max_batch=4, batch_wait_ms=0)
    try:
        pairs = [request(p, b, adapter=a) for a, p, b in zip(adapters, ps, budgets)]
        for r, _ in pairs:  # staggered: four start, the rest join as rows leave
            engine.submit(r)
        got = [wait(c).tokens for _, c in pairs]
        assert [c.error for _, c in pairs] == [None] * len(pairs)
        assert any(len(set(b)) == 3 for b in engine.batches), f"no step mixed all three: {list(engine.batches)}"
    finally:
        engine.close()
    assert got == expected


def test_one_adapter_batch_runs_merged_and_restores_the_base_exactly(lora_llama):
    """All rows on one adapter: merged into the weights (same tokens); afterwards the base weights are
    bit for bit the originals."""
    weights = {n: p.detach().clone() for n, p in lora_llama.named_parameters() if "base_layer" in n}
    ps = prompts(3, seed=11)
    budgets = [20, 18, 25]
    expected = [expected_for(lora_llama, "beta", p, b) for p, b in zip(ps, budgets)]
    engine = engine_with_adapters(lora_llama, max_batch=4, batch_wait_ms=200)
    merged_seen = []
    original = engine.router.context

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        merged_seen.append(engine.router.merged)
        return out

    engine.router.context = spy
    try:
        pairs = [request(p, b, adapter="beta") for p, b in zip(ps, budgets)]
        for r, _ in pairs:
            engine.submit(r)
        got = [wait(c).tokens for _, c in pairs]
        base_req, c_base = request(ps[0], 10)
        engine.submit(base_req)
        base_got = wait(c_base).tokens
    finally:
        engine.close()
    assert "beta" in merged_seen, merged_seen
    assert got == expected
    assert merged_seen[-1] is None and base_got == expected_for(lora_llama, BASE, ps[0], 10)
    for n, p in lora_llama.named_parameters():
        if n in weights:
            assert torch.equal(p, weights[n]), n


def test_int8_lm_head_is_swapped_in_and_close_to_fp32():
    """Opt-in: the output layer becomes a dynamic int8 Linear whose logits stay close to fp32's."""
    from conftest import tiny_causal

    model = tiny_causal("llama", vocab_size=400).eval()
    hidden = torch.randn(3, 1, 32)
    with torch.no_grad():
        ref = model.lm_head(hidden)
    engine = make_engine(model, int8_lm_head=True)
    try:
        assert type(model.lm_head) is not torch.nn.Linear, "not swapped"
        with torch.no_grad():
            got = model.lm_head(hidden)
        assert not torch.equal(got, ref)
        assert (got - ref).abs().max() < 0.05 * ref.abs().max()
        r, c = request(prompts(1)[0], 5)
        engine.submit(r)
        assert wait(c).error is None and len(c.tokens) >= 1
    finally:
        engine.close()


def test_int8_linear_rows_do_not_depend_on_their_batch_mates():
    """Per-row activation scales on a pinned grid: a row's output is bit for bit the same alone and in any
    batch (torch.ao's dynamic int8, one scale per batch, is not), and close to fp32."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    from loraforge.serve.quant import Int8Linear

    g = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    x = torch.randn(6, 64, generator=g)
    x[1] *= 1e-3
    x[4] *= 1e3  # a row whose range would set a shared scale
    ref = linear(x).detach()
    per_batch = quantize_dynamic(torch.nn.Sequential(linear), {torch.nn.Linear: per_channel_dynamic_qconfig},
                                 dtype=torch.qint8)[0]
    assert not torch.equal(per_batch(x)[1], per_batch(x[1:2])[0]), "a shared scale should change row 1"
    assert Int8Linear.convert(linear) and type(linear) is Int8Linear
    with torch.no_grad():
        got = linear(x)
        for i in range(len(x)):
            assert torch.equal(got[i], linear(x[i:i + 1])[0]), f"row {i} depends on its batch"
        assert torch.equal(got[2:4], linear(x[[3, 0, 2]])[[2, 0]])
        err = (got - ref).abs().amax(1) / ref.abs().amax(1)
        assert (err < 0.05).all(), err
        linear.weight.data = linear.weight.data + 1  # a swapped weight (merged LoRA): the packed copy is stale
        assert torch.equal(linear(x), torch.nn.functional.linear(x, linear.weight, linear.bias))


def test_int8_output_layer_rescores_its_top_logits_in_fp32():
    """The int8 output layer's top-k logits of every row are the fp32 ones; the rest stay int8."""
    from conftest import tiny_causal

    from loraforge.serve.quant import int8_lm_head

    model = tiny_causal("llama", vocab_size=400).eval()
    hidden = torch.randn(5, 1, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model.lm_head(hidden)
        assert int8_lm_head(model, rescore=8)
        got = model.lm_head(hidden)
    top = got.topk(8, dim=-1).indices
    assert torch.allclose(got.gather(-1, top), ref.gather(-1, top), rtol=0, atol=1e-5)
    others = torch.ones_like(got, dtype=torch.bool).scatter_(-1, top, False)
    assert not torch.equal(got[others], ref[others]), "the rest should be int8"
    assert torch.equal(got.argmax(-1), ref.argmax(-1))


def test_int8_output_layer_of_a_bf16_model_gives_fp32_logits_close_to_bf16s():
    """``--int8-lm-head`` on a bf16 model (where reading the bf16 head's weights bounds a CPU step): the
    logits come back fp32, their top-k rescored in fp32 from the bf16 weights, the argmax that of fp32
    math on those weights; ``--int8`` (every layer) still refuses a bf16 model rather than do nothing."""
    from conftest import tiny_causal

    from loraforge.serve.quant import int8_lm_head, int8_weights

    if "fbgemm" not in torch.backends.quantized.supported_engines:
        pytest.skip("no fbgemm")
    model = tiny_causal("llama", vocab_size=400).eval().to(torch.bfloat16)
    hidden = torch.randn(5, 1, 32, generator=torch.Generator().manual_seed(2)).bfloat16()
    with torch.no_grad():
        ref = model.lm_head(hidden)
        exact = torch.nn.functional.linear(hidden.float(), model.lm_head.weight.float())
        assert int8_lm_head(model, rescore=8)
        got = model.lm_head(hidden)
    assert got.dtype == torch.float32 and ref.dtype == torch.bfloat16
    top = got.topk(4, dim=-1).indices  # well inside the 8 rescored (a 9th may pass a rescored 8th)
    assert torch.allclose(got.gather(-1, top), exact.gather(-1, top), rtol=0, atol=1e-5)
    assert torch.equal(got.argmax(-1), exact.argmax(-1))
    assert (got - ref.float()).abs().max() < 0.05 * ref.float().abs().max()
    with pytest.raises(ValueError, match="fp32"):
        int8_weights(tiny_causal("llama", vocab_size=400).to(torch.bfloat16))
    engine = make_engine(model)  # the engine generates through the converted head
    try:
        r, c = request(prompts(1)[0], 4)
        engine.submit(r)
        assert wait(c).error is None and len(c.tokens) >= 1
    finally:
        engine.close()


def test_int8_engine_rows_joining_match_the_same_engine_alone(gemma):
    """Every Linear in int8: rows sharing steps give the tokens each gives alone through the same engine."""
    from conftest import tiny_causal

    model = tiny_causal("gemma3", vocab_size=400, sliding_window=8, tie_word_embeddings=False).eval()
    ps, budgets = prompts(5, seed=13), [30, 6, 14, 22, 9]
    engine = make_engine(model, max_batch=4, batch_wait_ms=0, int8_weights=True)
    try:
        assert engine.int8_layers == sum(isinstance(m, torch.nn.Linear) for m in model.modules())
        solo = []
        for p, b in zip(ps, budgets):
            r, c = request(p, b)
            engine.submit(r)
            solo.append(wait(c).tokens)
        pairs = [request(p, b) for p, b in zip(ps, budgets)]
        for r, _ in pairs:
            engine.submit(r)
        got = [wait(c).tokens for _, c in pairs]
        assert max(len(b) for b in engine.batches) > 1, "rows never shared a step"
    finally:
        engine.close()
    assert got == solo
    fp32 = [alone(gemma, p, b) for p, b in zip(ps, budgets)]
    assert sum(a[:3] == b[:3] for a, b in zip(solo, fp32)) >= 3, "int8 should mostly agree with fp32"


def test_int8_engine_mixed_adapters_run_beside_int8_layers_and_never_merge(tmp_path):
    model = make_lora_llama(tmp_path)
    ps = prompts(4, seed=17)
    adapters, budgets = ["alpha", "beta", BASE, "beta"], [12, 9, 7, 15]
    engine = engine_with_adapters(model, max_batch=4, batch_wait_ms=0, int8_weights=True)
    try:
        assert not engine.router.merge
        lora_layers = [m for n, m in model.named_modules() if n.split(".")[-1].startswith("lora_")]
        assert lora_layers and not any(type(m).__name__ == "Int8Linear" for m in model.modules() if m in lora_layers)
        solo = []
        for a, p, b in zip(adapters, ps, budgets):
            r, c = request(p, b, adapter=a)
            engine.submit(r)
            solo.append(wait(c).tokens)
        pairs = [request(p, b, adapter=a) for a, p, b in zip(adapters, ps, budgets)]
        for r, _ in pairs:
            engine.submit(r)
        got = [wait(c).tokens for _, c in pairs]
        assert any(len(set(b)) == 3 for b in engine.batches), list(engine.batches)
    finally:
        engine.close()
    assert got == solo
    assert solo[0] != solo[1] or ps[0] != ps[1]


def test_an_engine_without_its_own_thread_generates_on_the_thread_that_runs_it(gemma):
    """``loraforge serve``'s layout: the engine is made and ``run`` on one thread (there the main thread),
    requests and model changes come from others. Same tokens as alone; close() ends ``run``."""
    ps, budgets = prompts(3, seed=5), [9, 4, 12]
    expected = [alone(gemma, p, b) for p, b in zip(ps, budgets)]
    made = threading.Event()
    holder = {}

    def generator():
        holder["engine"] = make_engine(gemma, max_batch=2, batch_wait_ms=0, own_thread=False)
        holder["ran_on"] = threading.current_thread()
        made.set()
        holder["engine"].run()
        holder["returned"] = True

    thread = threading.Thread(target=generator, daemon=True)
    thread.start()
    assert made.wait(60)
    engine = holder["engine"]
    with pytest.raises(RuntimeError, match="run\\(\\) belongs"):
        engine.run()  # not the thread that made it
    pairs = [request(p, b) for p, b in zip(ps, budgets)]
    for r, _ in pairs:
        engine.submit(r)
    got = [wait(c).tokens for _, c in pairs]
    assert engine._call(threading.current_thread) is holder["ran_on"], "tasks must run on the generating thread"
    assert engine.alive
    engine.close()
    thread.join(timeout=30)
    assert holder.get("returned") and not engine.alive
    assert got == expected


def test_a_closed_engine_driven_by_step_gives_the_same_tokens_and_clear_ends_the_rows(gemma):
    """``step`` is the loop's one iteration (benchmarks and tests drive it by hand): three rows on two
    slots finish with generate()'s tokens, and ``step`` says when no work is left. ``clear`` ends
    running rows with the error given and frees their slots."""
    ps, budgets = prompts(3, seed=9), [7, 3, 10]
    expected = [alone(gemma, p, b) for p, b in zip(ps, budgets)]
    engine = make_engine(gemma, max_batch=2, batch_wait_ms=0)
    engine.close()
    pairs = [request(p, b) for p, b in zip(ps, budgets)]
    engine.waiting.extend(r for r, _ in pairs)
    steps = 0
    while engine.step():
        steps += 1
        assert steps < 100, "the engine did not finish"
    assert [c.tokens for _, c in pairs] == expected
    assert steps >= max(len(e) for e in expected) - 1 and not engine.rows

    r, c = request(ps[0], 50)
    engine.waiting.append(r)
    assert engine.step() and engine.rows
    engine.clear(ServeError("gone", 500, "server_error"))
    assert not engine.rows and c.done.is_set() and isinstance(c.error, ServeError)
    assert not engine.step()
