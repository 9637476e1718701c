"""Run a task sequence: for each stage the method sets up its adapter, trains, and every task seen so
far is evaluated. The method (olora.methods) decides what trains and what is penalised; the run
folder (olora.store.rundir) decides where everything is written.

Re-running the same config on the same output folder resumes: complete stages are reloaded, an
interrupted stage continues from its last step checkpoint, and a damaged artefact is named and recomputed.
"""

from __future__ import annotations

import gc
import json
import logging
import platform
import shutil
import time
from dataclasses import replace

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from olora import __version__
from olora.config import RunConfig, TaskSpec, config_to_dict, task_name
from olora.core.context import RunContext
from olora.core.evaluate import answer_budget, evaluate_task
from olora.core.metrics import forward_transfer, not_learned, summarize
from olora.core.models import checkpoint_digest, is_seq2seq, load_model
from olora.core.resources import Choice, bound_kernel_caches, choose_dtype, choose_precision, choose_token_cap
from olora.core.sharding import enable_cpu_fsdp, gathered_root, is_sharded
from olora.core.train import autocast, train_task
from olora.data.encoding import PromptEncoder
from olora.data.load import load_tasks
from olora.data.tasks import Task
from olora.errors import OloraError
from olora.faults import crash_point, stall_point
from olora.methods import Method, Stage, get_method, unread_sections
from olora.presets import config_deviations, get_benchmark, model_deviation
from olora.seeding import derive_seed
from olora.store.artifacts import load_adapter_weights, load_model_weights, save_adapter
from olora.store.checkpoint import StepCheckpoints
from olora.store.exports import ExportFolder
from olora.store.fingerprint import Fingerprint, run_settings, stage_fingerprint, what_changed
from olora.store.io import atomic_write_json
from olora.store.rundir import RunFolder, StageFolder

log = logging.getLogger(__name__)


def run(cfg: RunConfig, force: bool = False) -> dict:
    """Train and evaluate ``cfg.tasks`` in order with ``cfg.method``; return the results dict."""
    started = time.perf_counter()
    ctx, method, folder = setup(cfg, force)
    # accelerate frees memory after each task with a full gc.collect(), whose cost grows with every live object
    # (0.25 s a task with the libraries and model loaded): what exists now lives for the run, so the collector
    # skips it until the run ends.
    gc.freeze()
    base = base_scores(ctx, method, folder) if uses_forward_transfer(ctx, method) else None
    rows, timings, before = [], [], [None]  # before[j]: task j's score after task j-1, before training j
    progress = {"status": "running", "tasks": [t.name for t in ctx.tasks], "matrix": rows}
    stale = False  # an earlier stage was (re)trained, so later saved stages are out of date
    fingerprint = None
    try:
        for stage in method.stages(ctx.tasks):
            if ctx.start and stage.index < len(ctx.start["task_entries"]):  # an exported task: the past
                rows.append(ctx.start["matrix"][stage.index])
                timings.append({"from": "start_from"})
                before.append(None)
                continue
            stage_folder = folder.stage(stage.index, stage.label)
            fingerprint = stage_fingerprint(fingerprint, ctx.model_digest, ctx.settings, stage.train_tasks)
            if stale:
                stage_folder.invalidate()
            method.enter_stage(ctx, stage)
            record = reload_stage(ctx, method, stage, stage_folder, fingerprint)
            if record is None:
                record = train_and_evaluate(ctx, method, stage, stage_folder, rows, fingerprint)
                stale = True
            elif uses_forward_transfer(ctx, method) and record.get("next_task_before_training") is None:
                record = score_next_task(ctx, method, stage, stage_folder, record)  # a run that grew a task
            rows.append(record["row"])
            timings.append(record["timings"])
            before.append(record.get("next_task_before_training"))
            if ctx.main:
                folder.write_progress(progress)
    except BaseException as exc:
        if ctx.main and folder.root.is_dir():
            folder.write_progress({**progress, "status": "failed", "error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        ctx.accelerator.end_training()  # closes the trackers
        gc.unfreeze()
    matrix = method.matrix(rows, len(ctx.tasks))
    results = summarize_run(ctx, method, folder, matrix, timings, before, base, started)
    if ctx.main:
        folder.write_progress({**progress, "status": "complete"})
        folder.write_results(results)
    return results


def train_and_evaluate(
    ctx: RunContext,
    method: Method,
    stage: Stage,
    folder: StageFolder,
    rows: list[list[float]],
    fingerprint: Fingerprint,
) -> dict:
    """One stage: train what the method trains, evaluate every task seen so far, save."""
    cfg = ctx.cfg
    hooks = method.begin_training(ctx, stage)
    data = method.training_data(ctx, stage)
    folder.path.mkdir(parents=True, exist_ok=True)
    stage_cfg = replace(ctx.train_cfg, epochs=cfg.epochs_for(stage.label), lr=cfg.lr_for(stage.index))
    training = train_task(
        ctx.model,
        data,
        stage_cfg,
        hooks=hooks,
        seq2seq=ctx.seq2seq,
        pad_id=ctx.pad_id,
        seed=derive_seed(cfg.seed, "train", stage.index),
        accelerator=ctx.accelerator,
        log_path=folder.train_log,
        checkpoints=StepCheckpoints(folder.checkpoint),
        on_log=lambda row: track(ctx, f"train/{stage.label}/", row, row["step"]),
        desc=f"task {stage.index + 1}/{len(ctx.tasks)} {stage.label} [{cfg.method}]",
        grad_norms=cfg.log.grad_norms,
    )
    method.end_training(ctx, stage)
    eval_start = time.perf_counter()
    row, predictions = evaluate_seen(ctx, method, stage, rows)
    next_score = None
    if uses_forward_transfer(ctx, method) and stage.index + 1 < len(ctx.tasks):  # the next task, before training it
        next_score = round(score(ctx, ctx.tasks[stage.index + 1]).accuracy, 4)
    scores = dict(zip([t.name for t in stage.eval_tasks], row, strict=True))
    track(ctx, "accuracy/", {**scores, "mean_seen": sum(row) / len(row)}, stage.index)
    log.info("after %s: %s", stage.label, ", ".join(f"{name} {a:.1f}" for name, a in scores.items()))
    record = {
        "name": stage.label,
        "index": stage.index,
        "adapter_name": method.adapter(stage) if method.trains == "adapter" else None,
        "row": row,
        "timings": {
            "train_s": round(training.wall_s, 3),
            "eval_s": round(time.perf_counter() - eval_start, 3),
            "steps": training.steps,
            "epochs": stage_cfg.epochs,
            "lr": stage_cfg.lr,
            "n_train": len(data),
            "peak_rss_mb": peak_rss_mb(),  # of the whole process so far (a bench grid runs many)
        },
        "tasks": [t.to_dict() for t in stage.train_tasks],
        "penalty_weights": {name: weight for name, (weight, _) in {**hooks.weight_terms, **hooks.batch_terms}.items()},
        "deviations": ctx.deviations,
        "next_task_before_training": next_score,
        "final_loss": training.last_loss,
        "n_test": sum(len(t.test) for t in stage.eval_tasks),
        "n_truncated": sum(
            e.truncated for t in stage.train_tasks for e in ctx.train_sets[t.name] + ctx.test_sets[t.name]
        ),
        "fingerprint": fingerprint.to_dict(),
    }
    report = method.stage_report(ctx, stage)
    if report:
        record["method"] = report
    # a sharded whole model is gathered by every process (a collective) and written by the main one
    whole = ctx.accelerator.get_state_dict(ctx.model) if method.trains == "model" and ctx.sharded else None
    if ctx.main:
        save_stage(ctx, method, stage, folder, record, predictions, whole)
    ctx.accelerator.wait_for_everyone()
    return record


def score_next_task(ctx: RunContext, method: Method, stage: Stage, folder: StageFolder, record: dict) -> dict:
    """A reused stage that was the last of its run has no score of the next task before training it (FWT):
    score it now, with the model as the stage left it, and keep it in the stage's record."""
    if stage.index + 1 >= len(ctx.tasks):
        return record
    method.prepare_eval(ctx, stage, stage.index)
    record = {**record, "next_task_before_training": round(score(ctx, ctx.tasks[stage.index + 1]).accuracy, 4)}
    if ctx.main:
        folder.update_record(record)
    return record


def track(ctx: RunContext, prefix: str, values: dict, step: int) -> None:
    """Send numbers to the configured trackers (accelerate's: TensorBoard, wandb, MLflow, …)."""
    ctx.accelerator.log({prefix + k: v for k, v in values.items() if k != "step"}, step=step)


def evaluate_seen(
    ctx: RunContext, method: Method, stage: Stage, rows: list[list[float]]
) -> tuple[list[float], list[dict]]:
    """Accuracy on every task seen so far (the matrix row) and every prediction."""
    row, predictions = [], []
    for j, task in enumerate(stage.eval_tasks):
        if not method.prepare_eval(ctx, stage, j):
            row.append(rows[j][j])  # what answers task j has not changed since task j
            continue
        crash_point("eval_task")
        result = score(ctx, task)
        row.append(round(result.accuracy, 4))
        predictions += [
            {"task": task.name, "input": ex.text, "gold": ex.label, "prediction": pred}
            for ex, pred in zip(task.test, result.predictions, strict=True)
        ]
    return row, predictions


def score(ctx: RunContext, task: Task):
    """Evaluate ``task``'s test split with the model as it is now set up."""
    with gathered_root(ctx.model), autocast(ctx.device, ctx.train_cfg.mixed_precision):
        return evaluate_task(
            ctx.model,
            ctx.tokenizer,
            ctx.test_sets[task.name],
            [e.label for e in task.test],
            seq2seq=ctx.seq2seq,
            batch_size=ctx.cfg.eval.batch_size,
            max_new_tokens=answer_budget(ctx.tokenizer, task, ctx.cfg.eval.max_new_tokens),
            metric=task.metric,
            device=ctx.device,
        )


def uses_forward_transfer(ctx: RunContext, method: Method) -> bool:
    return ctx.cfg.eval.forward_transfer and method.forward_transfer


def base_scores(ctx: RunContext, method: Method, folder: RunFolder) -> list[float]:
    """The untrained model's accuracy on every task (FWT's reference b_j), saved for resume."""
    path = folder.base_scores
    names = [t.name for t in ctx.tasks]
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("tasks") == names:
            return saved["scores"]
    ctx.model.eval()
    scores = [round(score(ctx, task).accuracy, 4) for task in ctx.tasks]
    if ctx.main:
        atomic_write_json(path, {"tasks": names, "scores": scores})
    return scores


# ----------------------------------------------------------------------------- saving and reloading


def save_stage(
    ctx: RunContext,
    method: Method,
    stage: Stage,
    folder: StageFolder,
    record: dict,
    predictions: list[dict],
    whole: dict | None = None,
) -> None:
    """What the stage trained (its adapter, or the whole model: ``whole``, its gathered state dict when
    sharded), the method's state, then the record."""
    try:
        if method.trains == "adapter":
            save_adapter(ctx.model, method.adapter(stage), folder.adapter)
        else:
            shutil.rmtree(folder.model, ignore_errors=True)
            ctx.model.save_pretrained(folder.model, state_dict=whole)
        crash_point("save_task")
        state = method.state_dict()
        if state:
            save_file({k: v.contiguous() for k, v in state.items()}, str(folder.state))
        folder.finish(record, predictions)
    except OSError as exc:
        raise OloraError(
            f"could not save task {stage.label!r} in {str(folder.path)!r} ({exc.strerror or exc}): free disk "
            "space and re-run the same command to resume"
        ) from None


def reload_stage(
    ctx: RunContext, method: Method, stage: Stage, folder: StageFolder, fingerprint: Fingerprint
) -> dict | None:
    """The stage's record, with its weights and the method's state loaded, if it is complete and was made by
    exactly what would make it now (its fingerprint); otherwise None, and a stage made by other settings is
    named with what changed."""
    record = folder.completed()
    if record is None:
        return None
    saved = record.get("fingerprint")
    if not saved or saved.get("digest") != fingerprint.digest:
        log.warning(
            "task %d (%s) in %s was made by other settings (%s): training it again, and every later task",
            stage.index,
            stage.label,
            folder.path,
            what_changed(saved, fingerprint),
        )
        folder.invalidate()
        return None
    log.info("task %d (%s) already complete in %s: reusing it", stage.index, stage.label, folder.path)
    if method.trains == "adapter":
        load_adapter_weights(ctx.model, method.adapter(stage), folder.adapter)
    else:
        load_model_weights(ctx.model, folder.model)
    if folder.state.is_file():
        method.load_state_dict(load_file(str(folder.state)))
    return record


# ----------------------------------------------------------------------------- setup and results


def setup(cfg: RunConfig, force: bool) -> tuple[RunContext, Method, RunFolder]:
    """Method, data, model, the machine's choices and the run folder; bad input fails before any writing."""
    method = get_method(cfg.method, cfg.options)
    start = past_from_export(cfg) if cfg.start_from else None
    tasks = load_tasks([*start["task_entries"], *cfg.tasks] if start else cfg.tasks, cfg.data, cfg.seed)
    trackers = ["tensorboard"] if cfg.log.tensorboard else []
    folder = RunFolder(cfg.output_dir)
    if trackers:
        _check_tensorboard()
    accelerator = Accelerator(log_with=trackers, project_dir=str(folder.root)) if trackers else Accelerator()
    enable_cpu_fsdp(accelerator)
    device = accelerator.device
    kernel_cache = bound_kernel_caches(device)  # before the first matmul of the process
    dtype = replace(choose_dtype(cfg.dtype, device), config_key="dtype")
    check_quantize(cfg, method, accelerator)
    model, tokenizer = load_model(cfg.model, dtype.value, cfg.quantize, device)
    seq2seq = is_seq2seq(model)
    if seq2seq and cfg.train.loss_normalization == "official_llama":
        raise OloraError(
            f"train.loss_normalization=official_llama is the official LLaMA loss, for decoder-only models; "
            f"{cfg.model!r} is a seq2seq model: use token"
        )
    precision = replace(choose_precision(cfg.train.mixed_precision, device), config_key="train.mixed_precision")
    cap = choose_token_cap(cfg.train.max_batch_tokens, model.config, device)
    model.requires_grad_(False)
    if cfg.quantize == "none":  # a quantized model was loaded onto the device
        model.to(device)
    encoder = PromptEncoder(
        tokenizer, seq2seq, cfg.data.max_source_length, cfg.data.add_task_name, cfg.data.add_dataset_name
    )
    ctx = RunContext(
        cfg=cfg,
        model=model,
        tokenizer=tokenizer,
        accelerator=accelerator,
        seq2seq=seq2seq,
        tasks=tasks,
        train_sets={t.name: encoder.encode(t, t.train) for t in tasks},
        test_sets={t.name: encoder.encode(t, t.test) for t in tasks},
        train_cfg=replace(cfg.train, mixed_precision=precision.value, max_batch_tokens=cap.value),
        base_path=model.name_or_path,
        choices={"dtype": dtype, "mixed_precision": precision, "max_batch_tokens": cap},
        start=start,
    )
    if ctx.sharded:
        reason = f"FSDP2 over {accelerator.num_processes} processes: base weights sharded, adapters whole"
        ctx.choices["sharding"] = Choice("fsdp2", reason)
    method.setup(ctx)  # a method may choose too (past.fold for the weights' dtype)
    if start:
        method.adopt_export(ctx, cfg.start_from, len(start["task_entries"]))
    ctx.choices["kernel_cache"] = kernel_cache
    for key, choice in ctx.choices.items():
        log.info("%s: %s (%s)", key, choice.value, choice.reason)
    resolved = resolved_config(ctx)
    ctx.deviations = protocol_deviations(cfg, resolved, tasks, model.config, unread_sections(cfg.method))
    ctx.settings = run_settings(resolved, unread_sections(cfg.method))
    ctx.model_digest = checkpoint_digest(cfg.model) + (ExportFolder(cfg.start_from).digest() if start else "")
    if accelerator.is_main_process:
        stall_point("prepare_folder")
        folder.prepare(config_to_dict(cfg), force)
    accelerator.wait_for_everyone()  # no process may write into the folder before it is checked and made
    if trackers:
        accelerator.init_trackers("tensorboard")
    return ctx, method, folder


def check_quantize(cfg: RunConfig, method: Method, accelerator: Accelerator) -> None:
    """A 4-bit base is frozen and whole: adapter methods on unsharded processes only."""
    if cfg.quantize == "none":
        return
    if method.trains == "model":
        raise OloraError(
            f"quantize={cfg.quantize} freezes the base in 4 bits, but {cfg.method} trains the whole model: use an "
            "adapter method (olora, inclora, …) or quantize=none"
        )
    if is_sharded(accelerator):
        raise OloraError(
            f"quantize={cfg.quantize} with FSDP is not supported (the 4-bit base is not sharded): launch without "
            "the FSDP config (one process, or DDP), or use quantize=none"
        )


def past_from_export(cfg: RunConfig) -> dict:
    """The info of ``start_from``'s export, checked against this run: same model, no task trained twice."""
    info = ExportFolder(cfg.start_from).past_for_new_tasks()
    if info["model"] != cfg.model:
        raise OloraError(
            f"start_from={cfg.start_from!r} was trained on model={info['model']}: set model={info['model']}"
        )
    info["task_entries"] = [TaskSpec(**t) if isinstance(t, dict) else t for t in info["task_entries"]]
    past = [t.name if isinstance(t, TaskSpec) else t for t in info["task_entries"]]
    again = [task_name(t) for t in cfg.tasks if task_name(t) in past]
    if again:
        raise OloraError(
            f"tasks {again} are already in start_from={cfg.start_from!r} ({', '.join(past)}): list only new tasks"
        )
    return info


def resolved_config(ctx: RunContext) -> dict:
    """The config as the run resolved it: each choice made for the machine written at its key."""
    tree = config_to_dict(ctx.cfg)
    for choice in ctx.choices.values():
        if choice.config_key:
            *parents, leaf = choice.config_key.split(".")
            node = tree
            for part in parents:
                node = node[part]
            node[leaf] = choice.value
    return tree


def _check_tensorboard() -> None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise OloraError("log.tensorboard=true needs the tensorboard package: pip install tensorboard") from None


def protocol_deviations(
    cfg: RunConfig, resolved: dict, tasks: list[Task], model_config: object, ignore: frozenset[str]
) -> list[str]:
    """How a benchmark run departs from the official protocol (empty for runs outside a benchmark)."""
    if cfg.benchmark is None:
        return []
    bench = get_benchmark(cfg.benchmark)
    out = config_deviations(bench, cfg.order, resolved, ignore)
    out += [line for line in [model_deviation(bench, model_config, cfg.model)] if line]
    out += [f"data: {t.name}: {note}" for t in tasks for note in t.notes]
    return out


def summarize_run(
    ctx: RunContext,
    method: Method,
    folder: RunFolder,
    matrix: list[list[float]],
    timings: list[dict],
    before: list,
    base: list | None,
    started: float,
) -> dict:
    tasks, cfg = ctx.tasks, ctx.cfg
    labels, n_test = [len(t.labels) for t in tasks], [len(t.test) for t in tasks]
    results = {
        "status": "complete",
        "method": cfg.method,
        "model": cfg.model,
        "model_path": ctx.base_path,
        "architecture": "seq2seq" if ctx.seq2seq else "decoder-only",
        "seed": cfg.seed,
        "tasks": [t.name for t in tasks],
        "task_types": [t.task_type for t in tasks],
        "task_sources": [" ".join([t.source, *(f"({note})" for note in t.notes)]) for t in tasks],
        "metrics": [t.metric for t in tasks],  # what each column of the matrix scores
        "matrix": matrix,
        **summarize(matrix),
        "labels_per_task": labels,
        "n_test_per_task": n_test,
        "not_learned": [tasks[j].name for j in not_learned(matrix, labels, n_test)],  # the diagonal at chance
        "fwt": None,
        "protocol": (
            {"benchmark": cfg.benchmark, "order": cfg.order, "deviations": ctx.deviations} if cfg.benchmark else None
        ),
        "resources": {
            "device": str(ctx.device),
            **{k: {"value": c.value, "reason": c.reason} for k, c in ctx.choices.items()},
            "peak_rss_mb": peak_rss_mb(),
        },
        "timings": timings,
        "wall_s": round(time.perf_counter() - started, 3),
        "device": str(ctx.device),
        "num_processes": ctx.accelerator.num_processes,
        "versions": versions(),
        "config": config_to_dict(cfg),
        "start_from": cfg.start_from,
    }
    if base is not None:
        before = before[: len(tasks)]
        results.update(fwt=forward_transfer(before, base), base_scores=base, before_training=before)
    summed = method.summed_adapters(folder.stages()) if ctx.main else []
    if len(summed) > 1:
        from olora.core.subspace import subspace_report

        results["subspace"] = subspace_report([s.adapter for s in summed], [s.label for s in summed])
    return results


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


def peak_rss_mb() -> float:
    """The process's peak resident set size so far, in MiB (Linux reports KiB, macOS bytes)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if platform.system() == "Darwin" else 2**10), 1)
