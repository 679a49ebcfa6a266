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

The bound. Each row x of hidden states is scaled by a power of two (exact: commutes with fp32
rounding) so its largest |x| lies in [0.25, 0.5), then split *exactly* into two int7 levels (grid 2^-7,
then the residual on a 128x finer grid) plus a residual ρ measured in float64. The levels are stacked
into one fbgemm dynamic-int8 call together with one pinning row holding -64·2^-7 and 63·2^-7, which
forces the kernel's 7-bit activation grid to be exactly 2^-7: the kernel then quantizes the levels
without error, sums exact int32 products and rescales in fp32. With ŵ_i the per-row int8 copy of
vocabulary row w_i and x_q = x - ρ the levels' sum:
  |x·w_i - int8_i| <= ||x_q||_2 ||w_i - ŵ_i||_2     (weight rounding, Cauchy-Schwarz; per token)
                    + ||ρ||_2 max_i ||w_i||_2        (what the two levels leave of x)
                    + 16 u Σ_levels max_i |y_i|      (fp32 rescaling and adding of exact int32 sums)
  |fp32_i - x·w_i| <= γ_D ||x||_2 max_i ||w_i||_2    (any fp32 summation order, γ_D = D u / (1 - D u))
with u = 2^-24; ||x_q|| <= ||x|| + ||ρ||; everything times 1.001. A token can be the fp32 argmax only
if int8_i + slack_i >= max_j (int8_j - slack_j): a uniform per-row threshold (largest per-token term)
prefilters, the per-token bound decides among the survivors. ``_self_check`` verifies at start-up, on
probes, that the kernel took the pinned grid (int8 logits equal the float64 products of the levels and
ŵ up to fp32 rescaling) and that the bound holds against float64; otherwise the head is not used.
Measured on Gemma 3 270M (``python -m loraforge.bench.lm_head``): a median of 1-4 candidates per row,
none over the fallback limit, and the fp32 head's token in every row.

What "exact" means: the chosen token is the argmax (first index on ties) of fp32 logits of the
candidate rows, and the fp32 head's argmax is provably among the candidates. The candidates' fp32
logits come from the same ``F.linear`` on the same batch of hidden states; BLAS may still sum the 640
products in a different order for a narrower weight matrix, which could only matter when two tokens'
fp32 logits are within a few ulps (where the fp32 head itself answers differently at different batch
sizes).
"""

from __future__ import annotations

import torch

from loraforge.serve.quant import LEVEL_RATIO, STEP, pack, pin_row, row_scales

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
    """int8 proposals, fp32 decisions, for the weight ``weight`` (vocab, hidden) of a bias-free head.
    ``levels``: 2, since one leaves a residual whose Cauchy-Schwarz term is too loose (on Gemma 3 270M
    70% of rows fell back to the full fp32 head; with two, none did and the median was 1 candidate)."""

    def __init__(self, weight: torch.Tensor, cap: float | None = None, max_candidates: int = 4096, levels: int = 2):
        self.weight, self.cap, self.max_candidates, self.n_levels = weight, cap, max_candidates, levels
        self._ptr = weight.data_ptr()
        w = weight.detach()
        self.packed, q, scale = pack(w)
        d = w.shape[1]
        self.gamma = d * U / (1 - d * U)
        err, norm, qnorm = self._row_norms(w, q, scale)
        self.err = (err * SAFETY).float()  # ||w_i - ŵ_i||_2, per token
        self.err_max, self.norm_max = float(self.err.max()), float(norm.max()) * SAFETY
        self.qnorm_max = float(qnorm.max()) * SAFETY  # max ||ŵ_i||_2: bounds every int8 logit of a level
        self.dummy = pin_row(d)  # pins the kernel's grid to STEP
        self.ok = self._self_check(q, scale)

    @staticmethod
    def _row_norms(w: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, chunk: int = 16384):
        """||w_i - ŵ_i||_2, ||w_i||_2 and ||ŵ_i||_2 in float64, chunked (the full float64 copy would be 1.3 GB)."""
        out = [torch.empty(w.shape[0], dtype=torch.float64) for _ in range(3)]
        for s in range(0, w.shape[0], chunk):
            wc, qc = w[s:s + chunk].double(), q[s:s + chunk].double() * scale[s:s + chunk, None].double()
            out[0][s:s + chunk] = (wc - qc).norm(dim=1)
            out[1][s:s + chunk] = wc.norm(dim=1)
            out[2][s:s + chunk] = qc.norm(dim=1)
        return out

    @property
    def stale(self) -> bool:
        """The weight tensor was swapped (e.g. a LoRA merged into tied embeddings): int8 copy out of date."""
        return self.weight.data_ptr() != self._ptr

    # --- the approximation and its bound ----------------------------------------------------------

    def levels(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows scaled by a power of two (largest |x| in [0.25, 0.5)) and split exactly into ``n_levels`` int7
        grids of step STEP / LEVEL_RATIO^k plus a residual: returns (kernel input: the levels stacked, each scaled
        back onto the STEP grid, then the pinning row; residual; scale)."""
        scale = row_scales(hidden)
        rest = hidden.double() * scale[:, None]  # exact: a power of two; float64 keeps every difference exact
        parts, f = [], 1.0
        for _ in range(self.n_levels):
            z = torch.round(rest * (f / STEP)).clamp_(-64, 63)
            parts.append((z * STEP).float())  # exact: at most 7 significant bits
            rest = rest - z * (STEP / f)
            f *= LEVEL_RATIO
        return torch.cat(parts + [self.dummy]), rest, scale

    def approx(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows, hidden) fp32 -> (int8 logits of the scaled rows, a, c, scale) where for every token i
        |approx[r, i] - scale[r] * fp32_logit[r, i]| <= a[r] * err[i] + c[r] (``slack``)."""
        n, levels = hidden.shape[0], self.n_levels
        stacked, rest, scale = self.levels(hidden)
        y = torch.ops.quantized.linear_dynamic(stacked, self.packed, reduce_range=True)
        # |y| of a level row <= ||level||_2 max_i ||ŵ_i||_2 (Cauchy-Schwarz): bounds the fp32 rescaling error
        # without a pass over the (rows, vocab) output
        big = stacked[:levels * n].norm(dim=1).view(levels, n) * self.qnorm_max
        approx, size = y[:n], big[0].clone()
        for k in range(1, levels):
            approx = torch.add(approx, y[k * n:(k + 1) * n], alpha=LEVEL_RATIO ** -k)
            size += big[k] * LEVEL_RATIO ** -k
        xn, rn = (hidden * scale[:, None]).norm(dim=1), rest.norm(dim=1).float()
        a = (xn + rn) * SAFETY  # >= ||levels||_2
        c = ((rn + self.gamma * xn) * self.norm_max + 16 * U * size) * SAFETY
        return approx, a, c, scale

    def slack(self, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """(rows, vocab): the bound of ``approx`` for every token (tests; selection never builds it)."""
        return a[:, None] * self.err[None] + c[:, None]

    def candidates(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, token) index pairs, sorted by row then token: the tokens that can be the row's fp32
        argmax (after softcapping). A uniform per-row threshold (the largest err) prefilters; the
        per-token bound decides among the survivors."""
        approx, a, c, scale = self.approx(hidden)
        best, widest = approx.amax(1), a * self.err_max + c
        if self.cap is None:
            pre = approx >= (best - 2 * widest)[:, None]
        else:  # far-apart logits can tie once capped (saturation): prefilter on capped bounds too
            pre = (softcap((approx + widest[:, None]) / scale[:, None], self.cap)
                   >= softcap((best - widest) / scale, self.cap)[:, None])
        rows, toks = pre.nonzero(as_tuple=True)
        v, b = approx[rows, toks], a[rows] * self.err[toks] + c[rows]
        lower, upper = v - b, v + b
        if self.cap is not None:  # monotone: compare capped bounds of the unscaled logits
            lower, upper = softcap(lower / scale[rows], self.cap), softcap(upper / scale[rows], self.cap)
        low = torch.full_like(best, float("-inf")).scatter_reduce(0, rows, lower, "amax")
        keep = upper >= low[rows]
        return rows[keep], toks[keep]

    # --- decisions ---------------------------------------------------------------------------------

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The full fp32 head (what the model computes), softcapped like the model."""
        return softcap(torch.nn.functional.linear(hidden, self.weight), self.cap)

    def greedy(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows, hidden) -> (tokens, fell_back, candidate counts): the fp32 head's argmax per row."""
        n = hidden.shape[0]
        rows, toks = self.candidates(hidden)
        counts = torch.bincount(rows, minlength=n)
        fell_back = (counts > self.max_candidates) | (counts == 0)  # none: NaN hidden states, let fp32 say
        tokens = torch.empty(n, dtype=torch.long, device=hidden.device)
        if bool(fell_back.any()):
            back = fell_back.nonzero().squeeze(1)
            tokens[back] = self.logits(hidden[back]).argmax(-1)
            sel = ~fell_back[rows]
            rows, toks = rows[sel], toks[sel]
        if rows.numel():
            union, col = torch.unique(toks, return_inverse=True)  # ascending: ties go to the lowest index
            allowed = torch.zeros(n, union.numel(), dtype=torch.bool, device=hidden.device)
            allowed[rows, col] = True
            exact = softcap(torch.nn.functional.linear(hidden, self.weight[union]), self.cap)
            best = union[exact.masked_fill_(~allowed, float("-inf")).argmax(-1)]
            tokens = torch.where(fell_back, tokens, best)
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

    def _self_check(self, q: torch.Tensor, scale: torch.Tensor, rows: int = 8, tokens: int = 4096) -> bool:
        """On probes (plain rows and rows with outlier features) and a sample of tokens: the int8 logits
        are the exact products of the levels and ŵ up to fp32 rescaling (the kernel took the pinned grid),
        and the bound holds against float64. False (head unused) where the kernel quantizes otherwise."""
        g = torch.Generator().manual_seed(0)
        x = torch.randn(rows, self.weight.shape[1], generator=g)
        x[rows // 2:, :3] *= 50
        x[1] *= 1e-3
        approx, a, c, sc = self.approx(x)
        idx = torch.randperm(self.weight.shape[0], generator=g)[:tokens]
        stacked, _, _ = self.levels(x)
        n, deq = x.shape[0], (q[idx].double() * scale[idx, None].double()).T
        exact_levels = sum(stacked[k * n:(k + 1) * n].double() @ deq / LEVEL_RATIO ** k for k in range(self.n_levels))
        took_grid = (approx[:, idx].double() - exact_levels).abs() <= 1e-5 * exact_levels.abs().amax(1, keepdim=True)
        truth = (x.double() @ self.weight.detach()[idx].double().T) * sc.double()[:, None]
        bounded = (approx[:, idx].double() - truth).abs() <= self.slack(a, c)[:, idx].double()
        return bool(took_grid.all() and bounded.all())
