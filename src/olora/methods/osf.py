"""OSF: orthogonal subspace fine-tuning (Nayak et al. 2025, arXiv 2504.07097) with PEFT's ``OSFConfig``.

Each stage wraps the current model's target matrices W = U_hi S_hi V_hiᵀ + U_lo S_lo V_loᵀ (SVD); only
the low part trains, and PEFT projects its gradients off the preserved directions (U_hi, V_hi). After
the stage the update is merged (W ← W + ΔW) and the wrapper removed, so the next stage's SVD sees the
learned weights. The preserved rank grows with the task index, PEFT's budget advice for a known
sequence of T tasks: stage t keeps max(1, ⌊t/T · min(out, in)⌋) directions. The model answers every
task (no task id); each stage saves the whole model. Targets: ``lora.target_modules`` (the same
matrices LoRA adapts), so the comparison changes the method, not where it acts. It trains the weights'
own singular vectors: give it its own learning rate (1e-4 won a validation sweep of 1e-5…1e-3 on the
CPU proxy; ``osf:train.lr=1e-4`` in ``olora bench``); at LoRA's 1e-3 it collapses (docs/RESULTS.md).
"""

from __future__ import annotations

from peft import OSFConfig, get_peft_model

from olora.core.adapters import default_target_modules
from olora.core.context import RunContext
from olora.core.train import TrainingHooks
from olora.methods.base import Method, Stage
from olora.methods.registry import register


@register("osf")
class OSF(Method):
    """OSF (Nayak et al. 2025, PEFT's OSFConfig): each matrix trains only its low singular directions."""

    trains = "model"

    def begin_training(self, ctx: RunContext, stage: Stage) -> TrainingHooks:
        share = stage.index / len(ctx.tasks)  # a float in (0, 1) is a fraction of each matrix's min(out, in)
        targets = ctx.cfg.lora.target_modules or default_target_modules(ctx.model)
        config = OSFConfig(target_modules=list(targets), effective_rank=share if share > 0 else 1)
        ctx.model = get_peft_model(ctx.model, config)
        return TrainingHooks(groups={"all": [p for p in ctx.model.parameters() if p.requires_grad]})

    def end_training(self, ctx: RunContext, stage: Stage) -> None:
        ctx.model = ctx.model.merge_and_unload()  # W ← W + ΔW: the next SVD sees what this task learned
        ctx.model.requires_grad_(False)

    def prepare_eval(self, ctx: RunContext, stage: Stage, j: int) -> bool:
        return True
