"""The `voc finetune` command: `voc finetune CONFIG.yaml [--stage N] [--resume]`.

`add_parser(subparsers)` adds it to voc's CLI; `main(args)` runs it (args: a parsed Namespace, a list of strings, or
None for sys.argv). Under `accelerate launch` / `torchrun`, run `python -m finetune CONFIG.yaml` the same way.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

HELP = "fine-tune a model in up to three stages (knowledge, instruction, task) from a YAML config"


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("config", help="the fine-tuning YAML file (see finetune/configs/)")
    parser.add_argument("--stage", default=None, help="run only this stage: its number (1-based) or its name; default all stages in order")
    parser.add_argument("--resume", action="store_true", help="skip finished stages; continue an interrupted one from its checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (for log files)")
    parser.set_defaults(handler=main)
    return parser


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `finetune` to a subparsers object of an argparse parser."""
    return configure(subparsers.add_parser("finetune", help=HELP, description=HELP))


def main(args: argparse.Namespace | Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (1 with a one-line message for bad configs and data)."""
    if not isinstance(args, argparse.Namespace):
        args = configure(argparse.ArgumentParser(prog="python -m finetune", description=HELP)).parse_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("finetune").setLevel(logging.INFO)  # stage progress, also under `voc` without -v
    from finetune.config import ConfigError, load_config
    from finetune.leakage import TestSplitError
    from voc.datasets import DataError
    from voc.models import ModelNotFoundError

    try:
        config = load_config(args.config)
        from finetune.train import run

        output = run(config, stage=args.stage, resume=args.resume, progress=not args.no_progress)
    except (ConfigError, TestSplitError, DataError, ModelNotFoundError, FileNotFoundError) as error:
        print(f"voc finetune: error: {error}", file=sys.stderr)
        return 1
    print(f"final model: {output}")
    return 0
