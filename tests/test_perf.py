"""Smoke test of the performance suite on a tiny model (timings are printed, never asserted)."""

from __future__ import annotations

import pytest

from olora.core.adapters import OrthogonalityPenalty
from olora.core.models import load_model
from olora.tools.perf import format_perf, naive_orthogonality, run_perf, with_task_adapters


def test_naive_penalty_equals_the_fast_one(tiny_dirs):
    model, _ = load_model(str(tiny_dirs["llama"]))
    model = with_task_adapters(model, False, 3, r=8)
    past = ["p0", "p1", "p2"]
    fast = OrthogonalityPenalty(model, past, "new")().item()
    assert naive_orthogonality(model, past, "new").item() == pytest.approx(fast, rel=1e-5)


def test_perf_suite_runs_and_reports_ratios(tiny_dirs):
    report = run_perf(
        str(tiny_dirs["llama"]), [2, 3], batch_size=2, repeats=1, eval_examples=4, infer_batch_size=3, epoch_examples=12
    )
    assert {"plain LoRA", "O-LoRA t=3 merged (default)", "O-LoRA t=3 stacked", "O-LoRA t=3 naive penalty"} <= set(
        report["train_step_s"]
    )
    assert {"base", "merged", "all 3 adapters active"} <= set(report["inference_s"])
    plain, fast = report["epoch"].values()
    assert fast["mean_nll"] == pytest.approx(plain["mean_nll"], rel=1e-5)  # same examples, same weights
    slow_eval, fast_eval = report["eval"].values()
    assert fast_eval["exact_match"] == slow_eval["exact_match"]  # the fast decoder gives the same answers
    text = format_perf(report)
    step = report["train_step_s"]
    for name, seconds in step.items():  # every printed ratio is that variant's time over plain LoRA's
        assert f"{name:<32}{seconds:9.4f}  x{seconds / step['plain LoRA']:.3f}" in text
