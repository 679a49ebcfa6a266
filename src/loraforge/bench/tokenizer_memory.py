"""Resident memory of a tokenizer as transformers loads it, and after
``loraforge.models.load.slim_tokenizer`` drops its Python copies of the vocabulary and merges.

    python -m loraforge.bench.tokenizer_memory [--model gemma3-270m]

Linux only (reads RssAnon from /proc/self/status). Run it in a fresh process: memory this process
already holds is subtracted, memory it freed earlier may be reused and hide part of the growth.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass


@dataclass
class TokenizerMemory:
    tokenizer: str  # class name
    loaded_mb: float  # anonymous RSS grown by loading it
    slim_mb: float  # ... and what is left after slim_tokenizer


def anon_mb() -> float:
    """Anonymous resident memory of this process, after handing freed heap back to the system."""
    import ctypes

    ctypes.CDLL("libc.so.6").malloc_trim(0)  # count what is held, not what the allocator kept
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def measure(model: str = "gemma3-270m") -> TokenizerMemory:
    import gc

    from transformers import AutoTokenizer

    from loraforge.models.load import resolve_model_path, slim_tokenizer

    path = resolve_model_path(model)
    start = anon_mb()
    tokenizer = AutoTokenizer.from_pretrained(path)
    loaded = anon_mb()
    slim_tokenizer(tokenizer)
    gc.collect()
    slim = anon_mb()
    return TokenizerMemory(type(tokenizer).__name__, loaded - start, slim - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loraforge.bench.tokenizer_memory",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="gemma3-270m", help="model name or folder (default: %(default)s)")
    r = measure(p.parse_args(argv).model)
    print(f"{r.tokenizer}: {r.loaded_mb:.0f} MB as loaded, {r.slim_mb:.0f} MB slimmed "
          f"({r.loaded_mb - r.slim_mb:.0f} MB less)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
