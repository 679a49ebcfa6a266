"""Optional int8 output layer for CPU serving.

Why: with a 262k-token vocabulary (Gemma 3) the LM head is most of a decoding step's FLOPs on a CPU
(measured on Gemma 3 270M, 16 rows, 2 AVX2 cores: 0.13 s of the head against 0.07 s for the rest of
the model). PyTorch's dynamic int8 ``Linear`` (fbgemm, per-output-channel weight scales, activations
quantized per call) runs it several times faster. It changes logits slightly, like llama.cpp's own
8-bit formats, so it is opt-in and greedy answers may differ from fp32 near ties.
"""

from __future__ import annotations

import torch


def int8_lm_head(model) -> bool:
    """Swap the model's output Linear for a dynamic int8 copy (the input embeddings stay as they are,
    tied or not). Returns False where there is nothing to swap or no int8 engine."""
    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear or "fbgemm" not in torch.backends.quantized.supported_engines:
        return False
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    holder = torch.nn.Sequential(torch.nn.Linear(head.in_features, head.out_features, bias=head.bias is not None))
    holder[0].weight, holder[0].bias = torch.nn.Parameter(head.weight.detach().float()), head.bias
    quantized = quantize_dynamic(holder, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)[0]
    for name, module in model.named_modules():
        for child_name, child in module.named_children():
            if child is head:
                setattr(module, child_name, quantized)
                return True
    return False
