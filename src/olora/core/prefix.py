"""Shared prompt prefixes for decoder-only models: compute the common head of a batch once.

Every prompt of a task starts with the same tokens (``Task:… Dataset:… instruction … Option: …``),
35-45 % of a CL_Benchmark prompt. A causal model's keys and values over that head do not depend on
what follows, so a batch of B prompts sharing P leading tokens can run the head once (batch 1),
repeat its KV cache B times, and run only the B suffixes on top of it: B·P fewer tokens per batch,
forward and backward. Outputs equal the full forward up to float reassociation (tested); gradients
flow through the repeated cache into the head's pass, so training is unchanged too.

Only the last model call goes through the DDP wrapper: the head's pass uses the wrapped module
directly, so DDP still sees one forward per backward and every parameter's gradient hook fires once.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from contextvars import ContextVar
from functools import cache

import torch

_TOKEN_WEIGHTS: ContextVar[torch.Tensor | None] = ContextVar("olora_token_weights", default=None)


def _core(model: torch.nn.Module) -> torch.nn.Module:
    """The model under a DDP wrapper (or the model itself)."""
    return getattr(model, "module", model)


@cache
def _forward_params(model_class: type) -> frozenset[str]:
    return frozenset(inspect.signature(model_class.forward).parameters)


def forward_params(model: torch.nn.Module) -> frozenset[str]:
    """Argument names of the underlying transformers model's ``forward`` (under peft and DDP)."""
    core = _core(model)
    base = core.get_base_model() if hasattr(core, "get_base_model") else core
    return _forward_params(type(base))


def cache_kwarg(model: torch.nn.Module) -> str:
    """transformers ≥ 5 names the KV-cache argument ``cache``; earlier versions ``past_key_values``."""
    return "cache" if "cache" in forward_params(model) else "past_key_values"


def output_cache(output) -> object:
    cache_obj = getattr(output, "cache", None)
    return output.past_key_values if cache_obj is None else cache_obj


def last_logit_only(model: torch.nn.Module) -> dict:
    """``logits_to_keep=1`` where the model takes it: the LM head then runs on the last position only."""
    return {"logits_to_keep": 1} if "logits_to_keep" in forward_params(model) else {}


def prefix_cache(model: torch.nn.Module, prefix_ids: torch.Tensor, batch_size: int) -> object:
    """The KV cache of ``prefix_ids`` (shape 1×P), repeated for ``batch_size`` rows."""
    out = _core(model)(input_ids=prefix_ids, use_cache=True, **last_logit_only(model))
    kv = output_cache(out)
    kv.batch_repeat_interleave(batch_size)
    return kv


def token_weights() -> torch.Tensor | None:
    """How many of a batch's token positions each position of the running forward stands for, [rows,
    positions]: inside ``decoder_forward`` the shared head's tokens (run once, batch 1) stand for every
    row and padding for none; None elsewhere. Hooks that collect activation statistics weigh by it, so
    the statistics count every token a layer sees as if each row had run alone."""
    return _TOKEN_WEIGHTS.get()


@contextlib.contextmanager
def _weighing(weights: torch.Tensor | None) -> Iterator[None]:
    token = _TOKEN_WEIGHTS.set(weights)
    try:
        yield
    finally:
        _TOKEN_WEIGHTS.reset(token)


def decoder_forward(model: torch.nn.Module, batch: dict[str, torch.Tensor], **kwargs) -> object:
    """``model(**batch, **kwargs)``, running a ``prefix_ids`` entry once and the rest on its cache."""
    batch = dict(batch)
    prefix = batch.pop("prefix_ids", None)
    rows, width = batch["input_ids"].shape
    if prefix is not None:
        with _weighing(torch.full(prefix.shape, rows, device=prefix.device)):
            batch[cache_kwarg(model)] = prefix_cache(model, prefix, rows)
    mask = batch.get("attention_mask")
    with _weighing(None if mask is None else mask[:, -width:]):
        return model(**batch, **kwargs)
