"""The `voc` command line: `voc answer`, `voc bench`, `voc report`, `voc datasets`, `voc finetune`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import Counter
from collections.abc import Sequence

from voc.engines import ENGINES
from voc.strategies import CHOOSE_PROMPTS, FINAL_RULES, STRATEGIES


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that runs a model."""
    parser.add_argument("--model", default=None, help="HF folder, .gguf file or hub id (default: embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--engine", default="hf", choices=ENGINES, help="hf (transformers), vllm, or openai (a vllm serve endpoint)")
    parser.add_argument("--device", default=None, help="hf engine: cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: bf16 on GPU, fp32 on CPU for hf)")
    parser.add_argument("--base-url", default=None, help="openai engine: the server's URL, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--max-tokens", type=int, default=256, help="longest generated text per prompt (cot reasoning, voc verifications)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--seed", type=int, default=None, help="seed for sampled generation")
    parser.add_argument("--templates", default=None, help="folder of .jinja files overriding the built-in prompts")
    parser.add_argument(
        "--final-rule", default="combined", choices=FINAL_RULES, help="voc: how the choice and the verdicts combine (only those rounds run)"
    )
    parser.add_argument(
        "--verification-tokens", type=int, default=None, help="voc: the budget of each verification (default: --max-tokens)"
    )
    parser.add_argument(
        "--choose-prompt", default="full", choices=CHOOSE_PROMPTS, help="voc: the choice round shows full verifications or a summary"
    )
    parser.add_argument("--trust-remote-code", action="store_true", help="allow a hub model's own Python code to run")


def engine_options(args: argparse.Namespace) -> dict[str, object]:
    """Engine keyword arguments from the command line, only those the chosen engine takes."""
    options: dict[str, object] = {}
    if args.engine == "hf":
        options.update(device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code)
    elif args.engine == "vllm":
        if args.dtype:
            options["dtype"] = args.dtype
        if args.trust_remote_code:
            options["trust_remote_code"] = True
    elif args.engine == "openai":
        if not args.base_url:
            raise ValueError("--engine openai needs --base-url, e.g. http://127.0.0.1:8000/v1")
        options["base_url"] = args.base_url
    return options


def sampling_params(args: argparse.Namespace):
    from voc.engines import SamplingParams

    return SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed)


def cmd_answer(args: argparse.Namespace) -> int:
    from voc.api import VoC
    from voc.types import Question

    if len(args.option) < 2:
        raise ValueError("give at least two options, e.g. -o yes -o no -o maybe")
    question = Question(question=args.question, options=args.option, context=args.context)
    for group in question.duplicate_options:  # kept in data sets, but typed twice here it is a slip
        raise ValueError(f"options {' and '.join(group)} have the same text; give each -o a different option")
    voc = VoC(
        args.model,
        strategy=args.strategy,
        engine=args.engine,
        params=sampling_params(args),
        final_rule=args.final_rule,
        choose_prompt=args.choose_prompt,
        verification_tokens=args.verification_tokens,
        templates=args.templates,
        **engine_options(args),
    )
    try:
        answer = voc.answer(question)
    finally:
        voc.close()
    if args.json:
        print(answer.model_dump_json(indent=2))
        return 0
    for label, text in question.options.items():
        mark = "→" if label == answer.label else " "
        print(f"{mark} {label}. {text}  p={answer.probabilities[label]:.3f}")
        if label in answer.verifications:
            v = answer.verifications[label]
            if v.verdict_probability is not None:
                print(f"    verdict P(correct)={v.verdict_probability:.3f}")
            for line in v.text.splitlines() or [""]:
                print(f"    | {line}")
    print(
        f"Answer: {answer.label}. {answer.choice}  (strategy {answer.strategy}{', context truncated' if answer.context_truncated else ''})"
    )
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    """List the built-in datasets (each split, with question and gold-label counts) and the other data files under the data root."""
    from pathlib import Path

    from voc.datasets import DATASETS, DataError, data_root, dataset_name, load_dataset, load_file
    from voc.datasets.spec import FORMATS

    root = Path(args.data_root).expanduser() if args.data_root else data_root()
    print(f"Built-in datasets under {root} (voc bench --dataset NAME):")
    known: set[Path] = set()
    for name, spec in DATASETS.items():
        file = root / str(spec.source.path)
        known |= {file.resolve(), *((file.parent / s.file).resolve() for s in spec.splits.values() if s.file)}
        try:
            questions = load_dataset(name, root=root, split="all" if spec.splits else None)
        except (OSError, ValueError) as error:
            print(f"  {name:<16} not available: {str(error).splitlines()[0]}")
            continue
        parts = {dataset_name(f"{name}:{s}"): [q for q in questions if q.metadata["split"] == s] for s in spec.splits}
        for label, items in (parts or {name: list(questions)}).items():
            gold = ", ".join(f"{g} {n}" for g, n in sorted(Counter(q.gold for q in items).items()))
            print(f"  {label:<16} {len(items):>5} questions  gold {gold:<34} {spec.source.path}  {spec.description}")
    others = sorted(f for f in root.rglob("*") if f.suffix in FORMATS and f.is_file() and f.resolve() not in known)
    if others:
        print("Other data files (voc bench --dataset PATH, with --field KEY=FIELD where the layout is not recognised):")
    for file in others:
        try:
            text = f"{len(load_file(file)):>5} questions"
        except (OSError, ValueError) as error:
            reason = error.reason if isinstance(error, DataError) else str(error)
            lines = sum(1 for line in file.read_bytes().splitlines() if line.strip()) if file.suffix == ".jsonl" else None
            text = (f"{lines} records; " if lines is not None else "") + f"not recognised as questions ({reason})"
        print(f"  {file.relative_to(root)}: {text}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voc", description="Answer medical multiple-choice questions with LLMs by Verification-of-Choice."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show progress logs")
    commands = parser.add_subparsers(dest="command", required=True)

    answer = commands.add_parser("answer", help="answer one question")
    answer.add_argument("question", help="the question text")
    answer.add_argument("-o", "--option", action="append", default=[], help="an option; repeat for each (-o yes -o no -o maybe)")
    answer.add_argument("--context", default=None, help="context passage, e.g. an abstract")
    answer.add_argument("--strategy", default="voc", choices=list(STRATEGIES), help="voc (default), cot or direct")
    answer.add_argument("--json", action="store_true", help="print the full Answer record as JSON")
    add_model_arguments(answer)
    answer.set_defaults(handler=cmd_answer)

    from voc.bench.cli import add_parsers as add_bench_parsers  # `voc bench`, `voc report`

    add_bench_parsers(commands)
    datasets = commands.add_parser("datasets", help="list the datasets under the data root, with their question counts")
    datasets.add_argument("--data-root", default=None, help="folder holding pubmedqa/, medqa/, ... (default: $VOC_DATA_ROOT, shared/data)")
    datasets.set_defaults(handler=cmd_datasets)
    from finetune.cli import add_parser as add_finetune_parser  # `voc finetune`

    add_finetune_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
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
