"""The side-by-side serving bench, on loopback: a real ``loraforge serve`` process (tiny model) and
fake OpenAI-compatible servers standing in for llama.cpp; bounded request counts."""

from __future__ import annotations

import json
import sys

import pytest

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


# --- like with like: the llama.cpp row's chat format and weights, from the GGUF header -----------

MESSAGES = [{"role": "user", "content": "A Pod is the smallest deployable unit."}]


def tiny_gguf(path, tokens, file_type=None, template=None, tensor_dtype="float16"):
    """A GGUF file with just the fields the bench reads (a vocabulary, a template, one tensor)."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "gemma3")
    if file_type is not None:
        writer.add_file_type(int(file_type))
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    if template:
        writer.add_chat_template(template)
    writer.add_tensor("token_embd.weight", np.zeros((len(tokens), 8), dtype=tensor_dtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


GEMMA_VOCAB = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "a", "b"]


def test_gemma_gguf_without_template_runs_llama_cpp_with_gemma_turns(tmp_path):
    from gguf import LlamaFileType

    from loraforge.bench.serve_compare import llama_cpp_spec, read_gguf

    path = tiny_gguf(tmp_path / "m.gguf", GEMMA_VOCAB, LlamaFileType.MOSTLY_Q4_K_M)
    assert read_gguf(path).file_type == "Q4_K_M"
    spec = llama_cpp_spec(str(path), threads=1)
    i = spec.argv.index("--chat_format")
    assert spec.argv[i + 1] == "gemma", "without it llama-cpp-python falls back to Llama 2's [INST] format"
    assert spec.facts == {"weights": "Q4_K_M GGUF", "chat_format": "gemma"}


def test_gguf_with_a_chat_template_is_formatted_with_it(tmp_path):
    from gguf import LlamaFileType

    from loraforge.bench.serve_compare import llama_cpp_spec

    path = tiny_gguf(tmp_path / "m.gguf", GEMMA_VOCAB, LlamaFileType.MOSTLY_F16, template="{{ messages }}")
    spec = llama_cpp_spec(str(path), threads=1)
    assert "--chat_format" not in spec.argv
    assert spec.facts == {"weights": "F16 GGUF", "chat_format": "the GGUF's chat template"}


def test_file_type_without_the_field_is_the_tensors_type(tmp_path):
    from loraforge.bench.serve_compare import read_gguf

    assert read_gguf(tiny_gguf(tmp_path / "a.gguf", GEMMA_VOCAB)).file_type == "mostly F16"
    assert read_gguf(tiny_gguf(tmp_path / "b.gguf", GEMMA_VOCAB, tensor_dtype="float32")).file_type == "mostly F32"


def test_ggufs_that_cannot_be_compared_fairly_are_refused(tmp_path):
    import pytest

    from loraforge.bench.serve_compare import llama_cpp_spec
    from loraforge.config import ConfigError

    other = tiny_gguf(tmp_path / "qwen.gguf", ["<|im_start|>", "<|im_end|>", "a"])
    with pytest.raises(ConfigError, match="no chat template and is not a Gemma model"):
        llama_cpp_spec(str(other))
    with pytest.raises(ConfigError, match="no such file"):
        llama_cpp_spec(str(tmp_path / "missing.gguf"))
    (tmp_path / "text.gguf").write_text("not a gguf")
    with pytest.raises(ConfigError, match="not a GGUF file"):
        llama_cpp_spec(str(tmp_path / "text.gguf"))


def test_llama_cpp_gemma_format_writes_loraforge_prompt(tiny_tokenizer):
    import pytest

    llama_chat_format = pytest.importorskip("llama_cpp.llama_chat_format")
    from loraforge.bench.serve_compare import GgufInfo, chat_format_for
    from loraforge.data.templates import chat_prompt

    name = chat_format_for(GgufInfo("Q4_K_M", chat_template=False, gemma_turns=True))
    theirs = getattr(llama_chat_format, f"format_{name}")(messages=MESSAGES).prompt  # BOS: added at tokenizing
    assert theirs == chat_prompt(tiny_tokenizer, MESSAGES).removeprefix(tiny_tokenizer.bos_token)


def test_exported_chat_template_renders_loraforge_prompt_in_llama_cpp(tiny_tokenizer):
    """The other case chat_format_for leaves to the GGUF: the template `loraforge export` writes."""
    import pytest

    llama_chat_format = pytest.importorskip("llama_cpp.llama_chat_format")
    from loraforge.config import DataConfig
    from loraforge.data.templates import chat_prompt
    from loraforge.export.standalone import chat_template

    data = DataConfig(system_prompt="Translate to Chinese.")
    formatter = llama_chat_format.Jinja2ChatFormatter(chat_template(tiny_tokenizer, data), eos_token="<eos>",
                                                      bos_token="<bos>")
    served = chat_prompt(tiny_tokenizer, [{"role": "system", "content": data.system_prompt}, *MESSAGES])
    assert formatter(messages=MESSAGES).prompt == served


def test_loraforge_weights_name_the_dtype_and_the_gguf_it_came_from(tmp_path, tiny_model_dir):
    from gguf import LlamaFileType

    from loraforge.bench.serve_compare import loraforge_weights

    path = tiny_gguf(tmp_path / "m.gguf", GEMMA_VOCAB, LlamaFileType.MOSTLY_Q4_K_M)
    assert loraforge_weights(str(path), ["--dtype", "fp32"]) == "fp32 (dequantized from a Q4_K_M GGUF)"
    assert loraforge_weights(str(tiny_model_dir), ["--int8-lm-head", "--dtype", "bf16"]) == "bf16, int8 lm head"
    assert loraforge_weights(str(tiny_model_dir), ["--int8", "--dtype", "fp32"]) == "fp32, int8 weights"


def test_markdown_labels_each_rows_weights():
    from loraforge.bench.serve_compare import markdown

    row = {"failures": 0, "command": "x"}
    result = {"requests": 2, "concurrency": 1, "max_tokens": 4,
              "engines": [{**row, "engine": "loraforge", "weights": "fp32 (dequantized from a Q4_K_M GGUF)"},
                          {**row, "engine": "llama.cpp", "weights": "Q4_K_M GGUF", "chat_format": "gemma"}]}
    md = markdown(result)
    assert "| loraforge | fp32 (dequantized from a Q4_K_M GGUF) |" in md and "| llama.cpp | Q4_K_M GGUF |" in md
    assert "different weights" in md and "llama.cpp chat format: gemma." in md
    result["engines"][0]["weights"] = "Q4_K_M GGUF"
    assert "different weights" not in markdown(result)


def test_a_tuned_run_is_served_by_loraforge_and_named_in_its_requests(monkeypatch):
    from loraforge.bench import serve_compare

    got = {}
    monkeypatch.setattr(serve_compare, "llama_cpp_spec", lambda gguf, threads: serve_compare.EngineSpec("llama.cpp", []))
    monkeypatch.setattr(serve_compare, "bench_serve_compare", lambda engines, *a: got.setdefault("engines", engines))
    serve_compare.side_by_side("t.gguf", adapter="runs/k8s")
    lf = got["engines"][0]
    assert lf.model == "tuned" and "tuned=runs/k8s" in lf.argv and lf.facts["adapter"] == "runs/k8s"
    got.clear()
    serve_compare.side_by_side("t.gguf")
    assert got["engines"][0].model == "base" and "--adapter" not in got["engines"][0].argv
    assert [e.name for e in got["engines"]] == ["loraforge", "llama.cpp"]
    got.clear()
    serve_compare.side_by_side("t.gguf", loraforge_only=True)  # a soak of loraforge alone
    assert [e.name for e in got["engines"]] == ["loraforge"]


def test_llama_cpp_server_reads_our_argv_and_lets_concurrent_requests_finish(tmp_path):
    """Parsed by llama-cpp-python's own CLI: the settings it would run with. By default its server
    interrupts the running request when another arrives, which emptied every answer under load."""
    pytest.importorskip("llama_cpp.server")
    import argparse

    from gguf import LlamaFileType
    from llama_cpp.server.cli import add_args_from_model, parse_model_from_args
    from llama_cpp.server.settings import ModelSettings, ServerSettings, Settings

    from loraforge.bench.serve_compare import llama_cpp_spec

    spec = llama_cpp_spec(str(tiny_gguf(tmp_path / "m.gguf", GEMMA_VOCAB, LlamaFileType.MOSTLY_Q4_K_M)), threads=1)
    parser = argparse.ArgumentParser()
    add_args_from_model(parser, Settings)
    args = parser.parse_args([a.replace("{port}", "8080") for a in spec.argv[spec.argv.index("--model"):]])
    server, model = parse_model_from_args(ServerSettings, args), parse_model_from_args(ModelSettings, args)
    assert server.interrupt_requests is False and server.port == 8080
    assert model.chat_format == "gemma" and model.n_threads == 1
