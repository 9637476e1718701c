"""Sharded training with FSDP2 (``torch.distributed.fsdp.fully_shard``) through accelerate.

What is sharded, and why:

* **The base model's weights are sharded** over the processes: between forwards each process holds 1/N of
  every weight; FSDP2 all-gathers one transformer block for its forward (and again for its backward) and
  frees it after. This is the memory that outgrows one device (a 13B base is 26 GB in bf16).
* **Full fine-tuning** (``seqft``, ``replay_ft``, …): every weight, its gradient (reduce-scattered) and its
  AdamW moments are sharded: 16 bytes per parameter become 16/N.
* **LoRA adapters stay whole on every process** (FSDP2's ignored parameters), the new one and the past ones:
  they are < 1 % of the weights, the O-LoRA penalty reads every full ``lora_A`` row of the past and the new
  adapter at every step, and saving, exporting and merging read them directly, with no gather. Their
  gradients are averaged over the processes here, once per optimizer step (what DDP does).
* **A shared input embedding stays whole** (T5's, used by the encoder, the decoder and the tied LM head):
  FSDP2 cannot put one parameter in two groups; its gradient is averaged as the adapters' are.
* **Merging a past adapter** into the sharded base adds each process's rows of s·B·A to its own shard of
  W0 (no communication: every process holds the whole adapter).
* **Saving a whole model** gathers the full state dict on the main process (accelerate's ``get_state_dict``);
  a step checkpoint gathers the full weights and optimizer state the same way, and a resume scatters them.

accelerate 1.15 turns FSDP on only for accelerator devices (``AcceleratorState`` ignores the plugin for
``MULTI_CPU``), while FSDP2 itself runs on CPU processes with gloo; ``enable_cpu_fsdp`` switches the state
to FSDP there, so the CPU test runs the same ``accelerator.prepare`` path that GPUs run.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

from olora.errors import OloraError


def fsdp_requested() -> bool:
    """accelerate's launcher (``--use_fsdp`` or a config file with ``distributed_type: FSDP``) sets this."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def enable_cpu_fsdp(accelerator: Accelerator) -> None:
    """Check the FSDP version, and turn FSDP2 on for CPU processes, which accelerate leaves as plain DDP."""
    if not fsdp_requested():
        return
    state = accelerator.state
    if state.distributed_type == DistributedType.MULTI_CPU:
        # both shared states: a later AcceleratorState() copies PartialState's type over its own
        PartialState().distributed_type = state.distributed_type = DistributedType.FSDP
        state.fsdp_plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* variables the launcher set
    plugin = getattr(state, "fsdp_plugin", None)
    if state.distributed_type == DistributedType.FSDP and (plugin is None or plugin.fsdp_version != 2):
        raise OloraError(
            "olora shards with FSDP2 only: set fsdp_version: 2 in the accelerate config (or FSDP_VERSION=2); "
            "see docs/DISTRIBUTED.md"
        )


def step_boundary(accelerator: Accelerator, last: bool) -> None:
    """DeepSpeed (ZeRO through accelerate): accelerate runs the engine's optimizer step inside ``backward``
    whenever gradients sync, so only the optimizer step's last backward may sync (a no-op without DeepSpeed).
    Not run here: DeepSpeed cannot start on these CPU machines (docs/DISTRIBUTED.md)."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        accelerator.gradient_state._set_sync_gradients(last)


def is_sharded(accelerator: Accelerator) -> bool:
    return bool(getattr(accelerator, "is_fsdp2", False))


def keep_whole(accelerator: Accelerator, modules: list[torch.nn.Module]) -> None:
    """Leave ``modules``' parameters out of FSDP2's sharding (they stay whole on every process).

    Takes effect when the model is first sharded; parameters added later (a new task's adapter) are outside
    FSDP2's groups too, so they are whole as well."""
    if modules:
        accelerator.state.fsdp_plugin.ignored_modules = modules


def reshard(model: torch.nn.Module) -> None:
    """Free every gathered weight (FSDP2 leaves the root and output groups gathered after a forward), so all
    processes are in the same state before one of them alone reads the model (saving reads state dicts,
    which reshards); otherwise the next forward's all-gathers would differ between processes."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


@contextlib.contextmanager
def gathered_root(model: torch.nn.Module) -> Iterator[None]:
    """The root group's weights gathered for a block of evaluation: the seq2seq decoder loop calls the
    encoder and decoder stacks directly, not the root's forward that gathers them (T5's final layer norms),
    and every weight is resharded after (``reshard``)."""
    from torch.distributed.fsdp import FSDPModule

    if isinstance(model, FSDPModule):
        model.unshard()
    try:
        yield
    finally:
        if isinstance(model, FSDPModule):
            reshard(model)


def shared_embeddings(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The input embedding if other modules hold its weight too (T5: the encoder's and decoder's
    ``embed_tokens`` and the tied LM head): FSDP2 refuses a parameter that two of its groups would manage,
    so it stays whole (T5-large: 33M of 738M weights)."""
    embedding = getattr(model, "get_input_embeddings", lambda: None)()
    weight = getattr(embedding, "weight", None)
    holders = [m for m in model.modules() if getattr(m, "weight", None) is weight] if weight is not None else []
    return [embedding] if len(holders) > 1 else []


def is_shard(tensor: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def average_whole_gradients(params: list[torch.nn.Parameter], processes: int) -> None:
    """Average the gradients of the parameters FSDP2 does not manage (the adapters) over the processes, in
    one all-reduce of a flat buffer: each process's gradient is that of its share of the batch."""
    grads = [p.grad for p in params if p.grad is not None and not is_shard(p)]
    if not grads or processes == 1:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= processes
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


@torch.no_grad()
def add_into(weight: torch.Tensor, delta: torch.Tensor) -> None:
    """weight += delta, where ``weight`` may be a process's shard of a sharded weight and ``delta`` the whole
    update (identical on every process): each adds its own rows, with no communication."""
    if is_shard(weight):
        from torch.distributed.tensor import distribute_tensor

        weight.add_(distribute_tensor(delta, weight.device_mesh, weight.placements, src_data_rank=None))
    else:
        weight += delta


def gathered(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor (a collective: every process must call it, in the same order)."""
    return tensor.full_tensor() if is_shard(tensor) else tensor


def gathered_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's full (unsharded) state dict on every process, keyed by parameter name."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    optimizer = getattr(optimizer, "optimizer", optimizer)  # under accelerate's wrapper
    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True))


def scatter_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a full optimizer state dict (``gathered_optimizer_state``'s, on every process) into the shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    optimizer = getattr(optimizer, "optimizer", optimizer)
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


@torch.no_grad()
def copy_into(param: torch.Tensor, value: torch.Tensor) -> None:
    """param := value, ``value`` whole and identical on every process; a shard takes its own rows."""
    if is_shard(param):
        from torch.distributed.tensor import distribute_tensor

        param.copy_(distribute_tensor(value.to(param.dtype), param.device_mesh, param.placements, src_data_rank=None))
    else:
        param.copy_(value)
