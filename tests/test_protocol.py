"""Conformance: every value the paper presets claim, checked against the official scripts.

Each value is recorded with the line of cmnfriend/O-LoRA (commit 07117e1) it comes from. A preset that
drifts from these fails here; a run that departs from them lists the difference as a deviation.
"""

from __future__ import annotations

import pytest

from olora.config import load_config
from olora.presets import load_benchmarks

REPO = "cmnfriend/O-LoRA@07117e1"
# (key, official value, source). The global batch is per-device batch × accumulation × GPUs.
T5_COMMON = [
    ("train.batch_size", 64, "scripts/order_1.sh:11,21,23 8 GPUs × --per_device_train_batch_size 8 × accumulation 1"),
    ("train.lr", 1e-3, "scripts/order_1.sh:24 --learning_rate 1e-03"),
    ("train.first_task_lr", None, "scripts/order_1.sh:24,60,96,132 the same lr for every task"),
    ("train.epochs", 1, "scripts/order_1.sh:25 --num_train_epochs 1"),
    ("data.max_source_length", 512, "scripts/order_1.sh:28 --max_source_length 512"),
    ("eval.max_new_tokens", 50, "scripts/order_1.sh:30 --generation_max_length 50"),
    ("data.add_task_name", True, "scripts/order_1.sh:31 --add_task_name True"),
    ("data.add_dataset_name", True, "scripts/order_1.sh:32 --add_dataset_name True"),
    ("olora.lambda_orth", 0.5, "scripts/order_1.sh:42 --lamda_1 0.5"),
    ("olora.lambda_l2", 0.0, "scripts/order_1.sh:43 --lamda_2 0"),
    ("train.weight_decay", 0.0, "HF TrainingArguments default (no --weight_decay in the scripts)"),
    ("train.max_grad_norm", 1.0, "HF TrainingArguments default (no --max_grad_norm in the scripts)"),
    ("lora.r", 8, "src/run_uie_lora.py:115-116 lora_dim default 8, no script overrides it"),
    ("lora.alpha", 32, "src/run_uie_lora.py:381 lora_alpha=32"),
    ("lora.dropout", 0.1, "src/run_uie_lora.py:381 lora_dropout=0.1"),
    ("lora.target_modules", None, "src/run_uie_lora.py:380 no target_modules: peft's q/v mapping"),
    ("olora.orth", "code", "src/uie_trainer_lora.py:96 torch.abs(torch.mm(lora_A, loranew_A.T)).sum()"),
    ("past.dropout", "shared", "src/peft/tuners/lora.py:583-597 one dropout(x) feeds lora_A and loranew_A"),
    ("past.fold", "stack", "src/peft/tuners/lora.py:583-597 the past adapters run as one concatenated lora_A/lora_B"),
    (
        "dtype",
        "bfloat16",
        'configs/ds_configs/stage2.config:2-4 legacy "bfloat16": {"enabled": "auto"}, left unfilled by transformers '
        "4.28 deepspeed.py:169; DeepSpeed 0.10.0 runtime/config.py:159-163 reads it ('auto' is truthy) and "
        "engine.py:1060-1063 casts the whole model to bf16 (logged losses >= 200 are multiples of 1/80)",
    ),
    ("train.mixed_precision", "none", "DeepSpeed engine.py:1060-1063 casts the model itself: no autocast"),
    ("train.group_by_length", False, "no --group_by_length: transformers 4.28 trainer.py:845-865 shuffled sampler"),
    (
        "train.lr_schedule",
        "deepspeed_warmup",
        "configs/ds_configs/stage2.config WarmupLR, warmup_num_steps auto = 0 clamped to 2 (DeepSpeed 0.10.0 "
        "lr_schedules.py:661), stepped after optimizer.step (engine.py:1994, 2037): step 2 of each task at lr 0",
    ),
    ("train.loss_normalization", "token", "T5's cross-entropy: the mean over the batch's label tokens"),
]
OFFICIAL = {
    ("standard", order): [*T5_COMMON, ("tasks", tasks, f"configs/order{order}_configs/*/train_tasks.json")]
    for order, tasks in {
        "1": ["dbpedia", "amazon", "yahoo", "agnews"],
        "2": ["dbpedia", "amazon", "agnews", "yahoo"],
        "3": ["yahoo", "amazon", "agnews", "dbpedia"],
    }.items()
}
OFFICIAL[("standard_llama", "1")] = [
    ("train.batch_size", 64, "scripts_llama/order_1.sh:11,21,23 8 GPUs × per-device batch 1 × accumulation 8"),
    ("train.first_task_lr", 1e-3, "scripts_llama/order_1.sh:24 --learning_rate 1e-03 (task 1)"),
    ("train.lr", 1e-4, "scripts_llama/order_1.sh:60 --learning_rate 1e-04 (tasks 2-4)"),
    ("train.epochs", 1, "scripts_llama/order_1.sh:25 --num_train_epochs 1"),
    ("dtype", "bfloat16", 'configs/ds_configs/stage2_llama.config:2-4 "bfloat16": {"enabled": "true"}'),
    ("train.group_by_length", False, "no --group_by_length in scripts_llama/order_1.sh"),
    ("train.lr_schedule", "deepspeed_warmup", "configs/ds_configs/stage2_llama.config WarmupLR, as for T5"),
    (
        "train.loss_normalization",
        "official_llama",
        "src/model/llama.py:94-101 Σ CE·loss_mask[:, :-1] / Σ loss_mask per micro-batch of 1 sequence: the mask "
        "counts one position more than the CE sums (src/uie_collator.py:149-153, 199-203)",
    ),
    ("olora.lambda_orth", 0.5, "scripts_llama/order_1.sh:42 --lamda_1 0.5"),
    ("data.max_source_length", 512, "scripts_llama/order_1.sh:28 --max_source_length 512"),
    ("eval.max_new_tokens", 50, "scripts_llama/order_1.sh:30 --generation_max_length 50"),
    ("tasks", ["dbpedia", "amazon", "yahoo", "agnews"], "scripts_llama/order_1.sh:17,53,89,125 --task_config_dir"),
]
LONG_SH_LAMBDAS = {  # scripts/long.sh: (--lamda_1 line, value), (--lamda_2 line, value)
    "yelp": (42, 0, 0), "amazon": (78, 0.5, 0), "MNLI": (114, 0.5, 0), "CB": (150, 0.5, 0),
    "COPA": (186, 0.5, 0.1), "QQP": (222, 0.5, 0.1), "RTE": (258, 0.5, 0.3), "IMDB": (294, 0.5, 0),
    "SST-2": (330, 0.5, 0.1), "dbpedia": (366, 5, 0), "agnews": (402, 5, 0), "yahoo": (438, 5, 0.1),
    "MultiRC": (474, 5, 0), "BoolQA": (510, 5, 0.1), "WiC": (546, 5, 0.3),
}  # fmt: skip
OFFICIAL[("long", "6")] = [
    *[entry for entry in T5_COMMON if entry[0] not in ("olora.lambda_orth", "olora.lambda_l2")],
    ("tasks", list(LONG_SH_LAMBDAS), "scripts/long.sh:17,53,...,521 --task_config_dir configs/long_configs/<task>"),
    ("train.task_epochs", {"MNLI": 2}, "scripts/long.sh:97 --num_train_epochs 2 (MNLI; every other task 1)"),
    ("olora.task_lambdas", {t: [l1, l2] for t, (_, l1, l2) in LONG_SH_LAMBDAS.items()}, "scripts/long.sh:42-547"),
]
for order in ("4", "5"):  # no official script: the paper's global values, no per-task settings
    OFFICIAL[("long", order)] = [
        *T5_COMMON,
        ("train.task_epochs", {}, "no official script for orders 4/5"),
        ("olora.task_lambdas", {}, "no official script for orders 4/5"),
    ]
CASES = [(bench, order, key, value, src) for (bench, order), rows in OFFICIAL.items() for key, value, src in rows]


def _get(cfg, key):
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


@pytest.mark.parametrize("bench, order, key, value, source", CASES, ids=[f"{c[0]}{c[1]}-{c[2]}" for c in CASES])
def test_preset_equals_the_official_scripts(bench, order, key, value, source):
    cfg = load_config(None, [f"benchmark={bench}", f"order={order}"])
    assert _get(cfg, key) == value, f"{bench} order {order}: {key} should be {value!r} ({REPO} {source})"


def test_every_paper_preset_and_order_is_checked():
    for bench in load_benchmarks().values():
        if bench.protocol == "paper" and bench.name != "standard_llama":
            assert {o for b, o in OFFICIAL if b == bench.name} == set(bench.orders), bench.name


@pytest.mark.parametrize("bench, order", [("standard", "1"), ("standard_llama", "1"), ("long", "6"), ("long", "4")])
def test_every_setting_that_changes_a_number_has_an_official_value(bench, order):
    """A paper preset states every setting that changes a number (for O-LoRA's sections too), so a default that
    differs from the official run is always listed as a deviation, not only the keys a preset happens to set."""
    from olora.config import config_to_dict
    from olora.methods import unread_sections
    from olora.presets import compared_keys, get_benchmark

    cfg = load_config(None, [f"benchmark={bench}", f"order={order}"])
    official = get_benchmark(bench).protocol_values(order)
    missing = [k for k in compared_keys(config_to_dict(cfg), unread_sections("olora")) if k not in official]
    assert not missing, f"{bench}: no official value for {missing}"


def test_a_default_that_differs_from_the_official_run_is_listed(tiny_dirs, capsys):
    from olora.cli import main

    assert main(["config", "benchmark=standard", "order=1", "train.group_by_length=true", "dtype=float32"]) == 0
    text = capsys.readouterr().out
    assert "train.group_by_length=true (official: false)" in text and "dtype=float32 (official: bfloat16)" in text
    assert main(["config", "benchmark=proxy", "order=1"]) == 0  # olora's defaults, judged against standard's
    text = capsys.readouterr().out
    expected = ["train.group_by_length=true (official: false)", "dtype=auto (official: bfloat16)"]
    expected.append("train.lr_schedule=constant (official: deepspeed_warmup)")
    assert all(line in text for line in expected), text


def test_a_preset_run_has_no_deviation_but_an_override_has_one():
    from olora.config import config_to_dict
    from olora.presets import config_deviations, get_benchmark

    bench = get_benchmark("long")
    assert config_deviations(bench, "6", config_to_dict(load_config(None, ["benchmark=long", "order=6"]))) == []
    cfg = load_config(None, ["benchmark=long", "order=6", "olora.task_lambdas={WiC: [1, 0]}"])
    assert config_deviations(bench, "6", config_to_dict(cfg)) == [
        "olora.task_lambdas.WiC=[1.0, 0.0] (official: [5, 0.3])"
    ]
