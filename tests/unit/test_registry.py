"""The method registry: every module asks it, a new method is one module plus one registry entry,
and what it says about each built-in method matches what the method really does."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import tiny_causal
from loraforge.adapters import apply_adapter, trainable_parameters
from loraforge.methods import registry
from loraforge.config import AdapterConfig, ConfigError, DataConfig, TrainConfig, load_config

BUILTIN = ["lora", "dora", "ia3", "prefix", "prompt", "adapter", "full"]  # qlora needs CUDA


@pytest.fixture
def lnorm():
    import lnorm_method

    spec = registry.register(lnorm_method.SPEC)  # the one registry entry
    yield spec
    registry.unregister(spec.name)


def test_registry_and_config_import_no_torch():
    code = ("import sys, loraforge.config, loraforge.methods.registry, loraforge.deploy.estimate; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_configurable_method_is_registered():
    assert set(registry.names()) == {"lora", "dora", "qlora", "ia3", "prefix", "prompt", "adapter", "full"}
    assert set(AdapterConfig.model_fields["method"].annotation.__args__) == set(registry.names())
    with pytest.raises(ConfigError, match="unknown method.*lora"):
        registry.get("lorra")


@pytest.mark.parametrize("method", BUILTIN)
def test_what_the_registry_says_matches_the_built_model(method):
    spec = registry.get(method)
    model = apply_adapter(tiny_causal("gemma3"), AdapterConfig(method=method, r=4, num_virtual_tokens=4,
                                                               bottleneck_size=8))
    assert registry.spec_for_model(model) is spec
    assert registry.can_merge_model(model) == (method in ("lora", "dora", "ia3"))  # full: nothing to merge
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None:
        assert peft_config.is_prompt_learning == spec.prompt_learning
        assert registry.spec_for_saved(peft_config.to_dict()) is spec  # what export reads back
    from loraforge.train.loop import packs

    assert packs(model, "causal", "auto", "cuda") == spec.packs


def test_saved_adapter_types():
    assert registry.spec_for_saved({"peft_type": "LORA", "use_dora": True}).name == "dora"
    assert registry.spec_for_saved({"peft_type": "LORA"}).name == "lora"
    assert registry.spec_for_saved({"peft_type": "FULL"}).name == "full"
    assert registry.spec_for_saved({"peft_type": "BOTTLENECK"}).name == "adapter"
    with pytest.raises(ConfigError, match="LOHA.*not written by a loraforge method"):
        registry.spec_for_saved({"peft_type": "LOHA"})
    assert not registry.can_merge_model(tiny_causal("gemma3"))  # a bare model has no adapter


def test_a_new_method_is_one_module_and_one_registry_entry(lnorm, tiny_tokenizer, tmp_path):
    from loraforge.data.formats import Example
    from loraforge.data.templates import encode_examples
    from loraforge.deploy.estimate import parameter_counts
    from loraforge.deploy.kaito import not_expressible
    from loraforge.export.run import ExportError, RunInfo, check_target
    from loraforge.train.loop import train

    # config: the method validates, and keys it does not read are refused
    cfg = load_config(None, ["adapter.method=lnorm"])
    with pytest.raises(ConfigError, match="adapter.r is not used by method lnorm"):
        load_config(None, ["adapter.method=lnorm", "adapter.r=4"])
    # build and train on the tiny model
    model = apply_adapter(tiny_causal("gemma3", vocab_size=len(tiny_tokenizer)), cfg.adapter)
    trainable, total = trainable_parameters(model)
    assert 0 < trainable < total
    assert parameter_counts(model.config.to_dict(), cfg)[1] == trainable  # the estimate asks its entry
    examples = [Example(source="A Pod is the smallest unit.", target="Pod 是最小的单元。")] * 4
    enc = encode_examples(tiny_tokenizer, examples, DataConfig(template="chatml"))
    result = train(model, enc, [], TrainConfig(steps=6, batch_size=4, lr=0.05, warmup_steps=0, eval_every=0,
                                               save_every=0), tmp_path, tiny_tokenizer.pad_token_id, progress=False)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    # merge/export/KAITO capability come from its entry
    assert registry.spec_for_model(model) is lnorm and lnorm.packs
    info = RunInfo(tmp_path, None, cfg, {"peft_type": "LNORM"}, lnorm)
    check_target(info, "merged")  # declared mergeable
    with pytest.raises(ExportError, match="KAITO serves LoRA adapters only"):
        check_target(info, "oci")
    assert any("'lnorm': KAITO tunes lora or qlora only" in n for n in not_expressible(cfg))


def test_unregistered_methods_are_refused_again(lnorm):
    registry.unregister("lnorm")
    with pytest.raises(ConfigError, match="allowed values"):
        load_config(None, ["adapter.method=lnorm"])
    registry.register(lnorm)


def test_each_method_reads_only_its_keys():
    for method in registry.names():
        spec = registry.get(method)
        for key, value in {"r": 64, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj"],
                           "num_virtual_tokens": 5, "bottleneck_size": 8}.items():
            overrides = [f"adapter.method={method}", f"adapter.{key}={value}"]
            if key in spec.fields:
                cfg = load_config(None, overrides)
                assert load_config(None, [f"{k}={v}" for k, v in  # the saved config loads back the same
                                          {f"adapter.{k}": v for k, v in cfg.adapter.model_dump().items()}.items()
                                          ]).adapter == cfg.adapter
            else:
                with pytest.raises(ConfigError, match=rf"adapter\.{key} is not used by method {method} \(it uses: "):
                    load_config(None, overrides)
