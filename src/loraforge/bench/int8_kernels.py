"""Where a ``serve --int8`` decoding step's time goes: the matrix-multiply kernels alone, at the
number of activation rows the engine feeds them, against a whole engine step.

    python -m loraforge.bench.int8_kernels [--model gemma3-270m] [--rows 16] [--out bench/results]

For ``rows`` live requests the decoder's Linear layers get ``2 * rows + 1`` activation rows (two
levels plus the pinning row, ``serve/quant.py``) and the output layer ``rows + 1``. The bench times
every Linear layer of the model once per step, in int8 (fbgemm) and in fp32, at several row counts,
then one real engine step (``rows`` rows decoding together). If the kernels at the engine's row
counts are most of the step, the step is bound by the CPU's int8 arithmetic, not by Python or
per-op overhead. Writes ``int8-kernels.json`` and ``int8-kernels.md``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from loraforge.bench.report import cpu_name, write_results

ROW_COUNTS = (1, 9, 17, 33, 65)


def _ms_per_step(fn, inputs, repeats: int) -> float:
    for _ in range(2):
        fn(inputs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(inputs)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def kernel_times(model, row_counts=ROW_COUNTS, repeats: int = 7) -> dict:
    """{"decoder"|"output layer": {"int8"|"fp32": {rows: ms per step}}}: every Linear of the model once."""
    import torch

    from loraforge.serve.quant import pack

    head = model.get_output_embeddings()
    groups = {"decoder": [m for m in model.modules() if type(m) is torch.nn.Linear and m is not head],
              "output layer": [head]}
    out: dict = {}
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, layers in groups.items():
            weights = [m.weight.detach().float() for m in layers]
            packed = [pack(w)[0] for w in weights]
            out[name] = {"int8": {}, "fp32": {}}
            for m in row_counts:
                xs = [torch.randn(m, w.shape[1], generator=g) * 0.1 for w in weights]
                out[name]["int8"][m] = round(_ms_per_step(lambda xs: [torch.ops.quantized.linear_dynamic(
                    x, p, reduce_range=True) for x, p in zip(xs, packed)], xs, repeats), 4)
                out[name]["fp32"][m] = round(_ms_per_step(lambda xs: [torch.nn.functional.linear(x, w)
                                                                      for x, w in zip(xs, weights)], xs, repeats), 4)
    return out


def reduction_times(vocab: int, rows: int, repeats: int = 20) -> dict:
    """ms of the per-step reductions over (rows, vocab) logits: torch's argmax/top-32 against ``serve/reduce.py``."""
    import torch

    from loraforge.serve.reduce import argmax_rows, topk_indices

    x = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(0))
    return {"argmax": {"torch": round(_ms_per_step(lambda x: x.argmax(-1), x, repeats), 2),
                       "blockwise": round(_ms_per_step(argmax_rows, x, repeats), 2)},
            "top-32": {"torch": round(_ms_per_step(lambda x: x.topk(32, dim=1), x, repeats), 2),
                       "blockwise": round(_ms_per_step(lambda x: topk_indices(x, 32), x, repeats), 2)}}


def engine_step_ms(loaded, rows: int, steps: int = 40) -> float:
    """Median time of one decoding step of ``rows`` rows through the engine's own KV cache and model."""
    import torch

    from loraforge.serve.kv import SlotCache

    model = loaded.model
    cache = SlotCache(model.config, slots=rows, capacity=256)
    prompt = 16
    cache.make_room(prompt, 0)
    mask = cache.prefill_view(0, [prompt] * rows)
    ids = torch.randint(0, min(1000, model.config.vocab_size), (rows, prompt), generator=torch.Generator().manual_seed(0))
    last = torch.zeros(rows, 1, dtype=torch.long)
    pos = torch.full((rows, 1), prompt)
    times = []
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask, position_ids=torch.arange(prompt)[None].expand(rows, -1),
              past_key_values=cache, use_cache=True, logits_to_keep=1)
        for i in range(steps + 3):
            start = time.perf_counter()
            model(input_ids=last, attention_mask=cache.decode_view(rows), position_ids=pos, past_key_values=cache,
                  use_cache=True)
            cache.advance()
            pos += 1
            if i >= 3:
                times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def run(model_name: str = "gemma3-270m", rows: int = 16, out: str | Path = "bench/results") -> dict:
    import torch

    from loraforge.models.load import load_model
    from loraforge.serve.quant import int8_weights

    loaded = load_model(model_name, dtype="fp32", device="cpu")
    loaded.model.eval()
    kernels = kernel_times(loaded.model, sorted(set(ROW_COUNTS) | {rows + 1, 2 * rows + 1}))
    reductions = reduction_times(loaded.model.get_output_embeddings().weight.shape[0], rows)
    int8_weights(loaded.model, 2)
    step = engine_step_ms(loaded, rows)
    result = {"model": model_name, "cpu": cpu_name(), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "rows": rows, "kernels_ms": kernels, "reductions_ms": reductions, "engine_step_ms": round(step, 1)}
    write_results(out, "int8-kernels", result, to_markdown(result))
    return result


def to_markdown(r: dict) -> str:
    k, rows = r["kernels_ms"], r["rows"]
    counts = list(k["decoder"]["int8"])
    lines = [f"# int8 kernels against a whole decoding step ({r['model']})", "",
             f"CPU: {r['cpu']}, {r['threads']} threads, torch {r['torch']}. Milliseconds per decoding step: every "
             "Linear layer of the model called once, at each number of activation rows.", "",
             "| layers | weights | " + " | ".join(f"{m} rows" for m in counts) + " |",
             "|---|---|" + "---|" * len(counts)]
    for name in k:
        for kind in ("int8", "fp32"):
            lines.append(f"| {name} | {kind} | " + " | ".join(f"{k[name][kind][m]}" for m in counts) + " |")
    dec, head = k["decoder"]["int8"].get(2 * rows + 1), k["output layer"]["int8"].get(rows + 1)
    lines += ["", f"One engine step with `serve --int8`, {rows} rows: **{r['engine_step_ms']} ms** (median)."]
    if dec is not None and head is not None:
        lines.append(f"Its int8 kernels alone ({2 * rows + 1} decoder rows, {rows + 1} output-layer rows): "
                     f"{dec + head:.1f} ms ({(dec + head) / r['engine_step_ms']:.0%} of the step).")
    lines += ["", f"Reductions over the {rows} rows' logits each step (ms): " + "; ".join(
        f"{op}: torch {v['torch']}, blockwise {v['blockwise']}" for op, v in r["reductions_ms"].items())
        + " (`serve/reduce.py`, the same answers)."]
    lines += ["", f"Reproduce: `python -m loraforge.bench.int8_kernels --model {r['model']} --rows {rows}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m loraforge.bench.int8_kernels", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="gemma3-270m")
    p.add_argument("--rows", type=int, default=16, help="live requests in the engine step (8, 16 or 32 match the table)")
    p.add_argument("--out", default="bench/results")
    a = p.parse_args(argv)
    print(to_markdown(run(a.model, a.rows, a.out)))


if __name__ == "__main__":
    main()
