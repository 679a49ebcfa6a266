"""--format gguf-lora: the adapter alone as a llama.cpp/Ollama GGUF LoRA adapter, checked against PEFT."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from test_export import make_run

from loraforge.export.run import ExportError, export_run


def _read(path):
    from gguf import GGUFReader

    reader = GGUFReader(path)
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    tensors = {t.name: np.array(t.data, dtype=np.float32).reshape([int(x) for x in reversed(t.shape)])
               for t in reader.tensors}
    return fields, tensors


def test_adapter_gguf_metadata_names_and_deltas_equal_peft(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    run = make_run(tmp_path, tiny_model_dir)
    res = export_run(run, "gguf-lora", tmp_path / "out", gguf_type="f32")
    fields, tensors = _read(res["path"])
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    assert fields["general.architecture"] == "gemma3" and fields["adapter.lora.alpha"] == 8.0
    peft = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    a = peft["base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"]
    b = peft["base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight"]
    ga, gb = tensors["blk.1.attn_q.weight.lora_a"], tensors["blk.1.attn_q.weight.lora_b"]
    assert ga.shape == (4, 32) and gb.shape == (32, 4)  # [r, in] and [out, r], as llama.cpp expects
    delta = gb @ ga * 8.0 / ga.shape[0]  # llama.cpp's scale alpha / r
    np.testing.assert_allclose(delta, (b @ a * 8 / 4).numpy(), rtol=1e-5, atol=1e-6)
    assert len(tensors) == 2 * sum(k.endswith("lora_A.weight") for k in peft)
    assert {n.rsplit(".", 2)[0].split(".", 2)[-1] for n in tensors} >= {"attn_q", "attn_k", "attn_v", "attn_output",
                                                                          "ffn_gate", "ffn_up", "ffn_down"}


def test_modelfile_and_readme_beside_it(tmp_path, tiny_model_dir):
    run = make_run(tmp_path, tiny_model_dir)
    out = tmp_path / "out"
    export_run(run, "gguf-lora", out)
    text = (out / "Modelfile").read_text()
    lines = text.splitlines()
    assert "FROM ./base.gguf" in lines and "ADAPTER ./adapter.gguf" in lines  # a folder base has no GGUF of its own
    assert "<start_of_turn>user\n" in text and "{{ .Prompt }}<end_of_turn>\n<start_of_turn>model\n" in text
    stops = {json.loads(line.split(" ", 2)[2]) for line in lines if line.startswith("PARAMETER stop")}
    assert "<end_of_turn>" in stops
    assert "--lora adapter.gguf" in (out / "README.md").read_text()


def test_refuses_what_gguf_lora_cannot_carry(tmp_path, tiny_model_dir):
    with pytest.raises(ExportError, match="plain LoRA only"):
        export_run(make_run(tmp_path, tiny_model_dir, "dora"), "gguf-lora", tmp_path / "o1")
    with pytest.raises(ExportError, match="plain LoRA only"):
        export_run(make_run(tmp_path, tiny_model_dir, "prompt"), "gguf-lora", tmp_path / "o2")


def test_rslora_scale_is_folded_into_lora_b(tmp_path, tiny_model_dir):
    run = make_run(tmp_path, tiny_model_dir)
    cfg_path = run / "adapter" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "use_rslora": True}))
    _, plain = _read(export_run(make_run(tmp_path / "p", tiny_model_dir), "gguf-lora", tmp_path / "o1",
                                gguf_type="f32")["path"])
    _, rs = _read(export_run(run, "gguf-lora", tmp_path / "o2", gguf_type="f32")["path"])
    name = "blk.0.ffn_up.weight.lora_b"
    np.testing.assert_allclose(rs[name], plain[name] * 2.0, rtol=1e-6)  # alpha/sqrt(4) = 2 x alpha/4


def _llama(model_gguf, lora_gguf=None):
    import llama_cpp

    return llama_cpp.Llama(model_path=str(model_gguf), lora_path=lora_gguf and str(lora_gguf), n_ctx=128,
                           n_threads=1, logits_all=True, verbose=False, seed=0)


def _greedy(llm, prompt_ids, n):
    out = []
    for tok in llm.generate(prompt_ids, temp=0.0, top_k=1, reset=True):
        out.append(tok)
        if len(out) == n:
            break
    return out


def _logits(llm, ids):
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[len(ids) - 1])


def test_llama_cpp_applies_the_adapter_like_the_merged_model(tmp_path, tiny_model_dir, tiny_tokenizer):
    """llama.cpp running base GGUF + adapter GGUF = llama.cpp running the GGUF of loraforge's merged model.

    Both sides run in llama.cpp, so the comparison isolates the adapter (how llama.cpp renders the
    tiny base itself is test_export's GGUF round trip, not this file's concern).
    """
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from transformers import AutoModelForCausalLM

    from loraforge.export.gguf import write_gguf
    from loraforge.export.run import merged_model, read_run

    run = make_run(tmp_path, tiny_model_dir)
    base = write_gguf(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tiny_tokenizer, tmp_path / "base.gguf",
                      "f32")
    lora = export_run(run, "gguf-lora", tmp_path / "out", gguf_type="f32")["path"]
    merged, _ = merged_model(read_run(run))
    merged_gguf = write_gguf(merged, tiny_tokenizer, tmp_path / "merged.gguf", "f32")
    with_lora, plain, want = _llama(base, lora), _llama(base), _llama(merged_gguf)
    for text in ("Kubernetes is", "Use kubectl get pods", "The cluster"):
        ids = tiny_tokenizer.encode(text)
        got, expected, base_logits = _logits(with_lora, ids), _logits(want, ids), _logits(plain, ids)
        np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max())
        assert np.abs(base_logits - expected).max() > 0.1 * np.abs(expected).max()  # the adapter moved them
        assert _greedy(with_lora, ids, 8) == _greedy(want, ids, 8)
