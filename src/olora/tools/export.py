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
import tempfile
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

from olora.errors import OloraError
from olora.methods import get_method, method_class
from olora.store.artifacts import ADAPTER_WEIGHTS, load_model_weights
from olora.store.exports import EXPORT_INFO
from olora.store.io import atomic_write_json, replace_dir
from olora.store.rundir import RunFolder, StageFolder


def answering_stages(run: RunFolder, results: dict, task: int | None = None) -> list[StageFolder]:
    """The stages whose adapters (summed) or whole model answer ``task`` (None: every task) at the end."""
    return get_method(results["method"]).inference_stages(run.stages(), task)


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


def _export_info(run: RunFolder, results: dict, fmt: str) -> dict:
    """What a later run needs (olora.store.exports): to rebuild prompts, to load the tasks' data again and
    score them, and the accuracy matrix the exported adapters reached."""
    tasks = [t for r in run.stage_records() for t in r["tasks"]]
    return {
        "format": fmt,
        "source_run": str(run.root.resolve()),
        "method": results["method"],
        "model": results["config"]["model"],
        "tasks": tasks,
        "task_entries": results["config"]["tasks"],
        "data": results["config"]["data"],
        "matrix": results["matrix"],
        "metrics": results.get("metrics"),
        "seed": results["seed"],
        "dtype": run_dtype(results),
        "quantize": results["config"].get("quantize", "none"),
    }


def export_run(run_dir: Path, fmt: str, out: Path) -> Path:
    run = RunFolder(run_dir)
    results = run.load_results()
    if fmt not in ("adapter", "merged"):
        raise OloraError(f"--format {fmt!r} is unknown: use adapter or merged")
    stages = answering_stages(run, results)  # raises for methods that pick a model by task id
    if fmt == "adapter" and method_class(results["method"]).trains == "model":
        raise OloraError(f"{results['method']} trains the whole model, so it has no adapter: use --format merged")
    quantize = results["config"].get("quantize", "none")
    if fmt == "merged" and quantize != "none":
        raise OloraError(
            f"this run trained on a quantize={quantize} base: adapters cannot be merged into 4-bit weights; "
            f"export the adapter instead: olora export {run_dir} --format adapter"
        )
    if out.exists() and not out.is_dir():
        raise OloraError(f"export target {str(out)!r} is a file: choose a folder path")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rank = None
    if fmt == "adapter":
        state, config = concat_adapter_files([stage.adapter for stage in stages])
        rank = config["r"]
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / ADAPTER_WEIGHTS))
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    else:
        model, tokenizer = answering_model(run, results)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    atomic_write_json(tmp / EXPORT_INFO, _export_info(run, results, fmt))
    (tmp / "README.md").write_text(model_card(results, fmt, rank), encoding="utf-8")
    replace_dir(tmp, out)
    return out


VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM's --max-lora-rank accepts


def serving_note(fmt: str, rank: int | None, base: str) -> str:
    """How to serve the export with vLLM: an adapter of rank r·T needs --max-lora-rank ≥ r·T (and no bias,
    DoRA or rsLoRA, which olora never sets); a merged checkpoint needs nothing."""
    if fmt != "adapter":
        return "Serve it as any checkpoint, e.g. `vllm serve <this folder>`."
    fits = [r for r in VLLM_LORA_RANKS if r >= (rank or 0)]
    if not fits:
        return (
            f"This adapter has rank {rank}, above vLLM's largest --max-lora-rank ({VLLM_LORA_RANKS[-1]}): serve the "
            "merged export (`olora export RUN --format merged`) instead."
        )
    return (
        f"Serve it with vLLM as a LoRA of rank {rank} (the task adapters stacked): `vllm serve {base} --enable-lora "
        f"--lora-modules olora=<this folder> --max-lora-rank {fits[0]}`; no bias, DoRA or rsLoRA is set."
    )


def model_card(results: dict, fmt: str, rank: int | None = None) -> str:
    """A Hugging Face model card (YAML metadata + Markdown) for the exported folder, so it can be
    published as it is: base model, the task sequence, the accuracy matrix, AA/BWT, how it was made."""
    from olora import __version__
    from olora.tools.report import format_deviations, format_matrix, format_metrics, format_summary

    meta = {
        "base_model": results.get("model_path") or results["model"],
        "tags": list(dict.fromkeys(["olora", "continual-learning", results["method"]])),
        **({"library_name": "peft"} if fmt == "adapter" else {"library_name": "transformers"}),
    }
    cfg = results["config"]
    command = (
        "olora run "
        + " ".join(f"{k}={v}" for k, v in (("method", results["method"]), ("seed", results["seed"])))
        + (f" benchmark={cfg['benchmark']} order={cfg['order']}" if cfg.get("benchmark") else "")
    )
    load = (
        'model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), "<this folder>")'
        if fmt == "adapter"
        else 'model = AutoModelForCausalLM.from_pretrained("<this folder>")'
    )
    notes = "\n".join(line for line in (format_metrics(results), format_deviations(results)) if line)
    return "\n".join(
        [
            "---",
            yaml.safe_dump(meta, sort_keys=False).strip(),
            "---",
            "",
            f"# {results['method']} on {' → '.join(results['tasks'])}",
            "",
            f"Continual fine-tuning of `{meta['base_model']}` on {len(results['tasks'])} tasks in sequence with "
            f"olora {__version__} (method `{results['method']}`, seed {results['seed']}). "
            + (
                "This adapter is the sum of the task adapters: no task id is needed at inference."
                if fmt == "adapter"
                else "The adapters are merged into the weights: a plain transformers checkpoint."
            ),
            "",
            "Accuracy (%) on each task (columns) after training each task (rows):",
            "",
            "```",
            format_matrix(results["tasks"], results["matrix"]),
            format_summary(results),
            *([notes] if notes else []),
            "```",
            "",
            f"Made with: `{command}` (full config in `olora_export.json`'s source run). "
            "Prompts follow the run's template; `olora predict <this folder> --task <name> --text ...` rebuilds them.",
            "",
            serving_note(fmt, rank, meta["base_model"]),
            "",
            "```python",
            "from peft import PeftModel" if fmt == "adapter" else "",
            "from transformers import AutoModelForCausalLM  # AutoModelForSeq2SeqLM for T5",
            f'base = "{meta["base_model"]}"',
            load,
            "```",
            "",
        ]
    )


def run_dtype(results: dict) -> str:
    """The weights dtype the run used ('auto' resolved; results of olora < 0.2 name it in the config)."""
    chosen = (results.get("resources") or {}).get("dtype", {}).get("value")
    return chosen or (results["config"]["dtype"] if results["config"]["dtype"] != "auto" else "float32")


def answering_model(run: RunFolder, results: dict, task: int | None = None):
    """(model, tokenizer) that answers ``task`` (None: any task) after the run, as one plain
    transformers model (no peft): the last whole model, or the base with the adapters merged."""
    from peft import PeftModel

    from olora.core.models import load_model

    quantize = results["config"].get("quantize", "none")
    base, tokenizer = load_model(results["config"]["model"], run_dtype(results), quantize)
    stages = answering_stages(run, results, task)
    if method_class(results["method"]).trains == "model":
        load_model_weights(base, stages[-1].model)
        return base, tokenizer
    state, config = concat_adapter_files([stage.adapter for stage in stages])
    with tempfile.TemporaryDirectory() as folder:
        save_file({k: v.contiguous() for k, v in state.items()}, str(Path(folder) / ADAPTER_WEIGHTS))
        (Path(folder) / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
        model = PeftModel.from_pretrained(base, folder)
        if quantize != "none":  # the adapters answer beside the 4-bit base they trained on, unmerged
            return model, tokenizer
        return model.merge_and_unload(), tokenizer
