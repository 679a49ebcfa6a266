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
