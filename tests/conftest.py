"""Tiny random T5 and LLaMA models with a tokenizer trained here: no downloads, a few seconds.

The tokenizer is a byte-level BPE trained on the built-in demo tasks' prompts, so every text
encodes; the models are 2-layer, width-32 versions of the real architectures.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

import olora.methods  # noqa: F401  (registers the methods' option sections: tests parse configs directly)
from olora.data.builtin import BUILTIN_TASKS, builtin_task
from olora.data.tasks import build_prompt

# mixed_precision=auto picks bf16 on CPUs with bf16 units: pin float32 so that the equivalence tests
# (and the subprocesses they start) compare the same arithmetic on every machine.
os.environ["OLORA_CPU_BF16"] = "0"
SPECIALS = ["<pad>", "</s>", "<s>", "<unk>"]
DATA_DIR = Path(
    os.environ.get("OLORA_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "cl_benchmark" / "CL_Benchmark")
)


def _corpus() -> list[str]:
    texts = []
    for name in BUILTIN_TASKS:
        task = builtin_task(name)
        texts += [build_prompt(task, ex.text) + " " + ex.label for ex in task.train[:50]]
    return texts


def build_tokenizer(kind: str) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_corpus(), trainer)
    if kind == "llama":  # bos at the start, as LLaMA tokenizers do
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    else:  # eos at the end, as T5's does
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", bos_token="<s>", unk_token="<unk>"
    )


def build_model(kind: str, vocab: int) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "t5":
        cfg = T5Config(
            vocab_size=vocab,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=4,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
            dropout_rate=0.0,
        )
        return T5ForConditionalGeneration(cfg)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg)


def run_args(model_dir: Path, out: Path, *extra: str, tasks: str = "[sentiment,newsdesk]") -> list[str]:
    """``olora run`` arguments for a short run on a tiny model; ``extra`` overrides win (they come last)."""
    small = ["train.max_steps=2", "train.batch_size=4", "train.log_every=1", "data.train_per_class=4"]
    return ["run", f"model={model_dir}", f"tasks={tasks}", *small, "data.test_per_class=2", f"output_dir={out}", *extra]


def cli_run(model_dir: Path, out: Path, *extra: str, tasks: str = "[sentiment,newsdesk]") -> dict:
    """Run ``olora run`` in-process (exit code 0 asserted) and return its results.json."""
    import json

    from olora.cli import main

    assert main(run_args(model_dir, out, *extra, tasks=tasks)) == 0
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    """{"t5": folder, "llama": folder}: saved checkpoints usable as ``model=<folder>``."""
    root = tmp_path_factory.mktemp("tiny_models")
    out = {}
    for kind in ("t5", "llama"):
        tok = build_tokenizer(kind)
        model = build_model(kind, len(tok))
        folder = root / kind
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        out[kind] = folder
    return out


@pytest.fixture(params=["t5", "llama"])
def kind(request) -> str:
    return request.param


@pytest.fixture
def tiny(tiny_dirs, kind):
    """(model, tokenizer, seq2seq) loaded the way olora loads any checkpoint."""
    from olora.core.models import is_seq2seq, load_model

    model, tok = load_model(str(tiny_dirs[kind]))
    return model, tok, is_seq2seq(model)


@pytest.fixture
def data_dir() -> Path:
    if not (DATA_DIR / "TC" / "agnews" / "train.json").is_file():
        pytest.skip(f"CL_Benchmark not found at {DATA_DIR} (set OLORA_DATA_DIR)")
    return DATA_DIR


def train_log(out: Path, stage: str) -> list[dict]:
    """The rows of a finished stage's train_log.jsonl."""
    import json

    return [json.loads(x) for x in (out / "tasks" / stage / "train_log.jsonl").read_text().splitlines()]


def adapter_weights(out: Path, stage: str) -> dict[str, torch.Tensor]:
    """A finished stage's saved adapter tensors."""
    from safetensors.torch import load_file

    return load_file(str(out / "tasks" / stage / "adapter" / "adapter_model.safetensors"))


@pytest.fixture(autouse=True)
def _frozen_heap():
    """accelerate's free_memory runs a full gc.collect() after every task, whose cost grows with every object
    the test session keeps alive (measured: 0.25 s of a 1.1 s three-task tiny run, most of its time): objects
    that exist when a test starts are moved out of the collector's reach (they are not garbage)."""
    import gc

    gc.freeze()
    yield


# A tiny run for the multi-process tests (DDP, FSDP): 3 steps of 4 rows, no dropout (same weights to compare).
MULTI_PROCESS_ARGS = [
    "train.max_steps=3",
    "train.batch_size=4",
    "train.lr=1e-3",
    "data.train_per_class=6",
    "data.test_per_class=3",
    "lora.dropout=0.0",
]


def killed_and_resumed(launch, model_dir: Path, tmp_path: Path, *extra: str) -> tuple[Path, Path]:
    """A one-task run made whole, and again killed at its third training step and resumed, with ``launch``
    (a function that runs ``olora run`` in several processes and returns the CompletedProcess); returns
    the two run folders, whose weights the caller compares."""
    whole = launch(model_dir, tmp_path / "whole", *extra)
    assert whole.returncode == 0, whole.stderr[-4000:]
    killed = launch(model_dir, tmp_path / "resumed", *extra, env={"OLORA_CRASH_AT": "train_step:3"})
    assert killed.returncode != 0 and (tmp_path / "resumed" / "tasks" / "0-sentiment" / "checkpoint").is_dir()
    resumed = launch(model_dir, tmp_path / "resumed", *extra)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resuming from" in resumed.stderr
    return tmp_path / "whole", tmp_path / "resumed"


# The longest runs (tens of seconds each) are kept out of `make test` to hold it under 5 minutes on 2 cores;
# OLORA_LONG_TESTS=1 runs them too.
long_test = pytest.mark.skipif(
    os.environ.get("OLORA_LONG_TESTS") != "1", reason="long (10-50 s on 2 cores): set OLORA_LONG_TESTS=1"
)
