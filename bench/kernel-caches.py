"""What PyTorch's oneDNN caches keep per distinct matmul shape: a Gemma 3 270M MLP linear
(640 -> 2048, bf16, forward + input gradient) at N distinct row counts, with PyTorch's cache
capacity (1,024) and with loraforge's bound (``models/load.py``, KERNEL_CACHE_CAPACITY). Each
setting runs in its own process: the caches read their capacity at the first matmul.

    .venv/bin/python bench/kernel-caches.py [N]
"""

import os
import subprocess
import sys

from loraforge.models.load import KERNEL_CACHE_CAPACITY, KERNEL_CACHE_VARS
from loraforge.train.heap import malloc_in_use

CHILD = """
import sys, torch
from loraforge.train.heap import malloc_in_use
w = torch.randn(2048, 640, dtype=torch.bfloat16)
before = malloc_in_use()
for rows in range(100, 100 + 16 * int(sys.argv[1]), 16):
    x = torch.randn(rows, 640, dtype=torch.bfloat16, requires_grad=True)
    torch.nn.functional.linear(x, w).sum().backward()
del x
print((malloc_in_use() - before) / 2**20)
"""


def grown_mb(shapes: int, capacity: int) -> float:
    env = {**os.environ, **{var: str(capacity) for var in KERNEL_CACHE_VARS}}
    out = subprocess.run([sys.executable, "-c", CHILD, str(shapes)], env=env, capture_output=True, text=True,
                         check=True)
    return float(out.stdout)


if __name__ == "__main__":
    if malloc_in_use() is None:
        sys.exit("needs glibc >= 2.33 (mallinfo2)")
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    for capacity in (1024, KERNEL_CACHE_CAPACITY):
        print(f"capacity {capacity:5d}: malloc'd memory grew {grown_mb(n, capacity):7.1f} MB over {n} shapes")
