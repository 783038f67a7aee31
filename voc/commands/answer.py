"""`voc answer QUESTION -o OPTION ...`: answer one question and show the answer with its verifications."""

from __future__ import annotations

import argparse

from voc.commands import add_model_arguments, engine_options
from voc.strategies import STRATEGIES


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    answer = subparsers.add_parser("answer", help="answer one question")
    answer.add_argument("question", help="the question text")
    answer.add_argument("-o", "--option", action="append", default=[], help="an option; repeat for each (-o yes -o no -o maybe)")
    answer.add_argument("--context", default=None, help="context passage, e.g. an abstract")
    answer.add_argument("--strategy", default="voc", choices=list(STRATEGIES), help="voc (default), cot or direct")
    answer.add_argument("--json", action="store_true", help="print the full Answer record as JSON")
    add_model_arguments(answer)
    answer.set_defaults(handler=cmd_answer)


def cmd_answer(args: argparse.Namespace) -> int:
    from voc.api import VoC
    from voc.engines import SamplingParams
    from voc.types import Question

    if len(args.option) < 2:
        raise ValueError("give at least two options, e.g. -o yes -o no -o maybe")
    question = Question(question=args.question, options=args.option, context=args.context)
    for group in question.duplicate_options:  # kept in data sets, but typed twice here it is a slip
        raise ValueError(f"options {' and '.join(group)} have the same text; give each -o a different option")
    with VoC(
        args.model,
        strategy=args.strategy,
        engine=args.engine,
        params=SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed),
        final_rule=args.final_rule,
        choose_prompt=args.choose_prompt,
        verification_tokens=args.verification_tokens,
        templates=args.templates,
        **engine_options(args),
    ) as voc:
        answer = voc.answer(question, use_tqdm=args.verbose)  # the round bars too only with -v
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
