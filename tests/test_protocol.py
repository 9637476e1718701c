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
    ("dtype", "float32", "configs/ds_configs/stage2.config: no fp16/bf16 for T5"),
    ("train.mixed_precision", "none", "configs/ds_configs/stage2.config: no fp16/bf16 for T5"),
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


def test_a_preset_run_has_no_deviation_but_an_override_has_one():
    from olora.config import config_to_dict
    from olora.presets import config_deviations, get_benchmark

    bench = get_benchmark("long")
    assert config_deviations(bench, "6", config_to_dict(load_config(None, ["benchmark=long", "order=6"]))) == []
    cfg = load_config(None, ["benchmark=long", "order=6", "olora.task_lambdas={WiC: [1, 0]}"])
    assert config_deviations(bench, "6", config_to_dict(cfg)) == [
        "olora.task_lambdas.WiC=[1.0, 0.0] (official: [5, 0.3])"
    ]
