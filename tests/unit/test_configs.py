"""Every shipped preset loads and validates, and overrides behave."""

from pathlib import Path

import pytest

from loraforge.config import ConfigError, RunConfig, load_config

PRESETS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_preset_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    assert load_config(path, ["train.steps=7"]).train.steps == 7


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_config_show_renders_every_preset(path):
    """``loraforge config show`` prints every key, data.tasks entries included (as YAML mappings)."""
    from loraforge.cli.config_show import show_config

    cfg = load_config(path)
    text = show_config(cfg, str(path))
    assert "train.steps = " in text
    if cfg.data.tasks:
        line = next(l for l in text.splitlines() if l.startswith("data.tasks = "))
        assert all(f"name: {t.name}" in line for t in cfg.data.tasks if t.name)


def test_presets_exist():
    assert {"demo.yaml", "k8s-en-zh-gemma3-270m.yaml"} <= {p.name for p in PRESETS}


def test_unknown_key_names_the_key_and_the_allowed_ones():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["train.stepz=3"])
    assert "train.stepz" in str(e.value) and "steps" in str(e.value)


def test_bad_value_lists_allowed_values():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["adapter.method=lorax"])
    assert "adapter.method" in str(e.value) and "'dora'" in str(e.value)


def test_a_key_the_method_does_not_read_is_an_error(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(None, ["adapter.r=64", "adapter.method=prefix"])
    assert "adapter.r is not used by method prefix (it uses: num_virtual_tokens)" in str(e.value)
    path = tmp_path / "run.yaml"
    path.write_text("adapter:\n  method: adapter\n  r: 8\n  alpha: 16\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(path) in str(e.value) and "adapter.alpha, adapter.r are not used by method adapter" in str(e.value)
    assert load_config(None, ["adapter.method=prefix", "adapter.num_virtual_tokens=8"]).adapter.num_virtual_tokens == 8


def test_saved_configs_load_back_under_the_check(tmp_path):
    cfg = load_config(None, ["adapter.method=prompt", "adapter.num_virtual_tokens=12"])
    assert "r:" not in cfg.to_yaml().split("adapter:")[1].split("train:")[0]  # only the keys the method reads
    path = tmp_path / "config.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg
    # a config.yaml written before the check lists every key at its default: still loads
    path.write_text("adapter:\n  method: prefix\n  r: 16\n  alpha: 32.0\n  dropout: 0.0\n  target_modules: all-linear\n"
                    "  num_virtual_tokens: 20\n  bottleneck_size: 64\n")
    assert load_config(path).adapter.method == "prefix"


def test_for_method_keeps_only_what_the_new_method_reads():
    lora = load_config(None, ["adapter.r=4"]).adapter
    assert lora.for_method("dora").r == 4
    prefix = lora.for_method("prefix")
    assert prefix.method == "prefix" and prefix.unused_keys() == []
