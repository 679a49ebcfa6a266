"""loraforge serve and llama.cpp's OpenAI server, one after the other on one machine, same load.

Each engine is started as its own process, waited for (``GET /v1/models``), loaded with the same
streamed greedy chat requests (same prompts, ``max_tokens``, concurrency), and stopped before the
next starts, so they never share the CPU. Per engine: completion tokens/s, requests/s, p50/p95
latency, time to first token, peak RSS of the server process tree, failures; across engines: how
many greedy answers agree. ``soak`` adds a long run per engine and reports its start and end RSS.

Like with like: both engines get the same prompt text. llama-cpp-python formats a chat with the GGUF's
chat template (``loraforge export --format gguf`` writes the run's) and, without one, falls back to
Llama 2's ``[INST]`` format, on which Gemma answers with an end of turn at once; so a GGUF without a
template gets llama-cpp-python's ``gemma`` chat format, the same turns loraforge writes. Each row
also says what its weights are (a Q4_K_M GGUF against fp32 weights is not the same model to the bit).
"""

from __future__ import annotations

import asyncio
import functools
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
from loraforge.config import ConfigError

GEMMA_TURN = "<start_of_turn>"  # a Gemma vocabulary: loraforge's ``auto`` template is Gemma's turns


@dataclass
class EngineSpec:
    """How to start one OpenAI-compatible server; ``{port}`` in ``argv`` is filled in."""

    name: str
    argv: list[str]
    model: str = "base"  # the ``model`` field of the requests
    env: dict[str, str] = field(default_factory=dict)
    facts: dict[str, str] = field(default_factory=dict)  # reported in the row: weights, chat format


def loraforge_spec(base: str = "gemma3-270m", adapters: list[str] | None = None, extra: list[str] | None = None,
                   python: str = sys.executable, weights: str = "") -> EngineSpec:
    """``weights``: what the row reports about them (``side_by_side`` works it out; see ``loraforge_weights``)."""
    argv = [python, "-c", "from loraforge.cli import main; raise SystemExit(main())", "serve", "--base", base,
            "--host", "127.0.0.1", "--port", "{port}"]
    for a in adapters or []:
        argv += ["--adapter", a]
    return EngineSpec("loraforge", argv + list(extra or []), facts={"weights": weights} if weights else {})


def llama_cpp_spec(gguf: str, threads: int | None = None, n_ctx: int = 4096, extra: list[str] | None = None,
                   python: str = sys.executable, chat_format: str | None = "auto") -> EngineSpec:
    """llama-cpp-python's server (``pip install 'llama-cpp-python[server]'``) on a GGUF file.

    ``chat_format``: "auto" = the one that gives loraforge's prompt text (``chat_format_for``); None =
    llama-cpp-python's own choice; else passed as ``--chat_format``.
    """
    info = read_gguf(gguf)
    if chat_format == "auto":
        chat_format = chat_format_for(info, gguf)
    # --interrupt_requests false: by default a new request cuts the running one short, so under
    # concurrent load every answer but the last came back empty (seen: 1200 requests, 3 generated)
    argv = [python, "-m", "llama_cpp.server", "--model", gguf, "--model_alias", "base", "--host", "127.0.0.1",
            "--port", "{port}", "--n_ctx", str(n_ctx), "--n_threads", str(threads or os.cpu_count() or 1),
            "--interrupt_requests", "false"]
    if chat_format:
        argv += ["--chat_format", chat_format]
    facts = {"weights": f"{info.file_type} GGUF",
             "chat_format": chat_format or ("the GGUF's chat template" if info.chat_template else "llama-cpp-python's")}
    return EngineSpec("llama.cpp", argv + list(extra or []), facts=facts)


# --- what a GGUF file holds -----------------------------------------------------------------------


@dataclass(frozen=True)
class GgufInfo:
    file_type: str  # general.file_type as llama.cpp names it: "Q4_K_M", "F16", "Q8_0", "F32"...
    chat_template: bool  # tokenizer.chat_template is set
    gemma_turns: bool  # the vocabulary has Gemma's turn markers


def read_gguf(path: str | Path) -> GgufInfo:
    """The few facts the bench needs, from the GGUF header (no weights are read)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"--compare-gguf {path}: no such file; write one with `loraforge export --format gguf`")
    stat = path.stat()
    return _read_gguf(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _read_gguf(path: str, size: int, mtime_ns: int) -> GgufInfo:
    """Cached per file version: parsing a 262k-token vocabulary takes GGUFReader seconds, and the
    embedded base model's GGUF is often the very file llama.cpp runs."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except (ValueError, OSError) as e:
        raise ConfigError(f"--compare-gguf {path}: not a GGUF file ({e})") from None
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    gemma = tokens is not None and any(bytes(tokens.parts[i]) == GEMMA_TURN.encode() for i in tokens.data)
    return GgufInfo(gguf_file_type(reader), "tokenizer.chat_template" in reader.fields, gemma)


def gguf_file_type(reader) -> str:
    """``general.file_type`` (e.g. 15 -> "Q4_K_M"); without it, the commonest type of the 2-D tensors."""
    from collections import Counter

    from gguf import LlamaFileType

    field_ = reader.fields.get("general.file_type")
    if field_ is not None:
        value = int(field_.contents())
        try:
            return LlamaFileType(value).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            return f"file_type {value}"
    kinds = Counter(t.tensor_type.name for t in reader.tensors if len(t.shape) > 1)
    return f"mostly {kinds.most_common(1)[0][0]}" if kinds else "unknown"


def chat_format_for(info: GgufInfo, path: str | Path = "the GGUF") -> str | None:
    """The llama-cpp-python chat format that renders the prompt loraforge serve renders.

    loraforge's ``auto`` template: the model's own template, else Gemma turns for a Gemma vocabulary.
    A GGUF with a template is formatted with it (None); llama-cpp-python's ``gemma`` format writes
    exactly loraforge's Gemma turns. Other template-less files have no format that matches (its
    ``chatml`` adds an empty system turn), so they are refused rather than compared unlike with unlike.
    """
    if info.chat_template:
        return None
    if info.gemma_turns:
        return "gemma"
    raise ConfigError(f"{path} has no chat template and is not a Gemma model: llama.cpp would format the chats "
                      "differently from loraforge serve; write the GGUF with `loraforge export --format gguf` "
                      "(it stores the chat template)")


def loraforge_weights(base: str, extra: list[str] | None = None) -> str:
    """What loraforge serve computes with: its dtype (``--dtype``, auto as ``serve`` resolves it), and
    the GGUF's type when the base is one (dequantized at load)."""
    from loraforge.models.load import EMBEDDED_MODELS, _embedded_gguf
    from loraforge.serve.quant import serving_dtype

    extra = list(extra or [])
    dtype = serving_dtype(extra[extra.index("--dtype") + 1] if "--dtype" in extra[:-1] else "auto", "--int8" in extra)
    gguf = _embedded_gguf(base) if base in EMBEDDED_MODELS else Path(base) if base.endswith(".gguf") else None
    label = dtype + (", int8 weights" if "--int8" in extra else ", int8 lm head" if "--int8-lm-head" in extra else "")
    return f"{label} (dequantized from a {read_gguf(gguf).file_type} GGUF)" if gguf else label


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
        row = {"engine": spec.name, **spec.facts, "command": shlex.join(spec.argv),
               "idle_rss_mb": round(idle_rss / 2**20, 1), **summarize(results, wall)}
        if soak:
            start_rss = server.rss()
            soaked, soak_wall = asyncio.run(_load(server.url, spec.model, prompts, soak, concurrency, max_tokens,
                                                  timeout))
            row["soak"] = {**summarize(soaked, soak_wall), "start_rss_mb": round(start_rss / 2**20, 1),
                           "end_rss_mb": round(server.rss() / 2**20, 1)}
        row["peak_rss_mb"] = round(server.peak_rss / 2**20, 1)
    return row, answers_by_prompt(results, prompts)


def markdown(result: dict) -> str:
    cols = ["engine", "weights", "tokens_per_s", "requests_per_s", "latency_p50_s", "latency_p95_s", "ttft_p50_s",
            "peak_rss_mb", "failures"]
    lines = [f"# Serving side by side: {result['requests']} requests, {result['concurrency']} concurrent, "
             f"{result['max_tokens']} tokens, greedy", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in cols) + " |" for row in result["engines"]]
    weights = {row.get("weights", "") for row in result["engines"]}
    if len(weights) > 1:
        lines.append("\nThe engines compute with different weights (the weights column): their speeds are not "
                     "those of the same numbers, and greedy answers can part for that reason alone.")
    for row in result["engines"]:
        if "chat_format" in row:
            lines.append(f"\n{row['engine']} chat format: {row['chat_format']}.")
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
                 serve_args: list[str] | None = None, adapter: str | None = None, loraforge_only: bool = False) -> dict:
    """loraforge serve on ``base`` then llama.cpp on ``gguf`` (the same model: the embedded model's GGUF, or
    what ``loraforge export --format gguf`` writes, f16 by default); the shape ``loraforge bench serve
    --compare-gguf`` calls. ``adapter``: a tuned run; loraforge serves it (requests name it) and ``gguf``
    should be that run's export, so both engines run the same tuned model. ``loraforge_only``: skip
    llama.cpp (a long ``soak`` of loraforge alone; the GGUF is still checked)."""
    llama = llama_cpp_spec(gguf, threads)  # a GGUF it cannot compare fairly fails before anything starts
    lf = loraforge_spec(base, [*(adapters or []), *([f"tuned={adapter}"] if adapter else [])], serve_args,
                        weights=loraforge_weights(base, serve_args))
    if adapter:
        lf.model = "tuned"
        lf.facts["adapter"] = str(adapter)
    engines = [lf] if loraforge_only else [lf, llama]
    return bench_serve_compare(engines, requests, concurrency, max_tokens, soak, out)
