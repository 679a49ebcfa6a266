"""Resident memory of the Gemma 3 270M tokenizer as transformers loads it, and after
``loraforge.models.load.slim_tokenizer`` drops its Python copies of the vocabulary and merges.

    .venv/bin/python bench/tokenizer-memory.py
"""

import ctypes
import gc

from transformers import AutoTokenizer

from loraforge.models.load import resolve_model_path, slim_tokenizer


def anon_mb() -> float:
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # count what is held, not what the allocator kept
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


start = anon_mb()
tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("gemma3-270m"))
loaded = anon_mb()
slim_tokenizer(tokenizer)
gc.collect()
slim = anon_mb()
print(f"{type(tokenizer).__name__}: {loaded - start:.0f} MB as loaded, {slim - start:.0f} MB slimmed "
      f"({loaded - slim:.0f} MB less)")
