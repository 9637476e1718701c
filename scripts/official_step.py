#!/usr/bin/env python3
"""One training step of the official O-LoRA code and one of olora, on the same weights and batch.

    .venv/bin/python scripts/official_step.py --official PATH/TO/O-LoRA

PATH/TO/O-LoRA is a checkout of cmnfriend/O-LoRA that you fetched yourself (07117e1 was checked);
nothing of it is copied into this repository. The script

1. builds a separate virtual environment (``--venv``, default ``<olora cache>/official-venv``) with the
   official stack: transformers==4.28.0 and accelerate==0.20.3 installed ``--no-deps``, the minimal
   dependencies they import, and the same torch as this project (``--torch``, default torch==2.13.0);
   the checkout's vendored, modified peft 0.3.0 (``src/peft``) is imported from the checkout;
2. in that environment (a subprocess): trains a tiny SentencePiece vocabulary, saves a tiny random T5
   (d_model 32, 2 layers, dropout 0) under ``<work>/initial_model/t5-tiny`` (the official collator
   dispatches on "t5" in the path), builds the model the way ``src/run_uie_lora.py`` does (LoRA r 8,
   α 32, lora dropout 0 here), batches agnews/amazon-style prompts with the official
   ``DataCollatorForUIE`` and runs ``UIETrainer.training_step`` (no DeepSpeed, one process, GAS 1):
   task 1 (fresh adapter), then task 2 after saving the task-1 adapter with the official
   ``save_pretrained`` and loading it with ``PeftModel.from_pretrained`` (one frozen past adapter).
   Both adapter factors are set to random values first (the official ``loranew_B`` starts at zero, which
   would make every ``loranew_A`` gradient zero). Weights, batch, gradients and the loss terms the
   official step logs go to safetensors/JSON files;
3. in this project's environment (a second subprocess): rebuilds the same model with olora's pieces
   (``olora_step`` below), one forward/backward, and compares.

Official per-step loss (src/uie_trainer_lora.py): CE + λ1·Σ|lora_A·loranew_Aᵀ| + λ2·Σ(‖loranew_A‖+‖loranew_B‖).

Printed and written to ``<work>/report.json``: loss, CE, orthogonality penalty and L2 of both sides, and
for every adapter gradient the largest absolute difference and that difference relative to the largest
official gradient entry. Exit status 1 if any relative difference exceeds ``--tolerance``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent

# The official stack (requirements.txt of the checkout pins transformers 4.28.0, accelerate 0.20.3).
NO_DEPS = ["transformers==4.28.0", "accelerate==0.20.3"]
DEPS = [
    "huggingface-hub==0.14.1",  # of transformers 4.28's time; newer hubs dropped names it imports
    "tokenizers==0.13.3",  # transformers 4.28 imports the fast BERT tokenizer unconditionally
    "numpy<2",
    "setuptools>=77,<81",  # accelerate 0.20.3 imports pkg_resources (gone from setuptools 81)
    "regex",
    "pyyaml",
    "requests",
    "tqdm",
    "packaging",
    "filelock",
    "safetensors",
    "sentencepiece",  # the slow T5 tokenizer the official collator calls
    "psutil",  # accelerate
]

TASKS = ["agnews", "amazon"]
LABELS = {
    "agnews": ["World", "Sports", "Business", "Science or Technology"],
    "amazon": ["very negative", "negative", "neutral", "positive", "very positive"],
}
TASK_TYPE = {"agnews": "TC", "amazon": "SC"}
SENTENCES = {
    "agnews": [
        ("Title: Stocks rally\nText: Shares rose sharply on Wall Street after the earnings report.\n", "Business"),
        ("Title: Cup final\nText: The home side won the final in extra time.\n", "Sports"),
        (
            "Title: New chip\nText: Engineers unveiled a faster processor for phones and laptops, "
            "with a new memory design.\n",
            "Science or Technology",
        ),
        ("Title: Talks resume\nText: Leaders met in Geneva to discuss the ceasefire.\n", "World"),
        ("Title: Oil prices\nText: Crude fell for a third day.\n", "Business"),
        (
            "Title: Mars probe\nText: The probe sent back images of the red planet's surface and its dusty poles.\n",
            "Science or Technology",
        ),
    ],
    "amazon": [
        ("Title: Broke in a day\nText: The handle snapped the first time I used it.\n", "very negative"),
        ("Title: Fine\nText: Does the job, nothing special.\n", "neutral"),
        (
            "Title: Love it\nText: Best purchase this year, works perfectly and looks great on my desk.\n",
            "very positive",
        ),
        ("Title: Meh\nText: Smaller than expected and the color is off.\n", "negative"),
        ("Title: Good value\nText: Solid build for the price.\n", "positive"),
        (
            "Title: Returned it\nText: Stopped charging after a week and support never answered my emails.\n",
            "very negative",
        ),
    ],
}
R, ALPHA = 8, 32


def default_cache() -> Path:
    if os.environ.get("OLORA_CACHE"):
        return Path(os.environ["OLORA_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "olora"


# --------------------------------------------------------------------------------------------- driver


def ensure_venv(venv: Path, torch_spec: str, python: str) -> Path:
    py = venv / "bin" / "python"
    marker = venv / ".official-step-ready"
    wanted = json.dumps({"torch": torch_spec, "no_deps": NO_DEPS, "deps": DEPS})
    if py.is_file() and marker.is_file() and marker.read_text() == wanted:
        return py
    print(f"building the official environment in {venv} (once)", flush=True)
    subprocess.run([python, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + [torch_spec], check=True)
    subprocess.run(pip + ["--no-deps", *NO_DEPS], check=True)
    subprocess.run(pip + ["--only-binary", ":all:", *DEPS], check=True)
    marker.write_text(wanted)
    return py


def olora_python(arg: str | None) -> str:
    if arg:
        return arg
    local = REPO / ".venv" / "bin" / "python"
    return str(local) if local.is_file() else sys.executable


def driver(a: argparse.Namespace) -> int:
    official = Path(a.official).resolve()
    for rel in ("src/uie_trainer_lora.py", "src/uie_collator.py", "src/peft/tuners/lora.py", "src/uie_dataset_lora.py"):
        if not (official / rel).is_file():
            print(f"error: {official} is not an O-LoRA checkout ({rel} is missing)", file=sys.stderr)
            return 2
    work = Path(a.work).resolve() if a.work else default_cache() / "official-step"
    work.mkdir(parents=True, exist_ok=True)
    venv = Path(a.venv).resolve() if a.venv else default_cache() / "official-venv"
    base_python = getattr(sys, "_base_executable", None) or sys.executable
    py = ensure_venv(venv, a.torch, a.base_python or base_python)
    common = ["--work", str(work), "--lamda1", str(a.lamda1), "--lamda2", str(a.lamda2), "--official", str(official)]
    env = {**os.environ, "PYTHONNOUSERSITE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    subprocess.run([str(py), str(HERE), "--role", "official", *common], check=True, env=env)
    done = subprocess.run(
        [olora_python(a.olora_python), str(HERE), "--role", "olora", "--tolerance", str(a.tolerance), *common], env=env
    )
    return done.returncode


# ------------------------------------------------------------------------------------ official side


def official_role(a: argparse.Namespace) -> None:
    import logging

    import torch
    from safetensors.torch import save_file

    src = Path(a.official) / "src"
    sys.path.insert(0, str(src))
    # uie_trainer_lora imports uie_dataset_lora for one constant; that module needs datasets 1.17 (a
    # loading script), so a stub carrying the constant read from the file stands in for it.
    text = (src / "uie_dataset_lora.py").read_text(encoding="utf-8")
    stub = types.ModuleType("uie_dataset_lora")
    stub.ANSWER_PREFIX = re.search(r'^ANSWER_PREFIX\s*=\s*"(.*)"', text, re.M).group(1)
    sys.modules["uie_dataset_lora"] = stub

    import peft
    import transformers
    from transformers import AutoModelForSeq2SeqLM, Seq2SeqTrainingArguments, T5Config, T5Tokenizer, set_seed

    if not Path(peft.__file__).resolve().is_relative_to(src.resolve()):
        raise SystemExit(f"peft was imported from {peft.__file__}, not from the checkout's src/peft")
    from peft import LoraConfig, PeftModel, TaskType, get_peft_model
    from uie_collator import DataCollatorForUIE
    from uie_trainer_lora import UIETrainer

    work = Path(a.work)
    model_dir = work / "initial_model" / "t5-tiny"  # "t5" in the path: the collator dispatches on it
    instructions = json.loads((Path(a.official) / "configs" / "instruction_config.json").read_text())

    def instance(task: str, idx: int, sentence: str, label: str) -> dict:
        # as src/uie_dataset_lora.py builds a record: instruction + options + "{0}" + "\nAnswer:"
        kind = TASK_TYPE[task]
        instruction = instructions[kind][0]["instruction"]
        instruction += "Option: " + ", ".join(LABELS[task]) + " \n" + "{0}" + "\nAnswer:"
        return {
            "Task": kind,
            "Dataset": task,
            "Samples": [],
            "subset": "train",
            "Instance": {
                "id": str(idx),
                "sentence": sentence,
                "label": label,
                "ground_truth": label,
                "instruction": instruction,
            },
        }

    batches = {t: [instance(t, i, s, lab) for i, (s, lab) in enumerate(SENTENCES[t])] for t in TASKS}

    # ---- a tiny vocabulary and a tiny random T5 (dropout 0: the step is deterministic)
    model_dir.mkdir(parents=True, exist_ok=True)
    if not (model_dir / "spiece.model").is_file():
        import sentencepiece as spm

        corpus = []
        for t in TASKS:
            for b in batches[t]:
                corpus.append(b["Instance"]["instruction"].format(b["Instance"]["sentence"]))
                corpus += LABELS[t]
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(corpus * 4),
            model_prefix=str(model_dir / "spiece"),
            vocab_size=160,
            model_type="unigram",
            pad_id=0,
            eos_id=1,
            unk_id=2,
            bos_id=-1,
            hard_vocab_limit=False,
            character_coverage=1.0,
            minloglevel=2,
        )
    tokenizer = T5Tokenizer(str(model_dir / "spiece.model"), extra_ids=0)
    tokenizer.save_pretrained(model_dir)
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    transformers.T5ForConditionalGeneration(config).save_pretrained(model_dir, safe_serialization=True)

    # ---- the model as src/run_uie_lora.py sets it up (lines 362-416), lora_dropout 0 instead of 0.1
    def finish(model):
        model.resize_token_embeddings(len(tokenizer))  # no-op here: vocab_size == len(tokenizer)
        for name, param in model.named_parameters():  # the script's trainability rule, by name
            if "loranew_" in name:
                param.requires_grad = True
            elif "lora_" in name or "shared" in name:
                param.requires_grad = False
        return model

    gen = torch.Generator().manual_seed(1234)

    def randomise(model):  # loranew_B starts at 0 (so would every loranew_A gradient)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "loranew_B" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.2)

    class Args(Seq2SeqTrainingArguments):  # UIETrainingArguments (run_uie_lora.py:230-241): + lamda_1/2
        pass

    Args.lamda_1 = a.lamda1
    Args.lamda_2 = a.lamda2
    targs = Args(
        output_dir=str(work / "trainer"),
        no_cuda=True,
        report_to=[],
        per_device_train_batch_size=8,
        remove_unused_columns=False,
        seed=42,
    )

    records = []

    class Grab(logging.Handler):  # the step logs its three terms with .item(): the exact float32 values
        def emit(self, record):
            records.append(record.getMessage())

    log = logging.getLogger("transformers.trainer")
    log.setLevel(logging.INFO)
    log.addHandler(Grab())
    log.propagate = False
    versions = {"transformers": transformers.__version__, "torch": torch.__version__, "peft_vendored": peft.__version__}

    def run(task_index: int, model) -> None:
        task = TASKS[task_index]
        collator = DataCollatorForUIE(
            tokenizer,
            model=model,
            padding="longest",
            max_source_length=512,
            max_target_length=50,
            label_pad_token_id=-100,
            pad_to_multiple_of=None,
            add_task_name=True,
            add_dataset_name=True,
        )
        batch = collator(batches[task])
        trainer = UIETrainer(model=model, args=targs, data_collator=collator, tokenizer=tokenizer)
        model.zero_grad(set_to_none=True)
        records.clear()
        loss = trainer.training_step(model, dict(batch))
        terms = [m for m in records if m.startswith("orthogonal_loss")]
        m = re.match(r"orthogonal_loss: (\S+); l2_loss: (\S+); accuracy_loss: (\S+);", terms[-1])
        orth, l2, ce = (float(x) for x in m.groups())
        tensors = {f"batch.{k}": v.contiguous() for k, v in batch.items()}
        trainable = []
        for name, p in model.named_parameters():
            hit = re.match(r"base_model\.model\.(.+)\.(lora_A|lora_B|loranew_A|loranew_B)\.default\.weight$", name)
            if not hit:
                if p.requires_grad:
                    trainable.append(name)
                continue
            module, kind = hit.groups()
            role = {"lora_A": "past_A", "lora_B": "past_B", "loranew_A": "new_A", "loranew_B": "new_B"}[kind]
            tensors[f"w.{module}.{role}"] = p.detach().contiguous()
            if p.requires_grad:
                trainable.append(name)
                tensors[f"g.{module}.{role}"] = p.grad.detach().contiguous()
        save_file(tensors, str(work / f"official_task{task_index + 1}.safetensors"))
        meta = {
            "task": task,
            "loss": float(loss),
            "ce": ce,
            "orth": orth,
            "l2": l2,
            "lamda_1": a.lamda1,
            "lamda_2": a.lamda2,
            "trainable": trainable,
            "versions": versions,
            "pad_id": tokenizer.pad_token_id,
            "r_sum": int(model.peft_config["default"].r_sum),
        }
        (work / f"official_task{task_index + 1}.json").write_text(json.dumps(meta, indent=1))
        print(
            f"official task {task_index + 1} ({task}): loss {float(loss):.8g} = CE {ce:.8g} + "
            f"{a.lamda1}·orth {orth:.8g} + {a.lamda2}·L2 {l2:.8g}",
            flush=True,
        )

    # task 1: a fresh adapter (lora_A/lora_B have 0 rows: the penalty is 0)
    set_seed(42)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir)
    lora = LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, inference_mode=False, r=R, lora_alpha=ALPHA, lora_dropout=0.0)
    model = finish(get_peft_model(model, lora))
    randomise(model)
    run(0, model)
    adapter = work / "task1_out" / "adapter"
    model.save_pretrained(adapter)  # the official save: lora_A ← cat(lora_A, loranew_A), r_sum in the config

    # task 2: the next script invocation loads the saved adapter into a fresh base model
    set_seed(42)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir)
    model = finish(PeftModel.from_pretrained(model, str(adapter)))
    randomise(model)
    run(1, model)


# --------------------------------------------------------------------------------------- olora side


def olora_step(
    model_dir: Path,
    task_index: int,
    weights: dict,
    batch: dict,
    lamda1: float,
    lamda2: float,
    pad_id: int,
    double=False,
):
    """olora's forward/backward of one step: (loss, ce, orth, l2, {module.new_A|new_B: grad}, olora's batch,
    trainable elements). ``double``: the same step in float64 (the reference for float32 rounding).

    Uses only olora.core.adapters, olora.core.train.answer_logits/token_nll and olora.data.encoding;
    adapt the imports here if those move.
    """
    import torch
    from transformers import AutoModelForSeq2SeqLM

    from olora.config import LoRAConfig
    from olora.core import adapters
    from olora.core.train import answer_logits, token_nll
    from olora.data.encoding import Encoded, collate_train

    dtype = torch.float64 if double else torch.float32
    torch.set_default_dtype(dtype)  # new adapter layers follow it
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir, dtype=dtype)
    cfg = adapters.peft_lora_config(LoRAConfig(r=R, alpha=ALPHA, dropout=0.0), model, seq2seq=True)
    names = [adapters.adapter_name(i, TASKS[i]) for i in range(task_index + 1)]
    for name in names:
        model = adapters.add_adapter(model, name, cfg)
    adapters.activate(model, names, trainable=names[-1])
    layers = {}
    lora_ids = {id(m) for m in adapters.lora_layers(model)}
    with torch.no_grad():
        for path, module in model.named_modules():
            if id(module) in lora_ids:
                key = path.removeprefix("base_model.model.")
                layers[key] = module
                if task_index:
                    module.lora_A[names[0]].weight.copy_(weights[f"w.{key}.past_A"])
                    module.lora_B[names[0]].weight.copy_(weights[f"w.{key}.past_B"])
                module.lora_A[names[-1]].weight.copy_(weights[f"w.{key}.new_A"])
                module.lora_B[names[-1]].weight.copy_(weights[f"w.{key}.new_B"])
    # the official batch's rows, unpadded, as olora's encoded examples
    ids, mask, labels = batch["batch.input_ids"], batch["batch.attention_mask"], batch["batch.labels"]
    rows = [Encoded(ids[i][mask[i] == 1].tolist(), labels[i][labels[i] != -100].tolist()) for i in range(len(ids))]
    ours = collate_train(rows, pad_id, seq2seq=True)
    model.train()
    logits, target = answer_logits(model, ours, True, False)
    # token_nll upcasts to float32; the float64 reference keeps float64
    ce = (
        token_nll(logits, target)
        if not double
        else torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100
        )
    )
    orth = adapters.OrthogonalityPenalty(model, names[:-1], names[-1], "code")() if task_index else torch.zeros(())
    l2 = sum(m.lora_A[names[-1]].weight.norm() + m.lora_B[names[-1]].weight.norm() for m in layers.values())
    loss = ce + lamda1 * orth + lamda2 * l2
    loss.backward()
    grads = {}
    for key, m in layers.items():
        grads[f"{key}.new_A"] = m.lora_A[names[-1]].weight.grad
        grads[f"{key}.new_B"] = m.lora_B[names[-1]].weight.grad
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    torch.set_default_dtype(torch.float32)
    return loss.item(), ce.item(), orth.item(), l2.item(), grads, ours, trainable


def float64_distance(grads: dict, ref: dict) -> float:
    """Largest difference from the float64 step, relative to each tensor's largest entry."""
    return max(((g.double() - ref[k]).abs().max() / ref[k].abs().max()).item() for k, g in grads.items())


def olora_role(a: argparse.Namespace) -> int:
    import torch
    from safetensors.torch import load_file

    sys.path.insert(0, str(REPO / "src"))
    work = Path(a.work)
    model_dir = work / "initial_model" / "t5-tiny"
    report = {"tasks": []}
    worst = 0.0
    for t in range(len(TASKS)):
        off = load_file(str(work / f"official_task{t + 1}.safetensors"))
        meta = json.loads((work / f"official_task{t + 1}.json").read_text())
        loss, ce, orth, l2, grads, ours, trainable = olora_step(
            model_dir, t, off, off, a.lamda1, a.lamda2, meta["pad_id"]
        )
        ref64 = olora_step(model_dir, t, off, off, a.lamda1, a.lamda2, meta["pad_id"], double=True)[4]

        floor = {
            "official_vs_float64": float64_distance({k: off[f"g.{k}"] for k in grads}, ref64),
            "olora_vs_float64": float64_distance(grads, ref64),
        }
        same_batch = all(torch.equal(ours[k], off[f"batch.{k}"]) for k in ("input_ids", "attention_mask", "labels"))
        scalars = {}
        for name, o, n in (
            ("loss", meta["loss"], loss),
            ("ce", meta["ce"], ce),
            ("orth", meta["orth"], orth),
            ("l2", meta["l2"], l2),
        ):
            scalars[name] = {"official": o, "olora": n, "abs": abs(o - n), "rel": abs(o - n) / max(abs(o), 1e-30)}
            if name != "orth" or t:
                worst = max(worst, scalars[name]["rel"])
        rows = {}
        for key, g in sorted(grads.items()):
            ref = off[f"g.{key}"]
            diff = (g - ref).abs().max().item()
            scale = ref.abs().max().item()
            rows[key] = {"max_abs_grad": scale, "abs": diff, "rel": diff / max(scale, 1e-30)}
            worst = max(worst, rows[key]["rel"])
        n_off = sum(off[f"g.{k}"].numel() for k in grads)
        report["tasks"].append(
            {
                "task": t + 1,
                "dataset": meta["task"],
                "same_batch": same_batch,
                "scalars": scalars,
                "grads": rows,
                "float32_noise": floor,
                "trainable_official": len(meta["trainable"]),
                "trainable_elements": {"official": n_off, "olora": trainable},
                "official_versions": meta["versions"],
            }
        )
        print(
            f"\ntask {t + 1} ({meta['task']}{', one frozen past adapter' if t else ', fresh adapter'}): "
            f"batch identical: {same_batch}; trainable elements official {n_off}, olora {trainable}"
        )
        print(
            f"  float32 rounding (largest gradient difference from a float64 olora step, relative): "
            f"official {floor['official_vs_float64']:.2e}, olora {floor['olora_vs_float64']:.2e}"
        )
        print(f"  {'term':6} {'official':>16} {'olora':>16} {'abs diff':>10} {'rel diff':>10}")
        for name, s in scalars.items():
            print(f"  {name:6} {s['official']:16.9g} {s['olora']:16.9g} {s['abs']:10.2e} {s['rel']:10.2e}")
        print(f"  {'gradient':52} {'max|g|':>10} {'abs diff':>10} {'rel diff':>10}")
        for key, r in rows.items():
            print(f"  {key:52} {r['max_abs_grad']:10.3e} {r['abs']:10.2e} {r['rel']:10.2e}")
    report["worst_rel"] = worst
    report["tolerance"] = a.tolerance
    (work / "report.json").write_text(json.dumps(report, indent=1))
    print(f"\nlargest relative difference {worst:.2e} (tolerance {a.tolerance:g}); report: {work / 'report.json'}")
    return 0 if worst <= a.tolerance else 1


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--official", required=True, help="a checkout of cmnfriend/O-LoRA (not copied anywhere)")
    p.add_argument("--venv", help="the official stack's virtual environment (default <cache>/official-venv)")
    p.add_argument(
        "--work", help="scratch folder for the tiny model and the exchanged tensors (default <cache>/official-step)"
    )
    p.add_argument("--torch", default="torch==2.13.0", help="pip spec of torch for the official environment")
    p.add_argument("--base-python", help="python that creates the official venv (default: this one's base)")
    p.add_argument("--olora-python", help="python of the olora environment (default: .venv/bin/python)")
    p.add_argument("--lamda1", type=float, default=0.5)
    p.add_argument("--lamda2", type=float, default=0.1)
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="largest relative difference accepted (float32 backward rounding alone reaches ~1e-5 here)",
    )
    p.add_argument("--role", choices=["driver", "official", "olora"], default="driver", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.role == "official":
        official_role(a)
        return 0
    if a.role == "olora":
        return olora_role(a)
    return driver(a)


if __name__ == "__main__":
    sys.exit(main())
