"""InfLoRA's defining behaviour: a frozen lora_A outside the past tasks' input span, a basis that holds
the energy it promises and grows task by task, statistics over exactly the tokens each layer sees."""

from __future__ import annotations

import json
import math

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from conftest import adapter_weights, cli_run, train_log
from olora.config import load_config
from olora.core.models import load_model
from olora.data.encoding import PromptEncoder
from olora.data.load import load_tasks
from olora.methods.inflora import InfLoRAOptions, grow_basis, input_covariances

ARGS = ["method=inflora", "tasks=[sentiment,newsdesk,helpline]", "lora.dropout=0.0", "train.lr=0.01"]


def _stage(out, stage: str) -> dict:
    return json.loads((out / "tasks" / stage / "task.json").read_text())


def _basis(out, stage: str) -> dict[str, torch.Tensor]:
    state = load_file(str(out / "tasks" / stage / "state.safetensors"))
    return {k.removeprefix("basis."): v for k, v in state.items()}


def _lora_a(out, stage: str) -> dict[str, torch.Tensor]:
    """{layer name as the model names it: lora_A} of a saved stage adapter."""
    weights = adapter_weights(out, stage)
    return {k.removesuffix(".lora_A.weight"): v for k, v in weights.items() if k.endswith("lora_A.weight")}


@pytest.fixture(scope="module")
def run(tiny_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("inflora") / "run"
    return out, cli_run(tiny_dirs["llama"], out, *ARGS)


def test_new_lora_a_is_orthogonal_to_the_past_input_basis_and_frozen(run):
    """A_t·M_{t-1} = 0, so ΔW_t·x = B_t·A_t·x = 0 for every x in the past inputs' span; rows of norm 1/√3,
    untouched by training (only lora_B trains)."""
    out, _ = run
    for stage, before in (("1-newsdesk", "0-sentiment"), ("2-helpline", "1-newsdesk")):
        basis = _basis(out, before)
        lora_a = _lora_a(out, stage)
        assert basis
        for name, m in basis.items():
            a = lora_a[name]
            assert (a @ m).abs().max() < 1e-5
            torch.testing.assert_close(a.norm(dim=1), torch.full((a.shape[0],), 1 / math.sqrt(3)))
            x = m @ torch.randn(m.shape[1])  # an input inside the past span
            assert (a @ x).abs().max() < 1e-5
    log = train_log(out, "1-newsdesk")
    assert log and all("orth" not in row for row in log)  # no penalty: nothing to tune


def test_basis_grows_task_by_task_and_is_logged(run):
    out, _ = run
    sizes = [_stage(out, s)["method"]["basis_size"] for s in ("0-sentiment", "1-newsdesk", "2-helpline")]
    assert sizes[0] and all(k >= 1 for k in sizes[0].values())
    for before, after in zip(sizes, sizes[1:], strict=False):
        assert all(after[name] >= before[name] for name in before)
    assert any(sizes[2][name] > sizes[0][name] for name in sizes[0])
    shares = [_stage(out, s)["method"]["energy_share"] for s in ("0-sentiment", "1-newsdesk", "2-helpline")]
    assert shares == sorted(shares) and shares[0] == pytest.approx(InfLoRAOptions().threshold)


def test_basis_holds_the_promised_share_of_the_task_inputs(run, tiny_dirs):
    """Recompute task 1's input covariance from the saved adapter: the basis after task 1 holds ≥ ε_0 of it."""
    out, results = run
    cfg = load_config(None, [f"model={tiny_dirs['llama']}", *ARGS, "data.train_per_class=4"])
    task = load_tasks(cfg.tasks[:1], cfg.data, cfg.seed)[0]
    model, tok = load_model(str(tiny_dirs["llama"]))
    model = PeftModel.from_pretrained(model, str(out / "tasks" / "0-sentiment" / "adapter"), adapter_name="t0")
    examples = PromptEncoder(tok, False, cfg.data.max_source_length).encode(task, task.train)
    covariances, _ = input_covariances(model, examples, tok.pad_token_id, False, torch.device("cpu"))
    basis = _basis(out, "0-sentiment")
    share = InfLoRAOptions().energy_share(0)
    for name, cov in covariances.items():
        m = basis[name].double()
        rest = cov.double() - m @ (m.T @ cov.double())
        residual = torch.trace(rest - (rest @ m) @ m.T) / torch.trace(cov.double())
        assert residual <= 1 - share + 1e-4, name


def test_grow_basis_keeps_the_old_directions_and_adds_the_fewest_new_ones():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 6))
    cov = q @ torch.diag(torch.tensor([50.0, 30.0, 10.0, 5.0, 3.0, 2.0])) @ q.T
    m = grow_basis(None, cov, 0.85)  # 50+30+10 = 90 % ≥ 85 %, 80 % < 85 %
    assert m.shape == (6, 3)
    torch.testing.assert_close(m.T @ m, torch.eye(3), atol=1e-5, rtol=0)
    other = torch.diag(torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0]))
    grown = grow_basis(m, other, 0.95)  # the old 3 hold half of the new energy: 3 more are needed
    assert grown.shape == (6, 6)
    torch.testing.assert_close(grown[:, :3].abs(), m.abs(), atol=1e-5, rtol=0)
    assert grow_basis(grown, cov, 0.99).shape == (6, 6)  # nothing left to add


@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_statistics_count_every_token_each_layer_sees_once(tiny_dirs, kind):
    """No padding, no prompt head counted once per batch: a decoder-only layer sees prompt + answer; a T5
    encoder layer (and cross-attention v) the prompt, a decoder layer (and cross-attention q) the answer."""
    from olora.config import LoRAConfig
    from olora.core.adapters import add_adapter, peft_lora_config
    from olora.data.builtin import builtin_task

    model, tok = load_model(str(tiny_dirs[kind]))
    seq2seq = kind == "t5"
    model = add_adapter(model, "t0", peft_lora_config(LoRAConfig(), model, seq2seq))
    task = builtin_task("newsdesk")
    examples = PromptEncoder(tok, seq2seq, 256).encode(task, task.train[:5])
    _, counts = input_covariances(model, examples, tok.pad_token_id, seq2seq, torch.device("cpu"))
    prompts = sum(len(e.prompt_ids) for e in examples)
    answers = sum(len(e.target_ids) for e in examples)
    if not seq2seq:
        assert set(counts.values()) == {prompts + answers}
        return
    for name, n in counts.items():
        reads_prompt = ".encoder." in name or "EncDecAttention.v" in name
        assert n == (prompts if reads_prompt else answers), name


@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_batched_statistics_equal_one_example_at_a_time(tiny_dirs, kind):
    """Padding never counts: the covariances (and token counts) of 4 padded rows a forward equal those of one
    example a forward, also when a T5 batch's prompts and answers pad to the same length (the answers then
    pad one longer, so the input's length still says which mask it takes)."""
    from olora.config import LoRAConfig
    from olora.core.adapters import add_adapter, peft_lora_config
    from olora.data.builtin import builtin_task
    from olora.data.encoding import Encoded

    model, tok = load_model(str(tiny_dirs[kind]))
    seq2seq = kind == "t5"
    model = add_adapter(model, "t0", peft_lora_config(LoRAConfig(), model, seq2seq))
    task = builtin_task("newsdesk")
    examples = PromptEncoder(tok, seq2seq, 256).encode(task, task.train[:6])
    # one batch whose prompts and answers both pad to 4 tokens, with padding in different rows
    sizes = [(4, 2), (2, 4), (3, 4), (4, 3)]
    tied = [Encoded(e.prompt_ids[:p], (e.prompt_ids * 2)[-a:]) for e, (p, a) in zip(examples, sizes, strict=False)]
    for chosen in (examples, tied):
        one, one_counts = input_covariances(model, chosen, tok.pad_token_id, seq2seq, torch.device("cpu"), 1)
        four, four_counts = input_covariances(model, chosen, tok.pad_token_id, seq2seq, torch.device("cpu"), 4)
        assert four_counts == one_counts
        for name in one:
            torch.testing.assert_close(four[name], one[name], rtol=1e-4, atol=1e-5, msg=name)
