"""Prompt templates and loss masking: the place where most silent fine-tuning bugs live.

An example becomes ``prompt + target``; only the target tokens are trained, and the target always
ends with the template's end-of-turn marker (or EOS) so the model learns to stop. Prompt and target
are tokenized separately and concatenated, so a label boundary never depends on how a tokenizer
merges text across it. Examples longer than ``max_length`` are dropped, never truncated: a cut
target teaches the model to stop mid-sentence.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from loraforge.config import ConfigError, DataConfig
from loraforge.data.formats import Example

IGNORE = -100  # the label of a token that is not trained (PyTorch's cross-entropy ignore_index)


@dataclass(frozen=True)
class Template:
    name: str
    end_of_turn: str  # what closes the assistant's turn; trained, and the stop string at generation

    def prompt(self, source: str, system: str | None) -> str:
        if self.name == "chatml":
            head = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
            return f"{head}<|im_start|>user\n{source}<|im_end|>\n<|im_start|>assistant\n"
        if self.name == "gemma":  # Gemma has no system role: the system text opens the user turn
            user = f"{system}\n\n{source}" if system else source
            return f"<start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n"
        if self.name == "plain":
            return f"{system}\n\n{source}\n" if system else f"{source}\n"
        raise ValueError(self.name)


BUILTIN = {
    "chatml": Template("chatml", "<|im_end|>"),
    "gemma": Template("gemma", "<end_of_turn>"),
    "plain": Template("plain", ""),  # ends with EOS only
}


_FACTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _facts(tokenizer, template: str) -> tuple[str, list[int], list[int]]:
    """(resolved template, stop ids, BOS prefix), computed once per tokenizer and template: looking
    at a 262k vocabulary for every example would dominate data preparation."""
    per_tokenizer = _FACTS.setdefault(tokenizer, {})
    key = (template, getattr(tokenizer, "chat_template", None))
    if key not in per_tokenizer:
        name = _resolve_template(tokenizer, template)
        per_tokenizer[key] = (name, _stop_token_ids(tokenizer, name), _bos(tokenizer, ""))
    return per_tokenizer[key]


def resolve_template(tokenizer, name: str) -> str:
    return _facts(tokenizer, name)[0]


def _resolve_template(tokenizer, name: str) -> str:
    """'auto' = the model's own chat template if it has one, Gemma turns for Gemma vocabularies, else ChatML."""
    if name == "model" and not getattr(tokenizer, "chat_template", None):
        name_or_path = getattr(tokenizer, "name_or_path", "") or "this model"
        raise ConfigError(f"data.template=model: the tokenizer of {name_or_path} has no chat template of its own; "
                          "use data.template=auto (the model's template where there is one, else Gemma turns or "
                          "ChatML) or name one: chatml, gemma, plain")
    if name != "auto":
        return name
    if getattr(tokenizer, "chat_template", None):
        return "model"
    if "<start_of_turn>" in tokenizer.get_vocab():
        return "gemma"
    return "chatml"


def _bos(tokenizer, text: str) -> list[int]:
    """BOS when the tokenizer itself would add one (Gemma, Llama) and the text lacks it (Qwen has none)."""
    bos = tokenizer.bos_token
    if bos is None or (text and text.startswith(bos)):
        return []
    adds_bos = tokenizer.encode("a", add_special_tokens=True)[:1] == [tokenizer.bos_token_id]
    return [tokenizer.bos_token_id] if adds_bos else []


def _system(example: Example, cfg: DataConfig) -> str | None:
    return example.system if example.system is not None else cfg.system_prompt


def _source_text(example: Example, cfg: DataConfig) -> str:
    return f"{cfg.task_prefix}{example.source}" if cfg.task_prefix else example.source


def _model_template_parts(tokenizer, source: str, system: str | None, target: str | None) -> tuple[str, str]:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": source}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if target is None:
        return prompt, ""
    full = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": target}], tokenize=False
    )
    if not full.startswith(prompt):
        raise ValueError("the model's chat template renders the prompt differently with and without the answer")
    return prompt, full[len(prompt):]


def _with_bos(tokenizer, text: str) -> str:
    """Prompts for generation carry BOS as text exactly when training put the BOS id first, so the
    model sees at inference the sequence it was trained on (tokenize them with add_special_tokens=False)."""
    return (tokenizer.bos_token + text) if _facts(tokenizer, "plain")[2] and not text.startswith(tokenizer.bos_token) else text


def prompt_text(tokenizer, source: str, cfg: DataConfig, system: str | None = None) -> str:
    """The text a causal model sees before its answer (for generation and serving), BOS included."""
    system = cfg.system_prompt if system is None else system
    example = Example(source=source, target="", system=system)
    name = resolve_template(tokenizer, cfg.template)
    if name == "model":
        return _with_bos(tokenizer, _model_template_parts(tokenizer, _source_text(example, cfg), system or None, None)[0])
    return _with_bos(tokenizer, BUILTIN[name].prompt(_source_text(example, cfg), system or None))


def generation_prompts(tokenizer, sources: list[str], cfg: DataConfig, family: str = "causal",
                       systems: list[str | None] | None = None) -> tuple[list[str], list[int] | None]:
    """(prompts, stop ids) to generate answers to ``sources`` exactly as training framed them.

    Causal models: the template's prompt (``systems[i]`` or data.system_prompt) and its stop tokens.
    Seq2seq models: the source (with data.task_prefix) goes to the encoder; the model's EOS stops.
    """
    if family != "causal":
        return [_source_text(Example(source=s, target=""), cfg) for s in sources], None
    systems = systems or [None] * len(sources)
    prompts = [prompt_text(tokenizer, s, cfg, system) for s, system in zip(sources, systems)]
    return prompts, stop_token_ids(tokenizer, cfg.template)


def chat_prompt(tokenizer, messages: list[dict], template: str = "auto") -> str:
    """An OpenAI-style message list as one prompt, ending where the assistant speaks."""
    name = resolve_template(tokenizer, template)
    if name == "model":
        return _with_bos(tokenizer, tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system") or None
    tpl = BUILTIN[name]
    turns = [m for m in messages if m["role"] != "system"]
    text = ""
    for i, m in enumerate(turns):
        if m["role"] == "user":
            part = tpl.prompt(m["content"], system if i == 0 else None)
            text += part
        else:  # an earlier assistant turn, closed like a trained target
            text += m["content"] + tpl.end_of_turn + ("\n" if tpl.name != "plain" else "")
    return _with_bos(tokenizer, text)


def stop_token_ids(tokenizer, template: str) -> list[int]:
    """Token ids that end generation: EOS plus the template's end-of-turn, when it is one token."""
    return list(_facts(tokenizer, template)[1])


def _stop_token_ids(tokenizer, name: str) -> list[int]:
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    marker = BUILTIN[name].end_of_turn if name in BUILTIN else None
    if name == "model":
        for candidate in ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end|>"):
            if candidate in tokenizer.get_vocab():
                marker = candidate
                break
    if marker:
        marker_ids = tokenizer.encode(marker, add_special_tokens=False)
        if len(marker_ids) == 1 and marker_ids[0] not in ids:
            ids.append(marker_ids[0])
    return ids


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    too_long: bool = False  # over max_length: dropped by the trainer, reported by `data check`


def encode_example(tokenizer, example: Example, cfg: DataConfig, family: str = "causal") -> Encoded:
    """Token ids and labels for one training example (labels are IGNORE outside the target)."""
    return encode_examples(tokenizer, [example], cfg, family)[0]


def _prompt_and_target(tokenizer, name: str, example: Example, cfg: DataConfig) -> tuple[str, str]:
    system = _system(example, cfg) or None
    source = _source_text(example, cfg)
    if name == "model":
        return _model_template_parts(tokenizer, source, system, example.target)
    tpl = BUILTIN[name]
    return tpl.prompt(source, system), example.target + tpl.end_of_turn


def encode_examples(tokenizer, examples: list[Example], cfg: DataConfig, family: str = "causal") -> list[Encoded]:
    """``encode_example`` for many examples, tokenized in one batch call (fast tokenizers parallelize)."""
    if family == "seq2seq":
        return [_encode_seq2seq(tokenizer, e, cfg) for e in examples]
    if family == "tagger":  # the text and a tag per token (model.head=tagger), no prompt, no target
        return encode_tagged(tokenizer, examples, cfg.max_length)
    name, stops, bos = _facts(tokenizer, cfg.template)
    parts = [_prompt_and_target(tokenizer, name, e, cfg) for e in examples]
    if not parts:
        return []
    prompt_ids = tokenizer([p for p, _ in parts], add_special_tokens=False)["input_ids"]
    target_ids = tokenizer([t for _, t in parts], add_special_tokens=False)["input_ids"]
    out = []
    for (prompt, _), p_ids, t_ids in zip(parts, prompt_ids, target_ids):
        p_ids = (bos if not (tokenizer.bos_token and prompt.startswith(tokenizer.bos_token)) else []) + list(p_ids)
        t_ids = list(t_ids)
        if not t_ids or t_ids[-1] not in stops:
            # The end-of-turn marker is not a single token here (e.g. ChatML text on a Gemma
            # vocabulary): EOS closes the target, so generation still has a token to stop on.
            t_ids.append(tokenizer.eos_token_id)
        labels = [IGNORE] * len(p_ids) + t_ids
        out.append(Encoded(p_ids + t_ids, labels, too_long=len(labels) > cfg.max_length))
    return out


def encode_tagged(tokenizer, examples: list[Example], max_length: int) -> list[Encoded]:
    """Rows for a PII tagger (``model.head=tagger``): the text's tokens (with the tokenizer's special
    tokens) and one tag per token (``data/pii_tags.py``); rows over ``max_length`` tokens are flagged ``too_long``."""
    from loraforge.data.pii_tags import example_spans, token_labels

    if not examples:
        return []
    enc = tokenizer([e.source for e in examples], return_offsets_mapping=True)
    out = []
    for e, ids, offsets in zip(examples, enc["input_ids"], enc["offset_mapping"]):
        labels = token_labels(e.source, example_spans(e), [tuple(o) for o in offsets])
        out.append(Encoded(list(ids), labels, too_long=len(ids) > max_length))
    return out


def lang_code(codes, lang: str) -> str | None:
    """mBART's code for a short language name: 'zh' -> 'zh_CN', 'en' -> 'en_XX' (exact codes pass through)."""
    codes = list(codes)
    if lang in codes:
        return lang
    return next((c for c in codes if c.split("_")[0] == lang), None)


def set_seq2seq_langs(tokenizer, cfg: DataConfig) -> int | None:
    """Point an mBART-style tokenizer at data.src_lang/tgt_lang ('en' -> 'en_XX'); return the id of the
    target language code when it opens the target (mBART-50: generation must force it as first token)."""
    codes = getattr(tokenizer, "lang_code_to_id", None)
    if not codes or not hasattr(tokenizer, "src_lang"):
        return None
    src, tgt = lang_code(codes, cfg.src_lang), lang_code(codes, cfg.tgt_lang)
    if src is None or tgt is None:
        raise ConfigError(f"data.src_lang={cfg.src_lang!r}/tgt_lang={cfg.tgt_lang!r}: this tokenizer has no such "
                         f"language code; it has: {', '.join(codes)}")
    if (tokenizer.src_lang, tokenizer.tgt_lang) != (src, tgt):
        tokenizer.src_lang, tokenizer.tgt_lang = src, tgt
    first = tokenizer(text_target="a")["input_ids"][0]
    return codes[tgt] if first == codes[tgt] else None


def _encode_seq2seq(tokenizer, example: Example, cfg: DataConfig) -> Encoded:
    """Encoder-decoder: source to the encoder, target (with EOS, and mBART's language code) as labels."""
    set_seq2seq_langs(tokenizer, cfg)
    enc = tokenizer(_source_text(example, cfg), text_target=example.target, add_special_tokens=True)
    input_ids, labels = list(enc["input_ids"]), list(enc["labels"])
    too_long = max(len(input_ids), len(labels)) > cfg.max_length
    return Encoded(input_ids, labels, too_long=too_long)


def check_encoded(tokenizer, enc: Encoded, cfg: DataConfig, family: str = "causal") -> list[str]:
    """Problems with one encoded example, as messages; an empty list means it trains as intended."""
    problems = []
    trained = [t for t in enc.labels if t != IGNORE]
    if not trained:
        problems.append("no trained token")
    elif family == "causal" and trained[-1] not in stop_token_ids(tokenizer, cfg.template):
        problems.append(f"the end-of-turn/EOS token is not trained (last trained token {trained[-1]})")
    if family == "causal" and enc.labels and enc.labels[-1] == IGNORE and trained:
        problems.append("tokens after the target are untrained: the target is not at the end")
    if enc.too_long:
        problems.append(f"{len(enc.input_ids)} tokens > data.max_length={cfg.max_length}: would be truncated past its target (dropped)")
    return problems
