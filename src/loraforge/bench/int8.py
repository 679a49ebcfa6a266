"""What ``serve --int8`` buys and costs, side by side in one process: the serving engine's decoding
speed (``rows`` requests decoded together, ``tokens`` each, the base model) and the tuned model's
translation quality on the first ``segments`` of its test split, for fp32 (serve's default: the
verified head, same tokens as fp32) and int8 weights with one or two activation levels.

    python -m loraforge.bench.int8 --run runs/markup-true [--segments 100] [--out bench/results]

Quality runs through ``loraforge eval``'s own generation with the adapter merged and then quantized
(what ``serve --int8`` computes for a batch of one adapter, up to LoRA running beside the int8 layers
there). Writes ``int8.json`` and ``int8.md``.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

from loraforge.bench.report import cpu_name, write_results

VARIANTS = {"fp32": None, "int8, 2 levels": 2, "int8, 1 level": 1}  # name -> activation levels (None: fp32)


def engine_speed(model_name: str, levels: int | None, rows: int, tokens: int, repeats: int = 2) -> float:
    """Completion tokens/s of the engine decoding ``rows`` requests of ``tokens`` tokens (best of ``repeats``
    after a warm-up; stops switched off so every row runs its whole budget)."""
    from loraforge.bench.serve import DEFAULT_PROMPTS
    from loraforge.models.load import load_model
    from loraforge.serve.engine import Engine, Request
    from loraforge.serve.lora import BASE
    from loraforge.serve.text import Codec

    loaded = load_model(model_name, dtype="fp32", device="cpu")
    engine = Engine(loaded, max_batch=rows, int8_weights=levels or False)
    codec = Codec(loaded.tokenizer)
    prompts = [codec.encode(DEFAULT_PROMPTS[i % len(DEFAULT_PROMPTS)]) for i in range(rows)]

    def once(budget: int) -> float:
        left, done = [rows], threading.Event()

        def emit(kind, _):
            if kind != "token":
                left[0] -= 1
                if not left[0]:
                    done.set()

        start = time.perf_counter()
        for ids in prompts:
            engine.submit(Request(adapter=BASE, prompt_ids=ids, max_tokens=budget, stop_ids=[], emit=emit))
        done.wait()
        return rows * budget / (time.perf_counter() - start)

    try:
        once(4)
        return max(once(tokens) for _ in range(repeats))
    finally:
        engine.close()


def quality(cfg, run: str, levels: int | None) -> tuple[dict, list[str], float]:
    """(metrics, outputs, seconds) of the run's adapter on the config's test split."""
    from loraforge.data.splits import test_examples
    from loraforge.eval.inference import evaluate, load_for_inference
    from loraforge.serve.quant import int8_weights

    test = test_examples(cfg)
    loaded, model = load_for_inference(cfg, run)
    model = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    if levels:
        int8_weights(model, levels)
    start = time.perf_counter()
    metrics, outputs = evaluate(loaded, model, cfg, test, progress=False)
    return metrics, outputs, time.perf_counter() - start


def run(run_dir: str, segments: int = 100, rows: int = 16, tokens: int = 64, out: str | Path = "bench/results") -> dict:
    import torch

    from loraforge.config import load_config

    cfg = load_config(Path(run_dir) / "config.yaml", [f"eval.max_examples={segments}"])
    result = {"run": str(run_dir), "model": cfg.model.name, "cpu": cpu_name(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "segments": segments, "rows": rows, "tokens": tokens,
              "variants": {}}
    reference = None
    for name, levels in VARIANTS.items():
        metrics, outputs, seconds = quality(cfg, run_dir, levels)
        reference = reference or outputs
        result["variants"][name] = {
            "engine_tokens_per_s": round(engine_speed(cfg.model.name, levels, rows, tokens), 1),
            "chrf": metrics.get("chrf"), "bleu": metrics.get("bleu"), "markup_kept": metrics.get("markup"),
            "same_as_fp32": sum(a == b for a, b in zip(outputs, reference)) / len(outputs),
            "eval_seconds": round(seconds, 1)}
    write_results(out, "int8", result, to_markdown(result))
    return result


def to_markdown(r: dict) -> str:
    lines = [f"# int8 serving weights: speed and quality ({r['model']}, adapter `{r['run']}`)", "",
             f"CPU: {r['cpu']}, {r['threads']} threads, torch {r['torch']}. Engine: {r['rows']} rows decoded "
             f"together, {r['tokens']} tokens each. Quality: the first {r['segments']} segments of the test split.", "",
             "| weights | engine tokens/s | chrF | BLEU | markup kept | outputs same as fp32 | eval s |",
             "|---|---|---|---|---|---|---|"]
    for name, v in r["variants"].items():
        mk = "-" if v["markup_kept"] is None else f"{v['markup_kept']:.2f}"
        lines.append(f"| {name} | {v['engine_tokens_per_s']} | {v['chrf']:.2f} | {v['bleu']:.2f} | {mk} | "
                     f"{v['same_as_fp32']:.0%} | {v['eval_seconds']} |")
    lines += ["", f"Reproduce: `python -m loraforge.bench.int8 --run {r['run']} --segments {r['segments']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m loraforge.bench.int8", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a tuned run directory (its config and adapter)")
    p.add_argument("--segments", type=int, default=100)
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--out", default="bench/results")
    a = p.parse_args(argv)
    print(to_markdown(run(a.run, a.segments, a.rows, a.tokens, a.out)))


if __name__ == "__main__":
    main()
