"""The `voc` command line: assembles the subcommands of voc/commands (answer, bench, report, datasets) and finetune,
and runs the one asked for, with one-line errors and, unless -v, without the libraries' model-loading output."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext

from finetune.cli import add_parser as add_finetune
from voc.commands.answer import add_parser as add_answer
from voc.commands.bench import add_parser as add_bench_and_report
from voc.commands.datasets import add_parser as add_datasets

# without -v: transformers errors only, vLLM warnings, and no loading, download or conversion bars of transformers or the hub
QUIET = {"TRANSFORMERS_VERBOSITY": "error", "VLLM_LOGGING_LEVEL": "WARNING", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voc", description="Answer medical multiple-choice questions with LLMs by Verification-of-Choice."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show progress logs, and the libraries' model-loading output")
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (add_answer, add_bench_and_report, add_datasets, add_finetune):
        add(commands)
    return parser


@contextmanager
def quiet_libraries(settings: dict[str, str]) -> Iterator[None]:
    """Keep model loading out of the output: the `settings` the user has not set, for the libraries the command imports."""
    saved = {name: os.environ[name] for name in settings if name in os.environ}
    os.environ.update({**settings, **saved})
    try:
        yield
    finally:
        for name in settings:
            os.environ.pop(name, None)
        os.environ.update(saved)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with nullcontext() if args.verbose else quiet_libraries(QUIET):
            return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("voc: interrupted; finished results are kept", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, KeyError, TypeError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        if hasattr(error, "errors") and callable(error.errors):  # pydantic ValidationError: first problem, one line
            first = error.errors()[0]
            message = f"{'.'.join(str(p) for p in first.get('loc', ()))}: {first.get('msg', message)}".lstrip(": ")
        print(f"voc: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
