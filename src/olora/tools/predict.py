"""``olora predict``: answers for new inputs from a run or an export, with the run's own prompts."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import PeftModel

from olora.config import DataConfig
from olora.core.evaluate import generate_answers, label_token_budget
from olora.core.models import is_seq2seq, load_model
from olora.data.encoding import Encoded, PromptEncoder
from olora.data.tasks import Task
from olora.errors import OloraError
from olora.store.rundir import RunFolder
from olora.tools.export import EXPORT_INFO, answering_model


def _task(defs: list[dict], name: str) -> Task:
    for d in defs:
        if d["name"] == name:
            return Task.from_dict(d)
    raise OloraError(f"task {name!r} is not in this run: choose one of {', '.join(d['name'] for d in defs)}")


def load_for_inference(path: Path, task_name: str) -> tuple[torch.nn.Module, object, Task, DataConfig]:
    """(model, tokenizer, task, data config) for a run folder or an ``olora export`` folder."""
    path = Path(path)
    if (path / EXPORT_INFO).is_file():
        info = json.loads((path / EXPORT_INFO).read_text(encoding="utf-8"))
        task = _task(info["tasks"], task_name)
        if info["format"] == "merged":
            model, tokenizer = load_model(str(path), info["dtype"])
        else:
            base, tokenizer = load_model(info["model"], info["dtype"])
            model = PeftModel.from_pretrained(base, path)
        return model, tokenizer, task, DataConfig(**info["data"])
    run = RunFolder(path)
    results = run.load_results()
    records = run.stage_records()
    task = _task([t for r in records for t in r["tasks"]], task_name)
    index = next((r["index"] for r in records if r["name"] == task_name), None)
    model, tokenizer = answering_model(run, results, index)
    return model, tokenizer, task, DataConfig(**results["config"]["data"])


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
        if not isinstance(text, str):
            raise OloraError(f"{str(path)!r} line {n}: needs a string field 'input' (or 'sentence', 'text')")
        texts.append(text)
    if not texts:
        raise OloraError(f"input file {str(path)!r} has no inputs")
    return texts


def predict(path: Path, task_name: str, texts: list[str], batch_size: int = 16, progress: bool = False) -> list[str]:
    model, tokenizer, task, data = load_for_inference(path, task_name)
    seq2seq = is_seq2seq(model.get_base_model() if hasattr(model, "get_base_model") else model)
    encoder = PromptEncoder(tokenizer, seq2seq, data.max_source_length, data.add_task_name, data.add_dataset_name)
    examples = [Encoded(encoder.encode_prompt(task, text)[0], []) for text in texts]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    return generate_answers(
        model,
        tokenizer,
        examples,
        seq2seq=seq2seq,
        batch_size=batch_size,
        max_new_tokens=label_token_budget(tokenizer, task.labels),
        device=device,
        progress=progress,
    )
