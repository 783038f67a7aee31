"""The subcommands of `voc`, one module each with `add_parser(subparsers)`; here the model options of answer and bench."""

from __future__ import annotations

import argparse

from voc.engines import ENGINES
from voc.strategies import CHOOSE_PROMPTS, FINAL_RULES


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
    parser.add_argument(  # also accepted after the command; SUPPRESS keeps `voc -v answer` working
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="show the logs and progress bars of model loading"
    )


def engine_options(args: argparse.Namespace) -> dict[str, object]:
    """Engine keyword arguments from the command line: those given that the chosen engine takes."""
    if args.engine == "openai" and not args.base_url:
        raise ValueError("--engine openai needs --base-url, e.g. http://127.0.0.1:8000/v1")
    taken = {"hf": ("device", "dtype", "trust_remote_code"), "vllm": ("dtype", "trust_remote_code"), "openai": ("base_url",)}
    options: dict[str, object] = {name: getattr(args, name) for name in taken[args.engine] if getattr(args, name)}
    if args.engine == "vllm" and not args.verbose:  # vLLM's weight-loading bar has no environment switch
        options["use_tqdm_on_load"] = False
    return options
