"""MIGU (Du et al., Findings of EMNLP 2024, arXiv 2406.17245): magnitude-based gradient updating.

From the second task on, each optimizer step updates only the output channels of each adapted linear
map whose mean |output| over the step's tokens is largest: channels below the ``migu.quantile`` of their
layer's statistics get no gradient (their weight rows are masked after backward). The idea: a layer's
large outputs mark the weights the current input actually uses; updating only those leaves the rest,
which other tasks rely on, alone. MIGU's public code masks whole weight rows of every linear layer in
full fine-tuning (its LoRA path does not run, §"MIGU" in docs/METHODS.md); here the rule applies to the
one LoRA adapter trained through the sequence (as SeqLoRA): ``lora_A``'s rows by Σ|A·x|, ``lora_B``'s
rows by Σ|B·A·x| (the maps' own outputs). Statistics weigh every token once (a shared prompt head counts
for every row, padding for none; olora.core.prefix.token_weights) and are summed over processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from accelerate import Accelerator

from olora.config import check, register_options
from olora.core.adapters import lora_layers
from olora.core.context import RunContext
from olora.core.prefix import token_weights
from olora.core.train import TrainingHooks
from olora.methods.base import Stage, Tuned
from olora.methods.registry import register
from olora.methods.units import OneAdapter


@register_options("migu")
@dataclass
class MIGUOptions:
    quantile: float = field(
        default=0.7,
        metadata={
            "help": "Channels whose output magnitude is below this quantile of their layer's get no gradient "
            "(0.7: the top 30 % update, MIGU's scripts)."
        },
    )

    def problems(self, prefix: str) -> list[str]:
        errors: list[str] = []
        check(errors, 0 <= self.quantile < 1, f"{prefix}quantile", self.quantile, "must be in [0, 1)")
        return errors


class OutputMagnitudes:
    """Σ |output| per output channel of each watched linear map, over the tokens since the last reset."""

    def __init__(self, modules: list[torch.nn.Linear]):
        self.modules = modules
        self.sums = [torch.zeros(m.out_features, device=m.weight.device) for m in modules]

    def hooks(self) -> list[tuple[torch.nn.Module, object]]:
        return [(m, self._adder(i)) for i, m in enumerate(self.modules)]

    def _adder(self, i: int):
        def add(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
            size = output.detach().abs().float()
            weights = token_weights()
            if weights is not None and weights.shape == size.shape[:2]:
                size = size * weights.unsqueeze(-1)
            self.sums[i] += size.reshape(-1, size.shape[-1]).sum(0)

        return add

    def mask_gradients(self, quantile: float, accelerator: Accelerator) -> None:
        """Zero the gradient rows of the channels below ``quantile`` of their map; then start counting anew."""
        for module, sums in zip(self.modules, self.sums, strict=True):
            sums = accelerator.reduce(sums, reduction="sum") if accelerator.num_processes > 1 else sums
            keep = sums >= torch.quantile(sums, quantile)
            if module.weight.grad is not None:
                module.weight.grad[~keep] = 0
        for sums in self.sums:
            sums.zero_()


@register("migu")
class MIGU(OneAdapter):
    """MIGU (Du et al., EMNLP 2024 Findings): from task 2, only the largest-output channels of each LoRA map update."""

    tuned = Tuned("migu.quantile", values=(0.5, 0.7, 0.9))

    sections = ("migu",)

    def begin_training(self, ctx: RunContext, stage: Stage) -> TrainingHooks:
        hooks = super().begin_training(ctx, stage)
        if stage.index == 0:
            return hooks
        maps = [f[self.ADAPTER] for layer in lora_layers(ctx.model) for f in (layer.lora_A, layer.lora_B)]
        stats = OutputMagnitudes(maps)
        hooks.forward_hooks += stats.hooks()
        hooks.after_backward.append(lambda accelerator: stats.mask_gradients(self.migu.quantile, accelerator))
        return hooks
