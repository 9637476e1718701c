"""olora: continual fine-tuning of language models with O-LoRA and the methods that came after it.

Commands: run, add, config, methods, demo, bench, tune, show, report, export, predict, perf (``olora COMMAND -h``).
Bad input ends with one line on stderr (``olora: error: ...``) and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

from olora.errors import OloraError


def _split_config_args(args: list[str]) -> tuple[str | None, list[str]]:
    """``[CONFIG] key=value ...``: CONFIG is a YAML path or the name of a packaged config."""
    from olora.config import packaged_config

    if not args or "=" in args[0]:
        return None, args
    first, rest = args[0], args[1:]
    if Path(first).is_file() or first.endswith((".yaml", ".yml")):
        return first, rest
    if packaged_config(first).is_file():
        return str(packaged_config(first)), rest
    raise OloraError(
        f"config {first!r} is neither a YAML file nor a packaged config (e.g. demo): "
        "pass a path, or key=value overrides"
    )


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO, format="olora: %(message)s")
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        warnings.filterwarnings("ignore", category=UserWarning, module="peft")
        warnings.filterwarnings("ignore", category=FutureWarning)


def cmd_config(ns: argparse.Namespace) -> int:
    """Print the fully resolved config (presets applied, per-task values expanded) and exit."""
    import yaml

    from olora.config import config_to_dict, load_config
    from olora.methods import unread_sections

    path, overrides = _split_config_args(ns.args)
    cfg = load_config(path, overrides)
    ignore = unread_sections(cfg.method)  # also: an unknown method is an error here
    print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False, width=110), end="")
    if cfg.benchmark is not None:
        from olora.presets import config_deviations, get_benchmark

        deviations = config_deviations(get_benchmark(cfg.benchmark), cfg.order, config_to_dict(cfg), ignore)
        print("# deviations from the official protocol (before the model and data are loaded):")
        print("\n".join(f"#  - {d}" for d in deviations) or "#  none")
    return 0


def cmd_run(ns: argparse.Namespace) -> int:
    from olora.config import load_config
    from olora.runner import run
    from olora.tools.report import format_matrix, format_metrics, format_summary

    path, overrides = _split_config_args(ns.args)
    cfg = load_config(path, overrides)
    results = run(cfg, force=ns.force)
    print(format_matrix(results["tasks"], results["matrix"]))
    print(format_summary(results))
    if format_metrics(results):
        print(format_metrics(results))
    for line in (results.get("protocol") or {}).get("deviations", []):
        print(f"deviation: {line}")
    print(f"results: {Path(cfg.output_dir) / 'results.json'}")
    return 0


def cmd_add(ns: argparse.Namespace) -> int:
    """Grow a finished run by tasks (names): ``olora add RUN yelp [key=value ...]``."""
    from olora.api import grow
    from olora.tools.report import format_matrix, format_summary

    tasks = [a for a in ns.args if "=" not in a]
    overrides = [a for a in ns.args if "=" in a]
    if not tasks:
        raise OloraError("olora add needs at least one task name after the run folder, e.g. olora add RUN yelp")
    results = grow(ns.run, tasks, overrides, force=ns.force)
    print(format_matrix(results["tasks"], results["matrix"]))
    print(format_summary(results))
    print(f"results: {Path(ns.run) / 'results.json'}")
    return 0


def cmd_demo(ns: argparse.Namespace) -> int:
    """O-LoRA and SeqLoRA on the built-in sequence over several seeds: the spread shows which
    differences are more than one run's luck."""
    from olora.config import load_config, packaged_config
    from olora.runner import run
    from olora.tools.bench import release_memory
    from olora.tools.report import seed_summary

    methods = ("olora", "seqlora")
    by_method: dict[str, list[dict]] = {m: [] for m in methods}
    configs = [
        load_config(
            packaged_config("demo"),
            [f"method={m}", f"seed={seed}", f"output_dir={Path(ns.out) / m / f'seed{seed}'}", *ns.overrides],
        )
        for seed in ns.seeds
        for m in methods
    ]  # all validated before the first run
    for cfg in configs:
        by_method[cfg.method].append(run(cfg, force=ns.force))
        release_memory()
    print()
    print(seed_summary(by_method, *methods))
    walls = {m: sum(r["wall_s"] for r in runs) for m, runs in by_method.items()}
    print(f"runs in {ns.out}/<method>/seed<s>/ ({', '.join(f'{m} {w:.0f} s' for m, w in walls.items())})")
    print(
        "This is a quick look: tiny built-in tasks and 3 seeds, too few to tell methods apart (see the intervals).\n"
        "The measurement that does is the cpu_forgetting benchmark (docs/RESULTS.md): olora bench "
        "data.dir=CL_Benchmark --benchmark cpu_forgetting --orders 1 --methods seqlora olora --seeds 1 2 3 4 5"
    )
    return 0


def cmd_bench(ns: argparse.Namespace) -> int:
    import shlex

    from olora.tools.bench import run_grid, write_tables

    path, overrides = _split_config_args(ns.args)
    out = Path(ns.out)
    results = run_grid(
        path, overrides, ns.benchmark, ns.orders, ns.methods, ns.seeds, out, run_missing=not ns.table_only
    )
    if not results:
        raise OloraError(
            f"bench: no finished run in {str(out)!r} to make a table of: run the grid without --table-only"
        )
    text = write_tables(results, out, "olora " + shlex.join(ns.argv))
    print(text)
    if ns.results_md:
        header = "# Results\n\nProduced by `olora bench` (not typed by hand).\n\n"
        Path(ns.results_md).write_text(header + text, encoding="utf-8")
        print(f"written: {ns.results_md}")
    return 0


def cmd_tune(ns: argparse.Namespace) -> int:
    import shlex

    from olora.tools.tune import tune

    path, overrides = _split_config_args(ns.args)
    out = Path(ns.out)
    command = "olora " + shlex.join(ns.argv)
    text = tune(path, overrides, ns.benchmark, ns.orders, ns.methods, ns.seeds, out, not ns.table_only, command=command)
    print(text)
    print(
        f"written: {out / 'tuning.md'}, {out / 'tuned.txt'}\n"
        "test-split runs at the chosen values: olora bench <the same settings> "
        f"$(cat {shlex.quote(str(out / 'tuned.txt'))}) "
        f"--benchmark {ns.benchmark} --orders {' '.join(ns.orders)} --methods {' '.join(ns.methods)} --seeds ..."
    )
    return 0


def cmd_report(ns: argparse.Namespace) -> int:
    from olora.tools.report import build_report

    runs = [Path(r) for r in ns.runs]
    out = Path(ns.output) if ns.output else runs[0] / "report"
    html_path, md_path = build_report(runs, out)
    print(f"report: {html_path}\nmarkdown: {md_path}")
    return 0


def cmd_export(ns: argparse.Namespace) -> int:
    from olora.tools.export import export_run

    out = export_run(Path(ns.run), ns.format, Path(ns.output))
    print(f"exported ({ns.format}): {out}")
    return 0


def cmd_predict(ns: argparse.Namespace) -> int:
    import json

    from olora.tools.predict import predict, read_inputs

    if (ns.text is None) == (ns.file is None):
        raise OloraError("olora predict needs exactly one of --text or --file")
    if ns.text is not None and not ns.text.strip():
        raise OloraError("--text is empty: give the text to answer")
    texts = [ns.text] if ns.text is not None else read_inputs(Path(ns.file))
    preds = predict(Path(ns.path), ns.task, texts, batch_size=ns.batch_size, progress=ns.file is not None)
    rows = [json.dumps({"input": t, "prediction": p}, ensure_ascii=False) for t, p in zip(texts, preds, strict=True)]
    if ns.output:
        from olora.store.io import atomic_write_text

        atomic_write_text(Path(ns.output), "".join(r + "\n" for r in rows))
        print(f"predictions: {ns.output}")
    elif ns.text is not None:
        print(preds[0])
    else:
        print("\n".join(rows))
    return 0


def cmd_perf(ns: argparse.Namespace) -> int:
    if ns.shapes:
        from olora.tools.shapes import format_shapes, shape_check

        report = []
        for shape in ns.shapes:
            report.append(
                shape_check(
                    shape, ns.device, ns.dtype, ns.batch_size, ns.prompt_len, tasks=max(ns.tasks), steps=ns.repeats
                )
            )
            print(format_shapes(report[-1:]), flush=True)
    else:
        from olora.tools.perf import format_perf, run_perf

        report = run_perf(
            ns.model, ns.tasks, ns.batch_size, ns.repeats, ns.eval_examples, ns.infer_batch_size, ns.epoch_examples
        )
        print(format_perf(report))
    if ns.json:
        from olora.store.io import atomic_write_json

        atomic_write_json(Path(ns.json), report)
        print(f"written: {ns.json}")
    return 0


def cmd_methods(ns: argparse.Namespace) -> int:
    """Every registered method: what it is, where it comes from, and its option sections with their keys."""
    import dataclasses

    from olora.config import OPTION_SECTIONS
    from olora.methods import METHODS

    for name in sorted(METHODS):
        cls = METHODS[name]
        print(f"{name:14} {cls.summary()}")
        tuned = cls.tuned
        tried = ", ".join(f"{v:g}" for v in tuned.factors or tuned.values)
        tried = f"× {tried} of the configured value" if tuned.factors else tried
        print(f"{'':15}  olora tune tries {tuned.key} {tried}")
        for section in cls.option_sections():
            defaults = OPTION_SECTIONS[section]()
            for f in dataclasses.fields(defaults):
                print(f"{'':15}  {section}.{f.name} = {getattr(defaults, f.name)!r}")
    return 0


def cmd_show(ns: argparse.Namespace) -> int:
    from olora.store.rundir import RunFolder
    from olora.tools.report import side_by_side

    print(side_by_side([RunFolder(folder).load_results() for folder in ns.runs]))
    return 0


def _grid_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments a grid of benchmark runs shares (olora bench, olora tune)."""
    p.add_argument(
        "args",
        nargs="*",
        help="optional config file, then key=value overrides for every run, method:key=value for one method's runs",
    )
    from olora.presets import load_benchmarks  # a small YAML read: the help lists what the data file holds

    names = ", ".join(load_benchmarks())
    p.add_argument("--benchmark", default="proxy", help=f"one of {names} (configs/benchmarks.yaml)")
    p.add_argument("--orders", nargs="+", default=["1"], help="orders of the benchmark")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="olora", description="\n".join(__doc__.splitlines()[:3]), formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show library warnings")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "run",
        help="train and evaluate a task sequence",
        description="olora run [CONFIG.yaml | demo] [key=value ...]",
    )
    p.add_argument("args", nargs="*", help="optional config file, then key=value overrides")
    p.add_argument("--force", action="store_true", help="continue a run dir made with another config")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "add",
        help="grow a finished run by tasks: only they train",
        description="olora add RUN TASK [TASK ...] [key=value ...]",
    )
    p.add_argument("run", help="the run folder")
    p.add_argument("args", nargs="+", help="new task names (data.dir or built-in), then key=value overrides")
    p.add_argument("--force", action="store_true", help="accept other settings (the stages they change retrain)")
    p.set_defaults(func=cmd_add)

    p = sub.add_parser(
        "config",
        help="print the resolved config (presets applied) and exit",
        description="olora config [CONFIG.yaml | demo] [key=value ...]",
    )
    p.add_argument("args", nargs="*", help="optional config file, then key=value overrides")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("methods", help="list every method, what it is and its options")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("demo", help="O-LoRA vs SeqLoRA on the built-in sequence with SmolLM2, over 3 seeds")
    p.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="one O-LoRA and one SeqLoRA run each")
    p.add_argument("--out", default="runs/demo", help="parent folder of the runs")
    p.add_argument("--force", action="store_true", help="continue run dirs made with another config")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="methods x orders x seeds, one comparison table")
    _grid_arguments(p)
    p.add_argument("--methods", nargs="+", default=["seqlora", "inclora", "olora", "mtl_lora"])
    p.add_argument("--seeds", nargs="+", type=int, default=[42])
    p.add_argument("--out", default="runs/bench", help="parent folder of the grid's runs")
    p.add_argument("--results-md", default=None, help="also write the table to this Markdown file")
    p.add_argument(
        "--table-only",
        action="store_true",
        help="train nothing: the table of the grid's finished runs (cells without one are left out and named)",
    )
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("tune", help="each method's main hyperparameter chosen on the validation split")
    _grid_arguments(p)
    p.add_argument("--methods", nargs="+", default=["seqlora", "inclora", "olora"], help="columns to tune")
    p.add_argument("--seeds", nargs="+", type=int, default=[1])
    p.add_argument("--out", default="runs/tune", help="parent folder of the trials' runs")
    p.add_argument("--table-only", action="store_true", help="train nothing: choose from the finished trials")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("report", help="HTML + Markdown report with plots of one or more runs")
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("-o", "--output", default=None, help="report folder (default: RUN_DIR/report)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="one PEFT adapter (sum of the task adapters) or a merged checkpoint")
    p.add_argument("run", help="run folder")
    p.add_argument("--format", choices=["adapter", "merged"], default="adapter")
    p.add_argument("-o", "--output", required=True, help="folder to write")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="answers for new inputs, with the run's prompts")
    p.add_argument("path", help="run folder or export folder")
    p.add_argument(
        "--task",
        default=None,
        help="task whose prompt wraps the input; without it, each text is a whole prompt and every adapter answers",
    )
    p.add_argument("--text", default=None, help="one input text")
    p.add_argument("--file", default=None, help="JSONL file of {input: ...}")
    p.add_argument("-o", "--output", default=None, help="write JSONL predictions here")
    p.add_argument("--batch-size", type=int, default=16)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("perf", help="measured speed ratios (train step, inference, evaluation)")
    p.add_argument("--model", default="smollm2", help="smollm2, a checkpoint folder or a hub id")
    p.add_argument("--tasks", nargs="+", type=int, default=[2, 5, 15], help="task counts t to time")
    p.add_argument("--batch-size", type=int, default=4, help="training batch")
    p.add_argument("--infer-batch-size", type=int, default=32, help="inference batch (the evaluator's default)")
    p.add_argument("--epoch-examples", type=int, default=48, help="prompts in the training-epoch comparison")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--eval-examples", type=int, default=32)
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    p.add_argument(
        "--shapes",
        nargs="+",
        default=None,
        help="instead: LoRA vs O-LoRA step time and peak memory on random-init models of these shapes "
        "(t5-large, llama2-7b, smollm2-135m, t5-tiny, llama-tiny) at task 1 and task max(--tasks)",
    )
    p.add_argument("--device", default="cpu", help="with --shapes: cpu or cuda")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="with --shapes")
    p.add_argument("--prompt-len", type=int, default=256, help="with --shapes: prompt tokens per example")
    p.set_defaults(func=cmd_perf)

    p = sub.add_parser("show", help="print the matrices and AA/BWT of finished runs")
    p.add_argument("runs", nargs="+", help="run folders")
    p.set_defaults(func=cmd_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    ns.argv = list(sys.argv[1:] if argv is None else argv)  # what a table's "Command:" line repeats
    _setup_logging(ns.verbose)
    try:
        return ns.func(ns)
    except OloraError as exc:
        print(f"olora: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("olora: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
