"""``olora tune``: each method's one main hyperparameter chosen on the validation split, same budget for all.

Every column (a method, or a variant ``method@label``) declares what it tunes (``Method.tuned``: O-LoRA's
λ1, InfLoRA's threshold, EWC's weight, ... else the learning rate) and three values. ``tune`` runs them as
bench columns ``<column>@<key><value>`` with ``data.eval_split=validation`` (held out of train; the test
split is never read), so every cell is an ordinary run that resumes and is skipped when finished. The value
with the highest mean validation AA over the (order, seed) cells that all of a column's values finished is
chosen (a tie keeps the configured value); a value whose training diverged is never chosen, and a cell run
with other settings never counts. ``OUT/tuned.txt`` holds the chosen per-column overrides for the test-split
``olora bench``; ``OUT/tuning.md`` the table behind them.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from pathlib import Path

from olora.config import config_to_dict, load_config
from olora.core.train import TrainingDiverged
from olora.errors import OloraError
from olora.methods import Tuned, method_class
from olora.presets import flatten
from olora.tools.bench import method_of, run_grid, split_overrides

log = logging.getLogger("olora")


@dataclass
class Trial:
    """One column at one value of its tuned key."""

    column: str  # the column being tuned
    key: str
    value: float
    current: bool  # the value the config resolves (what an untuned run uses)

    @property
    def label(self) -> str:
        """The grid column that runs it: ``olora@lambda_orth0.05`` (``olora@paper-lambda_orth5`` for a variant)."""
        joint = "-" if "@" in self.column else "@"
        return f"{self.column}{joint}{self.key.rsplit('.', 1)[-1]}{self.value:g}"


def _values(column: str, tuned: Tuned, flat: dict, order: str) -> tuple[tuple[float, ...], float]:
    current = flat.get(tuned.key)
    if not isinstance(current, (int, float)) or isinstance(current, bool):
        raise OloraError(f"tune: {column}'s {tuned.key} is {current!r}, not a number: set it to one")
    for other in tuned.overridden_by:
        if flat.get(other):
            raise OloraError(
                f"tune: {column} at order {order} sets {other}={flat[other]!r}, so {tuned.key} does not apply to "
                f"the tasks it names: tune another order or pass {column}:{other}={{}}"
            )
    values = tuple(tuned.candidates(float(current)))
    if float(current) not in values:
        raise OloraError(
            f"tune: {column}'s {tuned.key} is {current!r}, but tune tries {list(values)}: drop that override to tune it"
        )
    if len(set(values)) < len(values):
        raise OloraError(
            f"tune: {column}'s {tuned.key} is {current!r}, so its values {list(values)} repeat: set another"
        )
    return values, float(current)


def trials(
    config: str | None, overrides: list[str], benchmark: str, orders: list[str], columns: list[str]
) -> list[Trial]:
    """The three trials of every column, values taken from its resolved config (its own overrides included);
    every order must resolve the same values (one choice per column)."""
    common, own = split_overrides(overrides, columns)
    out = []
    for column in columns:
        tuned = method_class(method_of(column)).tuned
        found = {}
        for order in orders:
            cell = [*common, *own[column], f"benchmark={benchmark}", f"order={order}", f"method={method_of(column)}"]
            found[order] = _values(column, tuned, flatten(config_to_dict(load_config(config, cell))), order)
        if len(set(found.values())) > 1:
            raise OloraError(
                f"tune: {column}'s {tuned.key} differs between orders ({found}): tune one order at a time, or set it"
            )
        values, current = found[orders[0]]
        out += [Trial(column, tuned.key, v, v == current) for v in values]
    return out


def choose(results: list[dict], grid: list[Trial], cells: int) -> dict[str, dict]:
    """For each column: ``{"trial": the chosen Trial, "scores": {value: [validation AA per shared cell]},
    "diverged": [values], "partial": bool}``. Values are compared on the (order, seed) cells that every one of
    its values finished (``cells`` were asked for; fewer is ``partial``); the highest mean AA wins, a tie keeps
    the configured value. Cells run with other settings (``config_changes``) and diverged ones never count;
    a column with no comparable cell is left out."""
    runs: dict[str, dict] = {}
    for r in results:
        if not r.get("config_changes"):
            runs.setdefault(r["column"], {})[(str(r["config"].get("order")), r["seed"])] = r.get("aa")
    chosen = {}
    for column in dict.fromkeys(t.column for t in grid):
        mine = [t for t in grid if t.column == column]
        diverged = [t for t in mine if None in runs.get(t.label, {}).values()]
        ok = [t for t in mine if runs.get(t.label) and t not in diverged]
        shared = set.intersection(*(set(runs[t.label]) for t in ok)) if ok else set()
        if not shared:
            continue
        scores = {t.value: [runs[t.label][c] for c in sorted(shared)] for t in ok}
        best = max(ok, key=lambda t: (statistics.mean(scores[t.value]), t.current))
        partial = len(shared) < cells or len(ok) + len(diverged) < len(mine)
        chosen[column] = {"trial": best, "scores": scores, "diverged": [t.value for t in diverged], "partial": partial}
    return chosen


def table(chosen: dict[str, dict], grid: list[Trial]) -> str:
    """Markdown: each column's values with the mean ± std validation AA over the shared cells, the chosen one
    marked."""
    lines = ["| column | key | value | validation AA | cells | |", "|---|---|---|---|---|---|"]
    for column, pick in chosen.items():
        for t in (t for t in grid if t.column == column):
            scores = pick["scores"].get(t.value)
            if not scores:
                state = "diverged" if t.value in pick["diverged"] else "not run"
                lines.append(f"| {column} | {t.key} | {t.value:g} | ({state}) | 0 | |")
                continue
            spread = f" ± {statistics.stdev(scores):.1f}" if len(scores) > 1 else ""
            mark = "chosen" if t is pick["trial"] else ""
            mark += " (configured)" if t.current else ""
            mark += " (partial: not every value has every cell)" if pick["partial"] and t is pick["trial"] else ""
            mean = statistics.mean(scores)
            lines.append(f"| {column} | {t.key} | {t.value:g} | {mean:.1f}{spread} | {len(scores)} | {mark} |")
    return "\n".join(lines)


def tune(
    config: str | None,
    overrides: list[str],
    benchmark: str,
    orders: list[str],
    columns: list[str],
    seeds: list[int],
    out: Path,
    run_missing: bool = True,
    command: str = "",
) -> str:
    """Run (or reuse) every trial on the validation split, choose, write ``OUT/tuning.md`` (headed by
    ``command``, the line that rebuilds it) and ``OUT/tuned.txt`` (one ``<column>:<key>=<value>`` per line);
    return the table."""
    for item in overrides:
        if "data.eval_split" in item:
            raise OloraError(f"tune: {item!r} sets data.eval_split, which tune sets to validation: drop it")
    grid = trials(config, overrides, benchmark, orders, columns)
    common, own = split_overrides(overrides, columns)
    per_trial = [f"{t.label}:{o}" for t in grid for o in [*own[t.column], f"{t.key}={t.value!r}"]]
    results = run_grid(
        config,
        [*common, "data.eval_split=validation", *per_trial],
        benchmark,
        orders,
        [t.label for t in grid],
        seeds,
        out,
        run_missing=run_missing,
        tolerate=(TrainingDiverged,),
    )
    chosen = choose(results, grid, len(orders) * len(seeds))
    if not chosen:
        raise OloraError(f"tune: no finished trial in {str(out)!r} to choose from: run it without --table-only")
    text = (
        (f"Command: `{command}`\n\n" if command else "")
        + f"Validation AA (data.eval_split=validation) of {benchmark}, orders {' '.join(orders)}, seeds "
        f"{' '.join(map(str, seeds))}: three values per column, the same budget for every method.\n\n"
        + table(chosen, grid)
    )
    other = sorted({r["column"] for r in results if r.get("config_changes")})
    if other:
        text += f"\n\nLeft out, run with other settings than this command's: {', '.join(other)}."
    missing = [c for c in columns if c not in chosen]
    if missing:
        text += f"\n\nNo comparable finished cells, so nothing chosen: {', '.join(missing)}."
        log.warning("tune: nothing chosen for %s (no comparable finished cells)", ", ".join(missing))
    lines = [f"{c}:{p['trial'].key}={p['trial'].value!r}" for c, p in chosen.items()]
    out.mkdir(parents=True, exist_ok=True)
    (out / "tuning.md").write_text(text + "\n", encoding="utf-8")
    (out / "tuned.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return text
