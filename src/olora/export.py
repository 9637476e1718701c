"""``olora export``: one deployable artefact from a run.

* ``adapter``: a single standard PEFT LoRA adapter equal to the sum of the task adapters. With
  s_i = alpha_i / r_i, Σ_i s_i B_i A_i = [s_1 B_1 | … | s_T B_T] · [A_1; …; A_T], so the export has
  rank R = Σ r_i, A stacked by rows, the scaled B's stacked by columns, and alpha = R (scaling 1).
  It is built from the saved tensors alone; no model is loaded.
* ``merged``: a plain transformers checkpoint, W = W0 + Σ_i s_i B_i A_i, loadable without peft.

Both folders carry ``olora_export.json``: the task definitions and prompt settings that
``olora predict`` needs to rebuild prompts.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from olora.artifacts import ADAPTER_WEIGHTS, load_safetensors_dir
from olora.errors import OloraError
from olora.io import atomic_write_json, replace_dir
from olora.methods import METHODS
from olora.report import load_run

EXPORT_INFO = "olora_export.json"


def stage_records(run_dir: Path) -> list[dict]:
    records = [json.loads(p.read_text(encoding="utf-8")) for p in (run_dir / "tasks").glob("*/task.json")]
    return sorted(records, key=lambda r: r["index"])


def run_adapters(run_dir: Path, results: dict) -> list[Path]:
    """The adapter folders whose sum is the run's final model."""
    method = METHODS[results["method"]]
    stages = stage_records(run_dir)
    folders = [run_dir / "tasks" / f"{r['index']}-{r['name']}" / "adapter" for r in stages]
    return folders if method.adapter_per_task else folders[-1:]


def concat_adapter_files(folders: list[Path]) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, adapter config) of the single adapter equal to the sum of ``folders``."""
    configs = [json.loads((f / "adapter_config.json").read_text(encoding="utf-8")) for f in folders]
    states = [load_file(str(f / ADAPTER_WEIGHTS)) for f in folders]
    for cfg in configs:
        if cfg.get("use_rslora") or cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
            raise OloraError("export supports uniform LoRA adapters only (no rslora or rank/alpha patterns)")
    scales = [cfg["lora_alpha"] / cfg["r"] for cfg in configs]
    merged: dict[str, torch.Tensor] = {}
    for key in states[0]:
        parts = [s[key] for s in states]
        if key.endswith("lora_A.weight"):
            merged[key] = torch.cat(parts, dim=0)
        elif key.endswith("lora_B.weight"):
            merged[key] = torch.cat([p * scale for p, scale in zip(parts, scales, strict=True)], dim=1)
        else:
            raise OloraError(f"export: unexpected tensor {key!r} in {folders[0]}")
    rank = sum(cfg["r"] for cfg in configs)
    config = {**configs[0], "r": rank, "lora_alpha": rank}
    return merged, config


def _export_info(run_dir: Path, results: dict, fmt: str) -> dict:
    tasks = [t for r in stage_records(run_dir) for t in r["tasks"]]
    return {
        "format": fmt,
        "source_run": str(run_dir.resolve()),
        "method": results["method"],
        "model": results["config"]["model"],
        "tasks": tasks,
        "data": results["config"]["data"],
        "dtype": run_dtype(results),
    }


def export_run(run_dir: Path, fmt: str, out: Path) -> Path:
    run_dir = Path(run_dir)
    results = load_run(run_dir)
    method = METHODS[results["method"]]
    if method.task_routing:
        raise OloraError(
            f"{results['method']} picks an adapter or model by task id: there is no single model to export; use "
            "tasks/<i>-<name>/adapter (or model) directly"
        )
    if out.exists() and not out.is_dir():
        raise OloraError(f"export target {str(out)!r} is a file: choose a folder path")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if fmt == "adapter":
        if method.full_finetune:
            raise OloraError(f"{results['method']} trains the whole model, so it has no adapter: use --format merged")
        state, config = concat_adapter_files(run_adapters(run_dir, results))
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / ADAPTER_WEIGHTS))
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    elif fmt == "merged":
        model, tokenizer = final_model(run_dir, results)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    else:
        raise OloraError(f"--format {fmt!r} is unknown: use adapter or merged")
    atomic_write_json(tmp / EXPORT_INFO, _export_info(run_dir, results, fmt))
    replace_dir(tmp, out)
    return out


def run_dtype(results: dict) -> str:
    """The weights dtype the run used ('auto' resolved; results of olora < 0.2 name it in the config)."""
    chosen = (results.get("resources") or {}).get("dtype", {}).get("value")
    return chosen or (results["config"]["dtype"] if results["config"]["dtype"] != "auto" else "float32")


def final_model(run_dir: Path, results: dict, stage: int = -1):
    """(model, tokenizer) of the run's state after ``stage`` (default: the last) as one plain
    transformers model (no peft); ``stage`` matters for full fine-tuning only."""
    from peft import PeftModel

    from olora.models import load_model

    cfg = results["config"]
    base, tokenizer = load_model(cfg["model"], run_dtype(results))
    if METHODS[results["method"]].full_finetune:
        last = stage_records(run_dir)[stage]
        base.load_state_dict(
            load_safetensors_dir(run_dir / "tasks" / f"{last['index']}-{last['name']}" / "model"), strict=False
        )
        return base, tokenizer
    state, config = concat_adapter_files(run_adapters(run_dir, results))
    with _temporary_adapter(state, config, run_dir) as folder:
        model = PeftModel.from_pretrained(base, folder)
        return model.merge_and_unload(), tokenizer


class _temporary_adapter:
    """A concatenated adapter written to a scratch folder for the length of a ``with`` block."""

    def __init__(self, state: dict, config: dict, near: Path):
        self.state, self.config = state, config
        self.folder = near / ".export-scratch"

    def __enter__(self) -> Path:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in self.state.items()}, str(self.folder / ADAPTER_WEIGHTS))
        (self.folder / "adapter_config.json").write_text(json.dumps(self.config), encoding="utf-8")
        return self.folder

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
