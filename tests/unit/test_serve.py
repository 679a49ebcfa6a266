"""The OpenAI-compatible server on loopback, with a tiny model and two different LoRA adapters."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch

TOKEN = "s3cret"


def make_lora(model_dir, out, seed: int):
    """A LoRA adapter with random (non-zero) B, so it really changes the model's answers."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    cfg = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=16, target_modules="all-linear",
                     init_lora_weights=False)
    model = get_peft_model(base, cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 2.0)  # big enough to move a tiny random model's argmax
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def server(tiny_tokenizer, tmp_path_factory):
    """Tiny Llama (untied embeddings: a tied tiny model mostly echoes its last token, whatever the adapter)."""
    import uvicorn
    from conftest import save_tiny_model

    from loraforge.serve.app import build_app

    tiny_model_dir = save_tiny_model(tmp_path_factory.mktemp("tiny-llama"), tiny_tokenizer, arch="llama")
    root = tmp_path_factory.mktemp("adapters")
    make_lora(tiny_model_dir, root / "alpha", seed=1)
    make_lora(tiny_model_dir, root / "beta", seed=2)
    make_lora(tiny_model_dir, root / "gamma", seed=3)
    make_lora(tiny_model_dir, root / "alien", seed=4)  # claims layers this base does not have
    cfg = json.loads((root / "alien" / "adapter_config.json").read_text())
    (root / "alien" / "adapter_config.json").write_text(json.dumps({**cfg, "target_modules": ["c_attn"]}))
    (root.parent / "outside").mkdir(exist_ok=True)
    app = build_app(str(tiny_model_dir), [f"alpha={root / 'alpha'}", f"beta={root / 'beta'}"], admin_token=TOKEN,
                    adapter_dir=str(root), dtype="fp32", batch_wait_ms=150)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    yield {"url": url, "engine": app.state.engine, "base": str(tiny_model_dir), "root": root}
    srv.should_exit = True
    thread.join(timeout=10)
    app.state.engine.close()


def complete(server, model, prompt="Kubernetes is", max_tokens=8, **kw):
    r = httpx.post(f"{server['url']}/v1/completions", json={"model": model, "prompt": prompt,
                                                            "max_tokens": max_tokens, **kw}, timeout=60)
    return r


def test_models_health_and_metrics(server):
    r = httpx.get(f"{server['url']}/v1/models")
    ids = [m["id"] for m in r.json()["data"]]
    assert ids == [server["base"], "alpha", "beta"]
    assert httpx.get(f"{server['url']}/health").json()["status"] == "ok"
    complete(server, "alpha")
    text = httpx.get(f"{server['url']}/metrics").text
    assert "# TYPE loraforge_requests_total counter" in text
    assert 'loraforge_requests_total{endpoint="/v1/completions",model="alpha",status="200"}' in text
    assert "loraforge_batch_size_count" in text and "loraforge_adapters_loaded 2" in text


def test_openai_client_completions_and_chat(server):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server['url']}/v1", api_key="unused")
    c = client.completions.create(model="alpha", prompt="Kubernetes is", max_tokens=6)
    assert c.choices[0].finish_reason in ("stop", "length") and c.usage.completion_tokens <= 6
    assert c.usage.prompt_tokens > 0
    chat = client.chat.completions.create(model="beta", messages=[{"role": "user", "content": "translate Pod"}],
                                          max_tokens=6)
    assert chat.choices[0].message.role == "assistant"
    assert chat.usage.completion_tokens >= 1
    base = client.chat.completions.create(model="base", messages=[{"role": "user", "content": "translate Pod"}],
                                          max_tokens=6)
    assert base.model == "base"


def test_greedy_is_deterministic_and_max_tokens_respected(server):
    a1, a2 = complete(server, "alpha", max_tokens=5).json(), complete(server, "alpha", max_tokens=5).json()
    assert a1["choices"][0]["text"] == a2["choices"][0]["text"]
    assert a1["usage"]["completion_tokens"] <= 5


def test_streaming_matches_non_streaming(server):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server['url']}/v1", api_key="unused")
    full = client.completions.create(model="beta", prompt="A Pod is", max_tokens=8).choices[0].text
    parts, reasons = [], []
    for ch in client.completions.create(model="beta", prompt="A Pod is", max_tokens=8, stream=True):
        parts.append(ch.choices[0].text)
        reasons.append(ch.choices[0].finish_reason)
    assert "".join(parts) == full and reasons[-1] in ("stop", "length")
    chat_parts = []
    for ch in client.chat.completions.create(model="alpha", messages=[{"role": "user", "content": "hi"}],
                                             max_tokens=8, stream=True):
        if ch.choices and ch.choices[0].delta.content:
            chat_parts.append(ch.choices[0].delta.content)
    with httpx.stream("POST", f"{server['url']}/v1/chat/completions", timeout=60,
                      json={"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8,
                            "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert "".join(chat_parts) == "".join(json.loads(x[6:])["choices"][0]["delta"].get("content", "")
                                          for x in lines[:-1])


def test_two_adapters_in_one_batch_give_their_own_answers(server):
    prompt = "Use kubectl get pods"
    solo = {m: complete(server, m, prompt=prompt, max_tokens=10).json()["choices"][0]["text"]
            for m in ("alpha", "beta", "base")}
    assert solo["alpha"] != solo["beta"], "adapters initialised differently must answer differently"
    engine = server["engine"]
    engine.batches.clear()
    models = ["alpha", "beta", "base", "alpha", "beta"]
    with ThreadPoolExecutor(len(models)) as pool:
        results = list(pool.map(lambda m: complete(server, m, prompt=prompt, max_tokens=10).json(), models))
    assert any(len(set(b)) >= 2 for b in engine.batches), f"no mixed batch: {list(engine.batches)}"
    for m, res in zip(models, results):
        assert res["choices"][0]["text"] == solo[m], m


@pytest.mark.parametrize("body,status,code", [
    ({"model": "nope", "prompt": "x"}, 404, "model_not_found"),
    ({"model": "../../etc/passwd", "prompt": "x"}, 404, "model_not_found"),
    ({"model": "alpha", "prompt": "x", "max_tokens": -1}, 400, "invalid_value"),
    ({"model": "alpha", "prompt": "x", "max_tokens": 0}, 400, "invalid_value"),
    ({"model": "alpha", "prompt": "x", "max_tokens": 10**9}, 400, "invalid_value"),
    ({"model": "alpha", "prompt": "Pod " * 2000, "max_tokens": 4}, 400, "context_length_exceeded"),
    ({"model": "alpha"}, 400, "invalid_request_error"),
    ({"model": "alpha", "prompt": "x", "temperature": -1}, 400, "invalid_request_error"),
    ({"model": "alpha", "prompt": "x", "n": 3}, 400, "invalid_request_error"),
])
def test_bad_requests_get_clear_4xx(server, body, status, code):
    r = httpx.post(f"{server['url']}/v1/completions", json=body, timeout=30)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"]


def test_invalid_json_and_bad_chat(server):
    r = httpx.post(f"{server['url']}/v1/chat/completions", content=b"{not json", timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = httpx.post(f"{server['url']}/v1/chat/completions", json={"model": "alpha", "messages": []}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    r = httpx.post(f"{server['url']}/v1/chat/completions", timeout=30,
                   json={"model": "alpha", "messages": [{"role": "wizard", "content": "x"}]})
    assert r.status_code == 400
    assert complete(server, "alpha").status_code == 200, "the server keeps serving after bad input"


def test_admin_add_remove_and_path_safety(server):
    url, auth = f"{server['url']}/admin/adapters", {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.post(url, json={"name": "gamma"}).status_code == 401
    assert httpx.post(url, json={"name": "gamma"}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    for bad in ({"name": "../outside"}, {"name": "x/y"}, {"name": ".."}):
        r = httpx.post(url, json=bad, headers=auth)
        assert r.status_code == 400 and "invalid adapter name" in r.json()["error"]["message"]
    r = httpx.post(url, json={"name": "esc", "path": "../outside"}, headers=auth)
    assert r.status_code == 403 and "outside the adapter directory" in r.json()["error"]["message"]
    r = httpx.post(url, json={"name": "esc", "path": "/etc"}, headers=auth)
    assert r.status_code == 403
    assert httpx.post(url, json={"name": "missing"}, headers=auth).status_code == 404
    r = httpx.post(url, json={"name": "alien"}, headers=auth, timeout=60)
    assert r.status_code == 400 and "does not fit the base model" in r.json()["error"]["message"]
    r = httpx.post(url, json={"name": "gamma"}, headers=auth, timeout=60)
    assert r.status_code == 200, r.text
    assert httpx.post(url, json={"name": "gamma"}, headers=auth).status_code == 409
    assert "gamma" in [m["id"] for m in httpx.get(f"{server['url']}/v1/models").json()["data"]]
    gamma = complete(server, "gamma", prompt="Use kubectl get pods", max_tokens=10)
    assert gamma.status_code == 200
    assert httpx.delete(f"{url}/gamma", headers=auth).status_code == 200
    assert complete(server, "gamma").status_code == 404
    assert httpx.delete(f"{url}/gamma", headers=auth).status_code == 404
    assert complete(server, "alpha").status_code == 200


def test_bench_serve_reports_latency(server, tmp_path, monkeypatch):
    import statistics

    import numpy as np

    from loraforge.bench import serve as bench
    from loraforge.bench.serve import bench_serve

    measured, run = [], bench._run

    async def recorded(*args):  # the per-request latencies the report is computed from
        lat, *rest = await run(*args)
        measured.extend(lat)
        return (lat, *rest)

    monkeypatch.setattr(bench, "_run", recorded)
    out = tmp_path / "bench.json"
    res = bench_serve(server["url"], models=["alpha", "beta", "base"], requests=12, concurrency=4, max_tokens=4,
                      out=out)
    assert res["failures"] == 0 and res["requests"] == 12 and len(measured) == 12
    assert res["latency_p50_s"] == round(statistics.median(measured), 4)
    assert res["latency_p95_s"] == round(float(np.percentile(measured, 95)), 4)
    assert res["latency_mean_s"] == round(statistics.fmean(measured), 4)
    assert res["completion_tokens"] > 0 and res["tokens_per_s"] > 0
    assert json.loads(out.read_text())["requests"] == 12


def test_stop_strings_and_sampling(server):
    full = complete(server, "alpha", prompt="Use kubectl get pods", max_tokens=10).json()["choices"][0]
    text = full["text"]
    assert len(text) > 4
    stop = text[2:4]
    cut = complete(server, "alpha", prompt="Use kubectl get pods", max_tokens=10, stop=[stop]).json()["choices"][0]
    assert cut["text"] == text[:text.find(stop)] and cut["finish_reason"] == "stop"
    sampled = complete(server, "beta", prompt="Use kubectl get pods", max_tokens=6, temperature=1.0, top_p=0.9)
    assert sampled.status_code == 200 and sampled.json()["usage"]["completion_tokens"] >= 1


def test_serve_and_export_never_import_train():
    import subprocess
    import sys

    code = ("import sys, loraforge.serve.app, loraforge.serve.engine, loraforge.export.run, loraforge.export.gguf, "
            "loraforge.export.oci, loraforge.bench.serve, loraforge.adapters, loraforge.models.load; "
            "bad = [m for m in sys.modules if m.startswith('loraforge.train')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_stream_client_disconnect_stops_its_generation(server):
    counters = server["engine"].metrics.counters["loraforge_generated_tokens_total"]
    before = counters.get((), 0)
    with httpx.stream("POST", f"{server['url']}/v1/completions", timeout=60,
                      json={"model": "alpha", "prompt": "Pod", "max_tokens": 400, "stream": True}) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i >= 3:
                break  # leave after a few tokens
    for _ in range(100):
        if counters.get((), 0) > before:
            break
        time.sleep(0.05)
    generated = counters.get((), 0) - before
    assert 0 < generated < 100, generated
    assert complete(server, "alpha").status_code == 200


def test_int8_server_computes_in_fp32_under_auto_and_refuses_bf16(tiny_tokenizer, tmp_path, monkeypatch):
    """``serve --int8`` with ``--dtype auto`` loads fp32 (the int8 layers take fp32 activations) on a CPU
    where auto means bf16 (made so here, whatever this CPU is); without ``--int8`` auto stays bf16; with
    ``--dtype bf16`` it is a clear error, not a silent bf16 server."""
    from conftest import save_tiny_model

    from loraforge.bench.serve_compare import loraforge_weights
    from loraforge.config import ConfigError
    from loraforge.models import load
    from loraforge.serve.app import build_app
    from loraforge.serve.quant import Int8Linear, serving_dtype

    monkeypatch.setattr(load, "has_fast_bf16", lambda device="cpu": True)
    assert serving_dtype("auto", int8=False) == "bf16" and serving_dtype("auto", int8=True) == "fp32"
    assert serving_dtype("bf16", int8=True) == "bf16" and serving_dtype("auto", int8=True, device="cuda") == "bf16"
    base = save_tiny_model(tmp_path / "tiny-llama", tiny_tokenizer, arch="llama")
    # bench serve labels its rows by the same rule
    assert loraforge_weights(str(base), []) == "bf16" and loraforge_weights(str(base), ["--int8"]) == "fp32, int8 weights"
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        pytest.skip("no fbgemm")
    engine = build_app(str(base), [], dtype="auto", int8=True).state.engine
    try:
        assert next(engine.model.parameters()).dtype == torch.float32 and engine.int8_layers > 0
        assert any(type(m) is Int8Linear for m in engine.model.modules())
    finally:
        engine.close()
    with pytest.raises(ConfigError, match="int8 weights need a model loaded in fp32"):
        build_app(str(base), [], dtype="bf16", int8=True)


def test_int8_server_loads_adapters_over_int8_layers_and_answers(tiny_tokenizer, tmp_path):
    """``serve --int8``: adapters loaded after the base went int8 wrap the Int8Linear layers (PEFT still
    sees Linear modules), run beside them unmerged, and change the answers."""
    from conftest import save_tiny_model
    from fastapi.testclient import TestClient

    from loraforge.serve.app import build_app
    from loraforge.serve.quant import Int8Linear

    if "fbgemm" not in torch.backends.quantized.supported_engines:
        pytest.skip("no fbgemm")
    base = save_tiny_model(tmp_path / "tiny-llama", tiny_tokenizer, arch="llama")
    make_lora(base, tmp_path / "alpha", seed=1)
    app = build_app(str(base), [f"alpha={tmp_path / 'alpha'}"], dtype="fp32", int8=True)
    engine = app.state.engine
    try:
        wrapped = [m.base_layer for n, m in engine.model.named_modules() if n.endswith("q_proj") and
                   hasattr(m, "base_layer")]
        assert wrapped and all(type(b) is Int8Linear for b in wrapped)
        assert not engine.router.merge
        with TestClient(app) as client:
            answers = {m: client.post("/v1/completions", json={"model": m, "prompt": "Use kubectl get pods",
                                                                "max_tokens": 8}).json() for m in ("alpha", str(base))}
        assert all(a["usage"]["completion_tokens"] > 0 for a in answers.values()), answers
        assert answers["alpha"]["choices"][0]["text"] != answers[str(base)]["choices"][0]["text"]
    finally:
        engine.close()


def _serve_command(base, port: int) -> list[str]:
    import sys

    return [sys.executable, "-c", "from loraforge.cli import main; raise SystemExit(main())", "serve", "--base",
            str(base), "--port", str(port), "--dtype", "fp32"]


def test_serve_command_finishes_answers_in_flight_on_sigterm_and_refuses_a_taken_port(tiny_model_dir, tmp_path):
    """`loraforge serve` generates on the main thread with HTTP beside it: a SIGTERM stops new work, lets the
    streaming answer already under way end normally, and exits 0; a port already taken exits non-zero
    with a message instead of hanging."""
    import signal
    import subprocess

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "serve.log", "w") as log:
        proc = subprocess.Popen(_serve_command(tiny_model_dir, port), stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            time.sleep(0.1)
        lines = []
        body = {"model": str(tiny_model_dir), "prompt": "Kubernetes is", "max_tokens": 300, "stream": True}
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: ") and not lines:
                    proc.send_signal(signal.SIGTERM)  # the answer is under way
                if line:
                    lines.append(line)
        assert proc.wait(timeout=60) == 0, (tmp_path / "serve.log").read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    events = [json.loads(x[6:]) for x in lines if x.startswith("data: {")]
    assert lines[-1] == "data: [DONE]" and events[-1]["choices"][0]["finish_reason"] in ("stop", "length")

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        done = subprocess.run(_serve_command(tiny_model_dir, taken.getsockname()[1]), capture_output=True, text=True,
                              timeout=300)
    finally:
        taken.close()
    assert done.returncode != 0 and "did not start" in done.stderr
