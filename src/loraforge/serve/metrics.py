"""Prometheus text-format metrics, hand-written: a few counters, gauges and histograms need no dependency."""

from __future__ import annotations

import threading
from collections import defaultdict

BUCKETS = {
    "loraforge_request_seconds": (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    "loraforge_batch_seconds": (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    "loraforge_batch_size": (1, 2, 4, 8, 16, 32, 64),
}
HELP = {
    "loraforge_requests_total": "HTTP requests by endpoint, model and status code",
    "loraforge_generated_tokens_total": "tokens generated",
    "loraforge_prompt_tokens_total": "prompt tokens processed",
    "loraforge_adapters_loaded": "adapters currently loaded",
    "loraforge_queue_depth": "requests waiting for the generation thread",
    "loraforge_request_seconds": "completion request latency",
    "loraforge_batch_seconds": "time of one decoding step of the running batch",
    "loraforge_batch_size": "rows in the running batch at each decoding step",
}


def _labels(labels: dict) -> str:
    if not labels:
        return ""
    body = ",".join(f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                    for k, v in sorted(labels.items()))
    return "{" + body + "}"


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.counters: dict[str, dict[tuple, float]] = defaultdict(lambda: defaultdict(float))
        self.gauges: dict[str, float] = {}
        self.hist: dict[str, list] = {}  # name -> [bucket counts..., sum, count]

    def inc(self, name: str, value: float = 1, **labels) -> None:
        with self._lock:
            self.counters[name][tuple(sorted(labels.items()))] += value

    def set_gauge(self, name: str, value: float) -> None:
        with self._lock:
            self.gauges[name] = value

    def observe(self, name: str, value: float) -> None:
        bounds = BUCKETS[name]
        with self._lock:
            h = self.hist.setdefault(name, [0] * len(bounds) + [0.0, 0])
            for i, b in enumerate(bounds):
                if value <= b:
                    h[i] += 1
            h[-2] += value
            h[-1] += 1

    def render(self) -> str:
        out = []
        with self._lock:
            for name, series in sorted(self.counters.items()):
                out += [f"# HELP {name} {HELP.get(name, name)}", f"# TYPE {name} counter"]
                out += [f"{name}{_labels(dict(k))} {v:g}" for k, v in sorted(series.items())]
            for name, v in sorted(self.gauges.items()):
                out += [f"# HELP {name} {HELP.get(name, name)}", f"# TYPE {name} gauge", f"{name} {v:g}"]
            for name, h in sorted(self.hist.items()):
                out += [f"# HELP {name} {HELP.get(name, name)}", f"# TYPE {name} histogram"]
                out += [f'{name}_bucket{{le="{b:g}"}} {c}' for b, c in zip(BUCKETS[name], h)]
                out += [f'{name}_bucket{{le="+Inf"}} {h[-1]}', f"{name}_sum {h[-2]:g}", f"{name}_count {h[-1]}"]
        return "\n".join(out) + "\n"
