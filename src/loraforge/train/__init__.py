"""The training loop, its loss, batching, checkpoints and multi-process support."""
