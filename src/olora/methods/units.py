"""What trains: one adapter through the sequence, the whole model, or a new adapter per task.

The methods built on these units add their mechanics (a penalty, a memory, a projection) on top.

* ``OneAdapter``: one LoRA adapter (``seq``) trained on every task in turn (``seqlora``).
* ``WholeModel``: every weight trains (full fine-tuning, ``seqft``); each stage saves the whole model.
* ``TaskAdapters``: a new LoRA per task, the past ones frozen in the forward pass (``inclora``); at
  inference all are summed, h = W0·x + Σ_i s_i·B_i·A_i·x, so no task id is needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from peft import PeftModel

from olora.config import check, register_options
from olora.core.adapters import (
    activate,
    adapter_name,
    add_adapter,
    concat_adapters,
    factor_parameters,
    merge_into_base,
    peft_lora_config,
    set_past_dropout,
)
from olora.core.context import RunContext
from olora.core.resources import Choice
from olora.core.train import TrainingHooks
from olora.methods.base import Method, Stage
from olora.methods.registry import register
from olora.seeding import derive_seed


def ensure_adapter(ctx: RunContext, name: str, index: int) -> None:
    """Add adapter ``name`` unless the model has it; its init depends on (seed, index) only."""
    if name in getattr(ctx.model, "peft_config", {}):
        return
    torch.manual_seed(derive_seed(ctx.cfg.seed, "adapter", index))
    lora = peft_lora_config(ctx.cfg.lora, ctx.model, ctx.seq2seq)
    lora.base_model_name_or_path = ctx.base_path
    ctx.model = add_adapter(ctx.model, name, lora)


def adapter_hooks(ctx: RunContext, name: str) -> TrainingHooks:
    """The hooks of a stage that trains adapter ``name``: its factors as the logged parameter groups."""
    return TrainingHooks(groups=factor_parameters(ctx.model, name))


@register("seqlora")
class OneAdapter(Method):
    """SeqLoRA: one LoRA adapter trained on every task in turn."""

    ADAPTER = "seq"

    def adapter(self, stage: Stage) -> str:
        return self.ADAPTER

    def enter_stage(self, ctx: RunContext, stage: Stage) -> None:
        ensure_adapter(ctx, self.ADAPTER, stage.index)

    def begin_training(self, ctx: RunContext, stage: Stage) -> TrainingHooks:
        activate(ctx.model, [self.ADAPTER], trainable=self.ADAPTER)
        return adapter_hooks(ctx, self.ADAPTER)

    def prepare_eval(self, ctx: RunContext, stage: Stage, j: int) -> bool:
        activate(ctx.model, [self.ADAPTER], trainable=None)
        return True


@register("seqft")
class WholeModel(Method):
    """SeqFT: every weight trains (full fine-tuning), task after task."""

    trains = "model"

    def begin_training(self, ctx: RunContext, stage: Stage) -> TrainingHooks:
        ctx.model.requires_grad_(True)
        return TrainingHooks(groups={"all": [p for p in ctx.model.parameters() if p.requires_grad]})

    def prepare_eval(self, ctx: RunContext, stage: Stage, j: int) -> bool:
        ctx.model.requires_grad_(False)
        return True


@register_options("past")
@dataclass
class PastOptions:
    """How the frozen past adapters run beside a new task's adapter (every method with task adapters)."""

    fold: Literal["merge", "stack", "none"] = field(
        default="merge",
        metadata={
            "help": "How the frozen past adapters run while a new task trains and is evaluated: 'merge' adds "
            "Σ s_i B_i A_i into the base weights (no extra cost: O-LoRA then costs what plain LoRA costs), "
            "'stack' runs them as one stacked LoRA, 'none' as t separate LoRAs. Same outputs up to float "
            "rounding. 'merge' needs float32 base weights: with bf16/fp16 weights the run stacks instead (and "
            "says so), since adding small updates into low-precision weights loses a large part of them."
        },
    )
    dropout: Literal["off", "shared"] = field(
        default="off",
        metadata={
            "help": "Dropout on the past adapters' input while a task trains: 'off' (they see the clean input, "
            "as merged weights do) or 'shared' (the official code: one dropout mask shared by the past and the "
            "new adapter of a layer; needs past.fold=stack or none). Evaluation never uses dropout."
        },
    )

    def problems(self, prefix: str) -> list[str]:
        errors: list[str] = []
        rule = "'shared' needs the past adapters in the forward pass: set past.fold=stack"
        check(errors, self.dropout == "off" or self.fold != "merge", f"{prefix}dropout", self.dropout, rule)
        return errors


@register("inclora")
class TaskAdapters(Method):
    """IncLoRA: a new LoRA per task, the past ones frozen in the forward pass; all summed at inference.

    Σ_{i<t} s_i B_i A_i runs as separate adapters (``past.fold=none``), one stacked adapter (``stack``)
    or merged into the base weights (``merge``); a penalty reads the per-task adapters, which stay
    frozen and are saved as they are.
    """

    sections = ("past",)
    FOLDED = "past_folded"

    EXPORTED = "exported"

    def __init__(self, options: dict) -> None:
        super().__init__(options)
        self.exported_tasks = 0  # stages that an exported adapter (start_from) stands for
        self.names: list[str] = []  # task adapters so far, in order
        self.merged: list[str] = []  # those added into the base weights
        self.folded: list[str] = []  # those summed into FOLDED
        self.fold = self.past.fold  # resolved for the machine in setup

    def setup(self, ctx: RunContext) -> None:
        """Merging needs float32 arithmetic: in bf16 weights, or float32 weights whose matmuls run under bf16
        autocast (W + ΔW rounded to bf16 in every product: the past adapters' contribution came out 17 %
        off, median over SmolLM2's layers, vs 0.3 % stacked; scripts/merge_precision.py), stack instead."""
        choice = Choice(self.past.fold, "set in the config", "past.fold")
        weights = str(next(ctx.model.parameters()).dtype).removeprefix("torch.")
        if self.past.fold == "merge" and ctx.cfg.quantize != "none":
            reason = f"past.fold=merge cannot add into quantize={ctx.cfg.quantize} weights"
            choice = Choice("stack", reason, "past.fold")
        elif self.past.fold == "merge" and weights != "float32":
            reason = f"past.fold=merge would round the past adapters into {weights} weights"
            choice = Choice("stack", reason, "past.fold")
        elif self.past.fold == "merge" and ctx.train_cfg.mixed_precision == "bf16":
            reason = "past.fold=merge under bf16 autocast would round W + ΔW to bf16 in every matmul"
            choice = Choice("stack", reason, "past.fold")
        ctx.choices["fold_past"] = choice
        self.fold = choice.value

    def adapter(self, stage: Stage) -> str:
        return adapter_name(stage.index, stage.label)

    def adopt_export(self, ctx: RunContext, folder: str, n_tasks: int) -> None:
        """The exported adapter (A's of its tasks stacked by rows, B's by columns with their scaling, as the
        official code stores its past) runs frozen as one past adapter, and the penalty reads its lora_A."""
        ctx.model = PeftModel.from_pretrained(ctx.model, folder, adapter_name=self.EXPORTED, is_trainable=False)
        self.names, self.exported_tasks = [self.EXPORTED], n_tasks

    def enter_stage(self, ctx: RunContext, stage: Stage) -> None:
        if stage.index < self.exported_tasks:
            return  # the exported adapter stands for this task
        name = self.adapter(stage)
        ensure_adapter(ctx, name, stage.index)
        if name not in self.names:
            self.names.append(name)

    def past_of(self, name: str) -> list[str]:
        """The task adapters before ``name``."""
        return self.names[: self.names.index(name)]

    def in_forward(self, ctx: RunContext, name: str) -> list[str]:
        """The adapters that run beside the base model for task ``name`` (training and evaluation)."""
        past = self.past_of(name)
        if self.fold == "merge":
            for adapter in past:
                if adapter not in self.merged:
                    merge_into_base(ctx.model, adapter)
                    self.merged.append(adapter)
            return [name]
        if self.fold == "none" or len(past) < 2:
            return [*past, name]
        if self.folded != past:
            if self.FOLDED in ctx.model.peft_config:
                ctx.model.delete_adapter(self.FOLDED)
            concat_adapters(ctx.model, past, self.FOLDED)
            self.folded = list(past)
        return [self.FOLDED, name]

    def begin_training(self, ctx: RunContext, stage: Stage) -> TrainingHooks:
        name = self.adapter(stage)
        active = self.in_forward(ctx, name)
        activate(ctx.model, active, trainable=name)
        set_past_dropout(ctx.model, [a for a in active if a != name], name, self.past.dropout)
        return adapter_hooks(ctx, name)

    def prepare_eval(self, ctx: RunContext, stage: Stage, j: int) -> bool:
        activate(ctx.model, self.in_forward(ctx, self.names[-1]), trainable=None)
        return True

    def inference_stages(self, stages: list, task: int | None) -> list:
        return stages

    def summed_adapters(self, stages: list) -> list:
        return stages
