"""Containers, Kubernetes manifests and sizing. Imports only config (and the torch-free method
registry and runs): no torch.

``atomic_write`` is ``loraforge.runs.atomic_write``, re-exported for callers that import it from here.
"""

from loraforge.runs import atomic_write

__all__ = ["atomic_write"]
