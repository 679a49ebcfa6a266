"""Opt-in int8 weights for CPU serving (``serve --int8``, or the output layer alone: ``--int8-lm-head``).

Why: on a CPU without fast bf16 a decoding step is memory- and compute-bound in fp32 (Gemma 3 270M,
2 AVX2 cores, 16 rows: the 262k-token output layer alone takes 0.165 s in fp32 and 0.021 s in int8,
``python -m loraforge.bench.lm_head``; the whole engine decodes 1.7x faster in int8,
``python -m loraforge.bench.int8``). Like llama.cpp's Q8_0 it changes the logits slightly, so greedy
answers may differ from fp32 near ties. fp32 stays the default.

Two activation levels (the row on the 7-bit grid, then its rounding residual 128x finer) leave
essentially only the weights' int8 error: on the tuned k8s translator, chrF 56.5 against fp32's 55.9
on 100 test segments, where one level lost 2.5 chrF (``python -m loraforge.bench.int8``). The output
layer takes one level (its 262k rows make a second one cost as much as the whole decoder) and
recomputes its top 32 logits per row in fp32, which fixes the near-ties one level gets wrong.

Why not ``torch.ao``'s ``quantize_dynamic``: it quantizes activations with one scale over the whole
batch, so a request's tokens would depend on which other requests share its batch. Here each row is
scaled by a power of two (its largest |x| lands in [0.25, 0.5)) and one pinning row (-0.5 and
63/128) fixes the kernel's activation grid to 2^-7 for every call: a row's int8 input, and so its
output, depends on that row alone, as with llama.cpp's per-block activation scales. ``head.py``
uses the same pinned grid for its exact bound.
"""

from __future__ import annotations

import torch

from loraforge.serve.reduce import topk_indices

STEP = 2.0 ** -7  # the pinned activation grid: 128 steps over [-0.5, 0.5) (fbgemm's 7-bit range)
LEVEL_RATIO = 128.0  # a second level holds the first one's rounding residual, 128x finer
RESCORE = 32  # output layer: top logits per row recomputed in fp32


def pin_row(dim: int) -> torch.Tensor:
    """One row whose min and max make fbgemm's dynamic activation grid exactly ``STEP``."""
    row = torch.zeros(1, dim)
    row[0, 0], row[0, 1] = -64 * STEP, 63 * STEP
    return row


def row_scales(x: torch.Tensor) -> torch.Tensor:
    """Per row, the power of two that puts its largest |x| in [0.25, 0.5) (exact in floating point)."""
    _, exp = torch.frexp(x.abs().amax(1))
    return torch.ldexp(torch.ones_like(exp, dtype=x.dtype), (-exp - 1).to(x.dtype))


def pack(weight: torch.Tensor):
    """fbgemm-packed int8 copy of a (out, in) weight, one scale per output row."""
    w = weight.detach().float()
    scale = (w.abs().amax(1) / 127).clamp_min(torch.finfo(torch.float32).tiny)
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    qweight = torch._make_per_channel_quantized_tensor(q, scale.double(), torch.zeros_like(scale, dtype=torch.long), 0)
    return torch.ops.quantized.linear_prepack(qweight, None), q, scale


class Int8Linear(torch.nn.Linear):
    """A ``Linear`` (same module, same fp32 weight, so PEFT still wraps it and ties still hold) that
    multiplies with its packed int8 copy. Where the weight tensor was swapped (a LoRA merged into it),
    the packed copy is stale and the fp32 weight is used."""

    packed: object
    pin: torch.Tensor
    _ptr: int
    levels = 2  # activation levels per row (see the module doc); 1 is faster and coarser
    rescore = 0  # output layers: this many top outputs per row recomputed in fp32
    # the last input's kernel rows, by (tensor, (version, levels)): q/k/v (and gate/up) projections read
    # the same tensor, so it is scaled once
    _last: tuple = (None, None, None, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.data_ptr() != self._ptr or x.dtype != self.weight.dtype:
            return super().forward(x)
        if x.dtype != torch.float32:  # a bf16 model's output layer: the kernel takes fp32, the logits stay fp32
            x = x.float()
        stacked, inverse = self._kernel_rows(x)
        y = torch.ops.quantized.linear_dynamic(stacked, self.packed, reduce_range=True)
        n = inverse.shape[0]
        y = y[:n].add_(y[n:2 * n], alpha=1 / LEVEL_RATIO) if self.levels == 2 else y[:n]
        y.mul_(inverse)  # exact: powers of two
        if self.bias is not None:
            y.add_(self.bias)
        if self.rescore:
            self._rescore(x.reshape(-1, x.shape[-1]), y)
        return y.reshape(*x.shape[:-1], y.shape[-1])

    def _rescore(self, rows: torch.Tensor, y: torch.Tensor) -> None:
        """Overwrite each row's ``rescore`` largest int8 outputs with their fp32 values (in place): an output
        layer's argmax is then fp32's unless the int8 error moved it out of the top k."""
        top = topk_indices(y, self.rescore)
        exact = torch.einsum("nd,nkd->nk", rows, self.weight[top].float())
        if self.bias is not None:
            exact += self.bias[top]
        y.scatter_(1, top, exact)

    def _kernel_rows(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows scaled onto the pinned grid, plus the pinning row; and the inverse scales (rows, 1)."""
        last, key = Int8Linear._last, (x._version, self.levels)
        if last[0] is x and last[1] == key:
            return last[2], last[3]
        rows = x.reshape(-1, x.shape[-1])
        scale = row_scales(rows)
        # clamped to the pin's range (what the kernel's 7-bit saturation does to values in (63/128, 0.5)),
        # so no row can widen the batch's grid
        scaled = (rows * scale[:, None]).clamp_(-64 * STEP, 63 * STEP)
        if self.levels == 2:  # the first level on the grid exactly, the second its residual 128x finer
            first = torch.round(scaled * (1 / STEP)).mul_(STEP)
            parts = [first, scaled.sub_(first).mul_(LEVEL_RATIO).clamp_(-64 * STEP, 63 * STEP)]
        else:
            parts = [scaled]
        stacked = torch.cat([*parts, self.pin])
        Int8Linear._last = (x, key, stacked, scale.reciprocal_()[:, None])
        return stacked, Int8Linear._last[3]

    @classmethod
    def convert(cls, linear: torch.nn.Linear, dtypes: tuple = (torch.float32,)) -> bool:
        """Make a plain CPU ``Linear`` whose weight is of one of ``dtypes`` an ``Int8Linear`` in place;
        False where it is not one."""
        if type(linear) is not torch.nn.Linear or linear.weight.dtype not in dtypes or linear.weight.is_cuda:
            return False
        linear.packed = pack(linear.weight)[0]
        linear.pin, linear._ptr = pin_row(linear.in_features), linear.weight.data_ptr()
        linear.__class__ = cls
        return True


def serving_dtype(dtype: str, int8: bool, device: str = "cpu") -> str:
    """The dtype serve computes in (``serve.app`` loads with it; ``bench serve`` labels its rows with it):
    int8 weights on a CPU take and give fp32 activations, so there ``auto`` means fp32; elsewhere ``auto``
    is the training rule (bf16 where the hardware has fast bf16)."""
    from loraforge.models.load import resolve_dtype

    if dtype != "auto":
        return dtype
    if int8 and device == "cpu":
        return "fp32"
    return "bf16" if resolve_dtype("auto", device) == torch.bfloat16 else "fp32"


def available() -> bool:
    return "fbgemm" in torch.backends.quantized.supported_engines


def int8_lm_head(model, rescore: int = RESCORE) -> bool:
    """The output layer alone in int8 (the input embeddings keep their dtype, tied or not): one activation
    level (half the work of two on a 262k vocabulary), its top ``rescore`` logits per row recomputed in
    fp32. Also for a bf16 model, where reading the 335 MB of the 262k x 640 bf16 head bounds its share of
    a step and int8 halves the bytes; on an AVX512-BF16 CPU that was not a clear gain
    (``python -m loraforge.bench.int8``, ``loraforge bench serve --int8-lm-head``)."""
    head = model.get_output_embeddings()
    if not (available() and Int8Linear.convert(head, (torch.float32, torch.bfloat16))):
        return False
    head.levels, head.rescore = 1, rescore
    return True


def int8_weights(model, levels: int = 2) -> int:
    """Every plain fp32 ``Linear`` of the model in int8 (``levels`` activation levels, 1 or 2; the output
    layer as ``int8_lm_head``), LoRA's own small matrices excepted (they stay fp32 beside the int8 base
    layer); returns how many."""
    if levels not in (1, 2):
        raise ValueError(f"int8 activation levels: 1 or 2, not {levels}")
    dtype = next(model.parameters()).dtype
    if dtype != torch.float32:  # each layer takes and gives fp32 activations
        raise ValueError(f"int8 weights need a model loaded in fp32, not {dtype}")
    if not available():
        return 0
    count = int(int8_lm_head(model))
    for name, m in list(model.named_modules()):
        if type(m) is torch.nn.Linear and not any(p.startswith("lora_") for p in name.split(".")):
            if Int8Linear.convert(m):
                m.levels, count = levels, count + 1
    return count
