"""``olora perf``: measured ratios that hold on noisy machines (same process, same inputs, interleaved).

* train step of O-LoRA at task t / a plain single-LoRA step, and the same with a naive penalty that
  rescans parameter names every step (what the official code does);
* inference latency: merged model / base, all adapters active / base, folded past / base;
* a training epoch with length-grouped batches and shared prompt heads / plain random batches
  (same examples, so the epoch's token-weighted NLL must agree);
* evaluation: olora's evaluator (length-sorted batches, label-sized generation budget) against a
  naive ``generate(max_new_tokens=50)`` over batches in input order, with exact-match scores.

Each timing is the median of interleaved repeats, so a slow moment affects every variant alike.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable

import torch
from accelerate import Accelerator

from olora.config import LoRAConfig
from olora.core.adapters import (
    OrthogonalityPenalty,
    activate,
    add_adapter,
    concat_adapters,
    lora_layers,
    merge_into_base,
    peft_lora_config,
)
from olora.core.evaluate import exact_match, generate_answers, label_token_budget
from olora.core.models import is_seq2seq, load_model
from olora.core.train import answer_nll, batch_order
from olora.data.builtin import BUILTIN_TASKS, builtin_task
from olora.data.encoding import Encoded, PromptEncoder, collate_prompts, collate_train


def naive_orthogonality(model: torch.nn.Module, past: list[str], new: str) -> torch.Tensor:
    """The official code's penalty loop: for each past lora_A, scan every parameter name for the
    matching new lora_A. O(params²) string work per step; kept only as a baseline."""
    total = torch.zeros(())
    params = list(model.named_parameters())
    for name, p in params:
        if ".lora_A." in name and any(f".lora_A.{a}." in name for a in past):
            prefix = name.split(".lora_A.")[0]
            for name2, p2 in params:
                if name2.split(".lora_A.")[0] == prefix and f".lora_A.{new}." in name2:
                    total = total + (p @ p2.T).abs().sum()
    return total


def interleaved_median(fns: dict[str, Callable[[], None]], repeats: int, warmup: int = 1) -> dict[str, float]:
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def _examples(tokenizer, seq2seq: bool, n: int) -> tuple[list[Encoded], list[str], list[str]]:
    task = builtin_task("newsdesk")
    encoder = PromptEncoder(tokenizer, seq2seq, 512)
    examples = task.test[:n]
    return encoder.encode(task, examples), [e.label for e in examples], task.labels


def with_task_adapters(model, seq2seq: bool, count: int, r: int) -> torch.nn.Module:
    """``count`` past adapters p0..p{count-1} with non-zero B, and a fresh trainable 'new'."""
    cfg = LoRAConfig(r=r, dropout=0.1)
    torch.manual_seed(0)
    for k in range(count):
        model = add_adapter(model, f"p{k}", peft_lora_config(cfg, model, seq2seq))
    model = add_adapter(model, "new", peft_lora_config(cfg, model, seq2seq))
    with torch.no_grad():
        for layer in lora_layers(model):
            for k in range(count):
                layer.lora_B[f"p{k}"].weight.normal_(0, 0.01)
    return model


def train_step_ratios(
    model, tokenizer, seq2seq: bool, task_counts: list[int], batch_size: int, repeats: int
) -> dict[str, float]:
    """Seconds per optimizer step, and ratios to the plain single-LoRA step."""
    examples, _, _ = _examples(tokenizer, seq2seq, batch_size)
    batch = collate_train(examples, tokenizer.pad_token_id, seq2seq)
    max_t = max(task_counts)
    model = with_task_adapters(model, seq2seq, max_t - 1, r=8)
    for t in task_counts:
        if t > 1:
            concat_adapters(model, [f"p{k}" for k in range(t - 1)], f"fold{t}")
    new_params = [p for n, p in model.named_parameters() if ".new." in n]
    optimizer = torch.optim.AdamW(new_params, lr=1e-4)
    accelerator = Accelerator(cpu=True)

    def step(active: list[str], penalty: Callable[[], torch.Tensor] | None, m=model, opt=optimizer):
        def run() -> None:
            activate(m, active, trainable="new")
            loss = answer_nll(m, batch, seq2seq)
            if penalty is not None:
                loss = loss + 0.5 * penalty()
            accelerator.backward(loss)
            opt.step()
            opt.zero_grad(set_to_none=True)

        return run

    def merged_step(t: int) -> Callable[[], None]:
        """olora's default: the past adapters added into a copy's base weights."""
        m = copy.deepcopy(model)
        past = [f"p{k}" for k in range(t - 1)]
        for name in past:
            merge_into_base(m, name)
        opt = torch.optim.AdamW([p for n, p in m.named_parameters() if ".new." in n], lr=1e-4)
        return step(["new"], OrthogonalityPenalty(m, past, "new"), m, opt)

    fns = {"plain LoRA": step(["new"], None)}
    for t in task_counts:
        past = [f"p{k}" for k in range(t - 1)]
        penalty = OrthogonalityPenalty(model, past, "new") if past else None
        fns[f"O-LoRA t={t} separate" if past else f"O-LoRA t={t}"] = step([*past, "new"], penalty)
        if past:
            fns[f"O-LoRA t={t} merged (default)"] = merged_step(t)
            fns[f"O-LoRA t={t} stacked"] = step([f"fold{t}", "new"], penalty)
            fns[f"O-LoRA t={t} naive penalty"] = step(
                [*past, "new"], lambda past=past: naive_orthogonality(model, past, "new")
            )
    model.train()
    return interleaved_median(fns, repeats)


def inference_ratios(model, tokenizer, seq2seq: bool, tasks: int, batch_size: int, repeats: int) -> dict[str, float]:
    examples, _, _ = _examples(tokenizer, seq2seq, batch_size)
    batch = collate_train(examples, tokenizer.pad_token_id, seq2seq, share_prefix=False)
    batch.pop("labels")
    if seq2seq:
        batch["decoder_input_ids"] = torch.zeros((len(examples), 4), dtype=torch.long)
    base = copy.deepcopy(model)
    model = with_task_adapters(model, seq2seq, tasks, r=8)
    names = [f"p{k}" for k in range(tasks)]
    concat_adapters(model, names, "folded")
    merged = copy.deepcopy(model)
    activate(merged, names, trainable=None)
    merged = merged.merge_and_unload()
    for m in (base, model, merged):
        m.eval()

    def forward(m, active: list[str] | None = None) -> Callable[[], None]:
        def run() -> None:
            if active is not None:
                activate(m, active, trainable=None)
            with torch.no_grad():
                m(**batch)

        return run

    return interleaved_median(
        {
            "base": forward(base),
            "merged": forward(merged),
            f"all {tasks} adapters active": forward(model, names),
            f"{tasks} adapters folded into one": forward(model, ["folded"]),
        },
        repeats,
    )


def epoch_speedup(model, tokenizer, seq2seq: bool, n: int, batch_size: int) -> dict[str, dict[str, float]]:
    """One forward+backward pass over ``n`` training prompts of the three built-in tasks (each batch
    from one task, as in a task sequence): random batches with full prompts vs length-grouped
    batches that share the prompt head. No optimizer step, so both see the same weights and their
    token-weighted mean NLL over the epoch must agree."""
    encoder = PromptEncoder(tokenizer, seq2seq, 512)
    per_task = [encoder.encode(t, t.train[: n // 3]) for t in map(builtin_task, BUILTIN_TASKS)]
    model = with_task_adapters(model, seq2seq, 0, r=8)
    activate(model, ["new"], trainable="new")
    model.eval()  # no dropout: both variants compute the same function

    def epoch(grouped: bool) -> dict[str, float]:
        start, nll_sum, tokens = time.perf_counter(), 0.0, 0
        for examples in per_task:
            lengths = [len(e.prompt_ids) + len(e.target_ids) for e in examples]
            for idx in batch_order(len(examples), batch_size, seed=0, epoch=0, lengths=lengths if grouped else None):
                chunk = [examples[i] for i in idx]
                loss = answer_nll(
                    model, collate_train(chunk, tokenizer.pad_token_id, seq2seq, share_prefix=grouped), seq2seq
                )
                loss.backward()
                count = sum(len(e.target_ids) for e in chunk)
                nll_sum, tokens = nll_sum + loss.item() * count, tokens + count
        model.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - start
        return {"examples_per_s": sum(map(len, per_task)) / seconds, "mean_nll": nll_sum / tokens}

    epoch(False)  # warm-up
    return {"random batches, full prompts": epoch(False), "length-grouped, shared head": epoch(True)}


def eval_comparison(model, tokenizer, seq2seq: bool, n: int, batch_size: int) -> dict[str, float]:
    examples, golds, labels = _examples(tokenizer, seq2seq, n)
    model.eval()

    def naive() -> list[str]:
        out = []
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            inputs = collate_prompts(chunk, tokenizer.pad_token_id, seq2seq, share_prefix=False)
            inputs.pop("position_ids", None)  # generate() derives them from the mask
            with torch.no_grad():
                ids = model.generate(
                    **inputs,
                    max_new_tokens=50,
                    do_sample=False,
                    num_beams=1,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
            ids = ids if seq2seq else ids[:, inputs["input_ids"].shape[1] :]
            out += [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
        return out

    def ours() -> list[str]:
        return generate_answers(
            model,
            tokenizer,
            examples,
            seq2seq=seq2seq,
            batch_size=batch_size,
            max_new_tokens=label_token_budget(tokenizer, labels),
        )

    results = {}
    for name, fn in (("naive generate(max_new_tokens=50)", naive), ("olora evaluator", ours)):
        start = time.perf_counter()
        preds = fn()
        seconds = time.perf_counter() - start
        results[name] = {
            "examples_per_s": n / seconds,
            "exact_match": 100 * sum(exact_match(p, g) for p, g in zip(preds, golds, strict=True)) / n,
        }
    return results


def run_perf(
    model_name: str,
    task_counts: list[int],
    batch_size: int,
    repeats: int,
    eval_examples: int,
    infer_batch_size: int = 32,
    epoch_examples: int = 48,
) -> dict:
    model, tokenizer = load_model(model_name)
    model.requires_grad_(False)
    seq2seq = is_seq2seq(model)
    report = {
        "model": model_name,
        "threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "infer_batch_size": infer_batch_size,
    }
    report["eval"] = eval_comparison(model, tokenizer, seq2seq, eval_examples, batch_size=16)
    report["train_step_s"] = train_step_ratios(
        copy.deepcopy(model), tokenizer, seq2seq, task_counts, batch_size, repeats
    )
    report["inference_s"] = inference_ratios(
        copy.deepcopy(model), tokenizer, seq2seq, max(task_counts), infer_batch_size, repeats
    )
    report["epoch"] = epoch_speedup(copy.deepcopy(model), tokenizer, seq2seq, epoch_examples, batch_size)
    return report


def format_perf(report: dict) -> str:
    lines = [f"model {report['model']}, {report['threads']} threads", "", "train step (median s, ratio to plain LoRA)"]
    plain = report["train_step_s"]["plain LoRA"]
    lines += [f"  {k:<32}{v:9.4f}  x{v / plain:.3f}" for k, v in report["train_step_s"].items()]
    base = report["inference_s"]["base"]
    lines += ["", f"inference forward, {report['infer_batch_size']} prompts (median s, ratio to base)"]
    lines += [f"  {k:<32}{v:9.4f}  x{v / base:.3f}" for k, v in report["inference_s"].items()]
    lines += ["", "training epoch (forward + backward)"]
    ep = report["epoch"]
    lines += [f"  {k:<36}{v['examples_per_s']:8.2f} ex/s  mean NLL {v['mean_nll']:.5f}" for k, v in ep.items()]
    speed = [v["examples_per_s"] for v in ep.values()]
    lines.append(f"  speed-up x{speed[1] / speed[0]:.2f}")
    lines += ["", "evaluation"]
    ev = report["eval"]
    lines += [f"  {k:<36}{v['examples_per_s']:8.2f} ex/s  EM {v['exact_match']:.1f}" for k, v in ev.items()]
    speed = [v["examples_per_s"] for v in ev.values()]
    lines.append(f"  speed-up x{speed[1] / speed[0]:.2f}")
    return "\n".join(lines)
