"""Continual-learning methods behind one interface: what trains, what is active, what is penalised.

The paper's baselines (Replay, EWC, LwF, PerTaskFT, MTL; reused from Progressive Prompts) fine-tune
the whole model: they are the ``*_ft`` methods. The ``*_lora`` methods do the same on one LoRA adapter
(a cheaper family, not the paper's rows).

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
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from olora.encoding import IGNORE, Encoded, collate_train


@dataclass(frozen=True)
class Method:
    name: str
    adapter_per_task: bool = False  # a fresh LoRA for each task
    keep_past_active: bool = False  # past adapters stay in the forward pass while training
    orthogonal: bool = False  # O-LoRA's penalty
    full_finetune: bool = False  # no adapters; every weight trains
    task_routing: bool = False  # evaluation of task j uses task j's adapter (or model) only
    joint: bool = False  # one stage on the union of all tasks
    replay: bool = False
    ewc: bool = False
    lwf: bool = False

    def adapter_name(self, index: int, task: str) -> str | None:
        from olora.adapters import adapter_name

        if self.full_finetune:
            return None
        return adapter_name(index, task) if self.adapter_per_task else "seq"


_BASELINES = (
    Method("replay", replay=True),
    Method("ewc", ewc=True),
    Method("lwf", lwf=True),
    Method("mtl", joint=True),
    Method("pertask", task_routing=True),
)
METHODS = {
    m.name: m
    for m in (
        Method("olora", adapter_per_task=True, keep_past_active=True, orthogonal=True),
        Method("inclora", adapter_per_task=True, keep_past_active=True),
        Method("seqlora"),
        Method("seqft", full_finetune=True),
        *(replace(m, name=f"{m.name}_ft", full_finetune=True) for m in _BASELINES),
        *(replace(m, name=f"{m.name}_lora", adapter_per_task=m.task_routing) for m in _BASELINES),
    )
}


def replay_memory(past: list[list[Encoded]], per_task: int, seeds: list[int]) -> list[Encoded]:
    """The replay memory: ``per_task`` examples of each past task (all if it has fewer), drawn with
    that task's seed. A pure function of the past training sets, so a resumed run rebuilds it."""
    memory = []
    for examples, seed in zip(past, seeds, strict=True):
        memory += random.Random(seed).sample(examples, min(per_task, len(examples)))
    return memory


class EWCPenalty:
    """Elastic weight consolidation on the trainable parameters (Kirkpatrick et al. 2017).

    penalty = ½ Σ_p F_p (θ_p − θ*_p)², with F the diagonal Fisher (mean squared gradient of the NLL)
    summed over past tasks, and θ* the weights after the last task. It is zero at the anchor.
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
        import copy

        from olora.train import accepts_logits_to_keep

        self.teacher = copy.deepcopy(model).eval().requires_grad_(False)
        self.seq2seq, self.temperature = seq2seq, temperature
        self.use_keep = not seq2seq and accepts_logits_to_keep(model)

    def __call__(self, batch: dict, student_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        from olora.train import answer_logits

        with torch.no_grad():
            teacher_logits, _ = answer_logits(self.teacher, batch, self.seq2seq, self.use_keep)
        return distillation_kl(student_logits, teacher_logits, target, self.temperature)


class LwFTeacher:
    """The model before the task (a frozen copy of the adapter) as LwF's teacher.

    Called with a micro-batch and the student's answer logits: runs the teacher on the same batch
    (adapter switched, no gradient, no dropout), switches back, and returns the distillation term.
    """

    def __init__(self, model: torch.nn.Module, teacher: str, student: str, seq2seq: bool, temperature: float):
        from olora.train import accepts_logits_to_keep

        self.model, self.teacher, self.student = model, teacher, student
        self.seq2seq, self.temperature = seq2seq, temperature
        self.use_keep = not seq2seq and accepts_logits_to_keep(model)

    def __call__(self, batch: dict, student_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        from olora.adapters import activate
        from olora.train import answer_logits

        self.model.eval()
        activate(self.model, [self.teacher], trainable=None)
        with torch.no_grad():
            teacher_logits, _ = answer_logits(self.model, batch, self.seq2seq, self.use_keep)
        activate(self.model, [self.student], trainable=self.student)
        self.model.train()
        return distillation_kl(student_logits, teacher_logits, target, self.temperature)
