"""What a run leaves on disk, and reading it back.

Adapters are written in the standard PEFT format (``adapter_config.json`` +
``adapter_model.safetensors``), so ``peft.PeftModel.from_pretrained(base, folder)`` loads them. Every
folder is written under a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from peft import PeftModel
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from olora.errors import OloraError
from olora.store.io import replace_dir

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def save_adapter(model: PeftModel, name: str, folder: Path) -> None:
    """Save adapter ``name`` alone as a plain PEFT adapter folder."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = get_peft_model_state_dict(model, adapter_name=name)
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp / ADAPTER_WEIGHTS))
    model.peft_config[name].save_pretrained(str(tmp))
    replace_dir(tmp, folder)


def load_safetensors_dir(folder: Path) -> dict:
    """Every tensor of every ``*.safetensors`` file in ``folder`` (a sharded checkpoint's shards)."""
    state = {}
    for path in sorted(Path(folder).glob("*.safetensors")):
        state.update(load_file(str(path)))
    return state


def load_model_weights(model: torch.nn.Module, folder: Path) -> None:
    """Load a whole model saved with ``save_pretrained`` into ``model``; every key must fit (a tied weight
    that the checkpoint leaves out excepted), or a one-line error names the keys that do not."""
    result = model.load_state_dict(load_safetensors_dir(folder), strict=False)
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    missing = [k for k in result.missing_keys if k not in tied]
    if missing or result.unexpected_keys:
        raise OloraError(
            f"{str(folder)!r} does not fit the model (missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}): "
            "it was saved from another model; delete that stage folder to train it again"
        )


def load_adapter_weights(model: PeftModel, name: str, folder: Path) -> None:
    """Fill the existing adapter ``name`` with the weights saved in ``folder``."""
    state = load_file(str(folder / ADAPTER_WEIGHTS))
    result = set_peft_model_state_dict(model, state, adapter_name=name)
    unexpected = [k for k in result.unexpected_keys if "lora_" in k]
    if unexpected:
        raise ValueError(f"{folder}: weights do not fit adapter {name!r}: {unexpected[:3]}")
