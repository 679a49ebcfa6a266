"""bf16 Linear layers with their weights laid out once for oneDNN (CPU inference).

Why: for a bf16 ``F.linear`` on a CPU, torch hands oneDNN the weight in plain row-major layout, and
oneDNN re-lays it out into its blocked (VNNI) format inside every call. Laying the weight out once, as
torch.compile's CPU freezing pass does (``torch.ops.mkldnn._reorder_linear_weight`` and
``_linear_pointwise``, the ops inductor emits), gives the same bits in less time at serving batch sizes
(``python -m loraforge.bench.generation_thread``). The cost is a second copy of every packed weight.

Weights may be *swapped* (``weight.data = other``: how ``serve.lora.AdapterRouter`` merges a LoRA):
a layer re-packs when its weight's storage is not the one it packed. It keeps a reference to that
storage, so the address cannot be reused by another tensor and the check cannot be fooled. Editing a
weight in place is not followed; nothing in inference does that.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def available() -> bool:
    """oneDNN's bf16 packed linear is there, and gives exactly ``F.linear``'s bits on a probe."""
    ops = torch.ops.mkldnn
    if not (hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise")):
        return False
    if not torch.backends.mkldnn.is_available() or not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(96, 64, generator=gen).to(torch.bfloat16)
    b = torch.randn(96, generator=gen).to(torch.bfloat16)
    x = torch.randn(5, 3, 64, generator=gen).to(torch.bfloat16)
    try:
        with torch.no_grad():
            got = ops._linear_pointwise(x, ops._reorder_linear_weight(w, 16), b, "none", [], "")
    except RuntimeError:
        return False
    return torch.equal(got, F.linear(x, w, b))


class PrepackedLinear(torch.nn.Linear):
    """``nn.Linear`` (same module, same parameters, hooks and tying kept) that, for bf16 inputs outside
    autograd, multiplies by its oneDNN-packed weight; anything else takes the ordinary path."""

    batch_hint: int = 16
    packed: torch.Tensor | None = None
    source: torch.Tensor | None = None  # the storage ``packed`` was made from (kept alive on purpose)

    def repack(self) -> None:
        self.source = self.weight.detach()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(self.source, self.batch_hint)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if x.dtype != torch.bfloat16 or w.dtype != torch.bfloat16 or (
                torch.is_grad_enabled() and (w.requires_grad or x.requires_grad)):
            return super().forward(x)
        if self.source is None or self.source.data_ptr() != w.data_ptr():
            self.repack()
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def prepack_linears(model: torch.nn.Module, batch_hint: int = 16) -> int:
    """Turn every plain bf16 CPU ``nn.Linear`` of ``model`` into a ``PrepackedLinear`` in place and pack
    it now (so the first request does not pay for it); returns how many. 0 where oneDNN cannot."""
    layers = [m for m in model.modules() if type(m) is torch.nn.Linear and m.weight.dtype == torch.bfloat16
              and m.weight.device.type == "cpu"]
    if not layers or not available():
        return 0
    with torch.no_grad():
        for m in layers:
            m.__class__ = PrepackedLinear
            m.batch_hint = batch_hint
            m.repack()
    return len(layers)
