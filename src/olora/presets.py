"""The paper's task orders and settings, shipped as data (``configs/benchmarks.yaml``).

A benchmark gives, per order, the task sequence and a tree of config defaults (the benchmark's
``defaults`` merged with the order's ``order_defaults``). ``protocol_values`` are the values a run must
keep to follow the official protocol; ``deviations`` lists where a resolved config departs from them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from olora.errors import OloraError

BENCHMARKS_FILE = Path(__file__).parent / "configs" / "benchmarks.yaml"


def deep_merge(base: dict, top: dict) -> dict:
    """``top`` over ``base``, recursively for mappings that both hold (a new dict; inputs unchanged)."""
    out = dict(base)
    for key, value in top.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``; per-task mappings (task_lambdas, task_epochs) stay whole."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and not key.startswith("task_"):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@dataclass(frozen=True)
class Benchmark:
    name: str
    description: str
    orders: dict[str, list[str]]
    defaults: dict = field(default_factory=dict)
    order_defaults: dict[str, dict] = field(default_factory=dict)
    protocol: str = "paper"  # "paper", or the benchmark whose protocol this one stands in for
    paper_model: dict = field(default_factory=dict)
    fixed_deviations: tuple[str, ...] = ()

    def order(self, key: str | int) -> list[str]:
        key = str(key)
        if key not in self.orders:
            raise OloraError(
                f"order={key!r} is not an order of benchmark {self.name!r}: choose one of {', '.join(self.orders)}"
            )
        return list(self.orders[key])

    def config_tree(self, key: str | int) -> dict:
        """The config defaults this benchmark sets for order ``key``, tasks included."""
        tree = deep_merge(self.defaults, self.order_defaults.get(str(key), {}))
        return {**tree, "tasks": self.order(key)}

    def reference(self) -> Benchmark:
        """The benchmark whose official values this one is judged against (itself for paper presets)."""
        return self if self.protocol == "paper" else get_benchmark(self.protocol)

    def protocol_values(self, key: str | int) -> dict[str, Any]:
        """Flat ``{key: official value}`` for order ``key`` (the reference benchmark's same order number
        if it has one, else its first order's settings)."""
        ref = self.reference()
        order = str(key) if str(key) in ref.orders else next(iter(ref.orders))
        tree = deep_merge(ref.defaults, ref.order_defaults.get(order, {}))
        values = flatten(tree)
        values.setdefault("olora.task_lambdas", {})
        values.setdefault("train.task_epochs", {})
        return values


@cache
def load_benchmarks() -> dict[str, Benchmark]:
    raw = yaml.safe_load(BENCHMARKS_FILE.read_text(encoding="utf-8"))
    return {
        name: Benchmark(
            name=name,
            description=" ".join(str(spec.get("description", "")).split()),
            orders={str(k): list(v) for k, v in spec["orders"].items()},
            defaults=spec.get("defaults") or {},
            order_defaults={str(k): v for k, v in (spec.get("order_defaults") or {}).items()},
            protocol=str(spec.get("protocol", "paper")),
            paper_model=spec.get("paper_model") or {},
            fixed_deviations=tuple(spec.get("deviations") or ()),
        )
        for name, spec in raw.items()
    }


def get_benchmark(name: str) -> Benchmark:
    benchmarks = load_benchmarks()
    if name not in benchmarks:
        close = difflib.get_close_matches(name, list(benchmarks), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise OloraError(f"benchmark {name!r} is unknown: {hint}choose one of {', '.join(benchmarks)}")
    return benchmarks[name]


# Settings that change no number of a run (where it writes, how often it logs, how a batch is cut into
# row chunks with the same gradient, the evaluation batch), or that are compared in another way: the
# model by its architecture (model_deviation), the tasks by each benchmark's order and data notes, the
# validation split by data.eval_split, the seed (one draw of the protocol's randomness, not a setting
# of it). Every other setting is compared with the official value, so a paper preset must state them
# all (tests/test_protocol.py checks it): a default that differs from the official run is never missed.
NEUTRAL = {
    "model", "method", "tasks", "benchmark", "order", "seed", "output_dir", "data.dir",
    "data.validation_per_class", "train.max_batch_tokens", "train.log_every", "train.checkpoint_every",
    "eval.batch_size", "eval.forward_transfer", "log.tensorboard", "log.grad_norms",
}  # fmt: skip


def compared_keys(config: dict, ignore: frozenset[str] = frozenset()) -> list[str]:
    """The flat keys of ``config`` that change a run's numbers: every setting but the ``NEUTRAL`` ones and
    the sections in ``ignore`` (the option sections of methods other than the run's)."""
    return [k for k in flatten(config) if k not in NEUTRAL and k.split(".")[0] not in ignore]


def config_deviations(bench: Benchmark, order: str, config: dict, ignore: frozenset[str] = frozenset()) -> list[str]:
    """Where the resolved config (as a nested dict) departs from the benchmark's official values, over
    every setting that changes a number (``compared_keys``; ``ignore``: option sections the run's method
    does not read)."""
    official = bench.protocol_values(order)
    flat = flatten(config)
    out = list(bench.fixed_deviations)
    names = [t["name"] if isinstance(t, dict) else t for t in config.get("tasks") or []]
    if names and names != bench.order(order):
        out.append(f"tasks: {', '.join(names[len(bench.order(order)) :])} added after order {order}'s tasks")
    for key in compared_keys(config, ignore):
        if key not in official:
            continue  # a method's own option with no official value (the official code has no baselines)
        value, mine = official[key], flat.get(key)
        if isinstance(value, dict) and isinstance(mine, dict):  # per-task settings: name the tasks that differ
            for task in sorted(value.keys() | mine.keys()):
                if mine.get(task) != value.get(task):
                    out.append(f"{key}.{task}={_show(mine.get(task))} (official: {_show(value.get(task))})")
        elif mine != value:
            out.append(f"{key}={_show(mine)} (official: {_show(value)})")
    return out


def model_deviation(bench: Benchmark, model_config: Any, model_name: str) -> str | None:
    """A deviation line if the loaded model is not the paper's (compared on its HF config, not its name)."""
    signature = {k: v for k, v in bench.reference().paper_model.items() if k != "label"}
    if not signature:
        return None
    if all(getattr(model_config, k, None) == v for k, v in signature.items()):
        return None
    label = bench.reference().paper_model.get("label", "the paper's model")
    return f"model={model_name} (official: {label})"


def _show(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()
