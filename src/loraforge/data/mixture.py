"""Multi-task sampling: which task's example comes next, as a pure function of (seed, position).

Several datasets (tasks, directions, languages) train into one adapter. Task i is drawn with
probability p_i ∝ n_i^(1/T) (Arivazhagan et al., 2019): T=1 is proportional to size, larger T flattens
toward uniform so small tasks are not drowned; explicit weights override it. Like the batch order,
the draw is computed, never stored, so a resumed run sees the same sequence.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass

from loraforge.data.formats import DataError


def task_probabilities(sizes: dict[str, int], temperature: float = 1.0,
                       weights: dict[str, float] | None = None) -> dict[str, float]:
    """p_i ∝ n_i^(1/T), or ∝ the explicit ``weights`` when given."""
    if not sizes:
        raise DataError("data.tasks: no tasks")
    if weights:
        unknown = set(weights) - set(sizes)
        if unknown:
            raise DataError(f"data.task_weights names unknown tasks {sorted(unknown)}; tasks: {sorted(sizes)}")
        raw = {k: float(weights.get(k, 0.0)) for k in sizes}
    else:
        if temperature <= 0:
            raise DataError(f"data.task_temperature={temperature}: must be > 0")
        raw = {k: float(n) ** (1.0 / temperature) for k, n in sizes.items()}
    if any(v < 0 for v in raw.values()) or sum(raw.values()) <= 0:
        raise DataError(f"task weights must be >= 0 and not all 0: {raw}")
    total = sum(raw.values())
    return {k: v / total for k, v in raw.items()}


@dataclass
class Mixture:
    """Position g -> (task, index within that task's data). Within a task, examples go in a seeded
    permutation, epoch after epoch, so every example is used before any repeats."""

    sizes: dict[str, int]
    probabilities: dict[str, float]
    seed: int = 0

    def __post_init__(self):
        self._names = sorted(self.sizes)
        self._cum = []
        acc = 0.0
        for name in self._names:
            acc += self.probabilities[name]
            self._cum.append(acc)

    def _u(self, g: int) -> float:
        h = hashlib.sha256(f"{self.seed}:mix:{g}".encode()).digest()
        return int.from_bytes(h[:8], "big") / 2**64

    def task_at(self, g: int) -> str:
        u = self._u(g) * self._cum[-1]
        for name, c in zip(self._names, self._cum):
            if u < c:
                return name
        return self._names[-1]

    def draw(self, g: int) -> tuple[str, int]:
        """The task and example index at position g. Within a task, the k-th draw of it takes the
        k-th item of its seeded permutation of epoch k // n."""
        task, _, index = self.locate(g)
        return task, index

    def locate(self, g: int) -> tuple[str, int, int]:
        """(task, epoch within that task, example index) at position g: the epoch is what per-epoch
        source noise is drawn for."""
        self._extend(g + 1)
        task, k = self._tasks[g], self._ranks[g]
        epoch, i = divmod(k, self.sizes[task])
        return task, epoch, self._perm(task, epoch)[i]

    def _extend(self, n: int) -> None:
        """Tasks and per-task ranks of positions [0, n): computed once, in order (still a pure function
        of seed and position; the lists are only a cache)."""
        if not hasattr(self, "_tasks"):
            self._tasks, self._ranks, self._seen = [], [], Counter()
        for g in range(len(self._tasks), n):
            task = self.task_at(g)
            self._tasks.append(task)
            self._ranks.append(self._seen[task])
            self._seen[task] += 1

    def _perm(self, task: str, epoch: int) -> list[int]:
        """The task's permutation for ``epoch``; the last two epochs' are cached per task (draws move
        forward in epochs, but a length-sorted window may straddle an epoch boundary)."""
        cache = self.__dict__.setdefault("_perms", {}).setdefault(task, {})
        if epoch not in cache:
            perm = list(range(self.sizes[task]))
            random.Random(f"{self.seed}:{task}:{epoch}").shuffle(perm)
            for old in [e for e in cache if e < epoch - 1]:
                del cache[old]
            cache[epoch] = perm
        return cache[epoch]

    def sampled_mix(self, n: int) -> dict[str, float]:
        """The share of each task among the first n positions: what the report shows as 'actually
        sampled'."""
        c = Counter(self.task_at(g) for g in range(n))
        return {k: c[k] / n for k in self._names}
