"""ELLA (arXiv 2601.02232, EACL 2026): penalise the new task's update where the past updates are large.

Per adapted layer, with W_past = Σ_{i<t} s_i·B_i·A_i the sum of the past tasks' updates (fixed while task t
trains) and ΔW_t = s·B_t·A_t the new one, the loss adds λ·Σ_layers ‖ΔW_t ⊙ W_past‖²_F (element-wise
product). Its minimiser for a plain quadratic task loss is ΔW_ij = G_ij / (1 + λ·W_past,ij²): entries the
past tasks rely on are shrunk, free ones are not, without restricting a subspace. The past adapters stay
frozen in the forward pass and all are summed at inference (as IncLoRA).

Sources: the paper's abstract and secondary summaries only (no public code was found); the penalty's exact
normalisation in the paper is not known, so λ here is on the raw product (``ella.weight``, chosen on a
validation split).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch

from olora.config import check, register_options
from olora.core.adapters import lora_layers
from olora.core.context import RunContext
from olora.core.train import TrainingHooks
from olora.methods.base import Stage, Tuned
from olora.methods.registry import register
from olora.methods.units import TaskAdapters


@register_options("ella")
@dataclass
class ELLAOptions:
    weight: float = field(
        default=1e5,
        metadata={
            "help": "λ of Σ_layers ‖ΔW_t ⊙ W_past‖²_F. The product of two small updates is tiny (entries ~1e-3 "
            "each), so λ is large; choose it on a validation split."
        },
    )

    def problems(self, prefix: str) -> list[str]:
        errors: list[str] = []
        check(errors, self.weight >= 0, f"{prefix}weight", self.weight, "must be >= 0")
        return errors


class OverlapPenalty:
    """Σ_layers ‖(s·B·A) ⊙ E‖²_F for adapter ``new`` against fixed per-layer matrices E (one batched
    product per distinct layer shape)."""

    def __init__(self, model: torch.nn.Module, past: list[str], new: str):
        groups: dict[tuple, list] = defaultdict(list)
        for layer in lora_layers(model):
            if new not in layer.lora_A or not any(p in layer.lora_A for p in past):
                continue
            with torch.no_grad():
                past_sum = sum(
                    layer.scaling[p] * (layer.lora_B[p].weight.float() @ layer.lora_A[p].weight.float())
                    for p in past
                    if p in layer.lora_A
                )
            b, a = layer.lora_B[new].weight, layer.lora_A[new].weight
            groups[(tuple(b.shape), tuple(a.shape))].append((past_sum, b, a, layer.scaling[new]))
        self.groups = [
            (torch.stack([e for e, *_ in g]), [b for _, b, _, _ in g], [a for *_, a, _ in g], g[0][3])
            for g in groups.values()
        ]

    def __call__(self) -> torch.Tensor:
        total = torch.zeros(())
        for past_sum, bs, as_, scale in self.groups:
            update = scale * torch.bmm(torch.stack(bs), torch.stack(as_))  # [layers, out, in]
            total = total.to(update.device) + (update * past_sum).pow(2).sum()
        return total


@register("ella")
class ELLA(TaskAdapters):
    """ELLA (EACL 2026): task adapters with λ·‖ΔW_t ⊙ Σ_{i<t} ΔW_i‖² (element-wise), no subspace constraint."""

    tuned = Tuned("ella.weight", factors=(0.1, 1.0, 10.0))

    sections = ("ella",)

    def begin_training(self, ctx: RunContext, stage: Stage) -> TrainingHooks:
        hooks = super().begin_training(ctx, stage)
        name = self.adapter(stage)
        if self.past_of(name):
            hooks.weight_terms["ella"] = (self.ella.weight, OverlapPenalty(ctx.model, self.past_of(name), name))
        return hooks
