"""Exporting trained adapters: PEFT folders, merged models, GGUF, OCI images."""
