"""olora tune: each method's main hyperparameter chosen on the validation split, three values each."""

from __future__ import annotations

import json
import shlex

import pytest

import olora.runner
from olora.cli import main
from olora.config import config_to_dict, load_config
from olora.errors import OloraError
from olora.methods import METHODS
from olora.methods.base import Tuned
from olora.presets import flatten
from olora.tools.tune import Trial, choose, table, trials


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_tunes_three_values_of_a_setting_it_reads(name):
    """Same budget for every method: three distinct values of one key the method's runs read, its default among
    them (tuning never drops the value an untuned run uses)."""
    method = METHODS[name]
    cfg = flatten(config_to_dict(load_config(None, [f"method={name}", "tasks=[sentiment]"])))
    section = method.tuned.key.split(".", 1)[0]
    assert method.tuned.key in cfg and section in ("train", *method.option_sections())
    values = method.tuned.candidates(cfg[method.tuned.key])
    assert len(values) == len(set(values)) == 3
    assert cfg[method.tuned.key] in values


def test_trials_follow_the_configured_value_and_a_column_s_own_overrides():
    overrides = ["train.lr=0.004", "olora@paper:olora.lambda_orth=50"]
    grid = trials(None, overrides, "proxy", ["1", "2"], ["seqlora", "olora@paper"])
    assert [(t.label, t.value, t.current) for t in grid] == [
        ("seqlora@lr0.002", 0.002, False),
        ("seqlora@lr0.004", 0.004, True),
        ("seqlora@lr0.008", 0.008, False),
        ("olora@paper-lambda_orth5", 5.0, False),
        ("olora@paper-lambda_orth50", 50.0, True),
        ("olora@paper-lambda_orth500", 500.0, False),
    ]


def test_choose_takes_the_best_mean_and_keeps_the_configured_value_on_a_tie():
    grid = [Trial("olora", "olora.lambda_orth", v, v == 0.5) for v in (0.05, 0.5, 5.0)]
    runs = lambda value, *aa: [  # noqa: E731
        {"column": f"olora@lambda_orth{value:g}", "aa": a, "seed": seed, "config": {"order": "1"}}
        for seed, a in enumerate(aa, 1)
    ]
    best = choose([*runs(0.05, 60, 70), *runs(0.5, 64, 64), *runs(5.0, 50, 50)], grid, cells=2)
    assert best["olora"]["trial"].value == 0.05 and best["olora"]["scores"][0.05] == [60, 70]
    assert not best["olora"]["partial"]
    tie = choose([*runs(5.0, 64), *runs(0.5, 64), *runs(0.05, 63)], grid, cells=1)
    assert tie["olora"]["trial"].value == 0.5


def test_choose_compares_shared_cells_only_and_never_counts_diverged_or_other_settings():
    """A value with a seed the others lack is compared on the shared seeds; a diverged value and a cell
    run with other settings (e.g. on the test split) are never chosen."""
    grid = [Trial("olora", "olora.lambda_orth", v, v == 0.5) for v in (0.05, 0.5, 5.0)]
    cell = lambda value, seed, aa, **more: {  # noqa: E731
        "column": f"olora@lambda_orth{value:g}",
        "aa": aa,
        "seed": seed,
        "config": {"order": "1"},
        **more,
    }
    results = [
        cell(0.05, 1, 60), cell(0.05, 2, 90),  # seed 2 only here: not compared
        cell(0.5, 1, 65),
        cell(5.0, 1, None, failed="the loss became NaN"),
        cell(5.0, 2, 99, config_changes=["data.eval_split: 'test' -> 'validation'"]),
    ]  # fmt: skip
    pick = choose(results, grid, cells=2)["olora"]
    assert pick["trial"].value == 0.5 and pick["scores"] == {0.05: [60], 0.5: [65]}
    assert pick["diverged"] == [5.0] and pick["partial"]
    assert "(diverged)" in table({"olora": pick}, grid) and "partial" in table({"olora": pick}, grid)
    assert choose([cell(0.5, 1, None, failed="NaN")], grid, cells=1) == {}


def test_tune_refuses_values_that_do_not_vary_what_runs():
    with pytest.raises(OloraError, match=r"sets olora.task_lambdas=.* so olora.lambda_orth does not apply"):
        trials(None, [], "long", ["6"], ["olora"])  # order 6 gives every task its own λ
    with pytest.raises(OloraError, match=r"olora's olora.lambda_orth is 0.0, so its values \[0.0, 0.0, 0.0\] repeat"):
        trials(None, ["olora.lambda_orth=0"], "proxy", ["1"], ["olora"])
    with pytest.raises(OloraError, match=r"inflora.threshold is 0.99, but tune tries \[0.9, 0.97, 0.995\]"):
        trials(None, ["inflora:inflora.threshold=0.99"], "proxy", ["1"], ["inflora"])
    with pytest.raises(ValueError, match="three values or three factors"):
        Tuned("train.lr", values=(1.0, 2.0))


@pytest.mark.slow
def test_tune_runs_each_value_on_validation_and_writes_the_choice(tiny_dirs, data_dir, tmp_path, monkeypatch):
    out = tmp_path / "tune"
    args = ["tune", f"model={tiny_dirs['llama']}", f"data.dir={data_dir}", "data.train_per_class=2",
            "data.test_per_class=1", "data.validation_per_class=1", "train.max_steps=1",
            "data.max_source_length=240", "--benchmark", "proxy", "--methods", "olora", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    results = {}
    for value in (0.05, 0.5, 5.0):
        cell = out / "proxy-order1" / f"olora@lambda_orth{value:g}" / "seed1"
        saved = json.loads((cell / "results.json").read_text())
        assert saved["config"]["olora"]["lambda_orth"] == value
        assert saved["config"]["data"]["eval_split"] == "validation"  # the test split is never read
        results[value] = saved["aa"]
    best = max(results, key=lambda v: (results[v], v == 0.5))
    assert (out / "tuned.txt").read_text() == f"olora:olora.lambda_orth={best!r}\n"
    tuning = (out / "tuning.md").read_text()
    assert "chosen" in tuning and tuning.startswith(f"Command: `olora {shlex.join(args)}`\n")
    # choosing again from the finished trials trains nothing
    monkeypatch.setattr(olora.runner, "train_task", lambda *a, **k: pytest.fail("a finished trial trained again"))
    assert main([*args, "--table-only"]) == 0
    assert (out / "tuned.txt").read_text() == f"olora:olora.lambda_orth={best!r}\n"


def test_tune_refuses_an_eval_split_and_an_empty_table(tmp_path, capsys):
    args = ["tune", "--benchmark", "proxy", "--methods", "olora", "--out", str(tmp_path)]
    assert main([args[0], "data.eval_split=test", *args[1:]]) == 2
    assert "'data.eval_split=test' sets data.eval_split, which tune sets to validation" in capsys.readouterr().err
    assert main([*args, "--table-only"]) == 2
    assert "tune: no finished trial" in capsys.readouterr().err
    assert not (tmp_path / "tuned.txt").exists()


def test_the_committed_trials_rebuild_the_committed_choice(tmp_path):
    """results/cpu_forgetting_tuning holds each trial's results.json and config.yaml: the command on the first
    line of its tuning.md, run with --table-only on a copy (nothing trains), gives the committed tuned.txt
    and tuning.md, and no trial counts as run with other settings."""
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "results" / "cpu_forgetting_tuning"
    out = shutil.copytree(root, tmp_path / "trials")
    command = (root / "tuning.md").read_text().splitlines()[0].removeprefix("Command: `").removesuffix("`")
    args = shlex.split(command)[1:]
    assert (
        args[0] == "tune"
        and "--table-only" in args
        and args[args.index("--out") + 1] == "results/cpu_forgetting_tuning"
    )
    args[args.index("--out") + 1] = str(out)
    assert main(args) == 0
    assert (out / "tuned.txt").read_text() == (root / "tuned.txt").read_text()
    rebuilt = (out / "tuning.md").read_text().split("\n", 1)[1]  # all but the command line (its --out differs)
    assert rebuilt == (root / "tuning.md").read_text().split("\n", 1)[1]
    assert "other settings" not in rebuilt
