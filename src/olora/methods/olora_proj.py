"""O-LoRA by projection (olora's variant, not a published method): the hard form of O-LoRA's constraint.

O-LoRA asks the new ``lora_A`` rows to be orthogonal to the past tasks' ``lora_A`` rows through a soft
penalty λ1·Σ|A_past·A_tᵀ|, which at the official λ1 dominates the task's gradient on ``lora_A`` for the
whole task (docs/PLASTICITY.md). Here the constraint holds exactly and costs no λ: with Q an orthonormal
basis of the past rows (per layer), A_t starts in the orthogonal complement (each row projected, its norm
kept) and after every optimizer step is projected back, A_t ← A_t − (A_t·Q)·Qᵀ, so A_past·A_tᵀ = 0 at all
times while the task's gradient, not a penalty, decides where in the complement the rows go. Like O-LoRA
(and unlike InfLoRA) it is blind to the data: old inputs outside the past rows' span still pass through
the new adapter. Nearest published relatives project gradients off input features instead (PEGP, Qiao et
al. 2024; InfLoRA).
"""

from __future__ import annotations

import torch

from olora.core.adapters import complement_init, lora_layers, orthonormal_rows
from olora.core.context import RunContext
from olora.core.train import TrainingHooks
from olora.methods.base import Stage
from olora.methods.registry import register
from olora.methods.units import TaskAdapters


class ComplementProjection:
    """After each step: every layer's new ``lora_A`` rows lose their component in the past rows' span."""

    def __init__(self, model: torch.nn.Module, past: list[str], new: str):
        self.pairs = []
        for layer in lora_layers(model):
            rows = [layer.lora_A[p].weight.detach() for p in past if p in layer.lora_A]
            if new in layer.lora_A and rows:
                self.pairs.append((orthonormal_rows(torch.cat(rows).float()), layer.lora_A[new].weight))

    @torch.no_grad()
    def __call__(self) -> None:
        for q, a in self.pairs:
            a -= ((a.float() @ q.T) @ q).to(a.dtype)


@register("olora_proj")
class OLoRAProjection(TaskAdapters):
    """O-LoRA by projection (olora's variant): new lora_A kept exactly orthogonal to the past ones, no penalty."""

    def begin_training(self, ctx: RunContext, stage: Stage) -> TrainingHooks:
        hooks = super().begin_training(ctx, stage)
        name = self.adapter(stage)
        past = self.past_of(name)
        if past:
            complement_init(ctx.model, past, name)
            hooks.after_step.append(ComplementProjection(ctx.model, past, name))
        return hooks
