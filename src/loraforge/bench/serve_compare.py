"""loraforge serve and llama.cpp's OpenAI server, one after the other on one machine, same load.

Each engine is started as its own process, waited for (``GET /v1/models``), loaded with the same
streamed greedy chat requests (same prompts, ``max_tokens``, concurrency), and stopped before the
next starts, so they never share the CPU. Per engine: completion tokens/s, requests/s, p50/p95
latency, time to first token, peak RSS of the server process tree, failures; across engines: how
many greedy answers agree. ``soak`` adds a long run per engine and reports its start and end RSS.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from loraforge.bench.serve import DEFAULT_PROMPTS, _percentile


@dataclass
class EngineSpec:
    """How to start one OpenAI-compatible server; ``{port}`` in ``argv`` is filled in."""

    name: str
    argv: list[str]
    model: str = "base"  # the ``model`` field of the requests
    env: dict[str, str] = field(default_factory=dict)


def loraforge_spec(base: str = "gemma3-270m", adapters: list[str] | None = None, extra: list[str] | None = None,
                   python: str = sys.executable) -> EngineSpec:
    argv = [python, "-c", "from loraforge.cli import main; raise SystemExit(main())", "serve", "--base", base,
            "--host", "127.0.0.1", "--port", "{port}"]
    for a in adapters or []:
        argv += ["--adapter", a]
    return EngineSpec("loraforge", argv + list(extra or []))


def llama_cpp_spec(gguf: str, threads: int | None = None, n_ctx: int = 4096, extra: list[str] | None = None,
                   python: str = sys.executable) -> EngineSpec:
    """llama-cpp-python's server (``pip install 'llama-cpp-python[server]'``) on a GGUF file."""
    argv = [python, "-m", "llama_cpp.server", "--model", gguf, "--model_alias", "base", "--host", "127.0.0.1",
            "--port", "{port}", "--n_ctx", str(n_ctx), "--n_threads", str(threads or os.cpu_count() or 1)]
    return EngineSpec("llama.cpp", argv + list(extra or []))


# --- one server process ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and its children (a server may fork workers)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


class ServerProcess:
    """Start a server, wait until it answers, sample its RSS in the background, stop it on exit."""

    def __init__(self, spec: EngineSpec, log: Path, startup_timeout: float = 600, poll_s: float = 0.2):
        self.spec, self.log, self.startup_timeout, self.poll_s = spec, log, startup_timeout, poll_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.peak_rss = 0
        self._stop = threading.Event()

    def __enter__(self) -> "ServerProcess":
        import httpx

        argv = [a.replace("{port}", str(self.port)) for a in self.spec.argv]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log, "wb")
        self._log.write(f"$ {shlex.join(argv)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **self.spec.env})
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.__exit__(None, None, None)
                raise RuntimeError(f"{self.spec.name} exited with status {self.proc.returncode}; see {self.log}")
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.__exit__(None, None, None)
        raise TimeoutError(f"{self.spec.name} did not answer within {self.startup_timeout:.0f} s; see {self.log}")

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, tree_rss(self.proc.pid))
            self._stop.wait(self.poll_s)

    def rss(self) -> int:
        return tree_rss(self.proc.pid)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# --- the load -------------------------------------------------------------------------------------


async def _one(client, url: str, model: str, prompt: str, max_tokens: int) -> dict:
    """One streamed greedy chat request: latency, time to first token, tokens, text or error."""
    import httpx

    body = {"model": model, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, "messages": [{"role": "user", "content": prompt}]}
    start, first, parts, usage, chunks = time.perf_counter(), None, [], None, 0
    try:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                return {"error": f"{r.status_code}: {(await r.aread())[:200]!r}"}
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                obj = json.loads(line[6:])
                if "error" in obj:
                    return {"error": str(obj["error"])[:200]}
                usage = obj.get("usage") or usage
                for choice in obj.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        first = first or time.perf_counter()
                        parts.append(text)
                        chunks += 1
    except httpx.HTTPError as e:
        return {"error": f"{type(e).__name__}: {e}"}
    end = time.perf_counter()
    tokens = (usage or {}).get("completion_tokens") or chunks
    return {"latency": end - start, "ttft": (first or end) - start, "tokens": tokens, "text": "".join(parts)}


async def _load(url: str, model: str, prompts: list[str], n: int, concurrency: int, max_tokens: int,
                timeout: float) -> tuple[list[dict], float]:
    import httpx

    sem = asyncio.Semaphore(concurrency)

    async def bounded(client, i):
        async with sem:
            return await _one(client, url, model, prompts[i % len(prompts)], max_tokens)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        start = time.perf_counter()
        results = await asyncio.gather(*(bounded(client, i) for i in range(n)))
        return list(results), time.perf_counter() - start


def summarize(results: list[dict], wall: float) -> dict:
    ok = [r for r in results if "error" not in r]
    lat, ttft = [r["latency"] for r in ok], [r["ttft"] for r in ok]
    tokens = sum(r["tokens"] for r in ok)
    return {"requests": len(results), "failures": len(results) - len(ok),
            "failure_examples": [r["error"] for r in results if "error" in r][:5], "wall_s": round(wall, 3),
            "completion_tokens": tokens, "tokens_per_s": round(tokens / wall, 2) if wall > 0 else 0.0,
            "requests_per_s": round(len(ok) / wall, 3) if wall > 0 else 0.0,
            "latency_p50_s": round(_percentile(lat, 0.5), 4), "latency_p95_s": round(_percentile(lat, 0.95), 4),
            "ttft_p50_s": round(_percentile(ttft, 0.5), 4), "ttft_p95_s": round(_percentile(ttft, 0.95), 4)}


def answers_by_prompt(results: list[dict], prompts: list[str]) -> dict[str, str]:
    """The first successful greedy answer for each prompt."""
    out: dict[str, str] = {}
    for i, r in enumerate(results):
        if "error" not in r:
            out.setdefault(prompts[i % len(prompts)], r["text"])
    return out


def agreement(a: dict[str, str], b: dict[str, str]) -> dict:
    """Exact matches, and the mean share of the longer answer that the common prefix covers."""
    common = [p for p in a if p in b]
    if not common:
        return {"prompts": 0, "exact": 0, "prefix_share": 0.0}

    def share(x: str, y: str) -> float:
        n = next((i for i, (u, v) in enumerate(zip(x, y)) if u != v), min(len(x), len(y)))
        return n / max(len(x), len(y), 1)

    return {"prompts": len(common), "exact": sum(a[p] == b[p] for p in common),
            "prefix_share": round(sum(share(a[p], b[p]) for p in common) / len(common), 3)}


# --- the comparison -------------------------------------------------------------------------------


def run_engine(spec: EngineSpec, prompts: list[str], requests: int, concurrency: int, max_tokens: int,
               soak: int, out_dir: Path, timeout: float, startup_timeout: float) -> tuple[dict, dict[str, str]]:
    with ServerProcess(spec, out_dir / f"{spec.name}.log", startup_timeout) as server:
        idle_rss = server.rss()
        asyncio.run(_load(server.url, spec.model, prompts, min(len(prompts), concurrency), concurrency, 4, timeout))
        results, wall = asyncio.run(_load(server.url, spec.model, prompts, requests, concurrency, max_tokens,
                                          timeout))
        row = {"engine": spec.name, "command": shlex.join(spec.argv), "idle_rss_mb": round(idle_rss / 2**20, 1),
               **summarize(results, wall)}
        if soak:
            start_rss = server.rss()
            soaked, soak_wall = asyncio.run(_load(server.url, spec.model, prompts, soak, concurrency, max_tokens,
                                                  timeout))
            row["soak"] = {**summarize(soaked, soak_wall), "start_rss_mb": round(start_rss / 2**20, 1),
                           "end_rss_mb": round(server.rss() / 2**20, 1)}
        row["peak_rss_mb"] = round(server.peak_rss / 2**20, 1)
    return row, answers_by_prompt(results, prompts)


def markdown(result: dict) -> str:
    cols = ["engine", "tokens_per_s", "requests_per_s", "latency_p50_s", "latency_p95_s", "ttft_p50_s",
            "peak_rss_mb", "failures"]
    lines = [f"# Serving side by side: {result['requests']} requests, {result['concurrency']} concurrent, "
             f"{result['max_tokens']} tokens, greedy", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in cols) + " |" for row in result["engines"]]
    for name, agree in result.get("agreement", {}).items():
        lines.append(f"\nGreedy agreement {name}: {agree['exact']}/{agree['prompts']} answers identical, "
                     f"common prefix {agree['prefix_share']:.0%} on average.")
    for row in result["engines"]:
        if "soak" in row:
            s = row["soak"]
            lines.append(f"\nSoak {row['engine']}: {s['requests']} requests, {s['failures']} failures, RSS "
                         f"{s['start_rss_mb']} MB at the start, {s['end_rss_mb']} MB at the end.")
    lines += ["", "Commands:", ""] + [f"    {row['command']}" for row in result["engines"]]
    return "\n".join(lines) + "\n"


def bench_serve_compare(engines: list[EngineSpec], requests: int = 48, concurrency: int = 16, max_tokens: int = 64,
                        soak: int = 0, out: str | Path = "bench/results/serve-compare",
                        prompts: list[str] | None = None, timeout: float = 600,
                        startup_timeout: float = 600) -> dict:
    """Run every engine in turn on the same load; write ``out``/serve-compare.json and .md."""
    from loraforge.runs import atomic_write

    out_dir, prompts = Path(out), prompts or DEFAULT_PROMPTS
    rows, answers = [], {}
    for spec in engines:
        row, answers[spec.name] = run_engine(spec, prompts, requests, concurrency, max_tokens, soak, out_dir,
                                             timeout, startup_timeout)
        rows.append(row)
    names = [s.name for s in engines]
    result = {"requests": requests, "concurrency": concurrency, "max_tokens": max_tokens, "soak": soak,
              "machine": {"cpus": os.cpu_count(), "platform": sys.platform}, "engines": rows,
              "agreement": {f"{a} vs {b}": agreement(answers[a], answers[b])
                            for i, a in enumerate(names) for b in names[i + 1:]}}
    atomic_write(out_dir / "serve-compare.json", json.dumps(result, indent=2))
    atomic_write(out_dir / "serve-compare.md", markdown(result))
    return result


def side_by_side(gguf: str, base: str = "gemma3-270m", adapters: list[str] | None = None, requests: int = 48,
                 concurrency: int = 16, max_tokens: int = 64, soak: int = 0,
                 out: str | Path = "bench/results/serve-compare", threads: int | None = None,
                 serve_args: list[str] | None = None) -> dict:
    """loraforge serve on ``base`` then llama.cpp on ``gguf`` (the same model, ``loraforge export --format
    gguf``); the shape ``loraforge bench serve --compare-gguf`` calls."""
    engines = [loraforge_spec(base, adapters, serve_args), llama_cpp_spec(gguf, threads)]
    return bench_serve_compare(engines, requests, concurrency, max_tokens, soak, out)
