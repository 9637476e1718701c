"""MIGU's defining behaviour: from the second task on, only each LoRA map's largest-output channels get
a gradient; statistics count every token once."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

from conftest import cli_run
from olora.core.prefix import decoder_forward
from olora.data.builtin import builtin_task
from olora.data.encoding import PromptEncoder, collate_train
from olora.methods.migu import OutputMagnitudes


def test_only_the_channels_above_the_quantile_get_a_gradient_from_task_2(tiny_dirs, tmp_path, monkeypatch):
    masked_rows: list[list[float]] = []  # per optimizer step: the share of zero gradient rows of each map
    original = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        masked_rows.append([float((g.abs().sum(1) == 0).float().mean()) for g in grads])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    cli_run(tiny_dirs["llama"], tmp_path / "migu", "method=migu", "migu.quantile=0.7", "lora.dropout=0.0")
    first, second = masked_rows[:2], masked_rows[2:]  # 2 steps per task (train.max_steps=2)
    assert len(second) == 2
    assert all(share < 0.5 for step in first for share in step[1::2])  # task 1: lora_B rows all update
    # task 2: ≥ 70 % of each map's rows (output channels) are masked (ties may mask more, never fewer)
    assert all(share >= 0.6 for step in second for share in step)


def test_masking_keeps_the_rows_at_or_above_the_quantile():
    layer = torch.nn.Linear(3, 5, bias=False)
    stats = OutputMagnitudes([layer])
    stats.sums[0] += torch.tensor([5.0, 1.0, 4.0, 2.0, 3.0])
    layer.weight.grad = torch.ones(5, 3)
    stats.mask_gradients(0.5, Accelerator(cpu=True))  # median 3: channels 0, 2 and 4 keep their rows
    assert layer.weight.grad.abs().sum(1).tolist() == [3.0, 0.0, 3.0, 0.0, 3.0]
    assert stats.sums[0].sum() == 0  # counting starts anew after each step


def test_statistics_count_the_shared_prompt_head_for_every_row_and_skip_padding(tiny):
    """One left-padded batch whose prompt head runs once gives the statistics of each row run alone."""
    model, tok, seq2seq = tiny
    if seq2seq:
        pytest.skip("the shared prompt head is a decoder-only speed-up")
    task = builtin_task("newsdesk")
    rows = PromptEncoder(tok, False, 256).encode(task, task.train[:3])
    layer = model.model.layers[1].self_attn.q_proj

    def magnitudes(batches) -> torch.Tensor:
        stats = OutputMagnitudes([layer])
        handles = [module.register_forward_hook(hook) for module, hook in stats.hooks()]
        with torch.no_grad():
            for batch in batches:
                decoder_forward(model, {k: v for k, v in batch.items() if k != "labels"})
        for handle in handles:
            handle.remove()
        return stats.sums[0]

    together = collate_train(rows, tok.pad_token_id, False)
    assert "prefix_ids" in together and (together["attention_mask"] == 0).any()  # a shared head, and padding
    alone = [collate_train([row], tok.pad_token_id, False) for row in rows]
    torch.testing.assert_close(magnitudes([together]), magnitudes(alone), rtol=1e-4, atol=1e-4)
