"""KAITO (kaito.sh) tuning and inference Workspaces, mapped from a loraforge config.

KAITO tunes its own preset models with its own Trainer script, configured by a ``training_config.yaml``
in a ConfigMap (sections ModelConfig, QuantizationConfig, LoraConfig, TrainingArguments, DataCollator,
DatasetConfig, as in KAITO's ``lora-params-template``). We translate what it can express and list,
in the rendered file's header (and on the terminal), every setting of ours that it cannot: those runs
will differ. A manifest that cannot work (a model KAITO has no tuning preset for, no registry for the
adapter image) is an error, not a note.
"""

from __future__ import annotations

import yaml

from loraforge.methods import registry
from loraforge.config import ConfigError, RunConfig
from loraforge.deploy.manifest import Options, Rendered, metadata, pvc, resource_name

# Hugging Face ids of models KAITO can tune -> KAITO preset names (presets/workspace/models/*).
KAITO_TUNING_PRESETS = {
    "microsoft/Phi-3-mini-4k-instruct": "phi-3-mini-4k-instruct",
    "microsoft/Phi-3-mini-128k-instruct": "phi-3-mini-128k-instruct",
    "microsoft/Phi-3-medium-4k-instruct": "phi-3-medium-4k-instruct",
    "microsoft/Phi-3-medium-128k-instruct": "phi-3-medium-128k-instruct",
    "tiiuae/falcon-7b": "falcon-7b",
    "tiiuae/falcon-7b-instruct": "falcon-7b-instruct",
    "Qwen/Qwen2.5-Coder-7B-Instruct": "qwen2.5-coder-7b-instruct",
}
KAITO_RESULTS = "/mnt/results"
_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "auto": "bfloat16"}
_SCHEDULES = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


def columns(d) -> tuple[str, str]:
    """KAITO's (context, response) columns for one task's data: the fields it names, else the packaged
    shapes' (PII records: text -> masked; pairs: the languages)."""
    if d.source_field or d.target_field:
        return d.source_field or d.src_lang, d.target_field or d.tgt_lang
    from loraforge.data.formats import PII_FIELDS

    return PII_FIELDS if d.task == "pii" else (d.src_lang, d.tgt_lang)


def training_config(cfg: RunConfig) -> dict:
    """KAITO's training_config.yaml content for ``cfg`` (lora or qlora)."""
    a, t, d = cfg.adapter, cfg.train, cfg.data
    context, response = columns(d.task_configs()[0][1])  # with data.tasks, the first task's (not_expressible says so)
    quantized = registry.get(a.method).kaito == "qlora"
    quant = {"load_in_4bit": quantized}
    if quantized:
        quant.update(bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype="bfloat16", bnb_4bit_use_double_quant=True)
    training_args = {
        "output_dir": KAITO_RESULTS, "max_steps": t.steps, "per_device_train_batch_size": t.batch_size,
        "gradient_accumulation_steps": t.grad_accum, "learning_rate": t.lr, "weight_decay": t.weight_decay,
        "warmup_steps": t.warmup_steps, "lr_scheduler_type": _SCHEDULES[t.schedule], "seed": t.seed,
        "group_by_length": t.length_grouping, "gradient_checkpointing": t.activation_checkpointing,
        "save_strategy": "steps" if t.save_every else "no", "logging_steps": 10,
        "ddp_find_unused_parameters": False,
    }
    if t.save_every:
        training_args["save_steps"] = t.save_every
    if t.max_grad_norm is not None:
        training_args["max_grad_norm"] = t.max_grad_norm
    dtype = _DTYPES[cfg.model.dtype]
    training_args["bf16" if dtype == "bfloat16" else "fp16"] = dtype != "float32"
    model_cfg = {"torch_dtype": dtype, "local_files_only": True, "device_map": "auto"}
    if cfg.model.revision:
        model_cfg["revision"] = cfg.model.revision
    return {"training_config": {
        "ModelConfig": model_cfg,
        "QuantizationConfig": quant,
        "LoraConfig": {"r": a.r, "lora_alpha": a.alpha, "lora_dropout": a.dropout,
                       "target_modules": a.target_modules},
        "TrainingArguments": training_args,
        "DataCollator": {"mlm": False},  # causal LM: next-token labels, not masked-LM
        "DatasetConfig": {"shuffle_dataset": True, "shuffle_seed": d.seed, "train_test_split": 1,
                          "context_column": context, "response_column": response},
    }}


def not_expressible(cfg: RunConfig) -> list[str]:
    """Our settings that KAITO's tuning job cannot express (it will run without them)."""
    lost = []
    d, a, t = cfg.data, cfg.adapter, cfg.train
    lost.append("loss masking: KAITO's DataCollatorForLanguageModeling trains on prompt and target tokens; "
                "loraforge trains on the target only")
    if d.system_prompt or d.template != "auto" or d.task_prefix:
        lost.append(f"data.template={d.template!r}, data.system_prompt, data.task_prefix: KAITO formats "
                    "context/response columns itself (only ModelConfig.chat_template is settable)")
    tasks = d.task_configs()
    if d.tasks:
        first = tasks[0][1]
        lost.append(f"data.tasks ({', '.join(name for name, _ in tasks)}) and their sampling (data.task_temperature, "
                    "data.task_weights): KAITO reads one dataset with one context/response column pair "
                    "(rendered as the first task's, {!r} -> {!r}) and draws its rows as they come".format(*columns(first)))
    limits = ", ".join(f"{name}: {task.max_length}" for name, task in tasks) if d.tasks else str(d.max_length)
    key = "max_length per task" if d.tasks else "data.max_length"
    lost.append(f"{key}={limits} (drop longer examples): KAITO keeps or truncates them")
    if any(task.dev for _, task in tasks) or t.eval_every:
        lost.append("data.dev / train.eval_every: KAITO only splits its input (DatasetConfig.train_test_split)")
    if any(task.test for _, task in tasks) or cfg.eval.before:
        lost.append("eval (BLEU/chrF before/after, data.test): KAITO tuning does not evaluate; "
                    "run `loraforge eval` on the adapter image")
    if d.max_train_examples:
        lost.append(f"data.max_train_examples={d.max_train_examples}")
    if t.packing is not False:
        lost.append("train.packing: KAITO's Trainer pads each batch")
    if t.max_minutes:
        lost.append(f"train.max_minutes={t.max_minutes:g}: KAITO runs all {t.steps} steps (TrainingArguments has no "
                    "time budget)")
    lost.append("train.target_only_logits / logits_chunk: KAITO's Trainer computes full logits "
                    "(memory: see `loraforge estimate` with train.target_only_logits=false)")
    if registry.get(a.method).kaito is None:
        kaito = [s for s in registry.names() if registry.get(s).kaito]
        lost.append(f"adapter.method={a.method!r}: KAITO tunes {' or '.join(kaito)} only; rendered as lora")
    if cfg.model.dtype == "auto":
        lost.append("model.dtype=auto: rendered as bfloat16 (KAITO GPUs)")
    return lost


def _preset(cfg: RunConfig, opts: Options) -> str:
    if opts.kaito_preset:
        return opts.kaito_preset
    if cfg.model.name in KAITO_TUNING_PRESETS:
        return KAITO_TUNING_PRESETS[cfg.model.name]
    raise ConfigError(f"--target kaito: model {cfg.model.name!r} is not a KAITO tuning preset, so KAITO would reject "
                      f"the Workspace. Pass --kaito-preset (KAITO tunes: {', '.join(sorted(KAITO_TUNING_PRESETS.values()))}) "
                      "with a matching model.name, or use --target job/pytorchjob/trainjob, which run loraforge itself")


def _adapter_image(opts: Options) -> str:
    if not opts.adapter_image:
        raise ConfigError("--target kaito: pass --adapter-image REGISTRY/REPO:TAG, where KAITO's tuning job pushes the "
                          "adapter and its inference Workspace pulls it (add --push-secret for a private registry)")
    return opts.adapter_image


def render_kaito(cfg: RunConfig, opts: Options) -> Rendered:
    from loraforge.deploy.estimate import estimate, kaito_instance_type

    name = resource_name(cfg, opts.name)
    preset, image, notes = _preset(cfg, opts), _adapter_image(opts), []
    if opts.kaito_instance_type:
        instance = opts.kaito_instance_type
    else:
        try:
            gpu_cfg = cfg.model_copy(deep=True)
            gpu_cfg.train.target_only_logits = False  # KAITO's Trainer keeps full logits
            instance, why = kaito_instance_type(estimate(gpu_cfg, "gpu").peak_mb)
            notes.append(f"instance type {instance} ({why}) from `loraforge estimate`; override with --instance-type")
        except ConfigError:  # a model we cannot size offline
            instance = "Standard_NC24ads_A100_v4"
            notes.append(f"instance type {instance}: a default (cannot size {cfg.model.name!r} offline); "
                         "override with --instance-type")
    labels = {"apps": name}
    config_name = f"{name}-tuning"
    cm_data = training_config(cfg)
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(config_name, opts),
          "data": {"training_config.yaml": yaml.safe_dump(cm_data, sort_keys=False)}}
    output = {"image": image}
    if opts.push_secret:
        output["imagePushSecret"] = opts.push_secret
    tuning = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": metadata(name, opts),
              "resource": {"instanceType": instance, "labelSelector": {"matchLabels": labels}},
              "tuning": {"preset": {"name": preset}, "method": registry.get(cfg.adapter.method).kaito or "lora",
                         "config": config_name,
                         "input": {"name": "data", "volumeSource": {"persistentVolumeClaim": {
                             "claimName": f"{name}-data"}}},
                         "output": output}}
    columns = cm_data["training_config"]["DatasetConfig"]
    notes.append(f"input: KAITO reads the dataset files from the PVC {name}-data (columns "
                 f"{columns['context_column']!r} -> {columns['response_column']!r}); copy {cfg.data.split_names('train')} there as jsonl")
    inference = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": metadata(f"{name}-infer", opts),
                 "resource": {"instanceType": instance, "labelSelector": {"matchLabels": {"apps": f"{name}-infer"}}},
                 "inference": {"preset": {"name": preset},
                               "adapters": [{"source": {"name": name, "image": image}, "strength": "1.0"}]}}
    notes += [f"KAITO cannot express: {x}" for x in not_expressible(cfg)]
    return Rendered("kaito", [pvc(f"{name}-data", opts, shared=False), cm, tuning, inference], notes)
