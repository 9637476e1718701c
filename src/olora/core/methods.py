"""Continual-learning methods: each one object that owns its behaviour through lifecycle hooks.

The run loop (olora.runner) calls, for every stage (normally one task; ``mtl_*``: one stage with all)::

    enter_stage      always, also when a finished stage is reloaded: create the stage's adapter
    begin_training   choose what trains and what else runs in the forward pass
    training_data    the examples to train on (replay adds its memory)
    penalties        weight terms (added once per step) and batch terms (on each micro-batch's logits)
    end_training     after the optimizer steps (EWC's Fisher)
    prepare_eval     set the model up to answer task j (False: the score after training j still holds)

and reads ``state_dict`` / ``load_state_dict`` (what the method must keep between stages) and
``inference_stages`` (which stages' adapters or model answer a task at the end: export and predict).

The paper's baseline rows (Replay, EWC, LwF, PerTaskFT, MTL; reused from Progressive Prompts) fine-tune
the whole model: they are the ``*_ft`` methods. The ``*_lora`` methods do the same on one LoRA adapter.

| method            | what trains                        | extra loss / data                  | inference             |
|-------------------|------------------------------------|------------------------------------|-----------------------|
| olora             | new LoRA per task, past frozen     | λ1·orthogonality + λ2·L2           | all adapters summed   |
| inclora           | new LoRA per task, past frozen     | none                               | all adapters summed   |
| seqlora           | one LoRA, every task in turn       | none                               | the one adapter       |
| seqft             | every weight, every task in turn   | none                               | the model             |
| replay_ft / _lora | every weight / one LoRA            | a bounded memory of past examples  | the model / adapter   |
| ewc_ft / _lora    | every weight / one LoRA            | (λ/2)·Σ F·(θ − θ*)² (diag. Fisher) | the model / adapter   |
| lwf_ft / _lora    | every weight / one LoRA            | λ·T²·KL(teacher ‖ student)         | the model / adapter   |
| mtl_ft / _lora    | every weight / one LoRA, all tasks | none (the upper bound)             | the model / adapter   |
| pertask_ft / _lora| a fresh model / LoRA per task      | none                               | task id picks it      |
| nlora             | new LoRA per task, past frozen     | λ·Σ‖s·B_t A_t‖_1 (N-LoRA)          | all adapters summed   |
| osf               | each matrix's low SVD part (PEFT)  | gradients kept off the top part    | the model             |

A new method is a subclass registered with ``@register("name")``; nothing else changes.
"""

from __future__ import annotations

import copy
import difflib
import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from peft import OSFConfig, get_peft_model

from olora.config import RunConfig
from olora.core.adapters import (
    OrthogonalityPenalty,
    activate,
    adapter_name,
    add_adapter,
    complement_init,
    concat_adapters,
    copy_adapter_weights,
    default_target_modules,
    factor_parameters,
    l2_norm,
    merge_into_base,
    peft_lora_config,
    set_past_dropout,
    update_l1,
)
from olora.core.train import accepts_logits_to_keep, answer_logits, answer_nll
from olora.data.encoding import IGNORE, Encoded, collate_train
from olora.data.tasks import Task
from olora.errors import OloraError
from olora.seeding import derive_seed

Terms = dict[str, tuple[float, Callable]]


@dataclass
class Stage:
    """One training stage: normally one task; for the ``mtl_*`` methods one stage holds every task."""

    index: int
    label: str
    train_tasks: list[Task]
    eval_tasks: list[Task]


@dataclass
class Context:
    """What a method works on during a run (``model`` becomes a PeftModel when the first adapter is added)."""

    cfg: RunConfig
    model: torch.nn.Module
    seq2seq: bool
    device: torch.device
    tasks: list[Task]
    train_sets: dict[str, list[Encoded]]
    base_path: str
    fold_past: str = "merge"
    pad_id: int = 0  # the tokenizer's pad id (collating examples outside the training loop: EWC)


class Method:
    """The default: one trainable unit learns the tasks in turn, with no extra loss."""

    name = "base"
    full_model = False  # True: every weight trains, and each stage saves the whole model
    forward_transfer = True  # the model after task j-1 can be scored on task j (FWT)

    def stages(self, tasks: list[Task]) -> list[Stage]:
        return [Stage(i, t.name, [t], tasks[: i + 1]) for i, t in enumerate(tasks)]

    def adapter(self, stage: Stage) -> str | None:
        """The adapter the stage trains (None: the whole model)."""
        return None

    def setup(self, ctx: Context) -> None:
        """Once, after the model is loaded."""

    def enter_stage(self, ctx: Context, stage: Stage) -> None:
        """Before the stage trains or is reloaded."""

    def begin_training(self, ctx: Context, stage: Stage) -> None:
        raise NotImplementedError

    def training_data(self, ctx: Context, stage: Stage) -> list[Encoded]:
        return [ex for t in stage.train_tasks for ex in ctx.train_sets[t.name]]

    def penalties(self, ctx: Context, stage: Stage) -> tuple[Terms, Terms]:
        return {}, {}

    def end_training(self, ctx: Context, stage: Stage) -> None:
        """After the stage's last optimizer step, before evaluation."""

    def parameter_groups(self, ctx: Context, stage: Stage) -> dict[str, list[torch.nn.Parameter]]:
        """What trains, in named groups (``log.grad_norms`` reports each term's gradient per group)."""
        name = self.adapter(stage)
        if name is not None:
            return factor_parameters(ctx.model, name)
        return {"all": [p for p in ctx.model.parameters() if p.requires_grad]}

    def prepare_eval(self, ctx: Context, stage: Stage, j: int) -> bool:
        """Set the model up to answer task j after ``stage``; False = reuse the score after training j."""
        raise NotImplementedError

    def matrix(self, rows: list[list[float]], n_tasks: int) -> list[list[float]]:
        """The accuracy matrix from the stages' rows."""
        return rows

    def inference_stages(self, stages: list, task: int | None) -> list:
        """The stages whose adapters (summed) or model answer task ``task`` (None: any task) at the end."""
        return stages[-1:]

    def summed_adapters(self, stages: list) -> list:
        """Stages whose task adapters are summed at inference (their subspaces are compared)."""
        return []

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass


def ensure_adapter(ctx: Context, name: str, index: int) -> None:
    """Add adapter ``name`` unless the model has it; its init depends on (seed, index) only."""
    if name in getattr(ctx.model, "peft_config", {}):
        return
    torch.manual_seed(derive_seed(ctx.cfg.seed, "adapter", index))
    lora = peft_lora_config(ctx.cfg.lora, ctx.model, ctx.seq2seq)
    lora.base_model_name_or_path = ctx.base_path
    ctx.model = add_adapter(ctx.model, name, lora)


# ----------------------------------------------------------------------------- what trains


class OneAdapter(Method):
    """One LoRA adapter (``seq``) trained on every task in turn."""

    ADAPTER = "seq"

    def adapter(self, stage: Stage) -> str:
        return self.ADAPTER

    def enter_stage(self, ctx: Context, stage: Stage) -> None:
        ensure_adapter(ctx, self.ADAPTER, stage.index)

    def begin_training(self, ctx: Context, stage: Stage) -> None:
        activate(ctx.model, [self.ADAPTER], trainable=self.ADAPTER)

    def prepare_eval(self, ctx: Context, stage: Stage, j: int) -> bool:
        activate(ctx.model, [self.ADAPTER], trainable=None)
        return True

    def teacher(self, ctx: Context) -> Callable:
        """LwF's teacher: a frozen copy of the adapter as it was before the task."""
        ensure_adapter(ctx, LwFTeacher.ADAPTER, -1)
        copy_adapter_weights(ctx.model, self.ADAPTER, LwFTeacher.ADAPTER)
        activate(ctx.model, [self.ADAPTER], trainable=self.ADAPTER)
        return LwFTeacher(ctx.model, LwFTeacher.ADAPTER, self.ADAPTER, ctx.seq2seq, ctx.cfg.baselines.lwf_temperature)


class WholeModel(Method):
    """Every weight trains (full fine-tuning); each stage saves the whole model."""

    full_model = True

    def begin_training(self, ctx: Context, stage: Stage) -> None:
        ctx.model.requires_grad_(True)

    def prepare_eval(self, ctx: Context, stage: Stage, j: int) -> bool:
        ctx.model.requires_grad_(False)
        return True

    def teacher(self, ctx: Context) -> Callable:
        return ModelTeacher(ctx.model, ctx.seq2seq, ctx.cfg.baselines.lwf_temperature)


class TaskAdapters(Method):
    """A new LoRA per task; the past ones stay in the forward pass, frozen (IncLoRA).

    Σ_{i<t} s_i B_i A_i runs as separate adapters (``fold_past=none``), one stacked adapter (``stack``)
    or merged into the base weights (``merge``); the penalty reads the per-task adapters, which stay
    frozen and are saved as they are.
    """

    FOLDED = "past_folded"

    def __init__(self) -> None:
        self.names: list[str] = []  # task adapters so far, in order
        self.merged: list[str] = []  # those added into the base weights
        self.folded: list[str] = []  # those summed into FOLDED

    def adapter(self, stage: Stage) -> str:
        return adapter_name(stage.index, stage.label)

    def enter_stage(self, ctx: Context, stage: Stage) -> None:
        name = self.adapter(stage)
        ensure_adapter(ctx, name, stage.index)
        if name not in self.names:
            self.names.append(name)

    def past(self, name: str) -> list[str]:
        return self.names[: self.names.index(name)]

    def in_forward(self, ctx: Context, name: str) -> list[str]:
        """The adapters that run beside the base model for task ``name`` (training and evaluation)."""
        past = self.past(name)
        if ctx.fold_past == "merge":
            for adapter in past:
                if adapter not in self.merged:
                    merge_into_base(ctx.model, adapter)
                    self.merged.append(adapter)
            return [name]
        if ctx.fold_past == "none" or len(past) < 2:
            return [*past, name]
        if self.folded != past:
            if self.FOLDED in ctx.model.peft_config:
                ctx.model.delete_adapter(self.FOLDED)
            concat_adapters(ctx.model, past, self.FOLDED)
            self.folded = list(past)
        return [self.FOLDED, name]

    def begin_training(self, ctx: Context, stage: Stage) -> None:
        name = self.adapter(stage)
        active = self.in_forward(ctx, name)
        activate(ctx.model, active, trainable=name)
        set_past_dropout(ctx.model, [a for a in active if a != name], name, ctx.cfg.olora.past_dropout)

    def prepare_eval(self, ctx: Context, stage: Stage, j: int) -> bool:
        activate(ctx.model, self.in_forward(ctx, self.names[-1]), trainable=None)
        return True

    def inference_stages(self, stages: list, task: int | None) -> list:
        return stages

    def summed_adapters(self, stages: list) -> list:
        return stages


# ----------------------------------------------------------------------------- the methods


class OLoRA(TaskAdapters):
    """O-LoRA (Wang et al. 2023): task adapters + λ1·orthogonality to the past adapters + λ2·L2."""

    def begin_training(self, ctx: Context, stage: Stage) -> None:
        super().begin_training(ctx, stage)
        past = self.past(self.adapter(stage))
        if ctx.cfg.olora.init == "complement" and past:
            complement_init(ctx.model, past, self.adapter(stage))

    def penalties(self, ctx: Context, stage: Stage) -> tuple[Terms, Terms]:
        lam_orth, lam_l2 = ctx.cfg.lambdas_for(stage.label)
        name = self.adapter(stage)
        terms: Terms = {}
        if self.past(name):
            terms["orth"] = (lam_orth, OrthogonalityPenalty(ctx.model, self.past(name), name, ctx.cfg.olora.orth))
        terms["l2"] = (lam_l2, lambda: l2_norm(ctx.model, name))
        return terms, {}


class NLoRA(TaskAdapters):
    """N-LoRA (Yang et al., COLING 2025, arXiv 2410.10179): task adapters, past frozen (and merged), with
    λ·Σ_layers ‖ΔW_t‖_1 on the current task's update ΔW_t = s·B_t·A_t, so that each task writes few,
    rarely shared weights ("non-collision"); no orthogonality term."""

    def penalties(self, ctx: Context, stage: Stage) -> tuple[Terms, Terms]:
        name = self.adapter(stage)
        return {"l1": (ctx.cfg.baselines.nlora_lambda, lambda: update_l1(ctx.model, name))}, {}


class OSF(Method):
    """Orthogonal subspace fine-tuning (Nayak et al. 2025, arXiv 2504.07097) with PEFT's ``OSFConfig``.

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

    full_model = True

    def begin_training(self, ctx: Context, stage: Stage) -> None:
        share = stage.index / len(ctx.tasks)  # a float in (0, 1) is a fraction of each matrix's min(out, in)
        targets = ctx.cfg.lora.target_modules or default_target_modules(ctx.model)
        config = OSFConfig(target_modules=list(targets), effective_rank=share if share > 0 else 1)
        ctx.model = get_peft_model(ctx.model, config)

    def end_training(self, ctx: Context, stage: Stage) -> None:
        ctx.model = ctx.model.merge_and_unload()  # W ← W + ΔW: the next SVD sees what this task learned
        ctx.model.requires_grad_(False)

    def prepare_eval(self, ctx: Context, stage: Stage, j: int) -> bool:
        return True


class Replay:
    """Mixes a bounded memory into every later task: ``baselines.replay_per_task`` examples of each
    past task, a seeded sample (a pure function of the data, so a resumed run rebuilds it)."""

    def training_data(self, ctx: Context, stage: Stage) -> list[Encoded]:
        data = super().training_data(ctx, stage)
        if stage.index == 0:
            return data
        past = [ctx.train_sets[t.name] for t in ctx.tasks[: stage.index]]
        seeds = [derive_seed(ctx.cfg.seed, "replay", j) for j in range(stage.index)]
        return data + replay_memory(past, ctx.cfg.baselines.replay_per_task, seeds)


class EWC:
    """Elastic weight consolidation: (λ/2)·Σ F·(θ − θ*)² on what trains, F summed over past tasks."""

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        self.ewc = EWCPenalty()

    def penalties(self, ctx: Context, stage: Stage) -> tuple[Terms, Terms]:
        weight_terms, batch_terms = super().penalties(ctx, stage)
        self.ewc.bind(ctx.model)
        return {**weight_terms, "ewc": (ctx.cfg.baselines.ewc_lambda, self.ewc)}, batch_terms

    def end_training(self, ctx: Context, stage: Stage) -> None:
        super().end_training(ctx, stage)
        self.ewc.consolidate(
            ctx.model,
            ctx.train_sets[stage.label],
            seq2seq=ctx.seq2seq,
            pad_id=ctx.pad_id,
            nll=lambda m, b: answer_nll(m, b, ctx.seq2seq),
            device=ctx.device,
            max_examples=ctx.cfg.baselines.ewc_examples,
            seed=derive_seed(ctx.cfg.seed, "ewc", stage.index),
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.ewc.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.ewc.load_state_dict(state)


class LwF:
    """Learning without forgetting: distil from the model as it was before the task."""

    def penalties(self, ctx: Context, stage: Stage) -> tuple[Terms, Terms]:
        weight_terms, batch_terms = super().penalties(ctx, stage)
        if stage.index == 0:
            return weight_terms, batch_terms
        return weight_terms, {**batch_terms, "lwf": (ctx.cfg.baselines.lwf_lambda, self.teacher(ctx))}


class Joint:
    """Multi-task learning: one stage on the union of all tasks (the upper bound)."""

    forward_transfer = False

    def stages(self, tasks: list[Task]) -> list[Stage]:
        return [Stage(0, "all", tasks, tasks)]

    def matrix(self, rows: list[list[float]], n_tasks: int) -> list[list[float]]:
        """One stage evaluated on everything: every row is that row."""
        return [rows[0][: i + 1] for i in range(n_tasks - 1)] + [rows[0]]


class PerTaskLoRA(Method):
    """One fresh LoRA per task, alone in the forward pass; the task id picks it at inference."""

    forward_transfer = False

    def adapter(self, stage: Stage) -> str:
        return adapter_name(stage.index, stage.label)

    def enter_stage(self, ctx: Context, stage: Stage) -> None:
        ensure_adapter(ctx, self.adapter(stage), stage.index)

    def begin_training(self, ctx: Context, stage: Stage) -> None:
        activate(ctx.model, [self.adapter(stage)], trainable=self.adapter(stage))

    def prepare_eval(self, ctx: Context, stage: Stage, j: int) -> bool:
        if j < stage.index:
            return False  # adapter j has not changed since task j
        activate(ctx.model, [self.adapter(stage)], trainable=None)
        return True

    def inference_stages(self, stages: list, task: int | None) -> list:
        if task is None:
            raise OloraError(f"{self.name} picks its adapter by task id: give --task")
        return [stages[task]]


class PerTaskFT(WholeModel):
    """A fresh copy of the base model per task (PerTaskFT); the task id picks it at inference."""

    forward_transfer = False

    def setup(self, ctx: Context) -> None:
        self.base = {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}

    def begin_training(self, ctx: Context, stage: Stage) -> None:
        ctx.model.load_state_dict(self.base)
        super().begin_training(ctx, stage)

    def prepare_eval(self, ctx: Context, stage: Stage, j: int) -> bool:
        return j == stage.index and super().prepare_eval(ctx, stage, j)

    def inference_stages(self, stages: list, task: int | None) -> list:
        return PerTaskLoRA.inference_stages(self, stages, task)


METHODS: dict[str, type[Method]] = {}


def register(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: make a method available as ``method=<name>``."""

    def add(cls: type[Method]) -> type[Method]:
        METHODS[name] = type(cls.__name__, (cls,), {"name": name})
        return cls

    return add


def _define(name: str, *bases: type) -> None:
    register(name)(type(name, bases, {}))


_define("olora", OLoRA)
_define("inclora", TaskAdapters)
_define("seqlora", OneAdapter)
_define("seqft", WholeModel)
for _suffix, _unit in (("ft", WholeModel), ("lora", OneAdapter)):
    _define(f"replay_{_suffix}", Replay, _unit)
    _define(f"ewc_{_suffix}", EWC, _unit)
    _define(f"lwf_{_suffix}", LwF, _unit)
    _define(f"mtl_{_suffix}", Joint, _unit)
_define("pertask_lora", PerTaskLoRA)
_define("pertask_ft", PerTaskFT)
_define("nlora", NLoRA)
_define("osf", OSF)


def get_method(name: str) -> Method:
    """A fresh instance of the method registered as ``name``."""
    if name not in METHODS:
        close = difflib.get_close_matches(name, list(METHODS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise OloraError(f"method={name!r} is invalid: must be one of {', '.join(METHODS)}{hint}")
    return METHODS[name]()


# ----------------------------------------------------------------------------- the baselines' parts


def replay_memory(past: list[list[Encoded]], per_task: int, seeds: list[int]) -> list[Encoded]:
    """The replay memory: ``per_task`` examples of each past task (all if it has fewer), drawn with
    that task's seed."""
    memory = []
    for examples, seed in zip(past, seeds, strict=True):
        memory += random.Random(seed).sample(examples, min(per_task, len(examples)))
    return memory


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

    def __init__(self, model: torch.nn.Module, seq2seq: bool, temperature: float):
        self.teacher = copy.deepcopy(model).eval().requires_grad_(False)
        self.seq2seq, self.temperature = seq2seq, temperature
        self.use_keep = not seq2seq and accepts_logits_to_keep(model)

    def __call__(self, batch: dict, student_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits, _ = answer_logits(self.teacher, batch, self.seq2seq, self.use_keep)
        return distillation_kl(student_logits, teacher_logits, target, self.temperature)


class LwFTeacher:
    """LwF's teacher for one adapter: a frozen copy of the adapter before the task.

    Called with a micro-batch and the student's answer logits: runs the teacher on the same batch
    (adapter switched, no gradient, no dropout), switches back, and returns the distillation term.
    """

    ADAPTER = "lwf_teacher"

    def __init__(self, model: torch.nn.Module, teacher: str, student: str, seq2seq: bool, temperature: float):
        self.model, self.teacher, self.student = model, teacher, student
        self.seq2seq, self.temperature = seq2seq, temperature
        self.use_keep = not seq2seq and accepts_logits_to_keep(model)

    def __call__(self, batch: dict, student_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        activate(self.model, [self.teacher], trainable=None)
        with torch.no_grad():
            teacher_logits, _ = answer_logits(self.model, batch, self.seq2seq, self.use_keep)
        activate(self.model, [self.student], trainable=self.student)
        self.model.train()
        return distillation_kl(student_logits, teacher_logits, target, self.temperature)
