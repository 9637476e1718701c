"""The paper's baselines: replay, EWC, LwF, multi-task learning and one model per task.

The paper's rows (Replay, EWC, LwF, PerTaskFT, MTL; reused from Progressive Prompts) fine-tune the whole
model: the ``*_ft`` methods. The ``*_lora`` methods do the same on one LoRA adapter. Each baseline is a
mixin of its mechanics over what trains (olora.methods.units), so ``replay_ft`` is ``Replay + WholeModel``.

| method            | what trains                        | extra loss / data                  | inference             |
|-------------------|------------------------------------|------------------------------------|-----------------------|
| replay_ft / _lora | every weight / one LoRA            | a bounded memory of past examples  | the model / adapter   |
| ewc_ft / _lora    | every weight / one LoRA            | (λ/2)·Σ F·(θ − θ*)² (diag. Fisher) | the model / adapter   |
| lwf_ft / _lora    | every weight / one LoRA            | λ·T²·KL(teacher ‖ student)         | the model / adapter   |
| mtl_ft / _lora    | every weight / one LoRA, all tasks | none (the upper bound)             | the model / adapter   |
| pertask_ft / _lora| a fresh model / LoRA per task      | none                               | task id picks it      |
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from olora.config import check, register_options
from olora.core.adapters import activate, adapter_name, copy_adapter_weights
from olora.core.context import RunContext
from olora.core.train import TrainingHooks, accepts_logits_to_keep, answer_logits, answer_nll
from olora.data.encoding import IGNORE, Encoded, collate_train
from olora.data.tasks import Task
from olora.errors import OloraError
from olora.methods.base import Method, Stage, Tuned
from olora.methods.registry import define, register
from olora.methods.units import OneAdapter, WholeModel, adapter_hooks, ensure_adapter
from olora.seeding import derive_seed

# ----------------------------------------------------------------------------- replay


@register_options("replay")
@dataclass
class ReplayOptions:
    per_task: int = field(
        default=50,
        metadata={
            "help": "Examples kept per past task in a bounded memory (a seeded sample taken when the task ends), "
            "all mixed into every later task's training data. The paper does not give its size."
        },
    )

    def problems(self, prefix: str) -> list[str]:
        errors: list[str] = []
        check(errors, self.per_task >= 0, f"{prefix}per_task", self.per_task, "must be >= 0")
        return errors


class Replay:
    """Replay: a bounded memory of replay.per_task seeded examples of each past task is mixed into every
    later task. Each task's share is drawn when the task ends and kept in the method's state (saved with the
    stage), so a run that grows by a task needs no earlier task's training data."""

    sections = ("replay",)

    def __init__(self, options: dict) -> None:
        super().__init__(options)
        self.memory: dict[int, list[Encoded]] = {}  # task index -> its remembered examples

    def training_data(self, ctx: RunContext, stage: Stage) -> list[Encoded]:
        data = super().training_data(ctx, stage)
        return data + [ex for j in range(stage.index) for ex in self.remembered(ctx, j)]

    def remembered(self, ctx: RunContext, j: int) -> list[Encoded]:
        """Task j's share of the memory (drawn from its training data if an older run did not keep it)."""
        if j not in self.memory:
            seed = derive_seed(ctx.cfg.seed, "replay", j)
            self.memory[j] = replay_memory([ctx.train_sets[ctx.tasks[j].name]], self.replay.per_task, [seed])
        return self.memory[j]

    def end_training(self, ctx: RunContext, stage: Stage) -> None:
        super().end_training(ctx, stage)
        for task in stage.train_tasks:
            self.remembered(ctx, [t.name for t in ctx.tasks].index(task.name))

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = dict(super().state_dict())
        for j, examples in self.memory.items():
            state.update(_pack(f"replay.{j}", examples))
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        super().load_state_dict({k: v for k, v in state.items() if not k.startswith("replay.")})
        indices = {int(k.split(".")[1]) for k in state if k.startswith("replay.")}
        self.memory = {j: _unpack(f"replay.{j}", state) for j in sorted(indices)}


def _pack(prefix: str, examples: list[Encoded]) -> dict[str, torch.Tensor]:
    """Token ids of ``examples`` as four flat tensors (safetensors holds no ragged lists)."""
    return {
        f"{prefix}.prompt": torch.tensor([i for e in examples for i in e.prompt_ids], dtype=torch.long),
        f"{prefix}.prompt_len": torch.tensor([len(e.prompt_ids) for e in examples], dtype=torch.long),
        f"{prefix}.target": torch.tensor([i for e in examples for i in e.target_ids], dtype=torch.long),
        f"{prefix}.target_len": torch.tensor([len(e.target_ids) for e in examples], dtype=torch.long),
    }


def _unpack(prefix: str, state: dict[str, torch.Tensor]) -> list[Encoded]:
    prompts = torch.split(state[f"{prefix}.prompt"], state[f"{prefix}.prompt_len"].tolist())
    targets = torch.split(state[f"{prefix}.target"], state[f"{prefix}.target_len"].tolist())
    return [Encoded(p.tolist(), t.tolist()) for p, t in zip(prompts, targets, strict=True)]


def replay_memory(past: list[list[Encoded]], per_task: int, seeds: list[int]) -> list[Encoded]:
    """The replay memory: ``per_task`` examples of each past task (all if it has fewer), drawn with
    that task's seed."""
    memory = []
    for examples, seed in zip(past, seeds, strict=True):
        memory += random.Random(seed).sample(examples, min(per_task, len(examples)))
    return memory


# ----------------------------------------------------------------------------- EWC


@register_options("ewc")
@dataclass
class EWCOptions:
    weight: float = field(default=1000.0, metadata={"help": "λ, the weight of ½·Σ F·(θ − θ*)²."})
    examples: int = field(
        default=64,
        metadata={"help": "Training examples whose per-example squared gradients estimate each task's Fisher."},
    )

    def problems(self, prefix: str) -> list[str]:
        errors: list[str] = []
        check(errors, self.weight >= 0, f"{prefix}weight", self.weight, "must be >= 0")
        check(errors, self.examples > 0, f"{prefix}examples", self.examples, "must be >= 1")
        return errors


class EWC:
    """EWC: elastic weight consolidation, (λ/2)·Σ F·(θ − θ*)² on what trains, F summed over past tasks."""

    tuned = Tuned("ewc.weight", factors=(0.1, 1.0, 10.0))

    sections = ("ewc",)

    def setup(self, ctx: RunContext) -> None:
        super().setup(ctx)
        self.penalty = EWCPenalty()

    def begin_training(self, ctx: RunContext, stage: Stage) -> TrainingHooks:
        hooks = super().begin_training(ctx, stage)
        self.penalty.bind(ctx.model)
        hooks.weight_terms["ewc"] = (self.ewc.weight, self.penalty)
        return hooks

    def end_training(self, ctx: RunContext, stage: Stage) -> None:
        super().end_training(ctx, stage)
        self.penalty.consolidate(
            ctx.model,
            ctx.train_sets[stage.label],
            seq2seq=ctx.seq2seq,
            pad_id=ctx.pad_id,
            nll=lambda m, b: answer_nll(m, b, ctx.seq2seq),
            device=ctx.device,
            max_examples=self.ewc.examples,
            seed=derive_seed(ctx.cfg.seed, "ewc", stage.index),
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.penalty.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.penalty.load_state_dict(state)


class EWCPenalty:
    """Elastic weight consolidation on the trainable parameters (Kirkpatrick et al. 2017).

    penalty = ½ Σ_p F_p (θ_p − θ*_p)², with F the diagonal Fisher summed over past tasks, and θ* the
    weights after the last task. It is zero at the anchor.
    """

    def __init__(self) -> None:
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        self.params: dict[str, torch.nn.Parameter] = {}

    def bind(self, model: torch.nn.Module) -> None:
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}

    def __call__(self) -> torch.Tensor:
        if not self.fisher:
            return torch.zeros((), device=next(iter(self.params.values())).device if self.params else None)
        terms = [(self.fisher[n] * (p - self.anchor[n]).pow(2)).sum() for n, p in self.params.items()]
        return 0.5 * torch.stack(terms).sum()

    def consolidate(
        self,
        model: torch.nn.Module,
        examples: list[Encoded],
        *,
        seq2seq: bool,
        pad_id: int,
        nll,
        device: torch.device,
        max_examples: int = 64,
        seed: int = 0,
    ) -> None:
        """Add this task's diagonal Fisher and move the anchor to the current weights.

        F_p = mean over examples x of (∂ NLL(x)/∂θ_p)²: the empirical Fisher, one example per backward
        (squaring a batch's mean gradient would underestimate it by the batch size).
        """
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        was_training = model.training
        model.eval()
        chosen = random.Random(seed).sample(examples, min(max_examples, len(examples)))
        for example in chosen:
            model.zero_grad(set_to_none=True)
            batch = {k: v.to(device) for k, v in collate_train([example], pad_id, seq2seq).items()}
            nll(model, batch).backward()
            for n, p in params.items():
                if p.grad is not None:
                    fisher[n] += p.grad.detach().pow(2) / len(chosen)
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        for n, f in fisher.items():
            self.fisher[n] = self.fisher.get(n, torch.zeros_like(f)) + f
            self.anchor[n] = params[n].detach().clone()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            **{f"fisher.{n}": t for n, t in self.fisher.items()},
            **{f"anchor.{n}": t for n, t in self.anchor.items()},
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.fisher = {k[len("fisher.") :]: v for k, v in state.items() if k.startswith("fisher.")}
        self.anchor = {k[len("anchor.") :]: v for k, v in state.items() if k.startswith("anchor.")}


# ----------------------------------------------------------------------------- LwF


@register_options("lwf")
@dataclass
class LwFOptions:
    weight: float = field(default=1.0, metadata={"help": "λ, the weight of the distillation term."})
    temperature: float = field(default=2.0, metadata={"help": "Softmax temperature of the distillation term."})

    def problems(self, prefix: str) -> list[str]:
        errors: list[str] = []
        check(errors, self.weight >= 0, f"{prefix}weight", self.weight, "must be >= 0")
        check(errors, self.temperature > 0, f"{prefix}temperature", self.temperature, "must be > 0")
        return errors


class LwF:
    """LwF: learning without forgetting, distillation from what trains as it was before the task (a frozen
    copy of the whole model, or of the one adapter)."""

    tuned = Tuned("lwf.weight", factors=(0.1, 1.0, 10.0))

    sections = ("lwf",)

    def begin_training(self, ctx: RunContext, stage: Stage) -> TrainingHooks:
        hooks = super().begin_training(ctx, stage)
        if stage.index > 0:
            teacher = ModelTeacher(ctx, self.lwf.temperature) if self.trains == "model" else None
            if teacher is None:
                teacher = AdapterTeacher(ctx, self.adapter(stage), self.lwf.temperature)
            hooks.batch_terms["lwf"] = (self.lwf.weight, teacher)
        return hooks


def distillation_kl(
    student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, temperature: float = 2.0
) -> torch.Tensor:
    """LwF's term (Li & Hoiem 2017): T²·KL(softmax(teacher/T) ‖ softmax(student/T)) on answer tokens."""
    keep = target != IGNORE
    s = F.log_softmax(student[keep].float() / temperature, dim=-1)
    t = F.log_softmax(teacher[keep].float() / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


class ModelTeacher:
    """LwF's teacher for full fine-tuning: a frozen copy of the whole model before the task."""

    def __init__(self, ctx: RunContext, temperature: float):
        self.teacher = copy.deepcopy(ctx.model).eval().requires_grad_(False)
        self.seq2seq, self.temperature = ctx.seq2seq, temperature
        self.use_keep = not ctx.seq2seq and accepts_logits_to_keep(ctx.model)

    def __call__(self, batch: dict, student_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits, _ = answer_logits(self.teacher, batch, self.seq2seq, self.use_keep)
        return distillation_kl(student_logits, teacher_logits, target, self.temperature)


class AdapterTeacher:
    """LwF's teacher for one adapter: a frozen copy of the adapter before the task (adapter ``lwf_teacher``).

    Called with a micro-batch and the student's answer logits: runs the teacher on the same batch
    (adapter switched, no gradient, no dropout), switches back, and returns the distillation term.
    """

    ADAPTER = "lwf_teacher"

    def __init__(self, ctx: RunContext, student: str, temperature: float):
        ensure_adapter(ctx, self.ADAPTER, -1)
        copy_adapter_weights(ctx.model, student, self.ADAPTER)
        activate(ctx.model, [student], trainable=student)
        self.model, self.student = ctx.model, student
        self.seq2seq, self.temperature = ctx.seq2seq, temperature
        self.use_keep = not ctx.seq2seq and accepts_logits_to_keep(ctx.model)

    def __call__(self, batch: dict, student_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        activate(self.model, [self.ADAPTER], trainable=None)
        with torch.no_grad():
            teacher_logits, _ = answer_logits(self.model, batch, self.seq2seq, self.use_keep)
        activate(self.model, [self.student], trainable=self.student)
        self.model.train()
        return distillation_kl(student_logits, teacher_logits, target, self.temperature)


# ----------------------------------------------------------------------------- MTL and per-task models


class Joint:
    """MTL: multi-task learning, one stage on the union of all tasks (the upper bound)."""

    forward_transfer = False

    def stages(self, tasks: list[Task]) -> list[Stage]:
        return [Stage(0, "all", tasks, tasks)]

    def matrix(self, rows: list[list[float]], n_tasks: int) -> list[list[float]]:
        """One stage evaluated on everything: every row is that row."""
        return [rows[0][: i + 1] for i in range(n_tasks - 1)] + [rows[0]]


@register("pertask_lora")
class PerTaskLoRA(Method):
    """PerTask-LoRA: one fresh LoRA per task, alone in the forward pass; the task id picks it at inference."""

    forward_transfer = False

    def adapter(self, stage: Stage) -> str:
        return adapter_name(stage.index, stage.label)

    def enter_stage(self, ctx: RunContext, stage: Stage) -> None:
        ensure_adapter(ctx, self.adapter(stage), stage.index)

    def begin_training(self, ctx: RunContext, stage: Stage) -> TrainingHooks:
        activate(ctx.model, [self.adapter(stage)], trainable=self.adapter(stage))
        return adapter_hooks(ctx, self.adapter(stage))

    def prepare_eval(self, ctx: RunContext, stage: Stage, j: int) -> bool:
        if j < stage.index:
            return False  # adapter j has not changed since task j
        activate(ctx.model, [self.adapter(stage)], trainable=None)
        return True

    def inference_stages(self, stages: list, task: int | None) -> list:
        if task is None:
            raise OloraError(f"{self.name} picks its adapter by task id: give --task")
        return [stages[task]]


@register("pertask_ft")
class PerTaskFT(WholeModel):
    """PerTaskFT: a fresh copy of the base model per task; the task id picks it at inference."""

    forward_transfer = False

    def setup(self, ctx: RunContext) -> None:
        self.base = {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}

    def begin_training(self, ctx: RunContext, stage: Stage) -> TrainingHooks:
        ctx.model.load_state_dict(self.base)
        return super().begin_training(ctx, stage)

    def prepare_eval(self, ctx: RunContext, stage: Stage, j: int) -> bool:
        return j == stage.index and super().prepare_eval(ctx, stage, j)

    def inference_stages(self, stages: list, task: int | None) -> list:
        return PerTaskLoRA.inference_stages(self, stages, task)


for _suffix, _unit in (("ft", WholeModel), ("lora", OneAdapter)):
    define(f"replay_{_suffix}", Replay, _unit)
    define(f"ewc_{_suffix}", EWC, _unit)
    define(f"lwf_{_suffix}", LwF, _unit)
    define(f"mtl_{_suffix}", Joint, _unit)
