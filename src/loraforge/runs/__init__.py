"""Runs: the run directory's layout (``RunDir``), its typed ``metrics.json`` (``RunMetrics``), adapter
resolution (``resolve_adapter``) and the one atomic-write helper (``atomic_write``, ``atomic_dir``).

Imports only ``config`` (no torch), so deploy, export and serve can all use it.
"""

from loraforge.runs.files import atomic_dir, atomic_write, make_readable
from loraforge.runs.metrics import (HeldOutScores, MaskerScores, PiiComparison, RunMetrics, TaskMetrics, TaskScores,
                                   TrainStats)
from loraforge.runs.rundir import TAGGER_FILE, AdapterRef, RunDir, RunDirError, resolve_adapter, tagger_meta

__all__ = ["AdapterRef", "HeldOutScores", "MaskerScores", "PiiComparison", "RunDir", "RunDirError", "RunMetrics",
           "TaskMetrics", "TaskScores", "TrainStats", "atomic_dir", "atomic_write", "make_readable", "resolve_adapter",
           "TAGGER_FILE", "tagger_meta"]
