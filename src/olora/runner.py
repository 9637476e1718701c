"""Run a task sequence: for each task add an adapter, train it, evaluate every task seen so far.

Output layout (``cfg.output_dir`` = OUT)::

    OUT/config.yaml                       resolved config
    OUT/progress.json                     status (running|failed|complete) and rows so far
    OUT/results.json                      written once, when the whole sequence is done
    OUT/tasks/<i>-<name>/adapter/         task i's adapter, standard PEFT format (seqft: model/)
    OUT/tasks/<i>-<name>/predictions.jsonl  every evaluated example after task i
    OUT/tasks/<i>-<name>/train_log.jsonl  nll, penalties and loss every train.log_every steps
    OUT/tasks/<i>-<name>/task.json        task definition, accuracy row, timings
    OUT/tasks/<i>-<name>/manifest.json    sha256 of the files above; written last, so a task is
                                          complete exactly when its manifest exists and verifies
    OUT/tasks/<i>-<name>/checkpoint/      step checkpoint while the task trains (removed after)

Re-running the same config on the same OUT resumes: complete tasks are reloaded, an interrupted
task continues from its last step checkpoint, and a damaged artefact is named and recomputed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from olora import __version__
from olora.adapters import (
    OrthogonalityPenalty,
    activate,
    add_adapter,
    concat_adapters,
    copy_adapter_weights,
    l2_norm,
    merge_into_base,
    peft_lora_config,
    set_past_dropout,
)
from olora.artifacts import load_adapter_weights, load_safetensors_dir, save_adapter
from olora.benchmarks import config_deviations, get_benchmark, model_deviation
from olora.checkpoint import MANIFEST, verify_manifest, write_manifest
from olora.config import RunConfig, config_to_dict, save_config
from olora.encoding import Encoded, PromptEncoder
from olora.errors import OloraError
from olora.evaluate import evaluate_task
from olora.faults import crash_point
from olora.io import atomic_write_json, atomic_write_jsonl
from olora.methods import METHODS, EWCPenalty, LwFTeacher, Method, ModelTeacher, replay_memory
from olora.metrics import forward_transfer, summarize
from olora.models import is_seq2seq, load_model
from olora.resources import Choice, choose_dtype, choose_precision, choose_token_cap
from olora.seeding import derive_seed
from olora.tasks import Task, load_tasks
from olora.train import answer_nll, autocast, train_task

log = logging.getLogger(__name__)
TEACHER = "lwf_teacher"
FOLDED = "past_folded"


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


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value) and key != "task_lambdas":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def prepare_output_dir(out: Path, cfg: RunConfig, force: bool) -> None:
    """Create OUT, or check that an existing OUT was made by the same config (resume)."""
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
        raise OloraError(f"output_dir {str(out)!r} is not writable ({exc.strerror}): choose another") from None
    save_config(cfg, saved)


@dataclass
class Stage:
    """One training stage: normally one task; for ``mtl`` one stage holds every task."""

    index: int
    label: str
    train_tasks: list[Task]
    eval_tasks: list[Task]


@dataclass
class Session:
    cfg: RunConfig
    method: Method
    out: Path
    tasks: list[Task]
    model: torch.nn.Module
    tokenizer: object
    seq2seq: bool
    train_sets: dict[str, list[Encoded]]
    test_sets: dict[str, list[Encoded]]
    accelerator: Accelerator
    base_path: str
    train_cfg: object = None  # cfg.train with the 'auto' settings resolved
    resources: dict = field(default_factory=dict)  # what was chosen for the machine, and why
    fold_past: str = "merge"  # cfg.olora.fold_past, or 'stack' where merging would lose precision
    deviations: list[str] = field(default_factory=list)  # where the run departs from its benchmark's protocol
    names: list[str] = field(default_factory=list)  # adapters created so far, in task order
    folded: list[str] = field(default_factory=list)  # the past adapters summed into FOLDED
    merged: list[str] = field(default_factory=list)  # the past adapters added into the base weights
    writer: object | None = None  # TensorBoard SummaryWriter when log.tensorboard
    ewc: EWCPenalty | None = None
    base_state: dict | None = None  # pertask_ft: the base weights every task starts from

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


def stages_for(method: Method, tasks: list[Task]) -> list[Stage]:
    if method.joint:
        return [Stage(0, "all", tasks, tasks)]
    return [Stage(i, t.name, [t], tasks[: i + 1]) for i, t in enumerate(tasks)]


def completed_stage(stage_dir: Path) -> dict | None:
    """The stage's task.json if its manifest exists and every file matches; damaged files are named."""
    if not (stage_dir / MANIFEST).is_file():
        return None
    bad = verify_manifest(stage_dir)
    if bad:
        log.warning("%s: %s damaged or missing; recomputing this task", stage_dir, ", ".join(bad))
        (stage_dir / MANIFEST).unlink(missing_ok=True)
        return None
    return json.loads((stage_dir / "task.json").read_text(encoding="utf-8"))


def _ensure_adapter(s: Session, name: str, index: int) -> None:
    if name in s.names:
        return
    torch.manual_seed(derive_seed(s.cfg.seed, "adapter", index))  # init depends on (seed, index) only
    lora = peft_lora_config(s.cfg.lora, s.model, s.seq2seq)
    lora.base_model_name_or_path = s.base_path
    s.model = add_adapter(s.model, name, lora)
    s.names.append(name)


def _task_adapters_in_forward(s: Session, name: str) -> list[str]:
    """The adapters that run beside the base model for task ``name`` (training and evaluation).

    Σ_{i<t} s_i B_i A_i is the same whether the past adapters run separately (``none``), as one stacked
    rank-Σr adapter (``stack``) or merged into the base weights (``merge``, free at run time); the
    penalty reads the per-task adapters, which stay frozen and are saved as they are.
    """
    past = s.names[: s.names.index(name)]
    mode = s.fold_past
    if mode == "merge":
        for adapter in past:
            if adapter not in s.merged:
                merge_into_base(s.model, adapter)
                s.merged.append(adapter)
        return [name]
    if mode == "none" or len(past) < 2:
        return [*past, name]
    if s.folded != past:
        if FOLDED in s.model.peft_config:
            s.model.delete_adapter(FOLDED)
        concat_adapters(s.model, past, FOLDED)
        s.folded = list(past)
    return [FOLDED, name]


def _set_trainable(s: Session, name: str | None) -> None:
    if s.method.full_finetune:
        s.model.requires_grad_(True)
    elif s.method.keep_past_active:
        active = _task_adapters_in_forward(s, name)
        activate(s.model, active, trainable=name)
        set_past_dropout(s.model, [a for a in active if a != name], name, s.cfg.olora.past_dropout)
    else:
        activate(s.model, [name], trainable=name)


def _freeze_for_eval(s: Session, eval_adapter: str | None) -> None:
    """Nothing trains; active = the routed adapter (pertask), all task adapters, or the one adapter."""
    if s.method.full_finetune:
        s.model.requires_grad_(False)
    elif eval_adapter is not None:
        activate(s.model, [eval_adapter], trainable=None)
    elif s.method.keep_past_active:
        activate(s.model, _task_adapters_in_forward(s, s.names[-1]), trainable=None)
    else:
        activate(s.model, [s.method.adapter_name(0, "")], trainable=None)


def _penalties(s: Session, name: str | None, stage: Stage) -> tuple[dict, dict]:
    cfg, method = s.cfg, s.method
    weight_terms, batch_terms = {}, {}
    if method.orthogonal:
        lam_orth, lam_l2 = cfg.lambdas_for(stage.label)
        past = s.names[: s.names.index(name)]
        if past:
            weight_terms["orth"] = (lam_orth, OrthogonalityPenalty(s.model, past, name, cfg.olora.orth))
        weight_terms["l2"] = (lam_l2, lambda: l2_norm(s.model, name))
    if method.ewc and s.ewc is not None:
        s.ewc.bind(s.model)
        weight_terms["ewc"] = (cfg.baselines.ewc_lambda, s.ewc)
    if method.lwf and stage.index > 0 and method.full_finetune:
        teacher = ModelTeacher(s.model, s.seq2seq, cfg.baselines.lwf_temperature)
        batch_terms["lwf"] = (cfg.baselines.lwf_lambda, teacher)
    elif method.lwf and stage.index > 0:
        _ensure_adapter(s, TEACHER, -1)
        copy_adapter_weights(s.model, name, TEACHER)
        activate(s.model, [name], trainable=name)
        teacher = LwFTeacher(s.model, TEACHER, name, s.seq2seq, cfg.baselines.lwf_temperature)
        batch_terms["lwf"] = (cfg.baselines.lwf_lambda, teacher)
    return weight_terms, batch_terms


def _training_data(s: Session, stage: Stage) -> list[Encoded]:
    data = [ex for t in stage.train_tasks for ex in s.train_sets[t.name]]
    if s.method.replay and stage.index > 0:
        past = [s.train_sets[t.name] for t in s.tasks[: stage.index]]
        seeds = [derive_seed(s.cfg.seed, "replay", j) for j in range(stage.index)]
        data = data + replay_memory(past, s.cfg.baselines.replay_per_task, seeds)
    return data


def _score(s: Session, task: Task):
    """Evaluate ``task``'s test split with the model as it is now set up."""
    with autocast(s.accelerator.device, s.train_cfg.mixed_precision):
        return evaluate_task(
            s.model,
            s.tokenizer,
            s.test_sets[task.name],
            [e.label for e in task.test],
            task.labels,
            seq2seq=s.seq2seq,
            batch_size=s.cfg.eval.batch_size,
            max_new_tokens=s.cfg.eval.max_new_tokens,
            device=s.accelerator.device,
        )


def _forward_transfer_applies(s: Session) -> bool:
    """FWT needs a model that has seen tasks < j and not j: sequential methods without task routing."""
    return s.cfg.eval.forward_transfer and not s.method.joint and not s.method.task_routing


def _base_scores(s: Session) -> list[float]:
    """The untrained model's accuracy on every task (FWT's reference b_j), saved for resume."""
    path = s.out / "base_scores.json"
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("tasks") == [t.name for t in s.tasks]:
            return saved["scores"]
    s.model.eval()
    with s.model.disable_adapter() if hasattr(s.model, "disable_adapter") else contextlib.nullcontext():
        scores = [round(_score(s, task).accuracy, 4) for task in s.tasks]
    if s.main:
        atomic_write_json(path, {"tasks": [t.name for t in s.tasks], "scores": scores})
    return scores


def _evaluate(s: Session, stage: Stage, matrix: list[list[float]]) -> tuple[list[float], list[dict]]:
    row, rows = [], []
    for j, task in enumerate(stage.eval_tasks):
        if s.method.task_routing and j < stage.index:
            row.append(matrix[j][j])  # adapter j has not changed since task j
            continue
        crash_point("eval_task")
        eval_adapter = s.method.adapter_name(j, task.name) if s.method.task_routing else None
        _freeze_for_eval(s, eval_adapter)
        result = _score(s, task)
        row.append(round(result.accuracy, 4))
        rows += [
            {"task": task.name, "input": ex.text, "gold": ex.label, "prediction": pred}
            for ex, pred in zip(task.test, result.predictions, strict=True)
        ]
    return row, rows


def _save_stage(
    s: Session, stage: Stage, stage_dir: Path, name: str | None, record: dict, predictions: list[dict]
) -> None:
    files = ["task.json", "predictions.jsonl"]
    try:
        if name is not None:
            save_adapter(s.model, name, stage_dir / "adapter")
            files += ["adapter/adapter_model.safetensors", "adapter/adapter_config.json"]
        else:
            shutil.rmtree(stage_dir / "model", ignore_errors=True)
            s.model.save_pretrained(stage_dir / "model")
            files += [str(p.relative_to(stage_dir)) for p in sorted((stage_dir / "model").iterdir())]
        crash_point("save_task")
        if s.ewc is not None:
            save_file({k: v.contiguous() for k, v in s.ewc.state_dict().items()}, str(stage_dir / "ewc.safetensors"))
            files.append("ewc.safetensors")
        if (stage_dir / "train_log.jsonl").is_file():
            files.append("train_log.jsonl")
        atomic_write_jsonl(stage_dir / "predictions.jsonl", predictions)
        atomic_write_json(stage_dir / "task.json", record)
        write_manifest(stage_dir, files)
    except OSError as exc:
        raise OloraError(
            f"could not save task {stage.label!r} in {str(stage_dir)!r} ({exc.strerror or exc}): free disk "
            "space and re-run the same command to resume"
        ) from None
    shutil.rmtree(stage_dir / "checkpoint", ignore_errors=True)


def _restore_stage(s: Session, stage_dir: Path, name: str | None) -> None:
    if name is not None:
        load_adapter_weights(s.model, name, stage_dir / "adapter")
    else:
        s.model.load_state_dict(load_safetensors_dir(stage_dir / "model"), strict=False)
    if s.ewc is not None:
        s.ewc.load_state_dict(load_file(str(stage_dir / "ewc.safetensors")))


def run_stage(s: Session, stage: Stage, matrix: list[list[float]]) -> tuple[list[float], dict, bool, float | None]:
    """Train one stage and evaluate; or reload it if already complete.

    Returns (row, timing, reused, the next task's score before training it if eval.forward_transfer)."""
    stage_dir = s.out / "tasks" / f"{stage.index}-{stage.label}"
    name = s.method.adapter_name(stage.index, stage.label)
    if name is not None:
        _ensure_adapter(s, name, stage.index)
    done = completed_stage(stage_dir)
    if done is not None:
        log.info("task %d (%s) already complete in %s: reusing it", stage.index, stage.label, stage_dir)
        _restore_stage(s, stage_dir, name)
        return done["row"], done["timings"], True, done.get("next_task_before_training")

    if s.base_state is not None:  # pertask_ft: every task starts from the base model
        s.model.load_state_dict(s.base_state)
    _set_trainable(s, name)
    weight_terms, batch_terms = _penalties(s, name, stage)
    data = _training_data(s, stage)
    stage_dir.mkdir(parents=True, exist_ok=True)
    epochs = s.cfg.train.epochs if s.method.joint else s.cfg.epochs_for(stage.label)
    training = train_task(
        s.model,
        data,
        replace(s.train_cfg, epochs=epochs, lr=s.cfg.lr_for(stage.index)),
        seq2seq=s.seq2seq,
        pad_id=s.tokenizer.pad_token_id,
        seed=derive_seed(s.cfg.seed, "train", stage.index),
        accelerator=s.accelerator,
        penalties=weight_terms,
        batch_penalties=batch_terms,
        log_path=stage_dir / "train_log.jsonl",
        checkpoint_dir=stage_dir / "checkpoint",
        on_log=_tensorboard_hook(s, stage),
        desc=f"task {stage.index + 1}/{len(s.tasks)} {stage.label} [{s.cfg.method}]",
    )
    if s.ewc is not None:
        s.ewc.consolidate(
            s.model,
            s.train_sets[stage.label],
            seq2seq=s.seq2seq,
            pad_id=s.tokenizer.pad_token_id,
            nll=lambda m, b: answer_nll(m, b, s.seq2seq),
            device=s.accelerator.device,
            max_examples=s.cfg.baselines.ewc_examples,
            seed=derive_seed(s.cfg.seed, "ewc", stage.index),
        )
    eval_start = time.perf_counter()
    row, predictions = _evaluate(s, stage, matrix)
    next_score = None
    if _forward_transfer_applies(s) and stage.index + 1 < len(s.tasks):  # the next task, before training it
        next_score = round(_score(s, s.tasks[stage.index + 1]).accuracy, 4)
    timing = {
        "train_s": round(training.wall_s, 3),
        "eval_s": round(time.perf_counter() - eval_start, 3),
        "steps": training.steps,
        "epochs": epochs,
        "lr": s.cfg.lr_for(stage.index),
        "n_train": len(data),
        "peak_rss_mb": peak_rss_mb(),  # of the whole process so far (a bench grid runs many)
    }
    if s.writer is not None:
        for task, acc in zip(stage.eval_tasks, row, strict=True):
            s.writer.add_scalar(f"accuracy/{task.name}", acc, stage.index)
        s.writer.add_scalar("accuracy/mean_seen", sum(row) / len(row), stage.index)
        s.writer.flush()
    scores = ", ".join(f"{t.name} {a:.1f}" for t, a in zip(stage.eval_tasks, row, strict=True))
    log.info("after %s: %s", stage.label, scores)
    if s.main:
        lam = dict(zip(("lambda_orth", "lambda_l2"), s.cfg.lambdas_for(stage.label), strict=True))
        record = {
            "name": stage.label,
            "index": stage.index,
            "adapter_name": name,
            "row": row,
            "timings": timing,
            "tasks": [t.to_dict() for t in stage.train_tasks],
            "deviations": s.deviations,
            "next_task_before_training": next_score,
            "final_loss": training.last_loss,
            "n_test": sum(len(t.test) for t in stage.eval_tasks),
            "n_truncated": sum(
                e.truncated for t in stage.train_tasks for e in s.train_sets[t.name] + s.test_sets[t.name]
            ),
            **(lam if s.method.orthogonal else {}),
        }
        _save_stage(s, stage, stage_dir, name, record, predictions)
    s.accelerator.wait_for_everyone()
    return row, timing, False, next_score


def _tensorboard_hook(s: Session, stage: Stage):
    if s.writer is None:
        return None

    def log_row(row: dict) -> None:
        for key, value in row.items():
            if key != "step":
                s.writer.add_scalar(f"train/{stage.label}/{key}", value, row["step"])

    return log_row


def _summary_writer_class():
    """torch's standard SummaryWriter; checked before anything is written."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise OloraError("log.tensorboard=true needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter


def _prepare(cfg: RunConfig, force: bool) -> Session:
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise OloraError(f"output_dir {str(out)!r} is a file: choose a folder path")
    tasks = load_tasks(cfg.tasks, cfg.data, cfg.seed)
    accelerator = Accelerator()
    device = accelerator.device
    dtype = choose_dtype(cfg.dtype, device)
    model, tokenizer = load_model(cfg.model, dtype.value)
    seq2seq = is_seq2seq(model)
    encoder = PromptEncoder(
        tokenizer, seq2seq, cfg.data.max_source_length, cfg.data.add_task_name, cfg.data.add_dataset_name
    )
    precision = choose_precision(cfg.train.mixed_precision, device)
    cap = choose_token_cap(cfg.train.max_batch_tokens, model.config, device)
    fold = Choice(cfg.olora.fold_past, "set in the config")
    if fold.value == "merge" and dtype.value != "float32":
        fold = Choice("stack", f"olora.fold_past=merge would round the past adapters into {dtype.value} weights")
    resources = {
        "device": str(device),
        **{key: {"value": c.value, "reason": c.reason} for key, c in
           (("dtype", dtype), ("mixed_precision", precision), ("max_batch_tokens", cap), ("fold_past", fold))},
    }  # fmt: skip
    for key, choice in resources.items():
        if key != "device":
            log.info("%s: %s (%s)", key, choice["value"], choice["reason"])
    writer_class = _summary_writer_class() if cfg.log.tensorboard and accelerator.is_main_process else None
    if accelerator.is_main_process:
        prepare_output_dir(out, cfg, force)
    writer = writer_class(log_dir=str(out / "tensorboard")) if writer_class else None
    model.requires_grad_(False)
    model.to(accelerator.device)
    method = METHODS[cfg.method]
    resolved = {**config_to_dict(cfg), "dtype": dtype.value}
    resolved["train"] = {**resolved["train"], "mixed_precision": precision.value}
    resolved["olora"] = {**resolved["olora"], "fold_past": fold.value}
    return Session(
        cfg=cfg,
        method=method,
        out=out,
        tasks=tasks,
        model=model,
        tokenizer=tokenizer,
        seq2seq=seq2seq,
        train_sets={t.name: encoder.encode(t, t.train) for t in tasks},
        test_sets={t.name: encoder.encode(t, t.test) for t in tasks},
        accelerator=accelerator,
        base_path=model.name_or_path,
        writer=writer,
        ewc=EWCPenalty() if method.ewc else None,
        train_cfg=replace(cfg.train, mixed_precision=precision.value, max_batch_tokens=cap.value),
        resources=resources,
        fold_past=fold.value,
        deviations=protocol_deviations(cfg, resolved, tasks, model.config),
        base_state=(
            {k: v.detach().clone() for k, v in model.state_dict().items()}
            if method.full_finetune and method.task_routing
            else None
        ),
    )


def protocol_deviations(cfg: RunConfig, resolved: dict, tasks: list[Task], model_config: object) -> list[str]:
    """How a benchmark run departs from the official protocol (empty for runs outside a benchmark)."""
    if cfg.benchmark is None:
        return []
    bench = get_benchmark(cfg.benchmark)
    out = config_deviations(bench, cfg.order, resolved)
    out += [line for line in [model_deviation(bench, model_config, cfg.model)] if line]
    out += [f"data: {t.name} from {t.source.split(' (', 1)[1].rstrip(')')}" for t in tasks if " (" in t.source]
    return out


def run(cfg: RunConfig, force: bool = False) -> dict:
    """Train and evaluate ``cfg.tasks`` in order with ``cfg.method``; return the results dict."""
    started = time.perf_counter()
    s = _prepare(cfg, force)
    matrix: list[list[float]] = []
    timings: list[dict] = []
    reference = _base_scores(s) if _forward_transfer_applies(s) else None
    before: list[float | None] = [None]  # before[j]: task j's score after task j-1, before training j
    progress = {"status": "running", "tasks": [t.name for t in s.tasks], "matrix": matrix}
    recompute = False
    try:
        for stage in stages_for(s.method, s.tasks):
            stage_dir = s.out / "tasks" / f"{stage.index}-{stage.label}"
            if recompute:  # an earlier task was (re)trained, so later saved tasks are stale
                (stage_dir / MANIFEST).unlink(missing_ok=True)
            row, timing, reused, next_score = run_stage(s, stage, matrix)
            recompute = recompute or not reused
            matrix.append(row)
            timings.append(timing)
            before.append(next_score)
            if s.main:
                atomic_write_json(s.out / "progress.json", progress)
    except BaseException as exc:
        if s.main and s.out.is_dir():
            progress.update(status="failed", error=f"{type(exc).__name__}: {exc}")
            atomic_write_json(s.out / "progress.json", progress)
        raise
    if s.method.joint:  # one stage evaluated on everything: every row is that row
        matrix = [matrix[0][: i + 1] for i in range(len(s.tasks) - 1)] + [matrix[0]]
    results = {
        "status": "complete",
        "method": cfg.method,
        "model": cfg.model,
        "model_path": s.base_path,
        "architecture": "seq2seq" if s.seq2seq else "decoder-only",
        "seed": cfg.seed,
        "tasks": [t.name for t in s.tasks],
        "task_types": [t.task_type for t in s.tasks],
        "task_sources": [t.source for t in s.tasks],
        "matrix": matrix,
        **summarize(matrix),
        **(
            {
                "fwt": forward_transfer(before[: len(s.tasks)], reference),
                "base_scores": reference,
                "before_training": before[: len(s.tasks)],
            }
            if reference is not None
            else {"fwt": None}
        ),
        "protocol": (
            {"benchmark": cfg.benchmark, "order": cfg.order, "deviations": s.deviations} if cfg.benchmark else None
        ),
        "resources": {**s.resources, "peak_rss_mb": peak_rss_mb()},
        "timings": timings,
        "wall_s": round(time.perf_counter() - started, 3),
        "device": str(s.accelerator.device),
        "num_processes": s.accelerator.num_processes,
        "versions": versions(),
        "config": config_to_dict(cfg),
    }
    if s.method.adapter_per_task and s.main:
        from olora.subspace import subspace_report

        dirs = [s.out / "tasks" / f"{st.index}-{st.label}" / "adapter" for st in stages_for(s.method, s.tasks)]
        results["subspace"] = subspace_report(dirs, [t.name for t in s.tasks])
    if s.main:
        progress["status"] = "complete"
        atomic_write_json(s.out / "progress.json", progress)
        atomic_write_json(s.out / "results.json", results)
    return results
