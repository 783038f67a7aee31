"""Each strategy on the vLLM engine: questions/s, generated tokens/s and prefix-cache hit rate.

One vLLM engine is started and shared; before each strategy the prefix cache is emptied, so every
strategy's hit rate counts only the reuse within its own rounds (VoC's per-option prompts share
the context and question). Writes the numbers as JSON with `--out`.

Examples:
    python benchmarks/vllm_strategies.py --limit 6 --max-tokens 32            # CPU, embedded SmolLM2-135M
    python benchmarks/vllm_strategies.py --model HuggingFaceTB/SmolLM2-360M-Instruct --limit 200 --out vllm.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from voc.datasets import DATASETS, load_dataset, stratified_sample  # noqa: E402
from voc.engines.base import SamplingParams  # noqa: E402
from voc.strategies import STRATEGIES, make_strategy  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="HF folder, .gguf or hub id (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--dataset", default="pubmedqa", choices=sorted(DATASETS))
    parser.add_argument("--split", default="test", help="dataset split (default: test)")
    parser.add_argument("--limit", type=int, default=20, help="questions: a seeded label-stratified sample of this size")
    parser.add_argument("--seed", type=int, default=0, help="sample seed")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens generated per reasoning/verification")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    parser.add_argument("--dtype", default="auto", help="vLLM dtype (default: auto; bfloat16 on CPU)")
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.limit < 1 or args.max_tokens < 1:
        parser.error("--limit and --max-tokens must be at least 1")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    from voc.engines.vllm import VLLMEngine

    questions = stratified_sample(load_dataset(args.dataset, split=args.split), args.limit, seed=args.seed)
    params = SamplingParams(max_tokens=args.max_tokens)
    start = time.perf_counter()
    engine = VLLMEngine(
        args.model, dtype=args.dtype, max_model_len=args.max_model_len,
        gpu_memory_utilization=args.gpu_memory_utilization, tensor_parallel_size=args.tensor_parallel_size,
    )
    startup = time.perf_counter() - start
    try:
        # Warm-up on one real question (first long prompts pay one-time kernel set-up); its cache is reset below.
        make_strategy("cot", params=SamplingParams(max_tokens=4)).run(questions[:1], engine)
        rows = []
        for name in args.strategies:
            engine.reset_prefix_cache()
            before = dict(engine.stats.extra, completion_tokens=engine.stats.completion_tokens, prompt_tokens=engine.stats.prompt_tokens)
            strategy = make_strategy(name, params=params)
            t0 = time.perf_counter()
            answers = strategy.run(questions, engine)
            seconds = time.perf_counter() - t0
            generated = engine.stats.completion_tokens - before["completion_tokens"]
            queries = engine.stats.extra["prefix_cache_queries"] - before["prefix_cache_queries"]
            hits = engine.stats.extra["prefix_cache_hits"] - before["prefix_cache_hits"]
            graded = [a for a in answers if a.gold is not None]
            rows.append({
                "strategy": name,
                "questions": len(answers),
                "seconds": round(seconds, 3),
                "questions_per_s": round(len(answers) / seconds, 3),
                "generated_tokens": generated,
                "generated_tokens_per_s": round(generated / seconds, 2),
                "prompt_tokens": engine.stats.prompt_tokens - before["prompt_tokens"],
                "prefix_cache_queries": queries,
                "prefix_cache_hits": hits,
                "prefix_cache_hit_rate": round(hits / queries, 4) if queries else 0.0,
                "accuracy": round(sum(a.correct for a in graded) / len(graded), 4) if graded else None,
                "round_seconds": {k: round(v, 3) for k, v in strategy.round_seconds.items()},
            })
    finally:
        engine.close()
    return {
        "model": engine.model_name,
        "dataset": args.dataset,
        "split": args.split,
        "limit": args.limit,
        "seed": args.seed,
        "max_tokens": args.max_tokens,
        "engine_startup_s": round(startup, 1),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "strategies": rows,
    }


def print_table(result: dict[str, Any]) -> None:
    print(f"model {result['model']} | {result['dataset']} {result['split']} x{result['limit']} | max_tokens {result['max_tokens']}"
          f" | engine start {result['engine_startup_s']} s")
    header = f"{'strategy':<8} {'questions/s':>12} {'gen tokens/s':>13} {'prefix hit rate':>16} {'accuracy':>9} {'seconds':>8}"
    print(header)
    print("-" * len(header))
    for row in result["strategies"]:
        accuracy = "-" if row["accuracy"] is None else f"{row['accuracy']:.3f}"
        print(f"{row['strategy']:<8} {row['questions_per_s']:>12.3f} {row['generated_tokens_per_s']:>13.1f} "
              f"{row['prefix_cache_hit_rate']:>16.1%} {accuracy:>9} {row['seconds']:>8.1f}")


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
