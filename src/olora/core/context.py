"""The one object a run works on: what the run loop and every method hook receive."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from accelerate import Accelerator

from olora.config import RunConfig, TrainConfig
from olora.core.resources import Choice
from olora.core.sharding import is_sharded
from olora.data.encoding import Encoded
from olora.data.tasks import Task


@dataclass
class RunContext:
    """A run in progress. ``model`` becomes a PeftModel when a method adds the first adapter, and a method
    may replace it (OSF wraps and unwraps it), so hooks always read ``ctx.model``.

    ``choices`` records every setting chosen for the machine or by a method (with its reason), for
    results.json's ``resources``; ``deviations`` lists how the run departs from its benchmark's protocol.
    """

    cfg: RunConfig
    model: torch.nn.Module
    tokenizer: object
    accelerator: Accelerator
    seq2seq: bool
    tasks: list[Task]
    train_sets: dict[str, list[Encoded]]
    test_sets: dict[str, list[Encoded]]
    train_cfg: TrainConfig  # cfg.train with the 'auto' settings resolved
    base_path: str
    choices: dict[str, Choice] = field(default_factory=dict)
    deviations: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)  # what determines a stage besides its tasks (fingerprints)
    model_digest: str = ""  # the sha256 of the model's checkpoint files (and of start_from's adapter)
    start: dict | None = None  # start_from's export info: its tasks are the run's first, frozen, stages

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def sharded(self) -> bool:
        """FSDP2 shards the model's weights over the processes (olora.core.sharding)."""
        return is_sharded(self.accelerator)
