"""Each strategy on the vLLM engine (or `--engine hf`): wall time per round, prefill and decode tokens, prefix-cache hits.

One engine is started and shared; before each strategy vLLM's prefix cache is emptied, so every
strategy's hit rate counts only the reuse within its own rounds (VoC's per-option prompts share
the context and question). A strategy is `direct`, `cot`, `voc` or a VoC variant
`voc:FINAL_RULE[:compact][@TOKENS]` (for example `voc:verdicts`, `voc:choice:compact`, `voc:verdicts@128`
for verifications of at most 128 tokens): each runs only the rounds its final rule needs. Any of them may end in
`+permK` (asked under K option orderings, `--permutations K`) or `+samplesN` (N self-consistency paths at
`--sample-temperature`, `--samples N`): `cot+samples5` against `cot+samples1` is the cost of five paths, `voc+perm3`
against `voc` the cost of three orderings. Prints each variant's wall time against `cot`'s; `--out` writes JSON.

Examples:
    python benchmarks/vllm_strategies.py --limit 6 --max-tokens 32            # CPU, embedded SmolLM2-135M
    python benchmarks/vllm_strategies.py --preset realistic --model "$(../shared/tools/bench-model-qwen-coder-0.5b.sh | tail -1)"
    python benchmarks/vllm_strategies.py --preset realistic --engine hf --model FOLDER --random-weights   # GPU, no weights to carry
    python benchmarks/vllm_strategies.py --limit 100 --strategies direct direct+perm3 cot cot+perm3 voc:verdicts voc:verdicts+perm3 \
        cot+samples1 cot+samples5 voc:verdicts+samples1 voc:verdicts+samples5           # what permutations and samples cost
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from voc.datasets import DATASETS, load_dataset, stratified_sample  # noqa: E402
from voc.engines.base import SamplingParams  # noqa: E402
from voc.hardware import describe_hardware  # noqa: E402
from voc.permutations import answer_permuted  # noqa: E402
from voc.strategies import CHOOSE_PROMPTS, FINAL_RULES, STRATEGIES, Strategy, make_strategy  # noqa: E402
from voc.types import Answer, Question  # noqa: E402

# The realistic preset (issue: VoC's cost at realistic settings): a larger model, long verifications, two datasets.
REALISTIC = {
    "datasets": ["pubmedqa", "medqa"],
    "limit": 40,
    "max_tokens": 256,
    "strategies": ["cot", "voc:verdicts", "voc:choice", "voc:combined", "voc:choice:compact", "voc:combined:compact"],
}


@dataclass
class Variant:
    """A strategy as measured: asked under `permutations` option orderings (1: the given order only)."""

    name: str
    strategy: Strategy
    permutations: int = 1

    def run(self, questions: list[Question], engine: Any) -> list[Answer]:
        if self.permutations == 1:
            return self.strategy.run(questions, engine)
        return answer_permuted(lambda asked: self.strategy.run(asked, engine), questions, self.permutations)


def parse_variant(name: str, params: SamplingParams, verification_tokens: int | None = None, temperature: float = 0.7) -> Variant:
    """A strategy name (see `make_variant`) followed by any of `+permK` (K option orderings) and `+samplesN` (N
    self-consistency paths, sampled at `temperature`)."""
    base, *modifiers = name.split("+")
    permutations = 1
    for modifier in modifiers:
        count = modifier.removeprefix("perm").removeprefix("samples")
        if not count.isdigit() or int(count) < 1 or count == modifier:
            raise ValueError(f"bad modifier +{modifier} in {name}; write +permK (e.g. +perm3) or +samplesN (e.g. +samples5)")
        if modifier.startswith("perm"):
            permutations = int(count)
        else:
            params = SamplingParams(**{**params.model_dump(), "n": int(count), "temperature": temperature})
    return Variant(name, make_variant(base, params, verification_tokens), permutations)


def make_variant(name: str, params: SamplingParams, verification_tokens: int | None = None) -> Strategy:
    """`direct`, `cot`, `voc` or `voc:FINAL_RULE[:CHOOSE_PROMPT][@TOKENS]`; `verification_tokens` (or @TOKENS) bounds
    VoC's verifications."""
    name, _, budget = name.partition("@")
    if budget:
        if not budget.isdigit() or int(budget) < 1:
            raise ValueError(f"bad verification budget {budget!r} in {name}@{budget}; write e.g. voc:verdicts@128")
        verification_tokens = int(budget)
    base, *rest = name.split(":")
    if base == "voc" and not rest:
        rest = ["combined"]
    if base != "voc":
        return make_strategy(base, params=params)
    rule, choose = rest[0], rest[1] if len(rest) > 1 else "full"
    if rule not in FINAL_RULES or choose not in CHOOSE_PROMPTS or len(rest) > 2:
        raise ValueError(f"unknown variant {name!r}; use voc:RULE[:PROMPT], RULE one of {FINAL_RULES}, PROMPT one of {CHOOSE_PROMPTS}")
    return make_strategy("voc", params=params, final_rule=rule, choose_prompt=choose, verification_tokens=verification_tokens)  # type: ignore[arg-type]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="HF folder, .gguf or hub id (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--engine", default="vllm", choices=["vllm", "hf"])
    parser.add_argument("--random-weights", action="store_true", help="the model's config and tokenizer with random weights (speed only)")
    parser.add_argument("--preset", choices=["realistic"], help=f"realistic: {REALISTIC} (pass --model: the 0.5B bench model)")
    parser.add_argument("--datasets", nargs="+", default=["pubmedqa"], help=f"built-in names or name:split ({', '.join(DATASETS)})")
    parser.add_argument("--split", default="test", help="dataset split (default: test)")
    parser.add_argument("--limit", type=int, default=20, help="questions: a seeded label-stratified sample of this size")
    parser.add_argument("--seed", type=int, default=0, help="sample seed")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens generated per reasoning/verification")
    parser.add_argument(
        "--strategies",
        nargs="+",
        default=list(STRATEGIES),
        help="direct, cot, voc or voc:RULE[:compact][@TOKENS], each optionally +permK and/or +samplesN",
    )
    parser.add_argument("--sample-temperature", type=float, default=0.7, help="temperature of +samplesN variants (default 0.7)")
    parser.add_argument("--verification-tokens", type=int, default=None, help="voc: each verification's budget (default: --max-tokens)")
    parser.add_argument("--dtype", default="auto", help="vLLM dtype (default: auto; bfloat16 on CPU)")
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument(
        "--warmup",
        choices=["light", "full"],
        default="light",
        help="untimed first: light = a 4-token cot on one question; full = cot and voc on all questions (GPU)",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.preset == "realistic":  # the preset's values, except where given on the command line
        for key, value in REALISTIC.items():
            if getattr(args, key) == parser.get_default(key):
                setattr(args, key, value)
    if args.limit < 1 or args.max_tokens < 1:
        parser.error("--limit and --max-tokens must be at least 1")
    try:
        for name in args.strategies:
            parse_variant(name, SamplingParams())
    except ValueError as error:
        parser.error(str(error))
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    from voc.engines import make_engine

    params = SamplingParams(max_tokens=args.max_tokens)
    model = random_weights(args.model) if args.random_weights else args.model
    start = time.perf_counter()
    if args.engine == "vllm":
        options = {"dtype": args.dtype, "max_model_len": args.max_model_len, "gpu_memory_utilization": args.gpu_memory_utilization,
                   "tensor_parallel_size": args.tensor_parallel_size}  # fmt: skip
    else:
        options = {"dtype": None if args.dtype == "auto" else args.dtype, "batch_size": 256}
    engine = make_engine(args.engine, model, **options)
    startup = time.perf_counter() - start
    tables = {}
    try:
        for dataset in args.datasets:
            name, _, split = dataset.partition(":")
            questions = stratified_sample(load_dataset(name, split=split or args.split), args.limit, seed=args.seed)
            # Warm-up (first long prompts and new batch shapes pay one-time kernel set-up); the cache is reset below.
            if args.warmup == "full":
                for name in ("cot", "voc"):
                    make_strategy(name, params=params).run(questions, engine)
            else:
                make_strategy("cot", params=SamplingParams(max_tokens=4)).run(questions[:1], engine)
            variants = [parse_variant(name, params, args.verification_tokens, args.sample_temperature) for name in args.strategies]
            tables[dataset] = [measure(engine, variant, questions) for variant in variants]
    finally:
        engine.close()
    hardware = describe_hardware()
    return {
        "model": engine.model_name,
        "engine": args.engine,
        "random_weights": args.random_weights,
        "device": hardware.get("gpu") or hardware["cpu"],
        "datasets": args.datasets,
        "split": args.split,
        "limit": args.limit,
        "seed": args.seed,
        "max_tokens": args.max_tokens,
        "warmup": args.warmup,
        "verification_tokens": args.verification_tokens,
        "sample_temperature": args.sample_temperature,
        "engine_startup_s": round(startup, 1),
        "machine": hardware,
        "date": time.strftime("%Y-%m-%d"),
        "tables": tables,
    }


def random_weights(model: str | None) -> str:
    """A folder with `model`'s config and tokenizer and random bf16 weights (measures speed at real sizes, no weights carried)."""
    import tempfile

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from voc.models import resolve_model

    source = model if model and Path(model).is_dir() else resolve_model(model)  # a folder may hold only config and tokenizer
    folder = Path(tempfile.mkdtemp(prefix="random-weights-"))
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source), dtype=torch.bfloat16).save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return str(folder)


def measure(engine: Any, variant: Variant, questions: list[Any]) -> dict[str, Any]:
    """Run one strategy on all questions from an empty prefix cache; its time, tokens, cache hits and accuracy."""
    if hasattr(engine, "reset_prefix_cache"):
        engine.reset_prefix_cache()
    stats = engine.stats
    before = dict(stats.extra, completion_tokens=stats.completion_tokens, prompt_tokens=stats.prompt_tokens)
    t0 = time.perf_counter()
    answers = variant.run(questions, engine)
    seconds = time.perf_counter() - t0
    generated = stats.completion_tokens - before["completion_tokens"]
    queries = stats.extra.get("prefix_cache_queries", 0) - before.get("prefix_cache_queries", 0)
    hits = stats.extra.get("prefix_cache_hits", 0) - before.get("prefix_cache_hits", 0)
    if "prefix_tokens_reused" in stats.extra:  # the hf engine: shared prefixes run once, instead of a prefix cache
        queries = stats.prompt_tokens - before["prompt_tokens"]
        hits = stats.extra["prefix_tokens_reused"] - before.get("prefix_tokens_reused", 0)
    graded = [a for a in answers if a.gold is not None]
    return {
        "strategy": variant.name,
        "questions": len(answers),
        "seconds": round(seconds, 3),
        "questions_per_s": round(len(answers) / seconds, 3),
        "generated_tokens": generated,
        "generated_tokens_per_s": round(generated / seconds, 2),
        "prompt_tokens": stats.prompt_tokens - before["prompt_tokens"],
        "prefill_tokens": queries - hits,  # prompt tokens vLLM computed (the rest came from the prefix cache)
        "prefix_cache_queries": queries,
        "prefix_cache_hits": hits,
        "prefix_cache_hit_rate": round(hits / queries, 4) if queries else 0.0,
        "accuracy": round(sum(bool(a.correct) for a in graded) / len(graded), 4) if graded else None,
        "round_seconds": {k: round(v, 3) for k, v in variant.strategy.round_seconds.items()},
    }


def print_table(result: dict[str, Any]) -> None:
    print(f"model {result['model']} ({result['engine']} on {result['device']}) | {result['split']} x{result['limit']}"
          f" | max_tokens {result['max_tokens']} | engine start {result['engine_startup_s']} s")  # fmt: skip
    for dataset, rows in result["tables"].items():
        cot = next((r["seconds"] for r in rows if r["strategy"] == "cot"), None)
        header = f"{'strategy':<22} {'seconds':>8} {'/ cot':>6} {'prefill tok':>12} {'decode tok':>11} {'cache hits':>11} {'accuracy':>9}"
        header += "  rounds (s)"
        print(f"\n{dataset}\n{header}\n{'-' * len(header)}")
        for row in rows:
            ratio = f"{row['seconds'] / cot:.2f}" if cot else "-"
            accuracy = "-" if row["accuracy"] is None else f"{row['accuracy']:.3f}"
            rounds = ", ".join(f"{k} {v:.1f}" for k, v in row["round_seconds"].items())
            print(f"{row['strategy']:<22} {row['seconds']:>8.1f} {ratio:>6} {row['prefill_tokens']:>12} {row['generated_tokens']:>11} "
                  f"{row['prefix_cache_hit_rate']:>11.1%} {accuracy:>9}  {rounds}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    print_table(result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":  # vLLM spawns its engine processes: starting one needs this guard
    raise SystemExit(main())
