"""`voc bench` (run or resume a benchmark, then print its summary) and `voc report` (rewrite or compare reports)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from voc.commands import add_model_arguments, engine_options
from voc.strategies import STRATEGIES

if TYPE_CHECKING:
    from voc.bench.runner import BenchConfig


def _set_help(parser: argparse.ArgumentParser, dest: str, text: str) -> None:
    for action in parser._actions:
        if action.dest == dest:
            action.help = text


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `voc bench`."""
    add_model_arguments(parser)
    parser.set_defaults(seed=0)
    _set_help(parser, "seed", "seed of the --limit sample (and of sampled generation); default 0")
    parser.add_argument(
        "--dataset",
        nargs="+",
        default=["pubmedqa"],
        metavar="NAME",
        help="one or more of: a built-in name (`voc datasets` lists them; a split as name:split, e.g. pubmedqa:dev), a spec file "
        "(.yaml), a data file (.jsonl/.json/.csv/.tsv/.parquet; question/options/answer_idx is recognised), or "
        "hf:org/name[:config][@split] (default: pubmedqa)",
    )
    parser.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="KEY=FIELD",
        help="map a field of the data files and hub ids given, e.g. --field question=stem --field options=opa,opb,opc,opd "
        "--field gold=cop --field gold_as=index (keys: question, options, gold, gold_as, answer_text, context, id, subject, metadata)",
    )
    parser.add_argument(
        "--strategy",
        nargs="+",
        default=list(STRATEGIES),
        metavar="NAME",
        help=f"one or more of {', '.join(STRATEGIES)} (default: all); all see the same questions",
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="per dataset: a seeded random sample of N questions, stratified by gold label"
    )
    parser.add_argument(
        "--permutations",
        type=int,
        default=1,
        metavar="K",
        help="ask each question under K option orderings (identity, cyclic shifts, then seeded shuffles; at most n!) and answer with "
        "their mean probabilities; the report adds identity, ensemble and CircularEval accuracy and the flip rate (default 1)",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=1,
        metavar="N",
        help="self-consistency: N sampled reasoning paths (cot) or verifications per option (voc) per question, with --temperature "
        "above 0; the answer is their mean probabilities, the majority vote is reported beside it; direct ignores it (default 1)",
    )
    parser.add_argument(
        "--fewshot",
        type=int,
        default=0,
        metavar="K",
        help="show each question with the K most similar questions of --fewshot-pool (TF-IDF over the question text) as worked "
        "examples, rendered by each strategy's `example` template block (default 0: none)",
    )
    parser.add_argument(
        "--fewshot-pool",
        default=None,
        metavar="NAME_OR_PATH",
        help="the labelled pool of --fewshot: a dataset name or split (pubmedqa:train, medqa_train), a spec or data file; "
        "refused when it overlaps a test split or the evaluated questions",
    )
    parser.add_argument("--out", default=None, help="output folder (default: runs/<model>-<engine>); re-running resumes it")
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per forward pass (hf engine)")
    parser.add_argument("--chunk-size", type=int, default=32, help="questions per strategy call; results are saved after each chunk")
    parser.add_argument("--data-root", default=None, help="folder holding pubmedqa/, medqa/, ... (default: $VOC_DATA_ROOT or shared/data)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="reuse an --out folder of another configuration: its old records are moved aside, the run starts afresh",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument(
        "--skip-invalid", action="store_true", help="skip malformed dataset rows (counted and reported) instead of stopping at the first"
    )


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    from voc.bench.runner import BenchConfig

    return BenchConfig(
        model=args.model,
        engine=args.engine,
        engine_options=engine_options(args),
        datasets=args.dataset,
        fields=field_overrides(args.field),
        strategies=args.strategy,
        limit=args.limit,
        seed=args.seed,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        data_root=args.data_root,
        out=args.out,
        force=args.force,
        final_rule=args.final_rule,
        choose_prompt=args.choose_prompt,
        verification_tokens=args.verification_tokens,
        permutations=args.permutations,
        samples=args.samples,
        fewshot=args.fewshot,
        fewshot_pool=args.fewshot_pool,
        templates=args.templates,
        skip_invalid=args.skip_invalid,
    )


def field_overrides(items: list[str]) -> dict[str, object]:
    """`--field question=stem --field options=A,B,C,D` -> {'question': 'stem', 'options': ['A', 'B', 'C', 'D']}."""
    from voc.datasets import Fields

    overrides: dict[str, object] = {}
    for item in items:
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or key not in Fields.model_fields:
            raise ValueError(f"bad --field {item!r}; give KEY=FIELD with KEY one of {', '.join(Fields.model_fields)}")
        overrides[key] = [v.strip() for v in value.split(",")] if key in ("options", "metadata") and "," in value else value or None
    return overrides


def command_line() -> list[str] | None:
    """The command that started this process, as a user would type it (kept in run.json and the report)."""
    argv = list(sys.argv)
    if Path(argv[0]).name == "run.py":
        return ["python", "benchmarks/run.py", *argv[1:]]
    if Path(argv[0]).name == "__main__.py" and Path(argv[0]).parent.name == "bench":
        return ["python", "-m", "voc.bench", *argv[1:]]
    if "bench" in argv:
        return ["voc", *argv[argv.index("bench") :]]
    return None


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_bench(args: argparse.Namespace) -> int:
    from voc.bench.records import RecordsWriteError
    from voc.bench.runner import run_bench

    config = config_from_args(args)
    config.check()
    out = config.out_dir()
    try:  # `kill PID` ends the run like Ctrl-C, so that run.json says so
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread
        previous = None
    try:
        outcome = run_bench(config, progress=not args.no_progress, command=command_line())
    except RecordsWriteError as error:
        print(f"voc: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"voc: interrupted; finished results are kept in {out}; re-run the same command to resume", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if outcome.dropped_torn_line:
        print(f"voc: dropped a torn last line of {out}/records.jsonl left by an interrupted run; it was recomputed", file=sys.stderr)
    if outcome.stale:
        print(
            f"voc: {outcome.stale} earlier result(s) were made from other prompts (prompt hash changed) and were recomputed",
            file=sys.stderr,
        )
    print(
        f"{outcome.computed} answered, {outcome.reused} reused from earlier sessions, {outcome.errors} errors; report: {out / 'report.md'}"
    )
    results = json.loads((out / "results.json").read_text())
    for dataset, n in results["run"].get("duplicate_options", {}).items():
        if n:
            print(f"  {dataset}: {n} question(s) have options with the same text (kept, scored by label; see the report)")
    for r in results["results"]:
        if "/" not in r["group"]:
            ci = r["ci"]
            acc = "–" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}%"
            ci_text = f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else ""
            head = f"  {r['group']:<14} {r['strategy']:<7} N={r['n']:<5}"
            ece = (r.get("calibration") or {}).get("ece")
            extra = f"  ECE {ece:.3f}" if ece is not None else ""
            if r.get("order"):
                order = r["order"]
                pcts = [
                    f"{100 * order[k]:.1f}%" if order[k] is not None else "–"
                    for k in ("identity_accuracy", "circular_accuracy", "flip_rate")
                ]
                extra += f"  identity {pcts[0]}  CircularEval {pcts[1]}  flip rate {pcts[2]}"
            if r.get("consistency"):
                majority = r["consistency"]["majority_accuracy"]
                extra += f"  majority {'–' if majority is None else f'{100 * majority:.1f}%'} of {r['consistency']['samples']} paths"
            print(f"{head} accuracy {acc}{ci_text}{extra}  errors {r['errors']}  wall {r['wall_seconds']:.1f}s")
    if outcome.errors:
        print(
            f"voc: {outcome.errors} question(s) failed and were recorded as errors; re-run the same command to retry them", file=sys.stderr
        )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from voc.bench.records import write_atomic
    from voc.bench.report import compare_runs, write_report

    for run in args.runs:
        files = write_report(run)
        print(f"{run}: wrote {', '.join(f.name for f in files)}", file=sys.stderr)
    if len(args.runs) == 1 and not args.out:
        print((Path(args.runs[0]) / "report.md").read_text())
        return 0
    page = compare_runs(args.runs)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(Path(args.out), page)
        print(f"wrote {args.out}", file=sys.stderr)
    print(page)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `bench` and `report` to the `voc` command's subparsers."""
    bench = subparsers.add_parser("bench", help="benchmark strategies on built-in datasets or your own question files (resumable)")
    add_bench_arguments(bench)
    bench.set_defaults(handler=cmd_bench)
    report = subparsers.add_parser("report", help="(re)write a run's report, or put several runs side by side")
    report.add_argument("runs", nargs="+", help="run folders written by voc bench")
    report.add_argument("--out", default=None, help="write the side-by-side page to this markdown file")
    report.set_defaults(handler=cmd_report)
