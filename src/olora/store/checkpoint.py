"""Step checkpoints and manifests: a run killed at any moment resumes to the same numbers.

A step checkpoint holds everything that decides the rest of the task: the trainable weights, the
optimizer state, the RNG states of the CPU and of every CUDA device (dropout) and the step reached;
the data order is a pure function of (seed, epoch), so the step is enough to find the next batch. It is written to a
temporary folder and renamed into place, with a manifest of sha256 digests that is checked before
anything saved is used again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from olora.core.sharding import copy_into, is_shard, scatter_optimizer_state
from olora.seeding import set_rng_state
from olora.store.io import atomic_write_json, replace_dir

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, files: list[str]) -> None:
    """Record sha256 of ``files`` (relative to ``folder``) in ``folder/manifest.json``."""
    atomic_write_json(folder / MANIFEST, {name: sha256(folder / name) for name in sorted(files)})


def verify_manifest(folder: Path) -> list[str]:
    """Names of files that are missing or differ from the manifest (the manifest itself if unreadable)."""
    try:
        expected = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return [MANIFEST]
    return [
        name for name, digest in expected.items() if not (folder / name).is_file() or sha256(folder / name) != digest
    ]


def _trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def save_step_checkpoint(
    folder: Path, weights: dict[str, torch.Tensor], optimizer_state: dict, step: int, rng: list[dict]
) -> None:
    """Trainable weights (whole, by name), optimizer state, step and ``rng`` (every process's RNG state, by
    rank). A sharded run's optimizer state is the gathered one, ``{"gathered": state keyed by name}``."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(weights, str(tmp / "weights.safetensors"))
    torch.save(
        {"optimizer": optimizer_state, "rng": rng, "step": step},
        tmp / "trainer_state.pt",
    )
    write_manifest(tmp, ["weights.safetensors", "trainer_state.pt"])
    replace_dir(tmp, folder)


def load_step_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, rank: int = 0) -> int:
    """Restore weights, optimizer and this process's (``rank``) RNG from ``folder``; return the step, or 0
    if unusable."""
    if not folder.is_dir():
        return 0
    bad = verify_manifest(folder)
    if bad:
        log.warning("checkpoint %s is damaged (%s): the task restarts from step 0", folder, ", ".join(bad))
        shutil.rmtree(folder, ignore_errors=True)
        return 0
    params = _trainable(model)
    weights = load_file(str(folder / "weights.safetensors"))
    if set(weights) != set(params):
        log.warning("checkpoint %s does not match the current adapter: the task restarts", folder)
        return 0
    state = torch.load(folder / "trainer_state.pt", weights_only=False)
    sharded = any(is_shard(p) for p in params.values())
    if sharded != ("gathered" in state["optimizer"]):
        log.warning("checkpoint %s was written by a run sharded otherwise: the task restarts", folder)
        return 0
    for name, value in weights.items():
        copy_into(params[name], value)
    if sharded:
        scatter_optimizer_state(model, optimizer, state["optimizer"]["gathered"])
    else:
        optimizer.load_state_dict(state["optimizer"])
    rng = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]  # olora < 0.3: rank 0's only
    if rank >= len(rng):
        log.warning("checkpoint %s has no RNG state of process %d: the task restarts", folder, rank)
        return 0
    set_rng_state(rng[rank])
    log.info("resuming from %s at step %d", folder, state["step"])
    return int(state["step"])


class StepCheckpoints:
    """The step checkpoints of one training stage, in ``folder`` (what ``train_task`` resumes from)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def load(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, rank: int = 0) -> int:
        return load_step_checkpoint(self.folder, model, optimizer, rank)

    def save(self, weights: dict[str, torch.Tensor], optimizer_state: dict, step: int, rng: list[dict]) -> None:
        save_step_checkpoint(self.folder, weights, optimizer_state, step, rng)
