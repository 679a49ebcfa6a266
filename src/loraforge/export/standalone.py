"""What a merged model needs to be used on its own, as it was trained: a chat template that writes the
run's prompt format (loraforge's built-in chatml/gemma/plain turns, with the run's system prompt
when the caller gives none) and a generation config whose stop tokens end the assistant's turn.
"""

from __future__ import annotations

import json

from loraforge.config import DataConfig
from loraforge.data.templates import resolve_template, stop_token_ids

# Jinja, one per built-in template: the same text as data.templates.Template.prompt / chat_prompt.
_TURNS = {
    "chatml": ("{{ '<|im_start|>system\\n' + sys + '<|im_end|>\\n' if first and sys else '' }}"
               "{{ '<|im_start|>user\\n' + m['content'] + '<|im_end|>\\n<|im_start|>assistant\\n' }}",
               "{{ m['content'] + '<|im_end|>\\n' }}"),
    "gemma": ("{{ '<start_of_turn>user\\n' + (sys + '\\n\\n' if first and sys else '') + m['content']"
              " + '<end_of_turn>\\n<start_of_turn>model\\n' }}",
              "{{ m['content'] + '<end_of_turn>\\n' }}"),
    "plain": ("{{ (sys + '\\n\\n' if first and sys else '') + m['content'] + '\\n' }}",
              "{{ m['content'] }}"),
}


def chat_template(tokenizer, data: DataConfig) -> str | None:
    """A Jinja chat template for the run's prompt format; None when the tokenizer's own is the one used.

    User turns are written together with the assistant's opening (as training saw them), so
    ``add_generation_prompt`` adds nothing more.
    """
    name = resolve_template(tokenizer, data.template)
    if name == "model":
        return None
    user, assistant = _TURNS[name]
    default = json.dumps(data.system_prompt or "", ensure_ascii=False)
    bos = "{{ bos_token }}" if _adds_bos(tokenizer) else ""
    return (f"{bos}{{%- set given = messages | selectattr('role', 'equalto', 'system') | map(attribute='content') "
            f"| join('\\n\\n') -%}}{{%- set sys = given if given else {default} -%}}"
            "{%- set ns = namespace(first=true) -%}"
            "{%- for m in messages if m['role'] != 'system' -%}{%- set first = ns.first -%}"
            f"{{%- if m['role'] == 'user' -%}}{user}{{%- else -%}}{assistant}{{%- endif -%}}"
            "{%- set ns.first = false -%}{%- endfor -%}")


def _adds_bos(tokenizer) -> bool:
    ids = tokenizer("", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def make_standalone(model, tokenizer, data: DataConfig, family: str) -> None:
    """Set the chat template (causal models) and the generation config's stop and pad tokens in place."""
    if family == "causal":
        template = chat_template(tokenizer, data)
        if template is not None:
            tokenizer.chat_template = template
        stops = stop_token_ids(tokenizer, data.template)
    else:
        stops = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    gen = model.generation_config
    if stops:
        gen.eos_token_id = stops if len(stops) > 1 else stops[0]
    if tokenizer.pad_token_id is not None:
        gen.pad_token_id = tokenizer.pad_token_id
