"""Command line: ``olora run``, ``olora demo``, ``olora show``.

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


def cmd_run(ns: argparse.Namespace) -> int:
    from olora.config import load_config
    from olora.report import format_matrix, format_summary
    from olora.runner import run

    path, overrides = _split_config_args(ns.args)
    cfg = load_config(path, overrides)
    results = run(cfg, force=ns.force)
    print(format_matrix(results["tasks"], results["matrix"]))
    print(format_summary(results))
    print(f"results: {Path(cfg.output_dir) / 'results.json'}")
    return 0


def cmd_demo(ns: argparse.Namespace) -> int:
    """O-LoRA and SeqLoRA on the built-in sequence, printed side by side."""
    from olora.config import load_config, packaged_config
    from olora.report import side_by_side
    from olora.runner import run

    all_results = []
    for method in ("olora", "seqlora"):
        overrides = [f"method={method}", f"output_dir={Path(ns.out) / method}", *ns.overrides]
        cfg = load_config(packaged_config("demo"), overrides)
        all_results.append(run(cfg, force=ns.force))
    print()
    print(side_by_side(all_results))
    for res in all_results:
        print(
            f"{res['method']}: {Path(res['config']['output_dir']) / 'results.json'} ({res['wall_s']:.0f} s)"
        )
    return 0


def cmd_show(ns: argparse.Namespace) -> int:
    import json

    from olora.report import side_by_side

    runs = []
    for folder in ns.runs:
        path = Path(folder) / "results.json"
        if not path.is_file():
            raise OloraError(f"{str(path)!r} does not exist: is {folder!r} a finished olora run?")
        runs.append(json.loads(path.read_text(encoding="utf-8")))
    print(side_by_side(runs))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="olora", description=__doc__.splitlines()[0])
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

    p = sub.add_parser("demo", help="O-LoRA vs SeqLoRA on the built-in sequence with SmolLM2")
    p.add_argument("overrides", nargs="*", help="key=value overrides for both runs")
    p.add_argument("--out", default="runs/demo", help="parent folder of the two runs")
    p.add_argument("--force", action="store_true", help="continue run dirs made with another config")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("show", help="print the matrices and AA/BWT of finished runs")
    p.add_argument("runs", nargs="+", help="run folders")
    p.set_defaults(func=cmd_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    _setup_logging(ns.verbose)
    try:
        return ns.func(ns)
    except OloraError as exc:
        print(f"olora: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("olora: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
