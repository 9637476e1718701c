"""The paper's task orders, shipped as data (``configs/benchmarks.yaml``)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from olora.errors import OloraError

BENCHMARKS_FILE = Path(__file__).parent / "configs" / "benchmarks.yaml"


@dataclass(frozen=True)
class Benchmark:
    name: str
    description: str
    orders: dict[str, list[str]]
    task_lambdas: dict[str, list[float]] = field(default_factory=dict)
    task_epochs: dict[str, int] = field(default_factory=dict)
    carve_missing: bool = False

    def order(self, key: str | int) -> list[str]:
        key = str(key)
        if key not in self.orders:
            raise OloraError(
                f"order={key!r} is not an order of benchmark {self.name!r}: choose one of {', '.join(self.orders)}"
            )
        return list(self.orders[key])


@cache
def load_benchmarks() -> dict[str, Benchmark]:
    raw = yaml.safe_load(BENCHMARKS_FILE.read_text(encoding="utf-8"))
    return {
        name: Benchmark(
            name=name,
            description=" ".join(str(spec.get("description", "")).split()),
            orders={str(k): list(v) for k, v in spec["orders"].items()},
            task_lambdas={k: list(v) for k, v in (spec.get("task_lambdas") or {}).items()},
            task_epochs=dict(spec.get("task_epochs") or {}),
            carve_missing=bool(spec.get("carve_missing", False)),
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
