"""An output layer that is int8-fast and fp32-exact for greedy decoding (CPU serving).

Why: with a 262k-token vocabulary (Gemma 3) the LM head is most of a CPU decoding step. An int8 head
is ~5x faster but changes greedy answers near ties. Here int8 only *proposes*: every row gets int8
logits for the whole vocabulary plus a rigorous bound ``slack`` on how far each can be from the value
the fp32 head would compute; the tokens whose int8 logit is within ``2 * slack`` of the row's best are
the only ones that can be the fp32 argmax, and those few are recomputed in fp32 (``F.linear`` on their
weight rows) and the argmax is taken among them. Rows whose candidate set is too large (bound too
loose for that row) get the full fp32 head. Sampling rows (temperature > 0) always get the full fp32
head too: their distribution (and top-p cut) is then exactly the fp32 one, with no approximation to
argue about.

The bound, per row r of hidden states x (scaled by a power of two, which commutes with fp32 rounding,
so every row's largest |x| lies in [0.5, 1)), for every vocabulary row w_i with int8 copy ŵ_i:
  |x·w_i - int8_i| <= ||x||_2 ||w_i - ŵ_i||_2            (weight rounding, Cauchy-Schwarz)
                    + h ||ŵ_i||_1                        (activation rounding, Hölder)
                    + 16 u max_i |int8_i|                (the kernel's fp32 rescaling of exact int32 sums)
  |fp32_i - x·w_i| <= γ_D ||x||_2 ||w_i||_2              (any fp32 summation order, γ_D = D u / (1 - D u))
with u = 2^-24 and h = (max(x, 0) - min(x, 0)) / 254 over the batch: half a quantization step of an
affine 7-bit activation grid over the batch's range (fbgemm's dynamic linear on x86; 8-bit and
symmetric grids have smaller steps). The per-token terms are replaced by their maximum over the
vocabulary (one threshold per row: two passes over the int8 logits, no per-token bound tensor) and
multiplied by 1.001. ``_self_check`` verifies the bound against float64 at start-up; where it fails (an
int8 engine with another scheme) the head is not used.

What "exact" means: the chosen token is the argmax (first index on ties) of fp32 logits of the
candidate rows, and the fp32 head's argmax is provably among the candidates. The candidates' fp32
logits come from the same ``F.linear`` on the same batch of hidden states; BLAS may still sum the 640
products in a different order for a narrower weight matrix, which could only matter when two tokens'
fp32 logits are within a few ulps (where the fp32 head itself answers differently at different batch
sizes).
"""

from __future__ import annotations

import torch

U = 2.0 ** -24
SAFETY = 1.001


class TapHead(torch.nn.Linear):
    """The model's own output Linear (same module, same tied weight) that, while ``tap`` is set, keeps
    its input in ``hidden`` and returns zero logits columns instead of computing the full vocabulary."""

    tap: bool = False
    hidden: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.tap:
            return super().forward(x)
        self.hidden = x
        return x.new_empty((*x.shape[:-1], 0))

    @classmethod
    def install(cls, model) -> TapHead | None:
        """Turn the model's output Linear into a TapHead in place (identity, hooks and weight tying stay);
        None where the head is not a plain fp32 Linear without bias."""
        head = model.get_output_embeddings()
        if type(head) not in (torch.nn.Linear, cls) or head.bias is not None or head.weight.dtype != torch.float32:
            return None
        head.__class__ = cls
        return head


def softcap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    """Final logit softcapping as transformers applies it (Gemma 2; Gemma 3 has none): the same fp32 ops."""
    if cap is None:
        return logits
    return torch.tanh(logits / cap) * cap


class VerifiedHead:
    """int8 proposals, fp32 decisions, for the weight ``weight`` (vocab, hidden) of a bias-free head."""

    def __init__(self, weight: torch.Tensor, cap: float | None = None, max_candidates: int = 4096):
        self.weight, self.cap, self.max_candidates = weight, cap, max_candidates
        self._ptr = weight.data_ptr()
        w = weight.detach()
        scale = (w.abs().amax(1) / 127).clamp_min(torch.finfo(torch.float32).tiny)
        q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
        qweight = torch._make_per_channel_quantized_tensor(q, scale.double(), torch.zeros_like(scale, dtype=torch.long),
                                                           0)
        self.packed = torch.ops.quantized.linear_prepack(qweight, None)
        d = w.shape[1]
        gamma = d * U / (1 - d * U)
        err, deq_l1, norm = self._row_norms(w, q, scale)
        self.p_max = float((err + gamma * norm).max()) * SAFETY  # per unit of ||x||_2
        self.l1_max = float(deq_l1.max()) * SAFETY  # per unit of h
        self.ok = self._self_check()

    @staticmethod
    def _row_norms(w: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, chunk: int = 16384):
        """||w_i - ŵ_i||_2, ||ŵ_i||_1, ||w_i||_2 in float64, chunked (the full float64 copy would be 1.3 GB)."""
        out = [torch.empty(w.shape[0], dtype=torch.float64) for _ in range(3)]
        for s in range(0, w.shape[0], chunk):
            wc, deq = w[s:s + chunk].double(), q[s:s + chunk].double() * scale[s:s + chunk, None].double()
            out[0][s:s + chunk] = (wc - deq).norm(dim=1)
            out[1][s:s + chunk] = deq.abs().sum(1)
            out[2][s:s + chunk] = wc.norm(dim=1)
        return out

    @property
    def stale(self) -> bool:
        """The weight tensor was swapped (e.g. a LoRA merged into tied embeddings): int8 copy out of date."""
        return self.weight.data_ptr() != self._ptr

    # --- the approximation and its bound ----------------------------------------------------------

    def approx(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows, hidden) fp32 -> (int8 logits of the scaled rows, per-row slack, per-row power-of-two scale).
        For every token i: |approx[r, i] - scale[r] * fp32_logit[r, i]| <= slack[r]."""
        _, exp = torch.frexp(hidden.abs().amax(1))
        x = torch.ldexp(hidden, -exp[:, None].float())  # exact: a power of two
        approx = torch.ops.quantized.linear_dynamic(x, self.packed, reduce_range=True)
        h = float(x.max().clamp_min(0) - x.min().clamp_max(0)) / 254 * SAFETY
        lo, hi = torch.aminmax(approx, dim=1)
        slack = (x.norm(dim=1) * SAFETY * self.p_max + h * self.l1_max
                 + 16 * U * torch.maximum(hi, -lo)) * SAFETY
        return approx, slack, torch.ldexp(torch.ones_like(exp, dtype=torch.float32), -exp.float())

    def candidates(self, hidden: torch.Tensor) -> torch.Tensor:
        """(rows, vocab) bool: the tokens that can be each row's fp32 argmax (after softcapping)."""
        approx, slack, scale = self.approx(hidden)
        best = approx.amax(1)
        if self.cap is None:
            return approx >= (best - 2 * slack)[:, None]
        # softcapping is monotone: compare upper bounds with the best lower bound after capping; the scale
        # factor is undone first (capping is not scale-invariant)
        upper = softcap((approx + slack[:, None]) / scale[:, None], self.cap)
        return upper >= softcap((best - slack) / scale, self.cap)[:, None]

    # --- decisions ---------------------------------------------------------------------------------

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The full fp32 head (what the model computes), softcapped like the model."""
        return softcap(torch.nn.functional.linear(hidden, self.weight), self.cap)

    def greedy(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows, hidden) -> (tokens, fell_back, candidate counts): the fp32 head's argmax per row."""
        mask = self.candidates(hidden)
        counts = mask.sum(1)
        fell_back = (counts > self.max_candidates) | (counts == 0)  # none: NaN hidden states, let fp32 say
        tokens = torch.empty(hidden.shape[0], dtype=torch.long, device=hidden.device)
        if bool(fell_back.any()):
            rows = fell_back.nonzero().squeeze(1)
            tokens[rows] = self.logits(hidden[rows]).argmax(-1)
            mask[rows] = False
        keep = (~fell_back).nonzero().squeeze(1)
        if keep.numel():
            union = mask.any(0).nonzero().squeeze(1)  # ascending: ties go to the lowest index, as argmax does
            exact = softcap(torch.nn.functional.linear(hidden[keep], self.weight[union]), self.cap)
            exact = exact.masked_fill(~mask[keep][:, union], float("-inf"))
            tokens[keep] = union[exact.argmax(-1)]
        return tokens, fell_back, counts

    def next_tokens(self, hidden: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, int]]:
        """Like ``sampling.sample`` on the fp32 logits: greedy rows verified, sampling rows on the full head.
        Returns the tokens and row counts {"verified", "fallback", "sampled"}."""
        from loraforge.serve.sampling import sample

        hot = temperature > 0
        tokens = torch.empty(hidden.shape[0], dtype=torch.long, device=hidden.device)
        stats = {"verified": 0, "fallback": 0, "sampled": int(hot.sum())}
        cold = (~hot).nonzero().squeeze(1)
        if cold.numel():
            tokens[cold], fell_back, _ = self.greedy(hidden[cold])
            stats["fallback"] = int(fell_back.sum())
            stats["verified"] = cold.numel() - stats["fallback"]
        if stats["sampled"]:
            rows = hot.nonzero().squeeze(1)
            tokens[rows] = sample(self.logits(hidden[rows]), temperature[rows], top_p[rows], generator)
        return tokens, stats

    def _self_check(self, rows: int = 8, tokens: int = 2048) -> bool:
        """The bound holds against float64 on probes (normal rows and rows with outlier features) for a
        sample of vocabulary rows: False (head unused) where the int8 kernel quantizes differently."""
        g = torch.Generator().manual_seed(0)
        x = torch.randn(rows, self.weight.shape[1], generator=g)
        x[rows // 2:, :3] *= 50
        approx, slack, scale = self.approx(x)
        idx = torch.randperm(self.weight.shape[0], generator=g)[:tokens]
        truth = (x.double() @ self.weight.detach()[idx].double().T) * scale.double()[:, None]
        return bool(((approx[:, idx].double() - truth).abs() <= slack.double()[:, None]).all())
