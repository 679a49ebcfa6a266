"""The side-by-side serving bench, on loopback: a real ``loraforge serve`` process (tiny model) and
fake OpenAI-compatible servers standing in for llama.cpp; bounded request counts."""

from __future__ import annotations

import json
import sys

from loraforge.bench.serve_compare import EngineSpec, agreement, bench_serve_compare, loraforge_spec

FAKE = r'''
import json, sys
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

app = FastAPI()
FAIL_EVERY = int(sys.argv[2])
seen = {"n": 0}

@app.get("/v1/models")
def models():
    return {"object": "list", "data": [{"id": "base", "object": "model"}]}

@app.post("/v1/chat/completions")
async def chat(request: Request):
    body = await request.json()
    seen["n"] += 1
    if FAIL_EVERY and seen["n"] % FAIL_EVERY == 0:
        return StreamingResponse(iter(["data: " + json.dumps({"error": {"message": "boom"}}) + "\n\n"]),
                                 media_type="text/event-stream")
    words = ("answer to " + body["messages"][0]["content"]).split()[: body["max_tokens"]]
    def sse():
        for w in words:
            yield "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": w + " "}}]}) + "\n\n"
        yield "data: " + json.dumps({"choices": [], "usage": {"completion_tokens": len(words)}}) + "\n\n"
        yield "data: [DONE]\n\n"
    return StreamingResponse(sse(), media_type="text/event-stream")

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
'''


def fake(name: str, fail_every: int = 0) -> EngineSpec:
    return EngineSpec(name, [sys.executable, "-c", FAKE, "{port}", str(fail_every)])


def test_compare_runs_each_engine_and_reports(tiny_model_dir, tmp_path):
    engines = [loraforge_spec(str(tiny_model_dir), extra=["--dtype", "fp32"]), fake("fake-a"), fake("fake-b", 3)]
    res = bench_serve_compare(engines, requests=6, concurrency=2, max_tokens=4, soak=4, out=tmp_path,
                              startup_timeout=300, timeout=120)
    rows = {r["engine"]: r for r in res["engines"]}
    assert list(rows) == ["loraforge", "fake-a", "fake-b"]
    lf = rows["loraforge"]
    assert lf["failures"] == 0 and lf["requests"] == 6 and lf["completion_tokens"] > 0
    assert 0 < lf["ttft_p50_s"] <= lf["latency_p50_s"] * 1.0001
    assert lf["peak_rss_mb"] > rows["fake-a"]["idle_rss_mb"] > 0, "torch + a model outweigh a bare web server"
    assert lf["soak"]["requests"] == 4 and lf["soak"]["end_rss_mb"] > 0
    assert rows["fake-a"]["completion_tokens"] == 6 * 4, "usage from the final chunk"
    assert rows["fake-b"]["failures"] == 2 and "boom" in rows["fake-b"]["failure_examples"][0]
    fakes = res["agreement"]["fake-a vs fake-b"]
    assert fakes["exact"] == fakes["prompts"] >= 2, fakes
    assert res["agreement"]["loraforge vs fake-a"]["exact"] == 0
    saved = json.loads((tmp_path / "serve-compare.json").read_text())
    assert saved["engines"][0]["command"].startswith(sys.executable)
    md = (tmp_path / "serve-compare.md").read_text()
    assert "| loraforge |" in md and "Soak fake-b" in md and f"fake-a vs fake-b: {fakes['exact']}/" in md
    assert "$ " in (tmp_path / "loraforge.log").read_text()


def test_agreement_counts_exact_answers_and_prefixes():
    a = {"p": "abcd", "q": "xyz", "r": "same"}
    b = {"p": "abXX", "q": "xyz", "s": "other"}
    assert agreement(a, b) == {"prompts": 2, "exact": 1, "prefix_share": 0.75}
