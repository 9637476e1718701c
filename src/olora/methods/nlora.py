"""N-LoRA (Yang et al., COLING 2025, arXiv 2410.10179): task adapters, past frozen, with λ·Σ_layers ‖ΔW_t‖_1
on the current task's update ΔW_t = s·B_t·A_t, so that each task writes few, rarely shared weights
("non-collision"); no orthogonality term."""

from __future__ import annotations

from dataclasses import dataclass, field

from olora.config import check, register_options
from olora.core.adapters import update_l1
from olora.core.context import RunContext
from olora.core.train import TrainingHooks
from olora.methods.base import Stage, Tuned
from olora.methods.registry import register
from olora.methods.units import TaskAdapters


@register_options("nlora")
@dataclass
class NLoRAOptions:
    weight: float = field(
        default=0.0001,
        metadata={
            "help": "λ, the weight of Σ_layers ‖s·B_t A_t‖_1, the l1 norm of the current task's update. Chosen on "
            "the validation split of the CPU proxy (docs/RESULTS.md), not the paper's value."
        },
    )

    def problems(self, prefix: str) -> list[str]:
        errors: list[str] = []
        check(errors, self.weight >= 0, f"{prefix}weight", self.weight, "must be >= 0")
        return errors


@register("nlora")
class NLoRA(TaskAdapters):
    """N-LoRA (Yang et al., COLING 2025): task adapters with λ·‖s·B_t A_t‖_1 on the new update (sparse)."""

    tuned = Tuned("nlora.weight", factors=(0.1, 1.0, 10.0))

    sections = ("nlora",)

    def begin_training(self, ctx: RunContext, stage: Stage) -> TrainingHooks:
        hooks = super().begin_training(ctx, stage)
        name = self.adapter(stage)
        hooks.weight_terms["l1"] = (self.nlora.weight, lambda: update_l1(ctx.model, name))
        return hooks
