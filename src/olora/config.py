"""Typed run configuration: dataclasses loaded from YAML, overridable as ``a.b=value``.

Every field has a help text (``metadata["help"]``). Unknown keys are errors that suggest the nearest
valid key; all problems are collected and raised together as one ``OloraError``.
"""

from __future__ import annotations

import dataclasses
import difflib
import string
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from olora.errors import OloraError


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class LoRAConfig:
    r: int = _f(8, "LoRA rank of each task adapter.")
    alpha: int = _f(32, "LoRA alpha; the update is scaled by alpha / r.")
    dropout: float = _f(0.1, "Dropout on the LoRA input during training.")
    target_modules: list[str] | None = _f(
        None, "Module names to adapt; null = q/v projections for the model's architecture."
    )


# ----------------------------------------------------------------------------- method option sections
#
# A method's options live in the method's own module (olora.methods.*), as a dataclass registered here
# under its section name (``register_options("inflora")``); ``inflora.threshold=0.97`` then sets it. The
# registry lives in this foundation module so that parsing needs no import of the methods; importing
# ``olora.methods`` (done by the runner, the CLI and the API) fills it.

OPTION_SECTIONS: dict[str, type] = {}


def register_options(section: str) -> Any:
    """Class decorator: the dataclass holds the options of config section ``section``."""

    def add(cls: type) -> type:
        if section in OPTION_SECTIONS and OPTION_SECTIONS[section] is not cls:
            raise ValueError(f"config section {section!r} is registered twice")
        OPTION_SECTIONS[section] = cls
        return cls

    return add


def default_options() -> dict[str, Any]:
    """Every registered section with its defaults."""
    return {name: cls() for name, cls in OPTION_SECTIONS.items()}


def check(errors: list[str], ok: bool, key: str, value: Any, rule: str) -> None:
    """Append ``key=value is invalid: rule`` to ``errors`` unless ``ok`` (options' ``problems``)."""
    if not ok:
        errors.append(f"{key}={value!r} is invalid: {rule}")


@dataclass
class DataConfig:
    dir: str | None = _f(
        None, "CL_Benchmark folder (<group>/<task>/{train,test,labels}.json); null = built-in demo tasks."
    )
    train_per_class: int | None = _f(None, "Keep at most this many training examples per label.")
    test_per_class: int | None = _f(None, "Keep at most this many test examples per label.")
    train_per_task: int | None = _f(
        None,
        "Keep about this many training examples per task: ceil(N / labels) per label (and at most "
        "train_per_class), so tasks with few and many labels train for the same number of steps.",
    )
    test_per_task: int | None = _f(
        None,
        "Keep about this many test examples per task: ceil(N / labels) per label (and at most test_per_class), "
        "so tasks with few and many labels get the same standard error.",
    )
    add_task_name: bool = _f(True, "Prefix prompts with 'Task:<type>' (official protocol).")
    add_dataset_name: bool = _f(True, "Prefix prompts with 'Dataset:<name>' (official protocol).")
    max_source_length: int = _f(512, "Prompt length limit in tokens; only the input text is cut.")
    carve_missing: bool = _f(
        False,
        "If a task lacks train.json (or test.json), carve it from the other split: stratified, seeded, "
        "disjoint halves, labelled as not the paper's split. The proxy benchmark turns this on.",
    )
    eval_split: Literal["test", "validation"] = _f(
        "test", "Evaluate on test (reported numbers) or on a validation split carved from train (tuning)."
    )
    validation_per_class: int = _f(20, "Examples per label held out of train when eval_split=validation.")


@dataclass
class TrainConfig:
    epochs: int = _f(1, "Passes over each task's training set.")
    batch_size: int = _f(
        8,
        "Examples per micro-batch, over all processes (the official scripts' global batch is 64 = 8 per GPU × 8 "
        "GPUs; the paper presets set 64). train.max_batch_tokens bounds the memory a large batch needs.",
    )
    grad_accum: int = _f(1, "Micro-batches per optimizer step.")
    mixed_precision: Literal["auto", "none", "bf16"] = _f(
        "auto",
        "'bf16': autocast model forward passes (training and evaluation) to bfloat16; adapters, optimizer "
        "and penalties stay float32. 'auto': bf16 on CUDA GPUs with bf16 and on CPUs with bf16 units "
        "(AVX512-BF16/AMX), none elsewhere. 'none': float32 forwards, bit-for-bit comparable with old runs.",
    )
    group_by_length: bool = _f(
        True, "Batch examples of similar length together (less padding; batches and their order stay random)."
    )
    max_batch_tokens: int | Literal["auto"] = _f(
        "auto",
        "Memory cap: a micro-batch larger than this many padded tokens (rows × longest row) runs as "
        "consecutive row chunks whose token-weighted losses add up to the micro-batch's mean, so the "
        "gradient is the same (bit-for-bit only without dropout). Peak memory then follows this cap "
        "instead of batch_size × the longest prompt. 'auto': from the model's size and the memory "
        "available (see olora.core.resources); 0 = never split.",
    )
    lr: float = _f(1e-3, "AdamW learning rate.")
    lr_schedule: Literal["constant", "deepspeed_warmup"] = _f(
        "constant",
        "'constant', or 'deepspeed_warmup': what the official runs' DeepSpeed WarmupLR (warmup 0, clamped to 2 "
        "steps) did: each task's second optimizer step runs at lr 0 (the paper presets set it).",
    )
    loss_normalization: Literal["token", "official_llama"] = _f(
        "token",
        "'token': the mean NLL over a micro-batch's answer tokens; 'official_llama' (decoder-only; the "
        "standard_llama preset): the official LLaMA loss, per sequence Σ NLL / (answer tokens + 1), averaged "
        "over sequences, which changes λ1's weight against the NLL.",
    )
    first_task_lr: float | None = _f(
        None, "Learning rate of the first task only; null = train.lr (the official LLaMA scripts: 1e-3, then 1e-4)."
    )
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm; 0 disables clipping.")
    max_steps: int | None = _f(None, "Cap on optimizer steps per task (for smoke tests).")
    task_epochs: dict[str, int] = _f({}, "Per-task epochs overrides, e.g. {MNLI: 2} (benchmark=long order=6 sets it).")
    log_every: int = _f(10, "Write training metrics every N optimizer steps.")
    checkpoint_every: int = _f(
        50, "Save a resumable checkpoint every N optimizer steps (and at each task's end); 0 = end only."
    )


@dataclass
class EvalConfig:
    batch_size: int = _f(32, "Prompts per generation batch.")
    max_new_tokens: int | None = _f(
        None,
        "Generation limit; null = the longest label's tokens + 2 (eos and one spare). The official code "
        "decodes 50 tokens (the paper presets set 50): a shorter limit can turn 'label + more text' into a hit.",
    )
    forward_transfer: bool = _f(
        False,
        "Also evaluate each task before it is trained (after the previous task) and the base model on every "
        "task, so results hold FWT as Lopez-Paz & Ranzato (2017) define it. Costs two extra evaluations per task.",
    )


@dataclass
class TaskSpec:
    """A task from your own data files (an entry of ``tasks:`` that is a mapping, not a CL_Benchmark name)."""

    name: str = _f("", "The task's name: its adapter, its column in the matrix, 'Dataset:<name>' in the prompt.")
    train: str = _f("", "Training data: a .jsonl/.json/.csv/.parquet file or a saved datasets folder (relative "
                    "to the YAML file), or hf:owner/name (with network).")  # fmt: skip
    test: str = _f("", "Test data, as train.")
    instruction: str = _f("", "The task definition shown before the options and the input.")
    input: str = _f("{sentence}", "Template over a record's fields for the input text.")
    target: str = _f("{label}", "Template over a record's fields for the answer.")
    labels: list[str] | None = _f(
        None, "A closed label set: listed in the prompt's Option: line, every target checked."
    )
    metric: Literal["exact_match", "rouge_l"] | None = _f(
        None, "exact_match (default with labels) or rouge_l (default without: free-form answers)."
    )
    type: str | None = _f(None, "'Task:<type>' in the prompt; null = the name.")
    hf_config: str | None = _f(None, "With hf:owner/name: the dataset's configuration.")
    train_split: str = _f("train", "With hf:owner/name: the split to train on.")
    test_split: str = _f("test", "With hf:owner/name: the split to test on.")


def task_name(entry: str | TaskSpec) -> str:
    return entry if isinstance(entry, str) else entry.name


@dataclass
class LogConfig:
    tensorboard: bool = _f(False, "Also write losses and accuracies to OUT/tensorboard (needs tensorboard).")
    grad_norms: bool = _f(
        False,
        "At each logged step, also write the gradient norm of each loss term (nll, orth, l2, …) per parameter "
        "group (lora_A, lora_B) and the cosine between the task's and each penalty's gradient (diagnostics; "
        "one extra small backward per logged step).",
    )


# Names of olora < 0.2, where these baselines trained one LoRA adapter; the paper's are full fine-tuning.
RENAMED_METHODS = {
    n: f"{n}_lora (what olora < 0.2 ran) or {n}_ft (the paper's)" for n in ("replay", "ewc", "lwf", "mtl", "pertask")
}
# Keys of olora < 0.3, when the methods' options lived in shared sections: now each in its method's section.
RENAMED_KEYS = {
    "olora.fold_past": "past.fold",
    "olora.past_dropout": "past.dropout",
    "baselines.replay_per_task": "replay.per_task",
    "baselines.ewc_lambda": "ewc.weight",
    "baselines.ewc_examples": "ewc.examples",
    "baselines.lwf_lambda": "lwf.weight",
    "baselines.lwf_temperature": "lwf.temperature",
    "baselines.nlora_lambda": "nlora.weight",
}


@dataclass
class RunConfig:
    model: str = _f("smollm2", "'smollm2' (embedded default), a local checkpoint folder, or a Hugging Face hub id.")
    method: str = _f(
        "olora",
        "The continual-learning method: olora (new adapter per task + orthogonality) or any other registered "
        "method; `olora methods` lists them all with what each does and the option sections it reads.",
    )
    tasks: list[str | TaskSpec] = _f(
        ["sentiment", "newsdesk", "helpline"],
        "Tasks in training order: names (data.dir tasks or built-in) or mappings for your own files (TaskSpec).",
    )
    start_from: str | None = _f(
        None,
        "An adapter exported by `olora export --format adapter`: its tasks are this run's frozen past (scored again "
        "when their data is at hand), and `tasks` lists the new tasks to train after them. Task-adapter methods "
        "only (olora, inclora, nlora, ella, olora_proj).",
    )
    benchmark: str | None = _f(
        None, "A benchmark of configs/benchmarks.yaml (`olora bench -h` lists them); with order=, sets tasks."
    )
    order: str | None = _f(None, "The benchmark's order (standard/proxy: 1-3, long: 4-6, cpu_forgetting: 1-2).")
    seed: int = _f(42, "Seed for data sampling, adapter initialisation and dropout.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = _f(
        "auto", "Model weights dtype; 'auto' = bfloat16 on CUDA GPUs that support it, float32 elsewhere."
    )
    quantize: Literal["none", "4bit"] = _f(
        "none",
        "'4bit': load the base model's linear weights in 4 bits (bitsandbytes NF4, QLoRA; `pip install "
        "'olora[quantize]'`), computing in `dtype` (float32, or bf16 on GPUs): a 7B base takes ~3.9 GB instead "
        "of 13.5 GB. Adapter methods only (the base stays frozen); past adapters run stacked (past.fold=merge "
        "cannot add into 4-bit weights); exports are adapters (a merged export would need the float base).",
    )
    output_dir: str = _f("runs/latest", "Where the run writes config, adapters, predictions, results.")
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)
    options: dict[str, Any] = field(
        default_factory=default_options,
        metadata={"help": "The methods' own sections (olora, past, replay, inflora, …), by section name."},
    )

    def __getattr__(self, name: str) -> Any:
        """A method's option section as an attribute: ``cfg.inflora.threshold``."""
        options = self.__dict__.get("options", {})
        if name in options:
            return options[name]
        raise AttributeError(f"RunConfig has no field or option section {name!r}")

    def epochs_for(self, task: str) -> int:
        return self.train.task_epochs.get(task, self.train.epochs)

    def lr_for(self, index: int) -> float:
        """The learning rate of the ``index``-th task (0-based)."""
        return self.train.first_task_lr if index == 0 and self.train.first_task_lr is not None else self.train.lr


# ----------------------------------------------------------------------------- validation


def _validate(cfg: RunConfig) -> list[str]:
    errors: list[str] = []

    def need(ok: bool, key: str, value: Any, rule: str) -> None:
        check(errors, ok, key, value, rule)

    for section, options in cfg.options.items():
        errors += options.problems(f"{section}.")

    need(cfg.lora.r > 0, "lora.r", cfg.lora.r, "must be a positive integer")
    need(cfg.lora.alpha > 0, "lora.alpha", cfg.lora.alpha, "must be positive")
    need(0 <= cfg.lora.dropout < 1, "lora.dropout", cfg.lora.dropout, "must be in [0, 1)")
    for key in ("train_per_class", "test_per_class", "train_per_task", "test_per_task"):
        value = getattr(cfg.data, key)
        need(value is None or value > 0, f"data.{key}", value, "must be a positive integer or null")
    need(cfg.data.max_source_length >= 16, "data.max_source_length", cfg.data.max_source_length, ">= 16")
    need(cfg.train.epochs > 0, "train.epochs", cfg.train.epochs, "must be >= 1")
    for task, epochs in cfg.train.task_epochs.items():
        need(epochs > 0, f"train.task_epochs.{task}", epochs, "must be >= 1")
    need(cfg.data.validation_per_class > 0, "data.validation_per_class", cfg.data.validation_per_class, ">= 1")
    need(cfg.train.batch_size > 0, "train.batch_size", cfg.train.batch_size, "must be >= 1")
    need(cfg.train.grad_accum > 0, "train.grad_accum", cfg.train.grad_accum, "must be >= 1")
    tokens = cfg.train.max_batch_tokens
    need(tokens == "auto" or tokens >= 0, "train.max_batch_tokens", tokens, "must be auto or >= 0")
    need(cfg.train.lr > 0, "train.lr", cfg.train.lr, "must be > 0")
    first_lr = cfg.train.first_task_lr
    need(first_lr is None or first_lr > 0, "train.first_task_lr", first_lr, "must be > 0 or null")
    need(cfg.train.weight_decay >= 0, "train.weight_decay", cfg.train.weight_decay, "must be >= 0")
    need(cfg.train.max_grad_norm >= 0, "train.max_grad_norm", cfg.train.max_grad_norm, "must be >= 0")
    need(
        cfg.train.max_steps is None or cfg.train.max_steps > 0,
        "train.max_steps",
        cfg.train.max_steps,
        "must be >= 1 or null",
    )
    need(cfg.train.log_every > 0, "train.log_every", cfg.train.log_every, "must be >= 1")
    need(cfg.train.checkpoint_every >= 0, "train.checkpoint_every", cfg.train.checkpoint_every, "must be >= 0")
    need(cfg.eval.batch_size > 0, "eval.batch_size", cfg.eval.batch_size, "must be >= 1")
    need(
        cfg.eval.max_new_tokens is None or cfg.eval.max_new_tokens > 0,
        "eval.max_new_tokens",
        cfg.eval.max_new_tokens,
        "must be >= 1 or null",
    )
    names = [task_name(t) for t in cfg.tasks]
    need(len(cfg.tasks) > 0, "tasks", names, "name at least one task")
    for name in names:
        unsafe = "/" in name or "\\" in name or ".." in name or name.startswith(".") or not name.isprintable()
        rule = "a task name becomes a folder name: no '/', '\\', '..', leading '.' or control characters"
        need(bool(name.strip()) and not unsafe, "tasks[].name", name, rule)
    dupes = sorted({t for t in names if names.count(t) > 1})
    need(not dupes, "tasks", names, f"each task may appear once (repeated: {', '.join(dupes)})")
    for i, spec in enumerate(t for t in cfg.tasks if isinstance(t, TaskSpec)):
        key = f"tasks[{spec.name or i}]"
        need(bool(spec.name), f"{key}.name", spec.name, "give the task a name")
        need(bool(spec.train), f"{key}.train", spec.train, "give a training file (or hf:owner/name)")
        need(bool(spec.test), f"{key}.test", spec.test, "give a test file (or hf:owner/name)")
        for field_name in ("input", "target"):
            template = getattr(spec, field_name)
            try:
                list(string.Formatter().parse(template))
                ok, why = True, ""
            except ValueError as exc:
                ok, why = False, str(exc)
            rule = f"{why}: write {{field}} for a record's field, {{{{ or }}}} for a literal brace"
            need(ok, f"{key}.{field_name}", template, rule)
        if spec.labels is not None:
            need(bool(spec.labels) and all(x.strip() for x in spec.labels), f"{key}.labels", spec.labels,
                 "list at least one non-empty label, or leave labels out for free-form answers")  # fmt: skip
            need(len(set(spec.labels)) == len(spec.labels), f"{key}.labels", spec.labels, "list each label once")
        need(
            not (spec.metric == "rouge_l" and spec.labels),
            f"{key}.metric",
            spec.metric,
            "rouge_l scores free-form answers; a task with labels is scored by exact_match",
        )
    return errors


# ----------------------------------------------------------------------------- parsing


class _NestedErrors(ValueError):
    """Errors inside a nested section (a task mapping), each already a full message."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML value to the annotated type, or raise ValueError with a readable reason."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        reasons = []
        inner_types = [a for a in args if a is not type(None)]
        if isinstance(value, dict) and any(dataclasses.is_dataclass(a) for a in inner_types):
            inner_types = [a for a in inner_types if dataclasses.is_dataclass(a)]  # a mapping: its keys' errors
        for inner in inner_types:
            try:
                return _coerce(value, inner, key)
            except _NestedErrors:
                raise
            except ValueError as exc:
                reasons.append(str(exc))
        raise ValueError("must be " + ", or ".join(r.removeprefix("must be ") for r in reasons))
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            hint = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ValueError(f"must be one of {', '.join(map(str, choices))}{extra}")
        return value
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.strip("[]").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError("must be a list, e.g. [a,b]")
        (item_tp,) = typing.get_args(tp)
        return [
            _coerce(v, item_tp, f"{key}[{v.get('name', i) if isinstance(v, dict) else i}]") for i, v in enumerate(value)
        ]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError("must be a mapping, e.g. {a: [1, 0]}")
        _, val_tp = typing.get_args(tp)
        return {str(k): _coerce(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"must be a mapping of {tp.__name__} keys")
        errors: list[str] = []
        built = _build(tp, value, f"{key}.", errors)
        if errors:
            raise _NestedErrors(errors)
        return built
    if tp is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes"):
            return True
        if str(value).lower() in ("false", "0", "no"):
            return False
        raise ValueError("must be true or false")
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or str(value).lstrip("-").isdigit()):
            raise ValueError("must be an integer")
        return int(value)
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError("must be a number") from None
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ValueError("must be a string")
        return str(value)
    raise TypeError(f"unsupported config type {tp} for {key}")


def _build(cls: type, data: dict[str, Any], prefix: str, errors: list[str], also_valid: tuple[str, ...] = ()) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != "options"]  # sections are parsed by the caller
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            valid = [f"{prefix}{n}" for n in [*names, *also_valid]]
            close = difflib.get_close_matches(full, valid, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]}?" if close else f"valid keys: {', '.join(valid)}"
            errors.append(f"unknown config key {full!r}: {hint}")
            continue
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                errors.append(f"{full}={value!r} is invalid: must be a section (mapping)")
                continue
            kwargs[key] = _build(tp, value, f"{full}.", errors)
            continue
        try:
            kwargs[key] = _coerce(value, tp, full)
        except _NestedErrors as exc:
            errors.extend(exc.errors)
        except ValueError as exc:
            errors.append(f"{full}={value!r} is invalid: {exc}")
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=1e-4"`` -> (["train", "lr"], 1e-4). Values are parsed as YAML."""
    if "=" not in text:
        raise OloraError(f"override {text!r} is not key=value, e.g. train.lr=1e-4")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def _set_path(tree: dict, path: list[str], value: Any) -> None:
    for part in path[:-1]:
        node = tree.get(part)
        if not isinstance(node, dict):
            node = tree[part] = {}
        tree = node
    tree[path[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML file (optional), apply ``a.b=value`` overrides, type-check and validate.

    Raises:
        OloraError: listing every unknown key, type error and invalid value at once.
    """
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise OloraError(f"config file {str(path)!r} does not exist: pass an existing YAML file")
        try:
            tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise OloraError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
        if not isinstance(tree, dict):
            raise OloraError(f"config file {str(path)!r} must hold a mapping of keys to values")
    for text in overrides or []:
        keys, value = parse_override(text)
        _set_path(tree, keys, value)
    if tree.get("method") in RENAMED_METHODS:
        raise OloraError(f"method={tree['method']!r} is ambiguous now: use {RENAMED_METHODS[tree['method']]}")
    tree = _with_benchmark(tree)
    errors = _renamed_keys(tree)
    sections = {name: tree.pop(name) for name in list(tree) if name in OPTION_SECTIONS}
    cfg = _build(RunConfig, tree, "", errors, also_valid=tuple(OPTION_SECTIONS))
    for name, value in sections.items():
        if not isinstance(value, dict):
            errors.append(f"{name}={value!r} is invalid: must be a section (mapping)")
        else:
            cfg.options[name] = _build(OPTION_SECTIONS[name], value, f"{name}.", errors)
    if not errors:
        _resolve_task_files(cfg, Path(path).parent if path is not None else Path.cwd())
    if not errors:
        errors = _validate(cfg)
    if errors:
        raise OloraError("; ".join(errors))
    return cfg


def _renamed_keys(tree: dict[str, Any]) -> list[str]:
    """One error per key of an older olora that moved to its method's own section."""
    errors = []
    for old, new in RENAMED_KEYS.items():
        section, key = old.split(".")
        if isinstance(tree.get(section), dict) and key in tree[section]:
            errors.append(f"{old} is now {new} (each method's options are in its own section): write {new}=…")
            del tree[section][key]
    if tree.get("baselines") == {}:
        del tree["baselines"]
    return errors


def _resolve_task_files(cfg: RunConfig, base: Path) -> None:
    """Task files (and ``start_from``) named relative to the YAML (or to the working directory for key=value
    overrides) become absolute paths, so the saved config.yaml means the same from anywhere; hf: ids stay."""
    if cfg.start_from and not Path(cfg.start_from).is_absolute():
        cfg.start_from = str((base / cfg.start_from).resolve())
    for spec in cfg.tasks:
        if isinstance(spec, TaskSpec):
            for key in ("train", "test"):
                value = getattr(spec, key)
                if value and not value.startswith("hf:") and not Path(value).is_absolute():
                    setattr(spec, key, str((base / value).resolve()))


def _with_benchmark(tree: dict[str, Any]) -> dict[str, Any]:
    """benchmark= + order= put the benchmark's settings for that order (task sequence, official
    hyperparameters, per-task λ and epochs of that order only) under the user's values, which win."""
    from olora.presets import deep_merge, get_benchmark

    if tree.get("benchmark") is None and tree.get("order") is None:  # a saved plain run's config.yaml
        return tree
    if tree.get("benchmark") is None or tree.get("order") is None:
        raise OloraError("benchmark= and order= go together, e.g. benchmark=standard order=1")
    tree["order"] = str(tree["order"])
    preset = get_benchmark(str(tree["benchmark"])).config_tree(tree["order"])
    names = [t.get("name") if isinstance(t, dict) else t for t in tree.get("tasks") or []]
    if "tasks" in tree and names[: len(preset["tasks"])] != preset["tasks"]:
        raise OloraError(
            "give either tasks=[...] or benchmark= with order=, not both (a benchmark run's tasks may only grow "
            f"by tasks after its order's: {', '.join(preset['tasks'])})"
        )
    return deep_merge(preset, tree)


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The config as plain data, each option section at the top level (as it is written in YAML)."""
    tree = dataclasses.asdict(cfg)
    options = tree.pop("options")
    return {**tree, **{name: options[name] for name in sorted(options)}}


def packaged_config(name: str) -> Path:
    """Path of a YAML shipped in ``olora/configs`` (``demo`` -> ``.../configs/demo.yaml``)."""
    return Path(__file__).parent / "configs" / f"{name}.yaml"
