"""Two levers of the serving engine's decoding step (``rows`` rows, one token each), timed in one process:
the thread it runs on (the process's main thread, as ``loraforge serve`` does, or a second Python thread)
and the bf16 weights prepacked for oneDNN or not (``serve --no-prepack``). The four combinations take
turns in each round on the same engine, so a slow spell of the machine hits all of them.

    python -m loraforge.bench.generation_thread [--model gemma3-270m] [--dtype auto] [--rows 16] [--steps 30]
        [--rounds 3] [--out bench/results]

Writes ``generation-thread.json`` and ``generation-thread.md``.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

from loraforge.bench.report import cpu_name, table, write_results


def _filled_engine(model: str, dtype: str, rows: int):
    """An engine whose own loop is stopped, with ``rows`` prompts prefilled: ``step`` then decodes one token."""
    from loraforge.bench.serve import DEFAULT_PROMPTS
    from loraforge.models.load import load_model
    from loraforge.serve.engine import Engine, Request
    from loraforge.serve.lora import BASE
    from loraforge.serve.text import Codec

    loaded = load_model(model, dtype=dtype, device="cpu")
    engine = Engine(loaded, max_batch=rows)
    engine.close()  # its thread returns; the steps below are driven by hand
    codec = Codec(loaded.tokenizer)

    def refill() -> None:
        engine.clear()
        for i in range(rows):
            engine.waiting.append(Request(adapter=BASE, prompt_ids=codec.encode(DEFAULT_PROMPTS[i % len(DEFAULT_PROMPTS)]),
                                          max_tokens=1 << 20, stop_ids=[], emit=lambda *_: None))
        engine.step()  # admits (prefills) the rows and decodes their first token

    return engine, loaded.model.dtype, refill


def step_ms(model: str = "gemma3-270m", dtype: str = "auto", rows: int = 16, steps: int = 30,
            rounds: int = 3) -> dict:
    import torch

    from loraforge.models.prepack import PrepackedLinear

    engine, torch_dtype, refill = _filled_engine(model, dtype, rows)
    packed = [m for m in engine.model.modules() if isinstance(m, PrepackedLinear)]

    def prepacked(on: bool) -> None:  # the same modules, with or without their packed weights
        for m in packed:
            m.__class__ = PrepackedLinear if on else torch.nn.Linear

    def timed(out: list[float]) -> None:
        refill()
        for _ in range(3):  # warm-up
            engine.step()
        start = time.perf_counter()
        for _ in range(steps):
            engine.step()
        out.append((time.perf_counter() - start) / steps * 1000)

    variants = [(thread, pack) for thread in ("main", "second") for pack in ((True, False) if packed else (False,))]
    times: dict[tuple[str, bool], list[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for thread, pack in variants:
            prepacked(pack)
            if thread == "main":
                timed(times[thread, pack])
            else:
                worker = threading.Thread(target=timed, args=(times[thread, pack],))
                worker.start()
                worker.join()
    prepacked(True)
    return {"model": model, "dtype_arg": dtype, "dtype": str(torch_dtype).removeprefix("torch."), "cpu": cpu_name(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows, "steps": steps,
            "rounds": rounds, "prepacked_layers": len(packed),
            "variants": [{"thread": t, "prepacked": p, "median_ms": round(statistics.median(times[t, p]), 1),
                          "rounds_ms": [round(x, 1) for x in times[t, p]]} for t, p in variants]}


def to_markdown(r: dict) -> str:
    rows = [[f"{'main' if v['thread'] == 'main' else 'second Python'} thread", "yes" if v["prepacked"] else "no",
             v["median_ms"], " ".join(map(str, v["rounds_ms"]))] for v in r["variants"]]
    return (f"# One decoding step of the serving engine, by thread ({r['model']}, {r['dtype']})\n\n"
            f"CPU: {r['cpu']}, {r['threads']} threads, torch {r['torch']}. {r['rows']} rows, {r['steps']} steps "
            f"per round, the variants taking turns in each of {r['rounds']} rounds.\n\n"
            + table(["thread", "prepacked weights", "median ms/step", "each round"], rows)
            + f"\nReproduce: `python -m loraforge.bench.generation_thread --model {r['model']} --dtype {r['dtype_arg']} "
              f"--rows {r['rows']} --steps {r['steps']} --rounds {r['rounds']}`\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="gemma3-270m")
    p.add_argument("--dtype", default="auto", help="auto: bf16 where the CPU is fast at it (serve's rule)")
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="bench/results")
    a = p.parse_args(argv)
    r = step_ms(a.model, a.dtype, a.rows, a.steps, a.rounds)
    write_results(a.out, "generation-thread", r, to_markdown(r))
    print(to_markdown(r))


if __name__ == "__main__":
    main()
