"""``olora predict``: answers for new inputs from a run or an export, with the run's own prompts."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import PeftModel

from olora.config import DataConfig
from olora.core.evaluate import answer_budget, generate_answers
from olora.core.models import is_seq2seq, load_model
from olora.data.encoding import Encoded, PromptEncoder
from olora.data.tasks import Task
from olora.errors import OloraError
from olora.store.exports import ExportFolder
from olora.store.rundir import RunFolder
from olora.tools.export import answering_model


def _tasks(defs: list[dict], name: str | None) -> list[Task]:
    """The task named ``name`` (or, with no name, every task of the run)."""
    if name is None:
        return [Task.from_dict(d) for d in defs]
    for d in defs:
        if d["name"] == name:
            return [Task.from_dict(d)]
    raise OloraError(f"task {name!r} is not in this run: choose one of {', '.join(d['name'] for d in defs)}")


def load_for_inference(path: Path, task_name: str | None) -> tuple[torch.nn.Module, object, list[Task], DataConfig]:
    """(model, tokenizer, tasks, data config) for a run folder or an ``olora export`` folder; ``tasks`` is
    the named task, or every task of the run when ``task_name`` is None (task-free inference)."""
    path = Path(path)
    if ExportFolder(path).is_export():
        info = ExportFolder(path).info()
        tasks = _tasks(info["tasks"], task_name)
        if info["format"] == "merged":
            model, tokenizer = load_model(str(path), info["dtype"])
        else:
            base, tokenizer = load_model(info["model"], info["dtype"], info.get("quantize", "none"))
            model = PeftModel.from_pretrained(base, path)
        return model, tokenizer, tasks, DataConfig(**info["data"])
    run = RunFolder(path)
    results = run.load_results()
    records = run.stage_records()
    tasks = _tasks([t for r in records for t in r["tasks"]], task_name)
    index = next((r["index"] for r in records if r["name"] == task_name), None)
    model, tokenizer = answering_model(run, results, index)
    return model, tokenizer, tasks, DataConfig(**results["config"]["data"])


def read_inputs(path: Path) -> list[str]:
    """A JSONL file of {"input"|"sentence"|"text": ...} objects."""
    if not path.is_file():
        raise OloraError(f"input file {str(path)!r} does not exist")
    texts = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise OloraError(f"{str(path)!r} line {n} is not JSON ({exc.msg}): one object per line") from None
        text = next((row[k] for k in ("input", "sentence", "text") if isinstance(row, dict) and k in row), None)
        if not isinstance(text, str) or not text.strip():
            raise OloraError(f"{str(path)!r} line {n}: needs a non-empty string 'input' (or 'sentence', 'text')")
        texts.append(text)
    if not texts:
        raise OloraError(f"input file {str(path)!r} has no inputs")
    return texts


def predict(
    path: Path, task_name: str | None, texts: list[str], batch_size: int = 16, progress: bool = False
) -> list[str]:
    """Answers for ``texts``. With a task, each text is an input placed in that task's prompt (as in
    training); without, each text is a whole prompt (as the run built them, ending in "Answer:", which is
    added if missing) and the model with every task adapter answers it: no task id is used."""
    model, tokenizer, tasks, data = load_for_inference(path, task_name)
    seq2seq = is_seq2seq(model.get_base_model() if hasattr(model, "get_base_model") else model)
    encoder = PromptEncoder(tokenizer, seq2seq, data.max_source_length, data.add_task_name, data.add_dataset_name)
    if task_name is not None:
        examples = [Encoded(encoder.encode_prompt(tasks[0], text)[0], []) for text in texts]
    else:
        prompts = [t if t.rstrip().endswith("Answer:") else t + "\nAnswer:" for t in texts]
        examples = [Encoded(encoder.encode_raw(p), []) for p in prompts]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    return generate_answers(
        model,
        tokenizer,
        examples,
        seq2seq=seq2seq,
        batch_size=batch_size,
        max_new_tokens=max(answer_budget(tokenizer, task, None) for task in tasks),
        device=device,
        progress=progress,
    )
