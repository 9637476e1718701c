"""YAML + dotted overrides, unknown keys with suggestions, invalid values collected."""

import pytest

from olora.config import load_config, packaged_config
from olora.errors import OloraError


def test_defaults_are_valid():
    cfg = load_config()
    assert cfg.method == "olora" and cfg.lora.r == 8 and cfg.lora.alpha == 32
    assert cfg.olora.lambda_orth == 0.5 and cfg.olora.lambda_l2 == 0.0 and cfg.olora.orth == "code"


def test_packaged_demo_config_validates():
    cfg = load_config(packaged_config("demo"))
    assert cfg.tasks == ["sentiment", "newsdesk", "helpline"]


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: seqlora\ntrain:\n  lr: 0.01\n")
    cfg = load_config(
        path,
        [
            "train.lr=1e-4",
            "tasks=[dbpedia,agnews]",
            "data.train_per_class=5",
            "lora.target_modules=[q,v]",
            "olora.task_lambdas={dbpedia: [5, 0]}",
        ],
    )
    assert cfg.method == "seqlora"
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.tasks == ["dbpedia", "agnews"]
    assert cfg.data.train_per_class == 5
    assert cfg.lora.target_modules == ["q", "v"]
    assert cfg.olora.lambdas_for("dbpedia") == (5.0, 0.0)
    assert cfg.olora.lambdas_for("agnews") == (0.5, 0.0)


@pytest.mark.parametrize(
    "override, message",
    [
        ("trian.lr=1", "unknown config key 'trian': did you mean train?"),
        ("train.lrr=1", "unknown config key 'train.lrr': did you mean train.lr?"),
        ("lora.rank=4", "unknown config key 'lora.rank': did you mean lora.r?"),
        ("lora.r=0", "lora.r=0 is invalid: must be a positive integer"),
        ("olora.lambda_orth=-1", "olora.lambda_orth=-1.0 is invalid: must be >= 0"),
        ("train.lr=0", "train.lr=0.0 is invalid: must be > 0"),
        ("train.max_batch_tokens=-1", "train.max_batch_tokens=-1 is invalid: must be auto or >= 0"),
        ("train.batch_size=two", "train.batch_size='two' is invalid: must be an integer"),
        ("olora.orth=papr", "did you mean 'paper'?"),
        ("data.add_task_name=maybe", "must be true or false"),
        ("tasks=[a,a]", "each task may appear once"),
        ("lora=3", "must be a section"),
        ("nonsense", "is not key=value"),
        ("train.first_task_lr=0", "train.first_task_lr=0.0 is invalid: must be > 0 or null"),
        ("replay.per_task=-1", "replay.per_task=-1 is invalid: must be >= 0"),
        ("olora.fold_past=stack", "olora.fold_past is now past.fold (each method's options are in its own section)"),
        ("baselines.nlora_lambda=1", "baselines.nlora_lambda is now nlora.weight"),
        ("inflora.threshold=1.5", "inflora.threshold=1.5 is invalid: must be in (0, 1)"),
        ("migu.quantile=1", "migu.quantile=1.0 is invalid: must be in [0, 1)"),
        ("ella.weight=-1", "ella.weight=-1.0 is invalid: must be >= 0"),
        ("inflora.treshold=0.9", "unknown config key 'inflora.treshold': did you mean inflora.threshold?"),
        ("train.max_batch_tokens=lots", "train.max_batch_tokens='lots' is invalid: must be an integer, or one of auto"),
    ],
)
def test_bad_config_is_one_clear_error(override, message):
    with pytest.raises(OloraError) as info:
        load_config(None, [override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_all_errors_reported_together():
    with pytest.raises(OloraError) as info:
        load_config(None, ["lora.r=0", "train.lr=-1"])
    assert "lora.r" in str(info.value) and "train.lr" in str(info.value)


def test_missing_and_malformed_config_file(tmp_path):
    with pytest.raises(OloraError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(OloraError, match="not valid YAML"):
        load_config(bad)
