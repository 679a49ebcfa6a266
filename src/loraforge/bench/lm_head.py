"""The output layer alone on Gemma 3 270M's real 262k x 640 embedding, fp32 on the CPU: the full fp32
head, the opt-in int8 head (``serve/quant.py``) and the verified head (``serve/head.py``, serve's
default), at batch 1, 8 and 16, on hidden states the model produced while greedily answering real
prompts (recorded at every decoding step, the rows that had ended dropped).

    python -m loraforge.bench.lm_head [--batches 1 8 16] [--new-tokens 32] [--out bench/results]

Per head and batch: seconds per call (median over the batches), greedy agreement with the fp32 head,
and for the verified head the share of rows that fell back to the full fp32 head and the sizes of the
candidate sets. Writes ``lm-head.json`` and ``lm-head.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from loraforge.bench.report import cpu_name, write_results

PROMPTS = [
    "What is a Kubernetes Pod, in two sentences?",
    "Explain what `kubectl get pods -A` prints.",
    "Write a haiku about autumn leaves.",
    "Translate into French: The meeting has been moved to Thursday afternoon.",
    "Give three tips for writing clear commit messages.",
    "What is the capital of Australia, and why is it not Sydney?",
    "Write a Python function that reverses a linked list.",
    "Summarize the plot of Romeo and Juliet in one paragraph.",
    "How does a Deployment differ from a StatefulSet?",
    "List the planets of the solar system in order from the sun.",
    "What does HTTP status code 413 mean?",
    "Describe how photosynthesis works to a ten-year-old.",
    "Suggest a name for a bakery that only sells sourdough.",
    "Why is the sky blue?",
    "Convert 72 degrees Fahrenheit to Celsius and show the steps.",
    "Write a short, polite email declining a meeting invitation.",
]




def decode_states(loaded, prompts: list[str], new_tokens: int):
    """The head's inputs at every greedy decoding step (batched ``generate``), rows that ended removed."""
    import torch

    tok, model = loaded.tokenizer, loaded.model
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             if getattr(tok, "chat_template", None) else p for p in prompts]
    tok.padding_side = "left"
    batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    states: list[torch.Tensor] = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, inp, out: states.append(inp[0][:, -1]))
    try:
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
    finally:
        hook.remove()
    generated = out[:, batch["input_ids"].shape[1]:]
    eos = set(model.generation_config.eos_token_id if isinstance(model.generation_config.eos_token_id, list)
              else [model.generation_config.eos_token_id])
    live = torch.ones(len(prompts), dtype=torch.bool)
    kept = []
    for step, h in enumerate(states[:generated.shape[1]]):
        kept.append(h[live])
        live = live & torch.tensor([int(t) not in eos for t in generated[:, step]])
    return torch.cat(kept)


def _int8_head(weight):
    """The opt-in int8 head exactly as ``serve --int8-lm-head`` builds it."""
    import torch

    from loraforge.serve.quant import int8_lm_head

    holder = torch.nn.Module()
    holder.lm_head = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    holder.lm_head.weight = torch.nn.Parameter(weight, requires_grad=False)
    holder.get_output_embeddings = lambda: holder.lm_head
    if not int8_lm_head(holder):
        raise RuntimeError("no int8 engine (fbgemm) in this torch build")
    return holder.lm_head


def _timed(fn, x) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(x)
    return time.perf_counter() - t0, out


def measure(weight, states, batches: tuple[int, ...], max_calls: int = 40) -> dict:
    import torch

    from loraforge.serve.head import VerifiedHead

    verified, int8 = VerifiedHead(weight), _int8_head(weight)
    heads = {"fp32": lambda x: torch.nn.functional.linear(x, weight).argmax(-1),
             "int8": lambda x: int8(x).argmax(-1),
             "verified": lambda x: verified.greedy(x)}
    results = {}
    with torch.no_grad():
        for b in batches:
            chunks = [states[i:i + b] for i in range(0, len(states) - b + 1, b)][:max_calls]
            for fn in heads.values():  # warm-up
                fn(chunks[0])
            row = {name: {"seconds": []} for name in heads}
            ref, agree, fell, counts = [], {"int8": 0, "verified": 0}, 0, []
            for x in chunks:
                for name, fn in heads.items():
                    s, out = _timed(fn, x)
                    row[name]["seconds"].append(s)
                    if name == "fp32":
                        ref = out
                    elif name == "int8":
                        agree["int8"] += int((out == ref).sum())
                    else:
                        tokens, fell_back, count = out
                        agree["verified"] += int((tokens == ref).sum())
                        fell += int(fell_back.sum())
                        counts += count.tolist()
            rows = len(chunks) * b
            for name in heads:
                secs = row[name].pop("seconds")
                row[name]["seconds_per_call"] = statistics.median(secs)
                if name != "fp32":
                    row[name]["greedy_agreement"] = agree[name] / rows
            counts.sort()
            row["verified"].update(fallback_share=fell / rows, candidates_median=counts[len(counts) // 2],
                                   candidates_p99=counts[min(len(counts) - 1, int(len(counts) * 0.99))],
                                   candidates_max=counts[-1])
            row["rows"], row["calls"] = rows, len(chunks)
            results[str(b)] = row
    return results


def run(batches: tuple[int, ...] = (1, 8, 16), new_tokens: int = 32, out: str | Path = "bench/results",
        model: str = "gemma3-270m") -> dict:
    import torch

    from loraforge.models.load import load_model

    loaded = load_model(model, dtype="fp32", device="cpu")
    states = decode_states(loaded, PROMPTS, new_tokens)
    weight = loaded.model.get_output_embeddings().weight.detach()
    load_before = os.getloadavg()[0]  # other work on the machine shows up here
    by_batch = measure(weight, states, batches)
    result = {"model": model, "weight": list(weight.shape), "dtype": "float32", "cpu": cpu_name(),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "states": len(states),
              "prompts": len(PROMPTS), "new_tokens": new_tokens, "load_average_before": load_before,
              "by_batch": by_batch}
    write_results(out, "lm-head", result, to_markdown(result))
    return result


def to_markdown(r: dict) -> str:
    lines = [f"# LM head micro-benchmark: {r['model']} ({r['weight'][0]} x {r['weight'][1]}, {r['dtype']})", "",
             f"CPU: {r['cpu']}, {r['threads']} threads, torch {r['torch']}. Hidden states: {r['states']} greedy "
             f"decoding steps over {r['prompts']} prompts (up to {r['new_tokens']} tokens each).", "",
             "| batch | fp32 s/call | int8 s/call | verified s/call | verified speed-up | int8 agrees | "
             "verified agrees | fell back | candidates p50 / p99 / max |",
             "|---|---|---|---|---|---|---|---|---|"]
    for b, row in r["by_batch"].items():
        f, i, v = row["fp32"], row["int8"], row["verified"]
        lines.append(f"| {b} | {f['seconds_per_call']:.4f} | {i['seconds_per_call']:.4f} | "
                     f"{v['seconds_per_call']:.4f} | {f['seconds_per_call'] / v['seconds_per_call']:.1f}x | "
                     f"{i['greedy_agreement']:.2%} | {v['greedy_agreement']:.2%} | {v['fallback_share']:.2%} | "
                     f"{v['candidates_median']} / {v['candidates_p99']} / {v['candidates_max']} |")
    lines += ["", "Reproduce: `python -m loraforge.bench.lm_head`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m loraforge.bench.lm_head", description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16])
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--model", default="gemma3-270m")
    p.add_argument("--out", default="bench/results")
    a = p.parse_args(argv)
    print(to_markdown(run(tuple(a.batches), a.new_tokens, a.out, a.model)))


if __name__ == "__main__":
    main()
