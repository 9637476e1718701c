"""The shape check (``olora perf --shapes``) on tiny shapes: every layout, and ratios from a fake clock."""

from __future__ import annotations

import pytest

from olora.errors import OloraError
from olora.tools.shapes import format_shapes, shape_check


@pytest.mark.parametrize("shape", ["llama-tiny", "t5-tiny"])
def test_shape_check_times_every_layout_with_only_the_new_adapter_trainable(shape, monkeypatch):
    """A fake clock makes a step cost one second per active adapter: the reported ratios must be those costs
    over plain LoRA's (1, 1, 4, 2, 1), whatever the machine's real timings."""
    from olora.tools import shapes

    clock = [0.0]
    real_nll = shapes.answer_nll

    def costly_nll(model, batch, seq2seq):
        clock[0] += len(model.base_model.active_adapters)
        return real_nll(model, batch, seq2seq)

    monkeypatch.setattr(shapes.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(shapes, "answer_nll", costly_nll)
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
    assert [v["ratio"] for v in variants.values()] == [1.0, 1.0, 4.0, 2.0, 1.0]
    assert all(v["peak_mem_gib"] is None for v in variants.values())  # no GPU memory on a CPU
    assert "O-LoRA t=4 merged (default)" in format_shapes([report])


def test_unknown_shape_names_the_choices():
    with pytest.raises(OloraError, match="unknown shape 'gpt-5'.*llama2-7b"):
        shape_check("gpt-5")
