"""Facts about this machine that torch-free code needs (``loraforge estimate`` sizes what
``model.dtype=auto`` will pick here without importing torch)."""

from __future__ import annotations

from pathlib import Path

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
"""CPU flags with native bf16 matmuls; elsewhere bf16 is emulated and slower than fp32."""


def cpu_has_fast_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU has native bf16 (AMX or AVX512-BF16): the rule ``models.load.has_fast_bf16``
    applies for the CPU."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    return any(flag in cpuinfo for flag in BF16_CPU_FLAGS)
