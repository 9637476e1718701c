"""The method API: what a continual-learning method is to the run loop.

A method is one object that owns its behaviour. The run loop (olora.runner) calls, for every stage
(normally one task; ``mtl_*``: one stage holding every task):

| hook           | when                                               | returns / does                          |
|----------------|----------------------------------------------------|-----------------------------------------|
| setup          | once, after the model is loaded                    | may record choices in ``ctx.choices``   |
| enter_stage    | before each stage, also when a finished one reloads | adds the stage's adapter                |
| training_data  | before training                                    | the examples (replay adds its memory)   |
| begin_training | before training                                    | sets what trains, returns TrainingHooks |
| end_training   | after the last optimizer step, before evaluation   | EWC's Fisher, InfLoRA's input basis     |
| prepare_eval   | before scoring task j                              | False: the score after task j holds     |
| stage_report   | when the stage is saved                            | extra numbers for task.json             |

``TrainingHooks`` (olora.core.train) carries the weight terms (once per step), batch terms (every
micro-batch), forward hooks while the stage trains (activation statistics), gradient transforms after
backward, transforms after each optimizer step, and the named parameter groups for gradient logging.

A method's options are a dataclass in its own module, registered as a config section
(``olora.config.register_options``); the class lists the sections it reads in ``sections`` and finds each
as an attribute (``self.replay.per_task``). ``state_dict`` / ``load_state_dict`` keep what the method needs
between stages (saved with each stage, so a resumed or extended run has it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from olora.core.context import RunContext
from olora.core.train import TrainingHooks
from olora.data.encoding import Encoded
from olora.data.tasks import Task
from olora.errors import OloraError


@dataclass(frozen=True)
class Tuned:
    """A method's one main hyperparameter and the values ``olora tune`` tries on the validation split: three
    for every method, so each gets the same budget. ``values`` are tried as given (the default among them);
    ``factors`` multiply the value the config resolves (the benchmark's or the user's), so the grid follows
    any benchmark's scale. ``overridden_by``: settings that, when set, make ``key`` change nothing."""

    key: str  # a dotted config key
    values: tuple[float, ...] = ()
    factors: tuple[float, ...] = ()
    overridden_by: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if bool(self.values) == bool(self.factors) or len(self.values or self.factors) != 3:
            raise ValueError(f"Tuned({self.key!r}): give three values or three factors, not both")

    def candidates(self, current: float) -> list[float]:
        if self.values:
            return list(self.values)
        return [current if f == 1 else float(f"{current * f:.6g}") for f in self.factors]


@dataclass
class Stage:
    """One training stage: normally one task; for the ``mtl_*`` methods one stage holds every task."""

    index: int
    label: str
    train_tasks: list[Task]
    eval_tasks: list[Task]


class Method:
    """The default: one trainable unit learns the tasks in turn, with no extra term."""

    name: ClassVar[str] = "base"
    sections: ClassVar[tuple[str, ...]] = ()  # the config sections this class reads (its options)
    trains: ClassVar[Literal["adapter", "model"]] = "adapter"  # 'model': every stage saves the whole model
    forward_transfer: ClassVar[bool] = True  # the model after task j-1 can be scored on task j (FWT)
    # What `olora tune` varies: the learning rate, unless the method has a weight or threshold of its own.
    tuned: ClassVar[Tuned] = Tuned("train.lr", factors=(0.5, 1.0, 2.0))

    def __init__(self, options: dict[str, Any]):
        for section in self.option_sections():
            setattr(self, section, options[section])

    @classmethod
    def option_sections(cls) -> list[str]:
        """Every config section this method reads, its bases' included."""
        seen: list[str] = []
        for klass in reversed(cls.__mro__):
            seen += [s for s in getattr(klass, "sections", ()) if s not in seen]
        return seen

    @classmethod
    def summary(cls) -> str:
        """The first paragraph of the method's docstring, on one line (``olora methods``)."""
        return " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split()).replace("``", "")

    # ----------------------------------------------------------------- the stages

    def stages(self, tasks: list[Task]) -> list[Stage]:
        return [Stage(i, t.name, [t], tasks[: i + 1]) for i, t in enumerate(tasks)]

    def adapter(self, stage: Stage) -> str:
        """The adapter the stage trains (methods with ``trains = 'adapter'``)."""
        raise NotImplementedError(f"{self.name} trains the whole model: it has no adapter")

    # ----------------------------------------------------------------- lifecycle hooks

    def setup(self, ctx: RunContext) -> None:
        """Once, after the model is loaded."""

    def adopt_export(self, ctx: RunContext, folder: str, n_tasks: int) -> None:
        """Take an exported adapter (the sum of ``n_tasks`` task adapters) as the frozen past of this run
        (``start_from``): the run's stages 0..n_tasks-1 are that export's tasks and are not trained."""
        raise OloraError(
            f"method={self.name} cannot start from an exported adapter: use a task-adapter method (olora, inclora, "
            "nlora, ella, olora_proj), or grow the run itself (olora run with its config and more tasks)"
        )

    def enter_stage(self, ctx: RunContext, stage: Stage) -> None:
        """Before the stage trains or is reloaded."""

    def training_data(self, ctx: RunContext, stage: Stage) -> list[Encoded]:
        return [ex for t in stage.train_tasks for ex in ctx.train_sets[t.name]]

    def begin_training(self, ctx: RunContext, stage: Stage) -> TrainingHooks:
        """Set what trains (``requires_grad``) and return the hooks of the training loop."""
        raise NotImplementedError

    def end_training(self, ctx: RunContext, stage: Stage) -> None:
        """After the stage's last optimizer step, before evaluation."""

    def prepare_eval(self, ctx: RunContext, stage: Stage, j: int) -> bool:
        """Set the model up to answer task j after ``stage``; False = reuse the score after training j."""
        raise NotImplementedError

    def stage_report(self, ctx: RunContext, stage: Stage) -> dict:
        """Numbers the method adds to the stage's task.json (``method`` key)."""
        return {}

    # ----------------------------------------------------------------- results and inference

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
