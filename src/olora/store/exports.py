"""An export folder (``olora export``): the one place that knows its layout.

OUT/adapter_model.safetensors + adapter_config.json   one stock PEFT adapter, the sum of the task adapters
                                                      (``--format adapter``), or a plain checkpoint (``merged``)
OUT/olora_export.json                                 what a later run needs: the tasks and their prompts and
                                                      labels, the config's task entries (to load their data
                                                      again), the data settings, the accuracy matrix, the model
OUT/README.md                                         the model card
"""

from __future__ import annotations

import json
from pathlib import Path

from olora.errors import OloraError
from olora.store.checkpoint import sha256

EXPORT_INFO = "olora_export.json"


class ExportFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.info_file = self.path / EXPORT_INFO
        self.adapter_weights = self.path / "adapter_model.safetensors"

    def is_export(self) -> bool:
        return self.info_file.is_file()

    def info(self) -> dict:
        """olora_export.json, or a one-line error naming the problem."""
        if not self.is_export():
            raise OloraError(f"{str(self.path)!r} is not an olora export (no {EXPORT_INFO}): run `olora export` first")
        try:
            return json.loads(self.info_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise OloraError(f"{str(self.info_file)!r} is not valid JSON ({exc.msg}): export the run again") from None

    def past_for_new_tasks(self) -> dict:
        """The info of an adapter export that a new run can continue from (its tasks as the frozen past)."""
        info = self.info()
        if info.get("format") != "adapter":
            raise OloraError(
                f"start_from={str(self.path)!r} is a merged checkpoint, which keeps no lora_A rows for the new tasks "
                "to stay orthogonal to: export the run with --format adapter"
            )
        if "matrix" not in info or "task_entries" not in info:
            raise OloraError(f"start_from={str(self.path)!r} was exported by an older olora: export the run again")
        return info

    def digest(self) -> str:
        """sha256 of the adapter's weights and config (part of the fingerprint of the stages built on it)."""
        return sha256(self.adapter_weights) + sha256(self.path / "adapter_config.json")
