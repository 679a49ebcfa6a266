"""``loraforge bench generate``: the evaluation generator vs a plain batch-1 ``model.generate`` loop.

Same model, prompts (the first ``prompts`` k8s dev sources in the chat template), stop tokens and
per-prompt budgets. Tokens are counted the same way for both: the new ids ``model.generate`` returns
per row, up to and including the first stop token (a batch's finished rows are padded after it).
Greedy outputs of batched (left-padded) decoding can differ from batch 1 by floating-point noise:
the mismatches are counted, not hidden.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class GenerateSpec:
    model: str = "gemma3-270m"
    adapter: str | None = None
    prompts: int = 32
    max_new_tokens: int = 128
    batch_size: int = 16
    data: str = "k8s:dev"


def _new_tokens(out, prompt_width: int, stops: list[int]) -> list[int]:
    """Generated tokens per row, up to and including the first stop token."""
    counts = []
    for row in out[:, prompt_width:].tolist():
        ends = [i for i, t in enumerate(row) if t in stops]
        counts.append(ends[0] + 1 if ends else len(row))
    return counts


class _Counting:
    """Wraps ``model.generate`` to count new tokens, whichever code calls it."""

    def __init__(self, model, stops: list[int]):
        self.model, self.stops, self.counts, self.inner = model, stops, [], model.generate

    def __call__(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        self.counts += _new_tokens(out, kwargs["input_ids"].shape[1], self.stops)
        return out


def _plain_loop(model, tok, prompts: list[str], budgets: list[int], stops: list[int]) -> list[str]:
    import torch

    outs = []
    with torch.no_grad():
        for prompt, budget in zip(prompts, budgets):
            enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
            ids = model.generate(**enc, max_new_tokens=budget, do_sample=False, eos_token_id=stops,
                                 pad_token_id=tok.pad_token_id)
            outs.append(tok.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return outs


def bench_generate(spec: GenerateSpec, out="bench/results", log=print) -> dict:
    from dataclasses import asdict

    from loraforge.bench.report import generate_markdown, write_results
    from loraforge.config import DataConfig
    from loraforge.data.formats import load_examples
    from loraforge.data.templates import prompt_text, stop_token_ids
    from loraforge.eval.generate import generate
    from loraforge.models.load import load_model
    from loraforge.workflows import merged_for_inference, source_budgets

    loaded = load_model(spec.model)
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
        generate(model, tok, prompts[:spec.batch_size], 4, spec.batch_size, "causal", stop_ids=stops, progress=False)
        for method, batch in (("plain model.generate loop", 1), ("loraforge generate", spec.batch_size)):
            counter = model.generate = _Counting(model, stops)
            t0 = time.perf_counter()
            if not outputs:  # the plain loop first
                hyps = _plain_loop(model, tok, prompts, budgets, stops)
            else:
                hyps = generate(model, tok, prompts, spec.max_new_tokens, batch, "causal", stop_ids=stops,
                                budgets=budgets, progress=False)
            seconds = time.perf_counter() - t0
            tokens = sum(counter.counts)
            runs.append({"method": method, "batch_size": batch, "seconds": seconds, "tokens": tokens,
                         "tokens_per_s": tokens / seconds})
            outputs.append(hyps)
            del model.generate  # back to the class's method
            log(f"{method}: {tokens / seconds:.1f} tokens/s ({seconds:.1f} s)")
    mismatches = [i for i, (a, b) in enumerate(zip(*outputs)) if a != b]
    results = {"bench": "generate", "settings": asdict(spec), "prompts": len(prompts), "runs": runs,
               "speedup": runs[1]["tokens_per_s"] / max(runs[0]["tokens_per_s"], 1e-9), "mismatches": len(mismatches),
               "mismatched_prompts": mismatches}
    write_results(out, "generate", results, generate_markdown(results))
    return results
