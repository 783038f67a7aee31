"""From beginner to expert, measured: the base model and each fine-tuning stage's output x direct, cot and voc.

    python benchmarks/stages.py finetune/configs/smollm2-medical.yaml

1. train: the config's stages that are not complete yet (`voc finetune CONFIG --resume`);
2. dev: each model on the dev sets (pubmedqa:dev, the fixed 100 PubMedQA questions kept out of training, and a
   label-stratified sample of medqa_dev) with direct, cot and voc. VoC runs under the `combined` rule, which
   stores the choice round's scores and every verdict, so each final rule is scored from the same records. Per
   model, VoC's final rule is the one with the best mean dev accuracy, and the model's best strategy is chosen the
   same way. The test splits play no part in any choice;
3. test: each model on the full PubMedQA test split (500) and on MedQA-4 (all 1273, or a label-stratified
   --medqa-limit) with direct, cot and voc under its dev-chosen rule. A rule depends only on the rounds VoC ran, so
   when a test run made under an earlier choice holds the rounds the chosen rule needs, the rule's answers are
   recomputed from its records (voc.bench.metrics.under_final_rule); otherwise voc alone runs again under it;
4. the table: report.md and results.json in --out (accuracy with 95% CI, macro-F1, paired differences of voc
   against direct and cot with CI and McNemar p, wall time: for voc, of the rounds its rule needs), copied with
   every test run's report.md and results.json (not the records) to --results.

Every evaluation is a `voc bench` run folder under --out, so an interrupted ablation resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from finetune.config import load_config  # noqa: E402
from finetune.train import is_complete, run  # noqa: E402
from voc.bench.metrics import (  # noqa: E402
    final_rule_accuracy,
    paired_comparison,
    strategy_result,
    under_final_rule,
)
from voc.bench.records import latest_by_key  # noqa: E402
from voc.bench.report import ci_text, p_text, pct, table  # noqa: E402
from voc.bench.runner import BenchConfig, RunFolder, run_bench  # noqa: E402
from voc.engines import make_engine  # noqa: E402
from voc.hardware import describe_hardware  # noqa: E402
from voc.models import resolve_model  # noqa: E402
from voc.strategies.voc import FINAL_RULES, rule_rounds  # noqa: E402

log = logging.getLogger("stages")
STRATEGIES = ("direct", "cot", "voc")
DEV_SETS = ("pubmedqa:dev", "medqa_dev")
TEST_SETS = ("pubmedqa", "medqa")


@dataclass
class Model:
    name: str  # "0-base", "1-knowledge", ...
    path: str


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a fine-tuning YAML file (finetune/configs/...)")
    parser.add_argument("--engine", default="vllm", choices=["vllm", "hf"], help="vllm (faster on CPU here) or hf")
    parser.add_argument("--max-tokens", type=int, default=96, help="cot reasoning and voc verification budget")
    parser.add_argument("--dev-limit", type=int, default=100, help="questions per dev set (a label-stratified sample)")
    parser.add_argument("--medqa-limit", type=int, default=None, help="a label-stratified MedQA test sample (default: all 1273)")
    parser.add_argument("--pubmedqa-limit", type=int, default=None, help="a label-stratified PubMedQA test sample (default: all 500)")
    parser.add_argument("--models", nargs="+", default=None, help="evaluate only these models (0-base, 1-knowledge, ...)")
    parser.add_argument("--out", type=Path, default=None, help="run folders and the table (default runs/stages-<config name>)")
    parser.add_argument(
        "--results", type=Path, default=None, help="copy the reports here (default benchmarks/results/stages-<config name>)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="evaluate this many models at once (vllm on CPU: one core each)")
    parser.add_argument("--skip-train", action="store_true", help="evaluate the stages that are complete; train nothing")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    name = Path(args.config).stem
    args.out = args.out or Path("runs") / f"stages-{name}"
    args.results = args.results or ROOT / "benchmarks" / "results" / f"stages-{name}"
    return args


def models_of(config: Any) -> list[Model]:
    """The base model, then each stage's output folder, in order."""
    models = [Model("0-base", resolve_model(config.base_model_path()))]
    models += [Model(config.stage_dir(i).name, str(config.stage_dir(i))) for i in range(len(config.stages))]
    return models


def bench(
    model: Model, engine: Any, out: Path, datasets: list[str], limit: int | None, args: argparse.Namespace, rule: str,
    strategies: tuple[str, ...] = STRATEGIES,
) -> Path:
    config = BenchConfig(
        model=model.path, engine=args.engine, datasets=datasets, strategies=list(strategies), limit=limit,
        max_tokens=args.max_tokens, final_rule=rule, out=str(out),
    )  # fmt: skip
    run_bench(config, engine=engine, progress=not args.no_progress, command=sys.argv)
    return out


def records(folder: Path) -> list[Any]:
    return list(latest_by_key(RunFolder(folder).records.load(repair=False)).values())


def run_rule(folder: Path) -> str | None:
    """The final rule of the run in `folder` (None when there is none yet)."""
    fingerprint = RunFolder(folder).read_fingerprint() if folder.is_dir() else None
    return fingerprint.final_rule if fingerprint is not None else None


def voc_folder(test_folder: Path, rule: str) -> Path:
    return test_folder.with_name(f"{test_folder.name}-voc-{rule}")


def voc_records(test_folder: Path, rule: str) -> list[Any]:
    """VoC's test records answered under `rule`: recomputed from the test run's rounds when they hold what the rule
    needs (voc.bench.metrics.under_final_rule), else from the voc run made under that rule."""
    answered = under_final_rule([r for r in records(test_folder) if r.strategy == "voc"], rule)
    return answered if answered is not None else under_final_rule(records(voc_folder(test_folder, rule)), rule) or []


def dev_choice(folder: Path) -> dict[str, Any]:
    """Per dev set: accuracy of direct, cot and every VoC final rule; then the rule and the strategy with the best mean."""
    by_dataset: dict[str, dict[str, float | None]] = {}
    for dataset in DEV_SETS:
        items = [r for r in records(folder) if r.dataset == dataset]
        scores = {s: strategy_result(dataset, s, [r for r in items if r.strategy == s]).accuracy for s in ("direct", "cot")}
        rules = final_rule_accuracy([r for r in items if r.strategy == "voc"])
        scores.update({f"voc:{rule}": rules[rule] for rule in FINAL_RULES})
        by_dataset[dataset] = scores

    def mean(key: str) -> float:
        return sum(by_dataset[d][key] or 0.0 for d in DEV_SETS) / len(DEV_SETS)

    rule = max(FINAL_RULES, key=lambda r: mean(f"voc:{r}"))  # ties: the earlier rule in FINAL_RULES
    best = max(("direct", "cot", f"voc:{rule}"), key=mean)
    return {
        "accuracy": by_dataset,
        "mean": {k: mean(k) for k in by_dataset[DEV_SETS[0]]},
        "voc_rule": rule,
        "best_strategy": best.split(":")[0],
    }


def evaluate(model: Model, args: argparse.Namespace) -> dict[str, Any]:
    """Dev runs, the dev choice, then the test runs of one model, all through one engine."""
    out = args.out / model.name
    engine = make_engine(args.engine, model.path)
    try:
        clock = time.perf_counter()
        bench(model, engine, out / "dev", list(DEV_SETS), args.dev_limit, args, "combined")
        choice = dev_choice(out / "dev")
        choice["seconds"] = round(time.perf_counter() - clock, 1)
        (out / "dev-choice.json").write_text(json.dumps(choice, indent=2))
        log.info("%s: dev-chosen VoC rule %s, best strategy %s", model.name, choice["voc_rule"], choice["best_strategy"])
        rule = choice["voc_rule"]
        for dataset in TEST_SETS:
            limit = args.medqa_limit if dataset == "medqa" else args.pubmedqa_limit
            folder = out / "test" / dataset
            ran = run_rule(folder) or rule  # a run started under an earlier dev choice is completed as it began
            bench(model, engine, folder, [dataset], limit, args, ran)
            if not set(rule_rounds(rule)) <= set(rule_rounds(ran)):  # its voc records lack a round the chosen rule needs
                bench(model, engine, voc_folder(folder, rule), [dataset], limit, args, rule, strategies=("voc",))
    finally:
        engine.close()
    return choice


def evaluate_worker(worker: int, models: list[Model], args: argparse.Namespace) -> None:
    """One of --jobs processes: its share of the models, its vLLM engine bound to CPU core `worker`."""
    logging.basicConfig(level=logging.INFO, format=f"%(levelname)s %(name)s[{worker}]: %(message)s")
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = str(worker % (os.cpu_count() or 1))
    for model in models:
        evaluate(model, args)


def evaluate_in_parallel(models: list[Model], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Models spread over --jobs processes (on a CPU machine each engine computes on one core of its own); the dev
    choices are read back from each model's dev-choice.json."""
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=evaluate_worker, args=(i, models[i :: args.jobs], args)) for i in range(args.jobs)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    failed = [i for i, w in enumerate(workers) if w.exitcode != 0]
    if failed:
        raise SystemExit(f"stages.py: evaluation worker(s) {failed} failed (see the log above); re-run the same command to resume")
    return {m.name: json.loads((args.out / m.name / "dev-choice.json").read_text()) for m in models}


# --- the table ------------------------------------------------------------------------------------------------------


def summarise(models: list[Model], choices: dict[str, dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """results.json: every (model, dataset, strategy) on the test sets, and the paired comparisons."""
    rows, paired = [], []
    outcomes: dict[tuple[str, str, str], dict[str, bool]] = {}
    for model in models:
        for dataset in TEST_SETS:
            folder = args.out / model.name / "test" / dataset
            items = records(folder)
            for strategy in STRATEGIES:
                mine = [r for r in items if r.strategy == strategy]
                if strategy == "voc":
                    mine = voc_records(folder, choices[model.name]["voc_rule"])
                result = strategy_result(dataset, strategy, mine)
                rule = choices[model.name]["voc_rule"] if strategy == "voc" else None
                outcomes[model.name, dataset, strategy] = {r.question_id: r.label == r.gold for r in mine if r.ok}
                rows.append({
                    "model": model.name, "dataset": dataset, "strategy": strategy, "n": result.n, "errors": result.errors,
                    "accuracy": result.accuracy, "ci": result.ci, "macro_f1": result.macro_f1,
                    "wall_seconds": round(result.wall_seconds, 1), "voc_rule": rule,
                })  # fmt: skip
            for other in ("direct", "cot"):
                paired.append(
                    {
                        "model": model.name,
                        "dataset": dataset,
                        **compare(outcomes, (model.name, dataset, "voc"), (model.name, dataset, other)),
                    }
                )
    last = models[-1].name
    best = choices[last]["best_strategy"]
    headline = [{"dataset": d, **compare(outcomes, (last, d, best), (models[0].name, d, "direct"))} for d in TEST_SETS]
    return {"rows": rows, "voc_vs": paired, "tuned_best_vs_base_direct": headline}


def compare(
    outcomes: dict[tuple[str, str, str], dict[str, bool]], first: tuple[str, str, str], second: tuple[str, str, str]
) -> dict[str, Any]:
    shared = [q for q in outcomes[first] if q in outcomes[second]]
    c = paired_comparison(":".join(first), ":".join(second), [outcomes[first][q] for q in shared], [outcomes[second][q] for q in shared])
    return {"first": c.first, "second": c.second, "n": c.n, "difference": c.difference, "ci": c.ci, "p_mcnemar": c.mcnemar.p_value}


def markdown(results: dict[str, Any]) -> str:
    lines = [f"# Stage-by-strategy ablation: {results['config']}", ""]
    hardware = results["hardware"]
    lines += [
        f"- command: `{results['command']}`",
        f"- date: {results['date']}, engine `{results['engine']}`, max_tokens {results['max_tokens']}",
        f"- hardware: {hardware.get('cpu')} ({hardware.get('cpu_count')} cores), torch {hardware.get('torch')}",
        f"- test questions: {', '.join(f'{d} {n}' for d, n in results['test_questions'].items())}",
        "",
    ]
    lines += ["## Dev choices (pubmedqa:dev and medqa_dev; the test splits play no part)", ""]
    header = ["model", "direct", "cot", *(f"voc:{r}" for r in FINAL_RULES), "VoC rule", "best strategy"]
    body = []
    for name, choice in results["dev"].items():
        body.append([name, *(pct(choice["mean"][k]) for k in header[1:-2]), choice["voc_rule"], choice["best_strategy"]])
    lines += ["Mean dev accuracy over the two dev sets:", "", *table(header, body), ""]
    for dataset in TEST_SETS:
        lines += [f"## {dataset} test", ""]
        body = []
        for row in (r for r in results["rows"] if r["dataset"] == dataset):
            strategy = row["strategy"] + (f" ({row['voc_rule']})" if row["voc_rule"] else "")
            body.append(
                [
                    row["model"],
                    strategy,
                    row["n"],
                    f"{pct(row['accuracy'])} {ci_text(row['ci'])}",
                    pct(row["macro_f1"]),
                    f"{row['wall_seconds']:.0f} s",
                ]
            )
        lines += [*table(["model", "strategy", "n", "accuracy [95% CI]", "macro-F1", "wall"], body), ""]
        body = [
            [p["model"], f"voc - {p['second'].split(':')[-1]}", f"{100 * p['difference']:+.1f} {ci_text(p['ci'])}", p_text(p["p_mcnemar"])]
            for p in results["voc_vs"] if p["dataset"] == dataset and p["difference"] is not None
        ]  # fmt: skip
        lines += ["Paired, same questions:", "", *table(["model", "difference", "points [95% CI]", "McNemar p"], body), ""]
    lines += ["## The tuned model's best dev-chosen strategy against the untuned model's direct", ""]
    body = [[h["dataset"], h["first"], h["second"], f"{100 * h['difference']:+.1f} {ci_text(h['ci'])}", p_text(h["p_mcnemar"])]
            for h in results["tuned_best_vs_base_direct"] if h["difference"] is not None]  # fmt: skip
    lines += table(["dataset", "tuned", "untuned", "points [95% CI]", "McNemar p"], body)
    return "\n".join(lines) + "\n"


def copy_reports(models: list[Model], args: argparse.Namespace) -> None:
    """Each test run's report.md and results.json (not its records) to --results/<model>/<run>-<file>."""
    for model in models:
        for folder in sorted((args.out / model.name / "test").glob("*")):
            for file in ("results.json", "report.md"):
                if (folder / file).is_file():
                    (args.results / model.name).mkdir(parents=True, exist_ok=True)
                    shutil.copy(folder / file, args.results / model.name / f"{folder.name}-{file}")


def sample_text(limit: int | None) -> str:
    return f"a label-stratified sample of {limit}" if limit else "all"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    config = load_config(args.config)
    if not args.skip_train:
        run(config, resume=True, progress=not args.no_progress)
    models = [m for m in models_of(config) if not args.models or m.name in args.models]
    missing = [m.name for m in models if m.name != "0-base" and not is_complete(Path(m.path))]
    if missing:
        raise SystemExit(f"stages.py: {', '.join(missing)} not trained yet; run without --skip-train (or leave them out with --models)")
    choices = {m.name: evaluate(m, args) for m in models} if args.jobs == 1 else evaluate_in_parallel(models, args)
    results = {
        "config": args.config, "command": " ".join(["python", *sys.argv]), "date": datetime.now(timezone.utc).date().isoformat(),
        "engine": args.engine, "max_tokens": args.max_tokens, "hardware": describe_hardware(),
        "models": {m.name: m.path for m in models}, "dev": choices,
        "test_questions": {d: sample_text(limit) for d, limit in zip(TEST_SETS, (args.pubmedqa_limit, args.medqa_limit), strict=True)},
        **summarise(models, choices, args),
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    (args.out / "report.md").write_text(markdown(results))
    args.results.mkdir(parents=True, exist_ok=True)
    for file in ("results.json", "report.md"):
        shutil.copy(args.out / file, args.results / file)
    copy_reports(models, args)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
