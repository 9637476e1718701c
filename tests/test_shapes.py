"""Smoke test of the shape check (``olora perf --shapes``) on tiny shapes: timings printed, never asserted."""

from __future__ import annotations

import pytest

from olora.errors import OloraError
from olora.tools.shapes import format_shapes, shape_check


@pytest.mark.parametrize("shape", ["llama-tiny", "t5-tiny"])
def test_shape_check_times_every_layout_with_only_the_new_adapter_trainable(shape):
    report = shape_check(shape, batch_size=2, prompt_len=8, answer_len=2, tasks=4, steps=1, warmup=1)
    variants = report["variants"]
    assert list(variants) == [
        "plain LoRA",
        "O-LoRA t=1",
        "O-LoRA t=4 separate",
        "O-LoRA t=4 stacked",
        "O-LoRA t=4 merged (default)",
    ]
    # Every layout trains exactly the new adapter; the past ones are active but frozen.
    assert len({v["trainable_params"] for v in variants.values()}) == 1
    assert [v["active_adapters"] for v in variants.values()] == [1, 1, 4, 2, 1]
    plain = variants["plain LoRA"]["step_s"]
    for v in variants.values():  # each ratio is that layout's step time over plain LoRA's; no GPU memory on CPU
        assert v["ratio"] == pytest.approx(v["step_s"] / plain, rel=1e-3) and v["peak_mem_gib"] is None
    assert "O-LoRA t=4 merged (default)" in format_shapes([report])


def test_unknown_shape_names_the_choices():
    with pytest.raises(OloraError, match="unknown shape 'gpt-5'.*llama2-7b"):
        shape_check("gpt-5")
