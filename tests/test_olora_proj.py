"""O-LoRA by projection: the new lora_A stays exactly orthogonal to every past lora_A, with no penalty."""

from __future__ import annotations

import json

from conftest import adapter_weights, cli_run

STAGES = ("0-sentiment", "1-newsdesk", "2-helpline")
ARGS = ["tasks=[sentiment,newsdesk,helpline]", "lora.dropout=0.0", "train.lr=0.05", "train.max_steps=3"]


def _rows(out) -> list[dict]:
    return [{k: v for k, v in adapter_weights(out, s).items() if k.endswith("lora_A.weight")} for s in STAGES]


def _largest_overlap(stages: list[dict]) -> float:
    return max(
        (stages[i][key] @ stages[j][key].T).abs().max().item()
        for j in range(len(stages))
        for i in range(j)
        for key in stages[j]
    )


def test_new_rows_stay_orthogonal_to_every_past_adapter_without_a_penalty(tiny_dirs, tmp_path):
    cli_run(tiny_dirs["llama"], tmp_path / "proj", "method=olora_proj", *ARGS)
    cli_run(tiny_dirs["llama"], tmp_path / "olora", "method=olora", *ARGS)
    projected, penalised = _rows(tmp_path / "proj"), _rows(tmp_path / "olora")
    assert _largest_overlap(projected) < 1e-5
    assert _largest_overlap(penalised) > 1e-3  # the soft penalty leaves an overlap
    assert all(a.norm(dim=1).min() > 0.05 for a in projected[2].values())  # rows kept, not shrunk to zero
    log = [
        json.loads(x) for x in (tmp_path / "proj" / "tasks" / "1-newsdesk" / "train_log.jsonl").read_text().splitlines()
    ]
    assert "orth" not in log[0]
