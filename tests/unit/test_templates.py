import pytest

from loraforge.config import DataConfig
from loraforge.data.formats import Example
from loraforge.data.templates import (IGNORE, Encoded, chat_prompt, check_encoded, encode_example, prompt_text,
                                      resolve_template, stop_token_ids)

EX = Example(source="A Pod is small.", target="Pod 是最小的。")


def trained_text(tok, enc):
    return tok.decode([t for t in enc.labels if t != IGNORE])


@pytest.mark.parametrize("template,stop", [("gemma", "<end_of_turn>"), ("chatml", "<|im_end|>")])
def test_only_target_and_end_of_turn_are_trained(tiny_tokenizer, template, stop):
    cfg = DataConfig(template=template)
    enc = encode_example(tiny_tokenizer, EX, cfg)
    assert trained_text(tiny_tokenizer, enc) == EX.target + stop
    first = enc.labels.index(next(t for t in enc.labels if t != IGNORE))
    prompt = tiny_tokenizer.decode(enc.input_ids[:first])
    assert prompt == prompt_text(tiny_tokenizer, EX.source, cfg)
    assert EX.source in prompt and cfg.system_prompt in prompt
    assert enc.labels[-1] in stop_token_ids(tiny_tokenizer, template)
    assert check_encoded(tiny_tokenizer, enc, cfg) == []


def test_plain_template_ends_with_eos(tiny_tokenizer):
    cfg = DataConfig(template="plain", system_prompt=None)
    enc = encode_example(tiny_tokenizer, EX, cfg)
    assert enc.labels[-1] == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.decode(enc.input_ids) == f"{EX.source}\n{EX.target}<eos>"


def test_auto_prefers_the_models_own_chat_template(tiny_tokenizer):
    tok = type(tiny_tokenizer).from_pretrained  # noqa: F841 (keep the session tokenizer unchanged)
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    assert resolve_template(tok, "auto") == "model"
    enc = encode_example(tok, EX, DataConfig())
    assert trained_text(tok, enc).startswith(EX.target + "<|im_end|>")
    assert enc.labels[-1] != IGNORE
    assert resolve_template(tiny_tokenizer, "auto") == "gemma"  # has <start_of_turn>, no template


def test_model_template_without_one_is_a_clear_error(tiny_tokenizer):
    from loraforge.config import ConfigError

    # a ConfigError (the CLI prints it as one line, exit 2), naming the fix
    with pytest.raises(ConfigError, match=r"no chat template.*data\.template=auto.*chatml"):
        encode_example(tiny_tokenizer, EX, DataConfig(template="model"))


def test_pad_equal_to_eos_still_trains_eos(tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.pad_token = tok.eos_token
    enc = encode_example(tok, EX, DataConfig(template="plain"))
    assert enc.labels[-1] == tok.eos_token_id == tok.pad_token_id


def test_too_long_examples_are_flagged_not_truncated(tiny_tokenizer):
    cfg = DataConfig(max_length=16)
    enc = encode_example(tiny_tokenizer, EX, cfg)
    assert enc.too_long and len(enc.input_ids) > 16
    assert trained_text(tiny_tokenizer, enc) == EX.target + "<end_of_turn>"
    assert any("max_length" in p for p in check_encoded(tiny_tokenizer, enc, cfg))


def test_check_catches_the_silent_bugs(tiny_tokenizer):
    cfg = DataConfig()
    good = encode_example(tiny_tokenizer, EX, cfg)
    nothing = Encoded(good.input_ids, [IGNORE] * len(good.labels))
    assert check_encoded(tiny_tokenizer, nothing, cfg) == ["no trained token"]
    no_stop = Encoded(good.input_ids, good.labels[:-1] + [IGNORE])
    problems = check_encoded(tiny_tokenizer, no_stop, cfg)
    assert any("end-of-turn" in p for p in problems)


def test_chat_prompt_matches_prompt_text(tiny_tokenizer):
    cfg = DataConfig()
    messages = [{"role": "system", "content": cfg.system_prompt}, {"role": "user", "content": EX.source}]
    assert chat_prompt(tiny_tokenizer, messages) == prompt_text(tiny_tokenizer, EX.source, cfg)


def test_generation_prompt_has_exactly_the_training_prompt_ids(tiny_tokenizer):
    """A tokenizer that adds BOS (Gemma, Llama): training puts BOS first, so generation must too."""
    import copy

    from tokenizers.processors import TemplateProcessing

    tok = copy.deepcopy(tiny_tokenizer)
    tok._tokenizer.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", tok.bos_token_id)])
    assert tok.encode("a")[0] == tok.bos_token_id
    cfg = DataConfig()
    enc = encode_example(tok, EX, cfg)
    n_prompt = enc.labels.index(next(t for t in enc.labels if t != IGNORE))
    assert enc.input_ids[0] == tok.bos_token_id and enc.input_ids[1] != tok.bos_token_id
    generation_ids = tok(prompt_text(tok, EX.source, cfg), add_special_tokens=False)["input_ids"]
    assert generation_ids == enc.input_ids[:n_prompt]
    chat_ids = tok(chat_prompt(tok, [{"role": "system", "content": cfg.system_prompt},
                                     {"role": "user", "content": EX.source}]), add_special_tokens=False)["input_ids"]
    assert chat_ids == generation_ids
