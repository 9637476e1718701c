"""O-LoRA (Wang et al., Findings of EMNLP 2023, arXiv 2310.14152): a new LoRA per task, the past ones
frozen, and λ1·orthogonality + λ2·L2 on the new adapter.

* ``olora.orth=code`` (the official code, default): L_orth = Σ_layers Σ|A_past·A_tᵀ| on PEFT's ``lora_A``.
* ``olora.orth=paper``: Σ_layers Σ_i ‖B_iᵀB_t‖²_F on ``lora_B``, the paper's (output-side) A.
* ``olora.orth=normalized`` (olora's, not the paper's): the share of each new row's energy in the past span.
* L2 = Σ_layers ‖A_t‖_F + ‖B_t‖_F (not squared, as the official code).

The maths of each variant is in olora.core.adapters (``OrthogonalityPenalty``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from olora.config import check, register_options
from olora.core.adapters import OrthogonalityPenalty, complement_init, l2_norm
from olora.core.context import RunContext
from olora.core.train import TrainingHooks
from olora.methods.base import Stage, Tuned
from olora.methods.registry import register
from olora.methods.units import TaskAdapters


@register_options("olora")
@dataclass
class OLoRAOptions:
    orth: Literal["code", "paper", "normalized"] = field(
        default="code",
        metadata={
            "help": "Orthogonality penalty: 'code' = sum|A_past A_new^T| on peft lora_A (official code); "
            "'paper' = sum_i ||B_i^T B_new||_F^2 on peft lora_B (the paper's output-side A); 'normalized' "
            "(olora's option, not the paper's) = the mean share of each new lora_A row's squared norm that lies "
            "in the past rows' span, in [0, 1] for any model size, rank and task count."
        },
    )
    init: Literal["random", "complement"] = field(
        default="random",
        metadata={
            "help": "Initial lora_A of a new task: 'random' (peft's, as the official code) or 'complement' "
            "(olora's option: each row projected onto the orthogonal complement of the past lora_A rows, norm "
            "kept, so the code penalty starts at zero)."
        },
    )
    lambda_orth: float = field(default=0.5, metadata={"help": "Weight λ1 of the orthogonality penalty."})
    lambda_l2: float = field(default=0.0, metadata={"help": "Weight λ2 of ||A_new||_F + ||B_new||_F."})
    task_lambdas: dict[str, list[float]] = field(
        default_factory=dict,
        metadata={
            "help": "Per-task [lambda_orth, lambda_l2] overrides, e.g. {dbpedia: [5, 0]} "
            "(benchmark=long order=6 sets them)."
        },
    )

    def lambdas_for(self, task: str) -> tuple[float, float]:
        """(λ1, λ2) for ``task``: the per-task override if any, else the global values."""
        if task in self.task_lambdas:
            lam_orth, lam_l2 = self.task_lambdas[task]
            return float(lam_orth), float(lam_l2)
        return self.lambda_orth, self.lambda_l2

    def problems(self, prefix: str) -> list[str]:
        errors: list[str] = []
        check(errors, self.lambda_orth >= 0, f"{prefix}lambda_orth", self.lambda_orth, "must be >= 0")
        check(errors, self.lambda_l2 >= 0, f"{prefix}lambda_l2", self.lambda_l2, "must be >= 0")
        for task, lams in self.task_lambdas.items():
            ok = len(lams) == 2 and all(isinstance(x, (int, float)) and x >= 0 for x in lams)
            check(errors, ok, f"{prefix}task_lambdas.{task}", lams, "must be [lambda_orth, lambda_l2], both >= 0")
        return errors


@register("olora")
class OLoRA(TaskAdapters):
    """O-LoRA (Wang et al. 2023): task adapters + λ1·orthogonality to the past adapters + λ2·L2."""

    tuned = Tuned("olora.lambda_orth", factors=(0.1, 1.0, 10.0), overridden_by=("olora.task_lambdas",))

    sections = ("olora",)

    def begin_training(self, ctx: RunContext, stage: Stage) -> TrainingHooks:
        hooks = super().begin_training(ctx, stage)
        name = self.adapter(stage)
        past = self.past_of(name)
        if self.olora.init == "complement" and past:
            complement_init(ctx.model, past, name)
        lam_orth, lam_l2 = self.olora.lambdas_for(stage.label)
        if past:
            hooks.weight_terms["orth"] = (lam_orth, OrthogonalityPenalty(ctx.model, past, name, self.olora.orth))
        hooks.weight_terms["l2"] = (lam_l2, lambda: l2_norm(ctx.model, name))
        return hooks
