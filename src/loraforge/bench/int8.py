"""What the serving weights buy and cost, side by side in one process: the serving engine's decoding
speed (``rows`` requests decoded together, ``tokens`` each, the base model) and the tuned model's
translation quality on the first ``segments`` of its test split, for fp32 (the verified head, same
tokens as fp32), bf16 (serve's default where the CPU has fast bf16; skipped elsewhere, where it is
emulated and slow), bf16 without the oneDNN-packed weights serve uses (``--no-prepack``: the engine
speed it buys; its quality is bf16's, the same bits), bf16 with the output layer in int8 (``--int8-lm-head``) and int8 weights
(``serve --int8``) with one or two activation levels.

    python -m loraforge.bench.int8 --run runs/markup-true [--segments 100] [--variants fp32,bf16] [--out bench/results]

Quality runs through ``loraforge eval``'s own generation with the adapter merged and then quantized
(what ``serve --int8`` computes for a batch of one adapter, up to LoRA running beside the int8 layers
there). Writes ``int8.json`` and ``int8.md``.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

from loraforge.bench.report import cpu_name, write_results

# name -> (weights dtype, int8: None, "head" (``--int8-lm-head``) or every layer with 1 or 2 activation levels);
# "int8" is what ``serve --int8`` runs
VARIANTS = {"fp32": ("fp32", None), "bf16": ("bf16", None), "bf16-unpacked": ("bf16", None),
            "bf16+int8-head": ("bf16", "head"), "int8": ("fp32", 2), "int8-1-level": ("fp32", 1)}
UNPACKED = {"bf16-unpacked"}  # the engine runs with ``prepack=False``


def default_variants() -> list[str]:
    """Every variant, but bf16 only where the CPU computes it natively (the rule serve's ``auto`` follows)."""
    from loraforge.models.load import has_fast_bf16

    return [v for v, (dtype, _) in VARIANTS.items() if dtype != "bf16" or has_fast_bf16()]


class _EngineRun:
    """One engine for one variant: ``once(budget)`` decodes ``rows`` requests of ``budget`` tokens (stops
    switched off so every row runs its whole budget) and returns completion tokens/s."""

    def __init__(self, model_name: str, dtype: str, int8: int | str | None, rows: int, prepack: bool = True):
        from loraforge.bench.serve import DEFAULT_PROMPTS
        from loraforge.models.load import load_model
        from loraforge.serve.engine import Engine
        from loraforge.serve.text import Codec

        loaded = load_model(model_name, dtype=dtype, device="cpu")
        self.engine = Engine(loaded, max_batch=rows, int8_weights=int8 if isinstance(int8, int) else False,
                             int8_lm_head=int8 == "head", prepack=prepack)
        codec = Codec(loaded.tokenizer)
        self.prompts = [codec.encode(DEFAULT_PROMPTS[i % len(DEFAULT_PROMPTS)]) for i in range(rows)]

    def once(self, budget: int) -> float:
        from loraforge.serve.engine import Request
        from loraforge.serve.lora import BASE

        left, done = [len(self.prompts)], threading.Event()

        def emit(kind, _):
            if kind != "token":
                left[0] -= 1
                if not left[0]:
                    done.set()

        start = time.perf_counter()
        for ids in self.prompts:
            self.engine.submit(Request(adapter=BASE, prompt_ids=ids, max_tokens=budget, stop_ids=[], emit=emit))
        done.wait()
        return len(self.prompts) * budget / (time.perf_counter() - start)


def engine_speeds(model_name: str, variants: list[str], rows: int, tokens: int, rounds: int = 3
                  ) -> dict[str, list[float]]:
    """{variant: completion tokens/s of each of ``rounds``}. The variants take turns within each round
    (one engine each, all loaded, each warmed up once): this shared machine's speed drifts by tens of
    percent within minutes, and taking turns spreads a slow spell over all of them instead of one."""
    runs = {}
    try:
        for name in variants:
            dtype, int8 = VARIANTS[name]
            runs[name] = _EngineRun(model_name, dtype, int8, rows, prepack=name not in UNPACKED)
            runs[name].once(4)
        speeds = {name: [] for name in variants}
        for _ in range(rounds):
            for name, run in runs.items():
                speeds[name].append(run.once(tokens))
        return speeds
    finally:
        for run in runs.values():
            run.engine.close()


def quality(cfg, run: str, int8: int | str | None) -> tuple[dict, list[str], float]:
    """(metrics, outputs, seconds) of the run's adapter on the config's test split."""
    from loraforge.data.splits import test_examples
    from loraforge.eval.inference import evaluate, load_for_inference
    from loraforge.serve.quant import int8_lm_head, int8_weights

    test = test_examples(cfg)
    loaded, model = load_for_inference(cfg, run)
    model = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    if int8 == "head":
        int8_lm_head(model)
    elif int8:
        int8_weights(model, int8)
    start = time.perf_counter()
    metrics, outputs = evaluate(loaded, model, cfg, test, progress=False)
    return metrics, outputs, time.perf_counter() - start


def run(run_dir: str, segments: int = 100, rows: int = 16, tokens: int = 64, out: str | Path = "bench/results",
        variants: list[str] | None = None, rounds: int = 3) -> dict:
    """``variants``: names from ``VARIANTS`` (default ``default_variants()``); the first is the reference
    that "outputs same as" compares with."""
    import torch

    from loraforge.config import ConfigError, load_config

    variants = variants or default_variants()
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ConfigError(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    config = Path(run_dir) / "config.yaml"
    result = {"run": str(run_dir), "model": load_config(config).model.name, "cpu": cpu_name(),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "segments": segments, "rows": rows, "tokens": tokens,
              "rounds": rounds, "reference": variants[0], "variants": {}}
    reference = None
    for name in variants:
        dtype, int8 = VARIANTS[name]
        if name in UNPACKED and "bf16" in result["variants"]:  # eval never prepacks: its quality is bf16's
            result["variants"][name] = dict(result["variants"]["bf16"])
            continue
        cfg = load_config(config, [f"eval.max_examples={segments}", f"model.dtype={dtype}"])
        metrics, outputs, seconds = quality(cfg, run_dir, int8)
        reference = reference or outputs
        result["variants"][name] = {
            "dtype": dtype,
            "chrf": metrics.get("chrf"), "bleu": metrics.get("bleu"), "markup_kept": metrics.get("markup"),
            "same_as_reference": sum(a == b for a, b in zip(outputs, reference)) / len(outputs),
            "eval_seconds": round(seconds, 1)}
    for name, speeds in engine_speeds(result["model"], variants, rows, tokens, rounds).items():
        result["variants"][name]["engine_tokens_per_s"] = round(statistics.median(speeds), 1)
        result["variants"][name]["engine_tokens_per_s_rounds"] = [round(v, 1) for v in speeds]
    write_results(out, "int8", result, to_markdown(result))
    return result


def to_markdown(r: dict) -> str:
    lines = [f"# Serving weights: speed and quality ({r['model']}, adapter `{r['run']}`)", "",
             f"CPU: {r['cpu']}, {r['threads']} threads, torch {r['torch']}. Engine: {r['rows']} rows decoded "
             f"together, {r['tokens']} tokens each, median of {r['rounds']} rounds in which the variants take "
             f"turns. Quality: the first {r['segments']} segments of the test split.", "",
             f"| weights | engine tokens/s | chrF | BLEU | markup kept | outputs same as {r['reference']} | eval s |",
             "|---|---|---|---|---|---|---|"]
    for name, v in r["variants"].items():
        mk = "-" if v["markup_kept"] is None else f"{v['markup_kept']:.2f}"
        lines.append(f"| {name} | {v['engine_tokens_per_s']} | {v['chrf']:.2f} | {v['bleu']:.2f} | {mk} | "
                     f"{v['same_as_reference']:.0%} | {v['eval_seconds']} |")
    lines += ["", f"Reproduce: `python -m loraforge.bench.int8 --run {r['run']} --segments {r['segments']} "
              f"--rows {r['rows']} --tokens {r['tokens']} --rounds {r['rounds']} --variants {','.join(r['variants'])}`",
              ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m loraforge.bench.int8", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a tuned run directory (its config and adapter)")
    p.add_argument("--segments", type=int, default=100)
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--out", default="bench/results")
    p.add_argument("--rounds", type=int, default=3, help="engine timing rounds (variants take turns)")
    p.add_argument("--variants", default=None,
                   help=f"comma-separated, from {', '.join(VARIANTS)} (default: all; bf16 only with fast bf16)")
    a = p.parse_args(argv)
    variants = a.variants.split(",") if a.variants else None
    print(to_markdown(run(a.run, a.segments, a.rows, a.tokens, a.out, variants, a.rounds)))


if __name__ == "__main__":
    main()
