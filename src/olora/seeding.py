"""Seeds derived from (run seed, purpose, index) without collisions, and torch's RNG states.

``seed + index`` would give seed s, task k+1 the same adapter initialisation as seed s+1, task k;
hashing the whole tuple makes every (seed, purpose, index) its own stream.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, purpose: str, index: int = 0) -> int:
    """A 31-bit seed from sha256("seed:purpose:index")."""
    digest = hashlib.sha256(f"{seed}:{purpose}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def rng_state() -> dict:
    """torch's RNG states: the CPU generator and, where CUDA is up, every device's (dropout on a GPU
    draws from the device's generator, so restoring the CPU one alone would not make resume exact)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict | torch.Tensor) -> None:
    if isinstance(state, torch.Tensor):  # checkpoints of olora < 0.2 hold the CPU state only
        state = {"cpu": state}
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
