"""The shipped benchmark YAML, carved splits, and benchmark= resolution."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from olora.config import DataConfig, load_config
from olora.data.load import load_tasks
from olora.data.tasks import find_task_dir, load_benchmark_task
from olora.errors import OloraError
from olora.presets import get_benchmark, load_benchmarks

PAPER_ORDERS = {
    "1": "dbpedia amazon yahoo agnews",
    "2": "dbpedia amazon agnews yahoo",
    "3": "yahoo amazon agnews dbpedia",
    "4": "MNLI CB WiC COPA QQP BoolQA RTE IMDB yelp amazon SST-2 dbpedia agnews MultiRC yahoo",
    "5": "MultiRC BoolQA WiC MNLI CB COPA QQP RTE IMDB SST-2 dbpedia agnews yelp amazon yahoo",
    "6": "yelp amazon MNLI CB COPA QQP RTE IMDB SST-2 dbpedia agnews yahoo MultiRC BoolQA WiC",
}


def test_orders_are_the_papers():
    b = load_benchmarks()
    for key, seq in PAPER_ORDERS.items():
        bench = b["standard"] if int(key) <= 3 else b["long"]
        assert bench.order(key) == seq.split()
    assert b["standard_llama"].orders == b["standard"].orders
    six = b["long"].config_tree("6")
    assert six["olora"]["task_lambdas"]["dbpedia"] == [5, 0] and six["train"]["task_epochs"] == {"MNLI": 2}
    assert all(len(set(o)) == len(o) for bench in b.values() for o in bench.orders.values())
    assert set(six["olora"]["task_lambdas"]) == set(b["long"].order("6"))


@pytest.mark.parametrize("order", ["4", "5"])
def test_order_6_settings_do_not_leak_into_orders_4_and_5(order):
    """long.sh's per-task λ were tuned for order 6; orders 4 and 5 use the global λ and 1 epoch."""
    cfg = load_config(None, ["benchmark=long", f"order={order}"])
    assert cfg.olora.task_lambdas == {} and cfg.train.task_epochs == {}
    assert cfg.olora.lambdas_for("yelp") == (0.5, 0.0) and cfg.epochs_for("MNLI") == 1


def test_every_order_names_known_tasks_with_matching_labels(data_dir):
    status = json.loads((data_dir.parent / "data_status.json").read_text())["tasks"]
    for bench in load_benchmarks().values():
        for order in bench.orders.values():
            for name in order:
                assert name in status, f"{bench.name}: unknown task {name}"
                folder = find_task_dir(data_dir, name)
                labels = json.loads((folder / "labels.json").read_text())
                assert labels == status[name]["labels"]


def test_benchmark_sets_tasks_and_per_task_settings():
    cfg = load_config(None, ["benchmark=long", "order=6", "olora.task_lambdas={WiC: [1, 0]}"])
    assert cfg.tasks[0] == "yelp" and len(cfg.tasks) == 15
    assert cfg.olora.lambdas_for("dbpedia") == (5.0, 0.0) and cfg.olora.lambdas_for("WiC") == (1.0, 0.0)
    assert cfg.epochs_for("MNLI") == 2 and cfg.epochs_for("CB") == 1
    assert load_config(None, ["benchmark=proxy", "order=1"]).data.carve_missing


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["benchmark=standrd", "order=1"], "did you mean 'standard'"),
        (["benchmark=standard", "order=9"], "order='9' is not an order"),
        (["benchmark=standard"], "go together"),
        (["benchmark=standard", "order=1", "tasks=[agnews]"], "not both"),
    ],
)
def test_bad_benchmark_choices(overrides, message):
    with pytest.raises(OloraError, match=message):
        load_config(None, overrides)


def test_missing_file_stops_before_training_with_the_fix(data_dir):
    with pytest.raises(OloraError, match=r"TC/dbpedia/train.json' is missing.*carve_missing"):
        load_tasks(["agnews", "dbpedia"], DataConfig(dir=str(data_dir)), 0)


def test_carved_splits_are_disjoint_deterministic_and_labelled(data_dir):
    dbpedia = load_benchmark_task(data_dir, "dbpedia", carve_missing=True)
    again = load_benchmark_task(data_dir, "dbpedia", carve_missing=True)
    assert dbpedia.train == again.train and dbpedia.test == again.test
    assert len(dbpedia.train) + len(dbpedia.test) == 7600
    assert not {e.text for e in dbpedia.train} & {e.text for e in dbpedia.test}
    counts = Counter(e.label for e in dbpedia.train)
    assert len(counts) == 14 and max(counts.values()) - min(counts.values()) < 80
    assert dbpedia.notes == ["train carved from test.json: NOT the paper's split"]
    yelp = load_benchmark_task(data_dir, "yelp", carve_missing=True)
    assert len(yelp.train) + len(yelp.test) == 5000 and yelp.notes == [
        "test carved from train.json: NOT the paper's split"
    ]


def test_validation_split_comes_from_train_only(data_dir):
    data = DataConfig(dir=str(data_dir), eval_split="validation", validation_per_class=5, train_per_class=20)
    (agnews,) = load_tasks(["agnews"], data, 0)
    (full,) = load_tasks(["agnews"], DataConfig(dir=str(data_dir)), 0)
    assert Counter(e.label for e in agnews.test) == {label: 5 for label in agnews.labels}
    train_texts = {e.text for e in full.train}
    assert all(e.text in train_texts for e in agnews.test)
    assert not {e.text for e in agnews.test} & {e.text for e in agnews.train}
    assert not {e.text for e in agnews.test} & {e.text for e in full.test}


def test_get_benchmark_unknown():
    with pytest.raises(OloraError, match="choose one of standard, standard_llama, long, proxy"):
        get_benchmark("nope")
