"""``loraforge serve``: an OpenAI-compatible server for one base model and many LoRA adapters. Never imports train.

``engine`` (continuous batching on one generation thread, token ids only) with ``kv`` (slot KV cache),
``lora`` (merged or per-row adapters), ``sampling`` and ``quant``; the HTTP side: ``app`` (wiring),
``api`` (OpenAI routes), ``admin`` (health, metrics, adapter API), ``text`` (tokens <-> text deltas),
``limits`` (request body bound), ``metrics`` (Prometheus text).
"""
