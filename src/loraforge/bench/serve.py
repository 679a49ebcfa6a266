"""A bounded load test against a running ``loraforge serve`` (or any OpenAI-compatible server).

``requests`` chat completions, ``concurrency`` at a time, models cycled from ``models`` so adapters
mix in the server's batches. Reports p50/p95 latency, generated tokens per second and failures.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path

DEFAULT_PROMPTS = [
    "A Pod is the smallest deployable unit of computing that you can create and manage in Kubernetes.",
    "Use `kubectl get pods` to list the Pods in the current namespace.",
    "A Deployment provides declarative updates for Pods and ReplicaSets.",
    "Services expose an application running on a set of Pods as a network service.",
]


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


async def _run(url: str, models: list[str], n: int, concurrency: int, max_tokens: int, prompts: list[str],
               timeout: float) -> tuple[list[float], int, list[str], float]:
    import httpx

    sem = asyncio.Semaphore(concurrency)
    latencies, failures, tokens = [], [], 0

    async def one(client, i: int):
        nonlocal tokens
        body = {"model": models[i % len(models)], "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": prompts[i % len(prompts)]}]}
        async with sem:
            start = time.perf_counter()
            try:
                r = await client.post(f"{url}/v1/chat/completions", json=body)
                if r.status_code != 200:
                    failures.append(f"{r.status_code}: {r.text[:200]}")
                    return
                tokens += r.json()["usage"]["completion_tokens"]
                latencies.append(time.perf_counter() - start)
            except httpx.HTTPError as e:
                failures.append(f"{type(e).__name__}: {e}")

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(one(client, i) for i in range(n)))
        wall = time.perf_counter() - start
    return latencies, tokens, failures, wall


def bench_serve(url: str, models: list[str] | None = None, requests: int = 200, concurrency: int = 16,
                max_tokens: int = 64, out: str | Path | None = None, prompts: list[str] | None = None,
                timeout: float = 600) -> dict:
    """Run the load test; write the results JSON to ``out`` when given."""
    import httpx

    url = url.rstrip("/")
    if not models:
        models = [m["id"] for m in httpx.get(f"{url}/v1/models", timeout=30).json()["data"]]
    lat, tokens, failures, wall = asyncio.run(_run(url, models, requests, concurrency, max_tokens,
                                                   prompts or DEFAULT_PROMPTS, timeout))
    result = {
        "url": url, "models": models, "requests": requests, "concurrency": concurrency, "max_tokens": max_tokens,
        "failures": len(failures), "failure_examples": failures[:5], "wall_s": round(wall, 3),
        "latency_p50_s": round(_percentile(lat, 0.5), 4), "latency_p95_s": round(_percentile(lat, 0.95), 4),
        "latency_mean_s": round(statistics.fmean(lat), 4) if lat else 0.0,
        "completion_tokens": tokens, "tokens_per_s": round(tokens / wall, 2) if wall > 0 else 0.0,
        "requests_per_s": round(len(lat) / wall, 3) if wall > 0 else 0.0,
    }
    if out:
        from loraforge.runs import atomic_write

        atomic_write(out, json.dumps(result, indent=2))
    return result
