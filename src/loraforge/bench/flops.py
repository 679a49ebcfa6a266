"""Measured matmul peaks and the LoRA training FLOP count that MFU is reported against.

FLOPs of one LoRA training step (useful work only: padding and activation recomputation are not
counted), for T real tokens, P positions that go through the LM head and sequences of lengths t_i:

    body        forward 2*N_body*T, backward 2*N_body*T  (input gradients only: frozen weights get none)
    attention   forward 4*L*H*Dh*sum(t_i*(t_i+1)/2) (QK^T and AV, causal), backward 2x forward (both
                operands are activations)
    LM head     forward 2*d*V*P, backward 2*d*V*P (gradient of the hidden state; the tied head is frozen)
    LoRA        6*N_lora*T (forward, input gradients, weight gradients of A and B)

N_body counts the frozen decoder linear weights (not embeddings or the LM head). P is the number of
target positions when logits are computed only there (loraforge's default), else every real token
(loraforge with ``train.target_only_logits=false``, and TRL: its fused LM head scores every position,
padding included, on devices without Triton; only real tokens are counted here). MFU is reported
against the best measured peak (bf16 on AMX, fp32 where bf16 is emulated) and the bf16 peak.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch


def matmul_peak(dtype: torch.dtype, size: int = 2048, seconds: float = 1.0, device: str = "cpu") -> float:
    """Best observed FLOP/s of a square ``size`` matmul in ``dtype``, over about ``seconds`` (at least one
    timed run: emulated bf16 on a CPU without AVX512-BF16/AMX takes seconds per 2048^2 matmul)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    sync = torch.cuda.synchronize if a.is_cuda else (lambda: None)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 peak is plain fp32 on a GPU too
    try:
        a @ b  # warm-up: first call pays allocation and kernel selection
        sync()
        best, start, runs = float("inf"), time.perf_counter(), 0
        while runs < 1 or time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            a @ b
            sync()
            best = min(best, time.perf_counter() - t0)
            runs += 1
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return 2 * size**3 / best


@dataclass
class ModelShape:
    n_body: int  # frozen decoder linear weights
    n_lora: int  # LoRA A and B parameters
    d_model: int
    vocab: int
    layers: int
    attn_width: int  # heads * head_dim

    def as_dict(self) -> dict:
        return asdict(self)


def model_shape(model: torch.nn.Module) -> ModelShape:
    """Counts from a (PEFT-wrapped) causal LM: what the FLOP formula needs."""
    head = model.get_output_embeddings()
    n_body = n_lora = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            if "lora_" in name:
                n_lora += module.weight.numel()
            else:
                n_body += module.weight.numel()
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return ModelShape(n_body=n_body, n_lora=n_lora, d_model=head.weight.shape[1], vocab=head.weight.shape[0],
                      layers=cfg.num_hidden_layers, attn_width=cfg.num_attention_heads * head_dim)


def train_flops(shape: ModelShape, lengths: list[int], head_positions: int) -> float:
    """FLOPs of one training step over sequences of ``lengths`` (see the module docstring)."""
    tokens = sum(lengths)
    causal_pairs = sum(t * (t + 1) / 2 for t in lengths)
    body = 4 * shape.n_body * tokens
    attention = 3 * 4 * shape.layers * shape.attn_width * causal_pairs
    head = 4 * shape.d_model * shape.vocab * head_positions
    lora = 6 * shape.n_lora * tokens
    return float(body + attention + head + lora)
