"""What training does with freed memory (glibc's malloc; a no-op elsewhere): ``train.freed_memory``.

Why: glibc hands every block over its mmap threshold (at most 32 MiB) back to the kernel when it is
freed, so each chunk of Gemma's logits (256 x 262k) and each large activation is a fresh mapping
whose pages fault in again, step after step; in a VM that is a large share of a CPU step. A training
loop allocates the same sizes over and over:

- ``keep``: large blocks come from the heap and the heap is never trimmed, so freed blocks are
  reused without faults. Fastest; the peak RSS rises by what fragmentation leaves in the heap
  (compare the bench rows ``loraforge`` and ``loraforge-freed-memory-default``).
- ``release``: glibc's policy, plus ``malloc_trim`` after every optimizer step, so memory freed in a
  step does not stay resident into the next. Least RSS, slightly slower steps.
- ``default``: glibc's policy as it is.

`loraforge bench train --ablation` measures them (rows ``loraforge-freed-memory-default`` and
``loraforge-low-memory``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from contextlib import contextmanager

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>
M_MMAP_MAX = -4
DEFAULT_MMAP_MAX = 65536
DEFAULT_TRIM_THRESHOLD = 128 * 1024  # glibc's defaults, restored after training
KEEP_TRIM_THRESHOLD = 2**31 - 1  # bytes (mallopt takes an int): in effect, never trim


def _glibc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


def malloc_in_use() -> int | None:
    """Bytes malloc has handed out and not had back, mmapped blocks included (glibc >= 2.33), else
    None. Unlike RSS it does not count what the allocator keeps free: it shows what is held."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


@contextmanager
def freed_memory_policy(policy: str = "keep"):
    """Applies ``policy`` for the block and yields the function to call after each optimizer step.
    On leaving, glibc's mmap use and trim threshold are back at their defaults and free pages go back
    to the kernel, so evaluation after training starts lean (glibc's dynamic mmap threshold stays
    off once set: a process that trained keeps a 128 KiB one)."""
    libc = _glibc() if policy != "default" else None
    if libc is None:
        yield lambda: None
        return
    if policy == "keep":
        libc.mallopt(M_MMAP_MAX, 0)
        libc.mallopt(M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD)
    try:
        yield (lambda: libc.malloc_trim(0)) if policy == "release" else (lambda: None)
    finally:
        if policy == "keep":
            libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
            libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)
