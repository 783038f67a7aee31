"""Choose VoC's settings on the dev sets: final rule, choose prompt and verification budget, from ONE verify round.

The settings VoC leaves open are chosen on dev questions, never on the test splits. Each verification is generated
once with the largest budget; greedy decoding with a smaller budget B gives exactly its first B tokens, so every
budget is scored on truncated copies of the same verifications. For each budget the verdicts, the full choose
prompt and the compact choose prompt are scored, and every (budget, final rule, choose prompt) gets its dev
accuracy and the decode tokens it needs. `cot` runs beside it as the reference.

    python benchmarks/voc_dev_sweep.py --model "$(../shared/tools/bench-model-qwen-coder-0.5b.sh | tail -1)" \
        --datasets pubmedqa:dev medqa_dev --limit 100 --budgets 256 128 64 --out benchmarks/results/voc-dev-sweep.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from voc.datasets import load_dataset, stratified_sample  # noqa: E402
from voc.engines.base import Generation, SamplingParams, softmax  # noqa: E402
from voc.hardware import describe_hardware  # noqa: E402
from voc.strategies import ChainOfThought, VerificationOfChoice  # noqa: E402
from voc.strategies.voc import FINAL_RULES, combine  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="HF folder, .gguf or hub id (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--engine", default="vllm", choices=["vllm", "hf"])
    parser.add_argument("--datasets", nargs="+", default=["pubmedqa:dev", "medqa_dev"], help="dev sets only (name or name:split)")
    parser.add_argument("--limit", type=int, default=100, help="questions per dataset: a seeded label-stratified sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=256, help="cot's reasoning budget and the largest verification budget")
    parser.add_argument("--budgets", type=int, nargs="+", default=[256, 128, 64], help="verification budgets to score")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if any(b > args.max_tokens or b < 1 for b in args.budgets):
        parser.error("every budget must be between 1 and --max-tokens")
    for name in args.datasets:
        if "test" in name.split(":")[-1]:
            parser.error(f"{name} is a test split; settings are chosen on dev sets only")
    return args


def load(name: str, limit: int, seed: int) -> list[Any]:
    dataset, _, split = name.partition(":")
    questions = load_dataset(dataset, split=split) if split else load_dataset(dataset)
    return stratified_sample(questions, limit, seed=seed)


def truncated(engine: Any, generation: Generation, budget: int) -> Generation:
    """The generation a budget of `budget` tokens would have given (greedy: its first `budget` tokens)."""
    if len(generation.token_ids) <= budget:
        return generation
    ids = generation.token_ids[:budget]
    text = engine.tokenizer.decode(list(ids), skip_special_tokens=True)
    return Generation(text, generation.prompt_tokens, budget, generation.prompt_ids, ids)


def sweep(engine: Any, questions: list[Any], budgets: list[int], max_tokens: int) -> dict[str, Any]:
    """cot, then one verify round and, per budget, verdicts and both choose prompts; dev accuracy of every setting."""
    params = SamplingParams(max_tokens=max_tokens)
    t0 = time.perf_counter()
    cot = ChainOfThought(params=params).run(questions, engine)
    result: dict[str, Any] = {
        "cot": {"accuracy": mean(a.correct for a in cot), "decode_tokens": sum(a.completion_tokens for a in cot),
                "seconds": round(time.perf_counter() - t0, 1)},
        "voc": [],
    }  # fmt: skip
    full, compact = VerificationOfChoice(params=params), VerificationOfChoice(params=params, choose_prompt="compact")
    prepared = full.prepare(questions, engine)
    t0 = time.perf_counter()
    generations = full.generate_round("verify", engine, [p.prompts for p in prepared], full.verify_params, use_tqdm=False)
    verify_seconds = time.perf_counter() - t0
    for budget in budgets:
        gens = [[truncated(engine, g, budget) for g in question_gens] for question_gens in generations]
        requests = [[full.verdict_request(p, k, g) for k, g in enumerate(gs)] for p, gs in zip(prepared, gens, strict=True)]
        verdicts = [[softmax(s.logprobs)[0] for s in scores] for scores in full.score_round("verdict", engine, requests, use_tqdm=False)]
        per_question = list(zip([p.question for p in prepared], gens, verdicts, strict=True))
        choices = {}
        for name, strategy in (("full", full), ("compact", compact)):
            choose = [strategy.choose_prompt(q, strategy.shown(q, gs, ps)) for q, gs, ps in per_question]
            scores = engine.score(choose, [strategy.candidates(strategy.choose_template, q) for q in questions])
            choices[name] = [softmax(s.logprobs) for s in scores]
        decode = sum(len(g.token_ids) for question_gens in gens for g in question_gens)
        for rule in FINAL_RULES:
            for prompt in ("full", "compact"):
                if rule == "verdicts" and prompt == "compact":
                    continue  # no choose prompt under the verdicts rule
                correct = []
                for (q, _, ps), choice in zip(per_question, choices[prompt], strict=True):
                    probabilities = combine(rule, choice, ps)
                    correct.append(q.labels[probabilities.index(max(probabilities))] == q.gold)
                result["voc"].append({"budget": budget, "final_rule": rule, "choose_prompt": "-" if rule == "verdicts" else prompt,
                                      "accuracy": mean(correct), "decode_tokens": decode})  # fmt: skip
    result["verify_seconds_at_largest_budget"] = round(verify_seconds, 1)
    return result


def mean(values: Any) -> float:
    items = [bool(v) for v in values]
    return round(sum(items) / len(items), 4) if items else 0.0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from voc.engines import make_engine

    engine = make_engine(args.engine, args.model)
    results = {}
    try:
        for name in args.datasets:
            results[name] = sweep(engine, load(name, args.limit, args.seed), sorted(args.budgets, reverse=True), args.max_tokens)
            print_table(name, results[name])
    finally:
        engine.close()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"model": engine.model_name, "engine": args.engine, "limit": args.limit, "seed": args.seed, "max_tokens": args.max_tokens,
                   "date": time.strftime("%Y-%m-%d"), "machine": describe_hardware(), "results": results}  # fmt: skip
        args.out.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


def print_table(name: str, result: dict[str, Any]) -> None:
    cot = result["cot"]
    print(f"\n{name}: cot accuracy {cot['accuracy']:.3f}, {cot['decode_tokens']} decode tokens, {cot['seconds']} s")
    print(f"{'budget':>6} {'final rule':<10} {'choose':<8} {'accuracy':>8} {'decode tokens':>14}")
    for row in result["voc"]:
        print(f"{row['budget']:>6} {row['final_rule']:<10} {row['choose_prompt']:<8} {row['accuracy']:>8.3f} {row['decode_tokens']:>14}")


if __name__ == "__main__":  # vLLM spawns its engine processes: starting one needs this guard
    raise SystemExit(main())
