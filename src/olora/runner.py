"""Run a task sequence: for each task add an adapter, train it, evaluate every task seen so far.

Output layout (``cfg.output_dir`` = OUT)::

    OUT/config.yaml                       resolved config
    OUT/progress.json                     status (running|failed|complete) and rows so far
    OUT/results.json                      written once, when the whole sequence is done
    OUT/tasks/<i>-<name>/adapter/         task i's adapter, standard PEFT format
    OUT/tasks/<i>-<name>/predictions.jsonl  every seen task's predictions after task i
    OUT/tasks/<i>-<name>/train_log.jsonl  nll / orth / l2 / loss every train.log_every steps
    OUT/tasks/<i>-<name>/task.json        task definition, accuracy row, timings; written last,
                                          so its presence means the task is complete

Re-running the same config on the same OUT skips the completed tasks (their adapters are reloaded).
"""

from __future__ import annotations

import logging
import os
import platform
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from olora import __version__
from olora.adapters import OrthogonalityPenalty, activate, adapter_name, add_adapter, peft_lora_config
from olora.artifacts import load_adapter_weights, read_json, save_adapter
from olora.config import RunConfig, config_to_dict, save_config
from olora.encoding import PromptEncoder
from olora.errors import OloraError
from olora.evaluate import evaluate_task
from olora.io import atomic_write_json, atomic_write_jsonl
from olora.metrics import summarize
from olora.models import is_seq2seq, load_model
from olora.tasks import Task, load_tasks
from olora.train import train_task

log = logging.getLogger(__name__)
SEQ_ADAPTER = "seq"


def versions() -> dict[str, str]:
    import accelerate
    import peft
    import transformers

    return {
        "olora": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "accelerate": accelerate.__version__,
        "python": platform.python_version(),
    }


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if (
            isinstance(value, dict)
            and value
            and all(isinstance(k, str) for k in value)
            and key != "task_lambdas"
        ):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def prepare_output_dir(out: Path, cfg: RunConfig, force: bool) -> None:
    """Create OUT, or check that an existing OUT was made by the same config (resume)."""
    if out.exists() and not out.is_dir():
        raise OloraError(f"output_dir {str(out)!r} is a file: choose a folder path")
    saved = out / "config.yaml"
    if saved.is_file() and not force:
        import yaml

        old = _flatten(yaml.safe_load(saved.read_text(encoding="utf-8")) or {})
        new = _flatten(config_to_dict(cfg))
        diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        if diff:
            raise OloraError(
                f"output_dir {str(out)!r} holds a run with a different config ({', '.join(diff)}): "
                "use another output_dir, or --force to continue it with the new config"
            )
    elif out.is_dir() and any(out.iterdir()) and not saved.is_file() and not force:
        raise OloraError(f"output_dir {str(out)!r} is not empty and is not an olora run: choose another")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise OloraError(
            f"output_dir {str(out)!r} is not writable ({exc.strerror}): choose another"
        ) from None
    save_config(cfg, saved)


def _task_dir(out: Path, index: int, task: Task) -> Path:
    return out / "tasks" / f"{index}-{task.name}"


def run(cfg: RunConfig, force: bool = False) -> dict:
    """Train and evaluate ``cfg.tasks`` in order with ``cfg.method``; return the results dict."""
    started = time.perf_counter()
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise OloraError(f"output_dir {str(out)!r} is a file: choose a folder path")
    tasks = load_tasks(cfg.tasks, cfg.data.dir, cfg.data.train_per_class, cfg.data.test_per_class, cfg.seed)
    model, tokenizer = load_model(cfg.model, cfg.dtype)
    seq2seq = is_seq2seq(model)
    encoder = PromptEncoder(
        tokenizer, seq2seq, cfg.data.max_source_length, cfg.data.add_task_name, cfg.data.add_dataset_name
    )
    train_sets = {t.name: encoder.encode(t, t.train) for t in tasks}
    test_sets = {t.name: encoder.encode(t, t.test) for t in tasks}

    accelerator = Accelerator()
    main = accelerator.is_main_process
    if main:
        prepare_output_dir(out, cfg, force)
    model.to(accelerator.device)
    model_path = model.name_or_path
    names: list[str] = []
    matrix: list[list[float]] = []
    timings: list[dict] = []
    progress = {"status": "running", "tasks": [t.name for t in tasks], "matrix": matrix}
    try:
        for i, task in enumerate(tasks):
            task_dir = _task_dir(out, i, task)
            name = SEQ_ADAPTER if cfg.method == "seqlora" else adapter_name(i, task.name)
            if name not in names:
                torch.manual_seed(cfg.seed + i)  # the adapter's init depends on seed and index only
                lora = peft_lora_config(cfg.lora, model, seq2seq)
                lora.base_model_name_or_path = model_path
                model = add_adapter(model, name, lora)
                names.append(name)
            done = read_json(task_dir / "task.json")
            if done is not None and (task_dir / "adapter").is_dir():
                log.info("task %d (%s) already complete in %s: reusing it", i, task.name, task_dir)
                load_adapter_weights(model, name, task_dir / "adapter")
                matrix.append(done["row"])
                timings.append(done["timings"])
                continue

            activate(model, names, trainable=name)
            past = names[:-1] if cfg.method != "seqlora" else []
            lam_orth, lam_l2 = cfg.lambdas_for(task.name) if cfg.method == "olora" else (0.0, 0.0)
            penalty = OrthogonalityPenalty(model, past, name, cfg.olora.orth) if past and lam_orth else None
            task_dir.mkdir(parents=True, exist_ok=True)
            (task_dir / "train_log.jsonl").unlink(missing_ok=True)
            training = train_task(
                model,
                train_sets[task.name],
                cfg.train,
                seq2seq=seq2seq,
                pad_id=tokenizer.pad_token_id,
                seed=cfg.seed * 1000 + i,
                accelerator=accelerator,
                penalty=penalty,
                l2_adapter=name,
                lambda_orth=lam_orth,
                lambda_l2=lam_l2,
                log_path=task_dir / "train_log.jsonl",
                desc=f"task {i + 1}/{len(tasks)} {task.name} [{cfg.method}]",
            )
            activate(model, names, trainable=None)

            eval_start = time.perf_counter()
            row, rows = [], []
            for seen in tasks[: i + 1]:
                result = evaluate_task(
                    model,
                    tokenizer,
                    test_sets[seen.name],
                    [e.label for e in seen.test],
                    seen.labels,
                    seq2seq=seq2seq,
                    batch_size=cfg.eval.batch_size,
                    max_new_tokens=cfg.eval.max_new_tokens,
                    device=accelerator.device,
                )
                row.append(round(result.accuracy, 4))
                rows += [
                    {"task": seen.name, "input": ex.text, "gold": ex.label, "prediction": pred}
                    for ex, pred in zip(seen.test, result.predictions, strict=True)
                ]
            timing = {
                "train_s": round(training.wall_s, 3),
                "eval_s": round(time.perf_counter() - eval_start, 3),
                "steps": training.steps,
            }
            matrix.append(row)
            timings.append(timing)
            log.info(
                "after %s: %s",
                task.name,
                ", ".join(f"{t.name} {a:.1f}" for t, a in zip(tasks, row, strict=True)),
            )
            if main:
                save_adapter(model, name, task_dir / "adapter")
                atomic_write_jsonl(task_dir / "predictions.jsonl", rows)
                atomic_write_json(
                    task_dir / "task.json",
                    {
                        **task.to_dict(),
                        "index": i,
                        "adapter_name": name,
                        "row": row,
                        "timings": timing,
                        "lambda_orth": lam_orth,
                        "lambda_l2": lam_l2,
                        "final_loss": training.last_loss,
                        "n_train": len(task.train),
                        "n_test": len(task.test),
                        "n_truncated": sum(e.truncated for e in train_sets[task.name] + test_sets[task.name]),
                    },
                )
                atomic_write_json(out / "progress.json", progress)
    except BaseException as exc:
        if main and out.is_dir():
            progress.update(status="failed", error=f"{type(exc).__name__}: {exc}")
            atomic_write_json(out / "progress.json", progress)
        raise

    results = {
        "status": "complete",
        "method": cfg.method,
        "model": cfg.model,
        "model_path": model_path,
        "architecture": "seq2seq" if seq2seq else "decoder-only",
        "seed": cfg.seed,
        "tasks": [t.name for t in tasks],
        "task_types": [t.task_type for t in tasks],
        "matrix": matrix,
        **summarize(matrix),
        "timings": timings,
        "wall_s": round(time.perf_counter() - started, 3),
        "device": str(accelerator.device),
        "num_processes": accelerator.num_processes,
        "versions": versions(),
        "config": config_to_dict(cfg),
    }
    if main:
        progress["status"] = "complete"
        atomic_write_json(out / "progress.json", progress)
        atomic_write_json(out / "results.json", results)
    return results
