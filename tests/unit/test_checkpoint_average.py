import pytest
import torch
from safetensors.torch import load_file, save_file

from loraforge.bench import checkpoint_average
from loraforge.runs import RunDir


def _run(tmp_path, finals: float, checkpoints: list[float], extra_key: bool = False):
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    save_file({"base_model.model.model.layers.0.q_proj.lora_A.weight": torch.full((2, 3), finals),
               "base_model.model.score.weight": torch.full((4,), finals)}, str(run / "adapter" / "adapter_model.safetensors"))
    (run / "adapter" / "tagger.json").write_text("{}")
    (run / "config.yaml").write_text("model: {}\n")
    for i, value in enumerate(checkpoints):
        folder = run / "checkpoints" / f"step-{(i + 1) * 40:06d}"
        folder.mkdir(parents=True)
        weights = {"base_model.model.model.layers.0.q_proj.lora_A.default.weight": torch.full((2, 3), value),
                   "base_model.model.score.modules_to_save.default.weight": torch.full((4,), value)}
        if extra_key:
            weights["base_model.model.model.layers.1.q_proj.lora_A.default.weight"] = torch.zeros(1)
        save_file(weights, str(folder / "trainable.safetensors"))
    return run


def test_the_adapter_is_the_mean_of_the_final_weights_and_the_kept_checkpoints(tmp_path):
    run = _run(tmp_path, 3.0, [0.0, 6.0])
    checkpoint_average.main([str(run), "--out", str(tmp_path / "avg")])
    mean = load_file(str(tmp_path / "avg" / "adapter" / "adapter_model.safetensors"))
    assert torch.equal(mean["base_model.model.score.weight"], torch.full((4,), 3.0))
    assert torch.equal(mean["base_model.model.model.layers.0.q_proj.lora_A.weight"], torch.full((2, 3), 3.0))
    assert (tmp_path / "avg" / "adapter" / "tagger.json").exists() and (tmp_path / "avg" / "config.yaml").exists()
    _, n = checkpoint_average.average(RunDir(_run(tmp_path / "b", 1.0, [2.0])))
    assert n == 2
    with pytest.raises(SystemExit, match="exists"):  # never over an existing folder
        checkpoint_average.main([str(run), "--out", str(tmp_path / "avg")])


def test_a_checkpoint_of_other_weights_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not the adapter's"):
        checkpoint_average.average(RunDir(_run(tmp_path, 1.0, [2.0], extra_key=True)))
