"""``loraforge bench generate``: the evaluation generator vs a plain batch-1 ``model.generate`` loop.

Same model, prompts (the first ``prompts`` k8s dev sources in the chat template), stop tokens and
per-prompt budgets. Tokens are counted the same way for all: each prompt's generated ids, up to and
including the first stop token. Work a batch spends on rows that already finished, and on rows
decoded again because of near ties, counts as time, not tokens. Outputs are compared as token ids
with the batch-1 loop's; a third run without tie re-decoding shows what the re-decoding buys.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch


@dataclass
class GenerateSpec:
    model: str = "gemma3-270m"
    adapter: str | None = None
    prompts: int = 32
    max_new_tokens: int = 128
    batch_size: int = 32
    data: str = "k8s:dev"
    dtype: str = "fp32"  # what evaluation generates in (eval.exact)


def _plain_loop(model, tok, prompts: list[str], budgets: list[int], stops: list[int], trackers=None) -> list[list[int]]:
    """The reference: one ``model.generate`` call per prompt, no padding."""
    from loraforge.eval.generate import decode_alone

    with torch.no_grad():
        return [decode_alone(model, tok, p, b, stops, logits_processor=[trackers[i]] if trackers else None)
                for i, (p, b) in enumerate(zip(prompts, budgets))]


def gap_noise(single: list[list[float]], single_ids: list[list[int]], batched: dict[int, list[float]],
              batched_ids: list[list[int]]) -> list[float]:
    """|change of the top-1 vs top-2 gap| between batch 1 and the batch, at each decode step whose
    prefix both runs share (the quantity a tie margin has to exceed)."""
    out = []
    for i, (a, b) in enumerate(zip(single_ids, batched_ids)):
        for k in range(min(len(single[i]), len(batched.get(i, [])), len(a) + 1)):
            if a[:k] != b[:k]:
                break
            out.append(abs(single[i][k] - batched[i][k]))
    return out


def bench_generate(spec: GenerateSpec, out="bench/results", log=print) -> dict:
    from dataclasses import asdict

    from loraforge.bench.report import generate_markdown, write_results
    from loraforge.config import DataConfig
    from loraforge.data.formats import load_examples
    from loraforge.data.templates import prompt_text, stop_token_ids
    from loraforge.eval.generate import TIE_MARGINS, TieTracker, generate_ids
    from loraforge.models.load import load_model
    from loraforge.eval.inference import merged_for_inference, source_budgets

    loaded = load_model(spec.model, spec.dtype)
    tok, model, data_cfg = loaded.tokenizer, loaded.model, DataConfig()
    if spec.adapter:
        from loraforge.adapters import load_adapter

        model = load_adapter(model, spec.adapter)
    examples = load_examples(spec.data, None, None, data_cfg.src_lang, data_cfg.tgt_lang, limit=spec.prompts)
    prompts = [prompt_text(tok, e.source, data_cfg, e.system) for e in examples]
    budgets = source_budgets(tok, [e.source for e in examples], spec.max_new_tokens)
    stops = stop_token_ids(tok, data_cfg.template)
    runs, outputs = [], []
    with merged_for_inference(model):
        model.eval()
        # untimed warm-up of both paths (first calls allocate and pick kernels)
        _plain_loop(model, tok, prompts[:1], [4], stops)
        generate_ids(model, tok, prompts[:spec.batch_size], 4, spec.batch_size, stop_ids=stops, progress=False)
        margin = TIE_MARGINS.get(next(model.parameters()).dtype)  # None in bf16: no re-decoding there
        methods = [("plain model.generate loop", 1, None), ("loraforge generate", spec.batch_size, margin)]
        if margin is not None:
            methods.append(("loraforge generate, no tie re-decoding", spec.batch_size, None))
        for method, batch, tie in methods:
            stats: dict = {}
            t0 = time.perf_counter()
            if batch == 1:
                ids = _plain_loop(model, tok, prompts, budgets, stops)
            else:
                ids = generate_ids(model, tok, prompts, spec.max_new_tokens, batch, "causal", stop_ids=stops,
                                   budgets=budgets, progress=False, tie_margin=tie, stats=stats)
            seconds = time.perf_counter() - t0
            tokens = sum(len(x) for x in ids)
            differ = [i for i, (a, b) in enumerate(zip(outputs[0], ids)) if a != b] if outputs else []
            runs.append({"method": method, "batch_size": batch, "tie_margin": tie, "seconds": seconds,
                         "tokens": tokens, "tokens_per_s": tokens / seconds, "redecoded": stats.get("redecoded", 0),
                         "differ_from_batch1": len(differ), "differing_prompts": differ})
            outputs.append(ids)
            log(f"{method}: {tokens / seconds:.1f} tokens/s ({seconds:.1f} s), {len(differ)} outputs differ")
        # Untimed: how far batch-shape rounding moves the top-2 gap (trackers would slow the timed runs).
        trackers = [TieTracker([b], stops) for b in budgets]
        single_ids = _plain_loop(model, tok, prompts, budgets, stops, trackers)
        stats = {}
        batched_ids = generate_ids(model, tok, prompts, spec.max_new_tokens, spec.batch_size, stop_ids=stops,
                                   budgets=budgets, progress=False, tie_margin=0.0, stats=stats)
        noise = sorted(gap_noise([t.row_gaps(0) for t in trackers], single_ids, stats["gaps"], batched_ids))
    summary = {"steps": len(noise), "max": noise[-1], "median": noise[len(noise) // 2],
               "p99": noise[int(0.99 * (len(noise) - 1))]} if noise else None
    if summary:
        log(f"gap noise over {len(noise)} shared decode steps: max {summary['max']:.3g}, median {summary['median']:.3g}")
    results = {"bench": "generate", "settings": asdict(spec), "prompts": len(prompts), "runs": runs,
               "gap_noise": summary,
               "speedup": runs[1]["tokens_per_s"] / max(runs[0]["tokens_per_s"], 1e-9),
               "mismatches": runs[1]["differ_from_batch1"], "mismatched_prompts": runs[1]["differing_prompts"]}
    write_results(out, "generate", results, generate_markdown(results))
    return results
