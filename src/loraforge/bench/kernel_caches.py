"""What PyTorch's oneDNN caches keep per distinct matmul shape: a Gemma 3 270M MLP linear
(640 -> 2048, bf16, forward + input gradient) at N distinct row counts, with PyTorch's cache
capacity (1,024) and with loraforge's bound (``models/load.py``, KERNEL_CACHE_CAPACITY). Each
setting runs in its own process: the caches read their capacity at the first matmul.

    python -m loraforge.bench.kernel_caches [N]

Needs glibc >= 2.33 (mallinfo2).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

IN_FEATURES, OUT_FEATURES = 640, 2048  # a Gemma 3 270M MLP up-projection


def child_growth_mb(shapes: int, in_features: int = IN_FEATURES, out_features: int = OUT_FEATURES) -> float:
    """In this process: malloc'd memory grown by ``shapes`` bf16 linears of distinct row counts."""
    import torch

    from loraforge.train.heap import malloc_in_use

    w = torch.randn(out_features, in_features, dtype=torch.bfloat16)
    before = malloc_in_use()
    for rows in range(100, 100 + 16 * shapes, 16):
        x = torch.randn(rows, in_features, dtype=torch.bfloat16, requires_grad=True)
        torch.nn.functional.linear(x, w).sum().backward()
    del x
    return (malloc_in_use() - before) / 2**20


def grown_mb(shapes: int, capacity: int, in_features: int = IN_FEATURES, out_features: int = OUT_FEATURES) -> float:
    """``child_growth_mb`` in a fresh process whose kernel caches hold ``capacity`` entries."""
    from loraforge.models.load import KERNEL_CACHE_VARS

    env = {**os.environ, **{var: str(capacity) for var in KERNEL_CACHE_VARS}}
    cmd = [sys.executable, "-m", "loraforge.bench.kernel_caches", "--child", "--in-features", str(in_features),
           "--out-features", str(out_features), str(shapes)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return float(out.stdout)


def main(argv: list[str] | None = None) -> int:
    from loraforge.models.load import KERNEL_CACHE_CAPACITY
    from loraforge.train.heap import malloc_in_use

    p = argparse.ArgumentParser(prog="python -m loraforge.bench.kernel_caches", description=__doc__.split("\n\n")[0])
    p.add_argument("shapes", type=int, nargs="?", default=200, help="distinct row counts (default: %(default)s)")
    p.add_argument("--in-features", type=int, default=IN_FEATURES)
    p.add_argument("--out-features", type=int, default=OUT_FEATURES)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one measurement, printed bare
    a = p.parse_args(argv)
    if malloc_in_use() is None:
        print("needs glibc >= 2.33 (mallinfo2)", file=sys.stderr)
        return 1
    if a.child:
        print(child_growth_mb(a.shapes, a.in_features, a.out_features))
        return 0
    for capacity in (1024, KERNEL_CACHE_CAPACITY):
        mb = grown_mb(a.shapes, capacity, a.in_features, a.out_features)
        print(f"capacity {capacity:5d}: malloc'd memory grew {mb:7.1f} MB over {a.shapes} shapes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
