"""Export the real Gemma 3 270M with a LoRA adapter: merged safetensors and a q8_0 GGUF read back by transformers."""

import json

import pytest
import torch
import yaml

pytestmark = pytest.mark.integration

TEXTS = ["<start_of_turn>user\nTranslate: A Pod is the smallest deployable unit.<end_of_turn>\n<start_of_turn>model\n",
         "Kubernetes 是一个开源系统，用于自动部署容器化应用。  `kubectl get pods`"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import peft

    from loraforge.models.load import load_model

    loaded = load_model("gemma3-270m", dtype="fp32")
    torch.manual_seed(0)
    cfg = peft.LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                          init_lora_weights=False)
    model = peft.get_peft_model(loaded.model, cfg)
    with torch.no_grad():  # a trained-adapter-sized change: visible in the logits, not chaos
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    run = tmp_path_factory.mktemp("gemma-run")
    model.save_pretrained(run / "adapter")
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "gemma3-270m"}}))
    (run / "metrics.json").write_text(json.dumps({"task": "translate", "after": {"bleu": 1.0}}))
    ids = loaded.tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        want = model(**ids).logits
        with model.disable_adapter():
            base = model(**ids).logits
    mask = ids["attention_mask"].bool()
    assert (want[mask] - base[mask]).abs().max() > 0.5, "the adapter must change the logits"
    from gguf_checks import lora_weights

    return {"dir": run, "tokenizer": loaded.tokenizer, "ids": ids, "want": want, "weights": lora_weights(model)}


def test_merged_equals_unmerged(run, tmp_path):
    from transformers import AutoModelForCausalLM

    from loraforge.export.run import export_run

    res = export_run(run["dir"], "merged", tmp_path / "merged")
    assert res["dtype"] == "fp32"  # no training dtype recorded and model.dtype=auto: fp32
    card = (tmp_path / "merged" / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["base_model"] == "google/gemma-3-270m" and ".cache" not in card  # portable, not a cache path
    assert (tmp_path / "merged" / "generation_config.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    with torch.no_grad():
        got = merged(**run["ids"]).logits
    mask = run["ids"]["attention_mask"].bool()
    # (W + BA)x against Wx + B(Ax): fp32 rounding differs per layer and adds up over 18 layers to a few 1e-3 on
    # logits near 30 (a clean clone saw 4.3e-3 on 92 of 10.7M logits); the adapter moves them by more than 0.5
    torch.testing.assert_close(got[mask], run["want"][mask], atol=1e-2, rtol=1e-3)


def test_gguf_q8_0_round_trip(run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from loraforge.export.run import export_run

    path = export_run(run["dir"], "gguf", tmp_path / "gguf", gguf_type="q8_0")["path"]
    name = path.rsplit("/", 1)[1]
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "gguf"), gguf_file=name)
    for text in TEXTS:
        assert tok.encode(text) == run["tokenizer"].encode(text), text
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "gguf"), gguf_file=name, dtype=torch.float32).eval()
    with torch.no_grad():
        got = model(**run["ids"]).logits
    mask = run["ids"]["attention_mask"].bool()
    want = run["want"][mask]
    agree = (got[mask].argmax(-1) == want.argmax(-1)).float().mean().item()
    rel = ((got[mask] - want).abs().max() / want.abs().max()).item()
    assert agree > 0.9 and rel < 0.1, (agree, rel)
    # the logits above would agree as well without the adapter: its weights must be the merged ones
    from gguf_checks import assert_adapter_merged

    assert_adapter_merged(model, run["weights"])
