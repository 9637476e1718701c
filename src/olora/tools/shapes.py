"""``olora perf --shapes``: LoRA vs O-LoRA training throughput and peak memory at the paper's model
sizes, on random-init models built from configs (no downloads; the numbers depend on the shapes,
not the weights).

For each shape one model carries adapters p0..p13 (past, non-zero B) and ``new`` (trained). Timed
variants, each a full optimizer step on the same random batch:

* plain LoRA          -- ``new`` alone, no penalty;
* O-LoRA t=1          -- ``new`` alone with the (empty) penalty, i.e. the first task;
* O-LoRA t=15 separate -- 14 past adapters active as separate branches (the official code's layout);
* O-LoRA t=15 stacked  -- the 14 past adapters folded into one rank-112 branch (``fold_past=stack``);
* O-LoRA t=15 merged   -- the 14 past adapters added into the base weights (``fold_past=merge``,
  the default); the penalty still reads their ``lora_A``.

Merging changes the base weights, so that variant runs last. Times are the median over ``steps``
after ``warmup`` steps, synchronised per step on accelerators; peak memory is the device's
(``max_memory_allocated``) or, on CPU, not measured.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, LlamaConfig, PretrainedConfig, T5Config

from olora.core.adapters import OrthogonalityPenalty, activate, concat_adapters, merge_into_base
from olora.core.train import answer_nll
from olora.data.encoding import Encoded, collate_train
from olora.errors import OloraError
from olora.tools.perf import with_task_adapters

T5_LARGE = dict(d_model=1024, d_ff=4096, d_kv=64, num_heads=16, num_layers=24, num_decoder_layers=24)
LLAMA2_7B = dict(
    hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32
)
SMOLLM2 = dict(
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    vocab_size=49152,
    tie_word_embeddings=True,
)
TINY_T5 = dict(d_model=64, d_ff=128, d_kv=16, num_heads=4, num_layers=2, num_decoder_layers=2, vocab_size=256)
TINY_LLAMA = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    vocab_size=256,
)  # fmt: skip

T5_TOKENS = dict(decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)  # as in the real T5 checkpoints

SHAPES: dict[str, Callable[[], PretrainedConfig]] = {
    "t5-large": lambda: T5Config(vocab_size=32128, **T5_LARGE, **T5_TOKENS),
    "llama2-7b": lambda: LlamaConfig(vocab_size=32000, **LLAMA2_7B),
    "smollm2-135m": lambda: LlamaConfig(**SMOLLM2),
    "t5-tiny": lambda: T5Config(**TINY_T5, **T5_TOKENS),
    "llama-tiny": lambda: LlamaConfig(**TINY_LLAMA),
}


def build_random_model(shape: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """A random-init model of a named shape, created directly on ``device``."""
    if shape not in SHAPES:
        raise OloraError(f"unknown shape {shape!r}: choose from {', '.join(SHAPES)}")
    config = SHAPES[shape]()
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    with torch.device(device):
        model = auto.from_config(config, dtype=dtype)
    return model.requires_grad_(False)


def random_batch(
    vocab: int, batch_size: int, prompt_len: int, answer_len: int, seq2seq: bool, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Token ids drawn at random (ids ≥ 2 so no pad/eos): a full, unpadded training batch."""
    rng = random.Random(seed)
    examples = [
        Encoded(
            [rng.randrange(2, vocab) for _ in range(prompt_len)], [rng.randrange(2, vocab) for _ in range(answer_len)]
        )
        for _ in range(batch_size)
    ]
    return collate_train(examples, pad_id=0, seq2seq=seq2seq, share_prefix=False)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def shape_check(
    shape: str,
    device: str = "cpu",
    dtype: str = "float32",
    batch_size: int = 8,
    prompt_len: int = 256,
    answer_len: int = 4,
    tasks: int = 15,
    steps: int = 10,
    warmup: int = 3,
    r: int = 8,
) -> dict:
    """Seconds per step, tokens/s and peak memory of LoRA and O-LoRA variants for one shape."""
    dev = torch.device(device)
    start = time.perf_counter()
    model = build_random_model(shape, dev, getattr(torch, dtype))
    seq2seq = bool(model.config.is_encoder_decoder)
    params = sum(p.numel() for p in model.parameters())
    model = with_task_adapters(model, seq2seq, tasks - 1, r)
    build_s = time.perf_counter() - start
    batch = {
        k: v.to(dev)
        for k, v in random_batch(model.config.vocab_size, batch_size, prompt_len, answer_len, seq2seq).items()
    }
    tokens = batch_size * (prompt_len + answer_len)
    past = [f"p{k}" for k in range(tasks - 1)]
    model.train()

    def variant(active: list[str], penalty: OrthogonalityPenalty | None) -> dict:
        activate(model, active, trainable="new")
        trainable = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(trainable, lr=1e-4)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        times = []
        for i in range(warmup + steps):
            _sync(dev)
            t0 = time.perf_counter()
            loss = answer_nll(model, batch, seq2seq)
            if penalty is not None:
                loss = loss + 0.5 * penalty()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            _sync(dev)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        if not torch.isfinite(loss):
            raise OloraError(f"{shape}: the loss became {loss.item()} in the shape check")
        step_s = statistics.median(times)
        peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
        return {
            "step_s": step_s,
            "tokens_per_s": tokens / step_s,
            "peak_mem_gib": peak,
            "trainable_params": sum(p.numel() for p in trainable),
            "active_adapters": len(model.base_model.active_adapters),
        }

    results = {"plain LoRA": variant(["new"], None)}
    results["O-LoRA t=1"] = variant(["new"], OrthogonalityPenalty(model, [], "new"))
    if past:
        penalty = OrthogonalityPenalty(model, past, "new")
        results[f"O-LoRA t={tasks} separate"] = variant([*past, "new"], penalty)
        concat_adapters(model, past, "folded")
        results[f"O-LoRA t={tasks} stacked"] = variant(["folded", "new"], penalty)
        for name in past:
            merge_into_base(model, name)
        results[f"O-LoRA t={tasks} merged (default)"] = variant(["new"], penalty)
    plain = results["plain LoRA"]["step_s"]
    for v in results.values():
        v["ratio"] = v["step_s"] / plain
    return {
        "shape": shape,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "dtype": dtype,
        "params": params,
        "batch": [batch_size, prompt_len, answer_len],
        "build_s": build_s,
        "variants": results,
    }


def format_shapes(reports: list[dict]) -> str:
    lines = []
    for rep in reports:
        b, p, a = rep["batch"]
        lines.append(
            f"{rep['shape']} ({rep['params'] / 1e6:.0f}M params, {rep['dtype']}, {rep['device']}), "
            f"batch {b} x ({p} prompt + {a} answer) tokens"
        )
        for name, v in rep["variants"].items():
            mem = f"{v['peak_mem_gib']:7.2f} GiB" if v["peak_mem_gib"] is not None else "      n/a"
            lines.append(f"  {name:<30}{v['step_s']:9.4f} s  {v['tokens_per_s']:10.0f} tok/s  x{v['ratio']:.3f}  {mem}")
        lines.append("")
    return "\n".join(lines)
