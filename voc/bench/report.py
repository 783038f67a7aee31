"""The report of a run folder: results.json, report.md and PNG plots; and several runs side by side.

Everything is computed from the records file, so `voc report runs/NAME` can regenerate it at any time
(for example while a run is still going, or after it was interrupted).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from voc.bench.metrics import (
    COVERAGES,
    N_BINS,
    Calibration,
    PairedComparison,
    RunSummary,
    StrategyResult,
    comparison_to_dict,
    paired_comparison,
    summarise,
)
from voc.bench.records import BenchError, RunFolder, latest_by_key, write_atomic

REPORT_FILE = "report.md"
RESULTS_FILE = "results.json"
ACCURACY_PLOT = "accuracy.png"
RELIABILITY_PLOT = "reliability_{}.png"  # per dataset
COVERAGE_PLOT = "coverage_{}.png"  # per dataset
SUBJECTS_PLOT = "accuracy_mmlu_subjects.png"  # mmlu_medical's; any other dataset with subjects: accuracy_subjects_<name>.png

PUBLISHED_NOTE = "published figures, not measured here"
PUBLISHED_PUBMEDQA = [  # PubMedQA reasoning-required test accuracy (%), as published by their authors
    {"system": "GPT-4 + Medprompt", "accuracy": 82.0},
    {"system": "Med-PaLM 2", "accuracy": 81.8},
    {"system": "AntGLM-Med-10B", "accuracy": 80.6},
    {"system": "GPT-4-base", "accuracy": 80.4},
    {"system": "Flan-PaLM", "accuracy": 79.0},
]
OPTION_NAMES = {"pubmedqa": {"A": "yes", "B": "no", "C": "maybe"}}  # by built-in name; pubmedqa:dev too


def option_names(dataset: str) -> dict[str, str]:
    return OPTION_NAMES.get(dataset.split(":")[0], {})


def slug(name: str) -> str:
    """A dataset name as part of a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "dataset"


def subjects_plot(dataset: str) -> str:
    return SUBJECTS_PLOT if dataset == "mmlu_medical" else f"accuracy_subjects_{slug(dataset)}.png"


def given_names(config: dict[str, Any]) -> dict[str, str]:
    """Dataset name in the records -> what the user gave for it (`--dataset`), where the two differ."""
    from voc.datasets import dataset_name

    given: dict[str, str] = {}
    for item in config.get("datasets") or []:
        try:
            name = dataset_name(item)
        except (OSError, ValueError):  # a spec file that moved or broke since the run
            continue
        if name != item:
            given[name] = item
    return given


# --- numbers ------------------------------------------------------------------------------------------------------


def load_run(path: str | os.PathLike[str]) -> tuple[RunFolder, dict[str, Any], list[Any]]:
    """(folder, run info, latest record per question) of a run folder; BenchError when it is not one."""
    folder = RunFolder(path)
    if not folder.path.is_dir():
        raise BenchError(f"{folder.path} is not a folder; give a run folder written by `voc bench`")
    if not folder.records.exists():
        raise BenchError(f"{folder.path} holds no records.jsonl; give a run folder written by `voc bench`")
    records = list(latest_by_key(folder.records.load(repair=False)).values())
    return folder, folder.read_run_info(), records


def build_results(path: str | os.PathLike[str]) -> tuple[dict[str, Any], RunSummary]:
    """results.json's content for a run folder, and the summary it came from."""
    folder, info, records = load_run(path)
    fingerprint = folder.read_fingerprint()
    strategies = info.get("strategies") or []
    summary = summarise(records, strategies)
    sessions = info.get("sessions", [])
    datasets: dict[str, set[str]] = {}
    flagged: dict[str, set[str]] = {}
    for r in records:
        datasets.setdefault(r.dataset, set()).add(r.question_id)
        flagged.setdefault(r.dataset, set())
        if r.duplicate_options:
            flagged[r.dataset].add(r.question_id)
    config = info.get("config") or {}
    run = {
        "folder": str(folder.path),
        "model": config.get("model") or ("default (embedded SmolLM2-135M-Instruct)" if config else None),
        "fingerprint": fingerprint.model_dump(mode="json") if fingerprint else None,
        "model_path": next((s.get("model_name") for s in reversed(sessions) if s.get("model_name")), None),
        "questions": {name: len(ids) for name, ids in datasets.items()},
        "given_as": given_names(config),
        "duplicate_options": {name: len(ids) for name, ids in flagged.items()},
        "strategies": [s for s in strategies if any(r.strategy == s for r in records)] or sorted({r.strategy for r in records}),
        "started": sessions[0]["started"] if sessions else None,
        "finished": next((s.get("finished") for s in reversed(sessions) if s.get("finished")), None),
        "sessions": len(sessions),
        "stale_recomputed": sum(int(s.get("stale_prompt_hash") or 0) for s in sessions),
        "command": sessions[0].get("command") if sessions else None,
        "hardware": sessions[-1].get("hardware") if sessions else None,
        "complete": bool(sessions) and sessions[-1].get("status") == "finished",
    }
    results = {
        "run": run,
        "results": [r.to_dict() for r in summary.results],
        "comparisons": {group: [comparison_to_dict(c) for c in pairs] for group, pairs in summary.comparisons.items()},
        "errors": sum(r.errors for r in summary.results if "/" not in r.group),
        "published_pubmedqa_reference": {"note": PUBLISHED_NOTE, "figures": PUBLISHED_PUBMEDQA},
    }
    return results, summary


# --- formatting ---------------------------------------------------------------------------------------------------


def pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}"


def ci_text(ci: Sequence[float] | None) -> str:
    return "–" if ci is None else f"[{pct(ci[0])}, {pct(ci[1])}]"


def p_text(p: float) -> str:
    return f"{p:.2g}" if p >= 0.001 else "<0.001"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def render_markdown(results: dict[str, Any], summary: RunSummary, plots: Sequence[str]) -> str:
    """report.md: the run's facts, then one section per view of the results, in reading order."""
    pooled = [r for r in summary.results if "/" not in r.group]
    subjects = [r for r in summary.results if "/" in r.group]
    lines = run_section(results["run"])
    lines += accuracy_section(pooled, subjects, plots)
    lines += errors_section(pooled, results["errors"])
    lines += comparisons_section(summary)
    lines += order_section(pooled)
    lines += consistency_section(pooled)
    lines += calibration_section(pooled)
    lines += positions_section(pooled)
    lines += confusion_section(pooled)
    lines += throughput_section(pooled)
    lines += published_section()
    return "\n".join(lines) + "\n"


def hardware_text(hardware: dict[str, Any]) -> str:
    parts = (
        hardware.get("gpu"),
        hardware.get("cpu"),
        f"{hardware.get('cpu_count')} cores" if hardware.get("cpu_count") else None,
        f"{hardware.get('memory_gib')} GiB" if hardware.get("memory_gib") else None,
    )
    return ", ".join(str(x) for x in parts if x)


def run_section(run: dict[str, Any]) -> list[str]:
    """The title and the run's facts: model, engine, hardware, questions, settings, dates, command."""
    fp = run.get("fingerprint") or {}
    params = fp.get("params", {})
    given = run.get("given_as") or {}  # dataset name -> what was given to --dataset, where they differ
    lines = [f"# Benchmark report: {run['folder']}", ""]
    if not run["complete"]:
        lines += ["> **Incomplete run**: the last session did not finish; re-run the same command to complete it.", ""]
    lines += [
        f"- Model: `{run.get('model') or '?'}`"
        + (f" (`{run['model_path']}`)" if run.get("model_path") and run["model_path"] != run.get("model") else "")
        + (f", content {str(fp['model'])[:19]}" if str(fp.get("model", "")).startswith("sha256:") else ""),
        f"- Engine: `{fp.get('engine', '?')}`" + (f" {fp.get('engine_options')}" if fp.get("engine_options") else ""),
        f"- Hardware: {hardware_text(run.get('hardware') or {}) or 'unknown'}",
        "- Questions: "
        + ", ".join(f"{name} {n}" + (f" (`{given[name]}`)" if name in given else "") for name, n in run["questions"].items())
        + (f" (seeded label-stratified sample, limit {fp.get('limit')}, seed {fp.get('seed')})" if fp.get("limit") else " (all questions)"),
        f"- Strategies: {', '.join(run['strategies'])}; max_tokens {params.get('max_tokens')}, temperature {params.get('temperature')}, "
        f"voc final rule `{fp.get('final_rule')}`; templates sha256 {str(fp.get('templates_hash', ''))[:12]}"
        + (f"; {fp['permutations']} option orderings per question (answers are their ensemble)" if fp.get("permutations", 1) > 1 else "")
        + (f"; {fp['samples']} sampled paths per question for cot and voc (answers are their mean)" if fp.get("samples", 1) > 1 else "")
        + (f"; {fp['fewshot']} worked example(s) per question from `{fp.get('fewshot_pool')}`" if fp.get("fewshot", 0) else ""),
        f"- Date: {run.get('started') or '?'} to {run.get('finished') or '?'} ({run['sessions']} session(s))",
    ]
    if run.get("stale_recomputed"):
        lines.append(
            f"- Recomputed on resume: {run['stale_recomputed']} earlier result(s) whose prompt hash differed from the resumed run's"
        )
    flagged = {name: n for name, n in run.get("duplicate_options", {}).items() if n}
    if flagged:
        lines.append(
            "- Flagged questions (two or more options with the same text; kept, since answers are scored by label): "
            + ", ".join(f"{name} {n}" for name, n in flagged.items())
        )
    if run.get("command"):
        lines.append(f"- Command: `{' '.join(run['command'])}`")
    return lines


def accuracy_section(pooled: Sequence[StrategyResult], subjects: Sequence[StrategyResult], plots: Sequence[str]) -> list[str]:
    """Accuracy per dataset and strategy, per subject where questions have one, and the plots."""
    lines = [
        "",
        "## Accuracy",
        "",
        "Accuracy in %, with a 95% bootstrap confidence interval over questions. N counts answered questions; "
        "questions that failed (errors) are left out of the accuracy and counted separately.",
        "",
    ]
    lines += table(
        ["dataset", "strategy", "N", "accuracy", "95% CI", "macro-F1", "errors", "context truncated"],
        [[r.group, r.strategy, r.n, pct(r.accuracy), ci_text(r.ci), pct(r.macro_f1), r.errors, r.context_truncated] for r in pooled],
    )
    for dataset in dict.fromkeys(r.group.split("/", 1)[0] for r in subjects):  # any dataset whose questions have a subject
        lines += ["", f"### Per subject: {dataset}", ""]
        lines += table(
            ["subject", "strategy", "N", "accuracy", "95% CI", "macro-F1", "errors"],
            [
                [r.group.split("/", 1)[1], r.strategy, r.n, pct(r.accuracy), ci_text(r.ci), pct(r.macro_f1), r.errors]
                for r in subjects
                if r.group.split("/", 1)[0] == dataset
            ],
        )
    for name in plots:
        lines += ["", f"![{name}]({name})"]
    return lines


def errors_section(pooled: Sequence[StrategyResult], n_errors: int) -> list[str]:
    """The first error messages of failed questions (nothing when none failed)."""
    errors = [r for r in pooled if r.errors]
    if not errors:
        return []
    lines = [
        "",
        "## Errors",
        "",
        f"{n_errors} question(s) failed and were recorded as errors "
        "(re-running the same command retries them). First messages:",
        "",
    ]
    return lines + [f"- {r.group} / {r.strategy}: {m}" for r in errors for m in r.error_messages]


def comparisons_section(summary: RunSummary) -> list[str]:
    """Each pair of strategies on the questions both answered: paired difference and McNemar's test."""
    comparisons = [(g, c) for g, pairs in summary.comparisons.items() if "/" not in g for c in pairs]
    if not comparisons:
        return []
    lines = [
        "",
        "## Strategies compared pairwise",
        "",
        "On the questions both strategies answered: the accuracy difference (first minus second, points) with a 95% paired "
        "bootstrap CI, and McNemar's test (b: only the first right, c: only the second right; exact binomial p-value, "
        "chi-square with continuity correction alongside).",
        "",
    ]
    lines += table(
        ["dataset", "first", "second", "N", "difference", "95% CI", "b", "c", "p (exact)", "p (chi2)"],
        [
            [
                g,
                c.first,
                c.second,
                c.n,
                pct(c.difference),
                ci_text(c.ci),
                c.mcnemar.b,
                c.mcnemar.c,
                p_text(c.mcnemar.p_exact),
                p_text(c.mcnemar.p_chi2),
            ]
            for g, c in comparisons
        ],
    )
    return lines


def positions_section(pooled: Sequence[StrategyResult]) -> list[str]:
    """Position bias: the share of answers at each option position next to the share of gold answers there."""
    lines = [
        "",
        "## Answer positions (position bias)",
        "",
        "Share of chosen answers at each option position, next to the share of gold answers there.",
        "",
    ]
    width = max((len(r.answer_positions) for r in pooled), default=0)
    lines += table(
        ["dataset", "strategy", *[f"position {i + 1}" for i in range(width)]],
        [
            [r.group, r.strategy, *[f"{pct(a)} (gold {pct(g)})" for a, g in zip(r.answer_positions, r.gold_positions, strict=True)]]
            + [""] * (width - len(r.answer_positions))
            for r in pooled
        ],
    )
    return lines


def confusion_section(pooled: Sequence[StrategyResult]) -> list[str]:
    """One confusion matrix per dataset and strategy (rows gold, columns chosen), each followed by a blank line."""
    lines = ["", "## Confusion matrices", "", "Rows: gold label; columns: chosen label.", ""]
    for r in pooled:
        names = option_names(r.group)
        header = [f"{r.group} / {r.strategy}", *[f"{lab} {names.get(lab, '')}".strip() for lab in r.labels]]
        lines += table(
            header, [[f"**{lab} {names.get(lab, '')}**".replace(" **", "**"), *row] for lab, row in zip(r.labels, r.confusion, strict=True)]
        )
        lines.append("")
    return lines


def throughput_section(pooled: Sequence[StrategyResult]) -> list[str]:
    """Wall time, questions/s, tokens and round times per dataset and strategy."""
    lines = [
        "## Throughput",
        "",
        "Wall time is the time spent answering (summed over sessions); round times are the strategy rounds within it.",
        "",
    ]
    lines += table(
        ["dataset", "strategy", "questions", "wall s", "questions/s", "prompt tokens", "generated tokens", "rounds (s)"],
        [
            [
                r.group,
                r.strategy,
                r.n + r.errors,
                f"{r.wall_seconds:.1f}",
                f"{r.questions_per_second:.2f}" if r.questions_per_second else "–",
                r.prompt_tokens,
                r.completion_tokens,
                ", ".join(f"{k} {v:.1f}" for k, v in r.round_seconds.items()),
            ]
            for r in pooled
        ],
    )
    return lines


def published_section() -> list[str]:
    """Published PubMedQA figures, for context only (not measured here)."""
    lines = [
        "",
        f"## Published PubMedQA figures ({PUBLISHED_NOTE})",
        "",
        "For context only: accuracy (%) on the PubMedQA reasoning-required test set as reported in the literature. "
        "These numbers are **published, not measured here**, with other models, prompts and hardware.",
        "",
    ]
    return lines + table(
        ["system", "accuracy (published, not measured here)"], [[f["system"], f"{f['accuracy']:.1f}"] for f in PUBLISHED_PUBMEDQA]
    )


def order_section(pooled: Sequence[StrategyResult]) -> list[str]:
    """The option-order table of a --permutations run (nothing otherwise)."""
    rows = [r for r in pooled if r.order is not None]
    if not rows:
        return []
    lines = [
        "",
        "## Option order",
        "",
        "Each question was asked under K orderings of its options (the identity, then cyclic shifts, then seeded shuffles; at most "
        "n! per question); each ordering's probabilities were mapped back to the original options and averaged (the ensemble, "
        "which is the answer scored everywhere else in this report). Identity: the options in their given order. CircularEval: "
        "right under every ordering. Flip rate: share of questions whose chosen option is not the same under every ordering. "
        "Ensemble minus identity in points, with a 95% paired bootstrap CI and McNemar's exact p.",
        "",
    ]
    lines += table(
        [
            "dataset",
            "strategy",
            "N",
            "K",
            "identity",
            "ensemble",
            "ensemble - identity",
            "95% CI",
            "p (exact)",
            "CircularEval",
            "flip rate",
        ],
        [
            [
                r.group,
                r.strategy,
                o.n,
                o.orderings,
                pct(o.identity_accuracy),
                pct(o.ensemble_accuracy),
                pct(o.ensemble_vs_identity.difference),
                ci_text(o.ensemble_vs_identity.ci),
                p_text(o.ensemble_vs_identity.mcnemar.p_exact),
                pct(o.circular_accuracy),
                pct(o.flip_rate),
            ]
            for r in rows
            if (o := r.order) is not None
        ],
    )
    return lines


def consistency_section(pooled: Sequence[StrategyResult]) -> list[str]:
    """The self-consistency table of a --samples run (nothing otherwise)."""
    rows = [r for r in pooled if r.consistency is not None]
    if not rows:
        return []
    lines = [
        "",
        "## Self-consistency",
        "",
        "Each question was answered from N sampled paths (cot: N reasonings; voc: N verifications of every option; direct has no "
        "generation and answers once). Average: the option with the highest mean of the paths' probabilities (the answer scored "
        "everywhere else in this report). Majority: the option most paths chose (ties to the higher mean probability). One "
        "path: the first path alone. Agreement: mean share of a question's paths that chose its majority option. Majority minus "
        "average in points, with a 95% paired bootstrap CI and McNemar's exact p.",
        "",
    ]
    lines += table(
        ["dataset", "strategy", "N", "paths", "average", "majority", "majority - average", "95% CI", "p (exact)", "one path", "agreement"],
        [
            [
                r.group,
                r.strategy,
                c.n,
                c.samples,
                pct(c.average_accuracy),
                pct(c.majority_accuracy),
                pct(c.majority_vs_average.difference),
                ci_text(c.majority_vs_average.ci),
                p_text(c.majority_vs_average.mcnemar.p_exact),
                pct(c.single_accuracy),
                pct(c.agreement),
            ]
            for r in rows
            if (c := r.consistency) is not None
        ],
    )
    return lines


def calibration_section(pooled: Sequence[StrategyResult]) -> list[str]:
    """The calibration table: each strategy's answers, and VoC's verdicts in a row of their own."""
    partial = [x for x in COVERAGES if x < 1]
    rows: list[list[Any]] = []
    for r in pooled:
        for name, c in ((r.strategy, r.calibration), (f"{r.strategy} verdicts", r.verdict_calibration)):
            if c is not None:
                selective = [pct(c.selective.get(str(x))) if c.kind == "answer" else "–" for x in partial]
                rows.append([r.group, name, c.n, number(c.ece), number(c.brier), *selective])
    if not rows:
        return []
    lines = [
        "",
        "## Calibration and selective answering",
        "",
        f"ECE: expected calibration error over {N_BINS} equal-width bins of the chosen option's final probability (0 is perfect). "
        "Brier: per question the sum over options of (p - 1 if gold else p)^2, averaged (0 perfect, 2 worst). The `verdicts` rows "
        "score each VoC verification's P(correct) against whether its option is the gold one (N counts verifications; Brier is "
        "then the binary (p - outcome)^2). Accuracy at X% coverage: answering only the X% most confident questions.",
        "",
    ]
    lines += table(["dataset", "strategy", "N", "ECE", "Brier", *[f"accuracy at {round(100 * x)}% coverage" for x in partial]], rows)
    return lines


def number(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


# --- plots --------------------------------------------------------------------------------------------------------


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def plot_accuracy(results: Sequence[StrategyResult], path: Path, title: str) -> None:
    """Bars of accuracy per group and strategy with 95% CI error bars, and chance level per group."""
    groups = list(dict.fromkeys(r.group for r in results))
    strategies = list(dict.fromkeys(r.strategy for r in results))
    fig = _figure(max(5.0, 1.4 * len(groups) * max(1, len(strategies)) / 2 + 2), 4.0)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(strategies))
    for j, strategy in enumerate(strategies):
        xs, ys, low, high = [], [], [], []
        for i, group in enumerate(groups):
            r = next((x for x in results if x.group == group and x.strategy == strategy), None)
            if r is None or r.accuracy is None:
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(100 * r.accuracy)
            lo, hi = r.ci or (r.accuracy, r.accuracy)
            low.append(100 * (r.accuracy - lo))
            high.append(100 * (hi - r.accuracy))
        bars = ax.bar(xs, ys, width, yerr=[low, high], capsize=3, label=strategy)
        ax.bar_label(bars, fmt="%.1f", padding=2, fontsize=7)
    for i, group in enumerate(groups):
        n_options = max((len(r.labels) for r in results if r.group == group), default=0)
        if n_options:
            ax.hlines(
                100 / n_options,
                i - 0.45,
                i + 0.45,
                colors="grey",
                linestyles="dashed",
                linewidth=1,
                label="chance (1 / options)" if i == 0 else None,
            )
    ax.set_xticks(range(len(groups)), [g.split("/")[-1].replace("_", " ") for g in groups], rotation=20 if len(groups) > 4 else 0)
    ax.set_ylabel("accuracy (%) with 95% CI")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.savefig(path)


def plot_reliability(results: Sequence[StrategyResult], path: Path, dataset: str) -> None:
    """Reliability diagrams of a dataset: per strategy (and for VoC's verdicts) the share right in each confidence bin
    against the diagonal of perfect calibration, with the number of answers in each bin."""
    panels: list[tuple[str, Calibration]] = []
    for r in results:
        named = ((r.strategy, r.calibration), (f"{r.strategy} verdicts", r.verdict_calibration))
        panels += [(name, c) for name, c in named if c is not None]
    fig = _figure(3.0 * len(panels), 3.2)
    for k, (name, c) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        filled = [b for b in c.bins if b.count]
        width = c.bins[0].high - c.bins[0].low
        ax.bar([b.low for b in filled], [b.accuracy for b in filled], width, align="edge", edgecolor="black", linewidth=0.5)
        ax.plot([0, 1], [0, 1], color="grey", linestyle="dashed", linewidth=1)
        for b in filled:
            ax.text(b.low + width / 2, min(0.95, (b.accuracy or 0) + 0.02), str(b.count), ha="center", fontsize=7)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("P(correct) of the verification" if c.kind == "verdicts" else "confidence of the chosen option", fontsize=8)
        if k == 0:
            ax.set_ylabel("share correct", fontsize=8)
        ax.set_title(f"{dataset} / {name}\nECE {number(c.ece)}, N {c.n}", fontsize=9)
    fig.savefig(path)


def plot_coverage(results: Sequence[StrategyResult], path: Path, dataset: str) -> None:
    """Accuracy against coverage for a dataset: answering only the most confident X% of questions, per strategy."""
    fig = _figure(5.0, 3.6)
    ax = fig.add_subplot()
    for r in results:
        if r.calibration is not None and r.calibration.curve:
            ax.plot([100 * x for x, _ in r.calibration.curve], [100 * y for _, y in r.calibration.curve], label=r.strategy)
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_xlabel("coverage (%): the most confident answers kept")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{dataset}: accuracy against coverage", fontsize=10)
    ax.legend(fontsize=8)
    fig.savefig(path)


def plot_confusions(results: Sequence[StrategyResult], path: Path, dataset: str) -> None:
    """One confusion matrix per strategy for a dataset (rows gold, columns chosen)."""
    fig = _figure(3.2 * len(results), 3.2)
    names = option_names(dataset)
    for k, r in enumerate(results):
        ax = fig.add_subplot(1, len(results), k + 1)
        ax.imshow(r.confusion, cmap="Blues")
        ticks = [f"{lab} {names.get(lab, '')}".strip() for lab in r.labels]
        ax.set_xticks(range(len(ticks)), ticks, fontsize=8)
        ax.set_yticks(range(len(ticks)), ticks, fontsize=8)
        peak = max((max(row) for row in r.confusion), default=0)
        for i, row in enumerate(r.confusion):
            for j, count in enumerate(row):
                ax.text(j, i, str(count), ha="center", va="center", fontsize=8, color="white" if peak and count > peak / 2 else "black")
        ax.set_xlabel("chosen")
        if k == 0:
            ax.set_ylabel("gold")
        ax.set_title(f"{dataset} / {r.strategy} (acc {pct(r.accuracy)}%)", fontsize=9)
    fig.savefig(path)


# --- writing ------------------------------------------------------------------------------------------------------


def write_report(path: str | os.PathLike[str]) -> list[Path]:
    """Write results.json, report.md and the plots into a run folder; returns the files written."""
    folder = Path(path)
    results, summary = build_results(folder)
    pooled = [r for r in summary.results if "/" not in r.group]
    plots: list[str] = []
    if any(r.accuracy is not None for r in pooled):
        plot_accuracy(pooled, folder / ACCURACY_PLOT, str(results["run"].get("model") or ""))
        plots.append(ACCURACY_PLOT)
    subjects = [r for r in summary.results if "/" in r.group]
    for dataset in dict.fromkeys(r.group.split("/", 1)[0] for r in subjects):
        items = [r for r in subjects if r.group.split("/", 1)[0] == dataset]
        plot_accuracy(items, folder / subjects_plot(dataset), f"{dataset}: accuracy per subject")
        plots.append(subjects_plot(dataset))
    for dataset in dict.fromkeys(r.group for r in pooled):
        items = [r for r in pooled if r.group == dataset and r.n]
        if items:
            name = f"confusion_{slug(dataset)}.png"
            plot_confusions(items, folder / name, dataset)
            plots.append(name)
        calibrated = [r for r in items if r.calibration is not None]
        if calibrated:
            for template, plot in ((RELIABILITY_PLOT, plot_reliability), (COVERAGE_PLOT, plot_coverage)):
                name = template.format(slug(dataset))
                plot(calibrated, folder / name, dataset)
                plots.append(name)
    write_atomic(folder / RESULTS_FILE, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    write_atomic(folder / REPORT_FILE, render_markdown(results, summary, plots))
    return [folder / RESULTS_FILE, folder / REPORT_FILE, *(folder / p for p in plots)]


# --- several runs side by side ------------------------------------------------------------------------------------


def compare_runs(paths: Sequence[str | os.PathLike[str]]) -> str:
    """A markdown page putting runs side by side: accuracy per dataset and strategy, and for the same strategy on
    shared questions, each run against the first (paired difference and McNemar)."""
    runs = []
    for path in paths:
        folder, _info, records = load_run(path)
        results, summary = build_results(folder.path)
        runs.append((str(path), results, summary, records))
    lines = ["# Runs side by side", ""]
    for k, (name, results, _, _) in enumerate(runs):
        fp = results["run"].get("fingerprint") or {}
        questions = ", ".join(f"{d} {n}" for d, n in results["run"]["questions"].items())
        lines.append(
            f"- run {k + 1}: `{name}`: model `{results['run'].get('model')}`, engine {fp.get('engine')}, {questions}, "
            f"max_tokens {fp.get('params', {}).get('max_tokens')}, started {results['run'].get('started')}"
        )
    keys = list(dict.fromkeys((r.group, r.strategy) for _, _, s, _ in runs for r in s.results))
    lines += ["", "Accuracy in % [95% CI] (N answered).", ""]
    rows = []
    for group, strategy in keys:
        row: list[Any] = [group, strategy]
        for _, _, summary, _ in runs:
            r = summary.result(group, strategy)
            row.append("–" if r is None or r.accuracy is None else f"{pct(r.accuracy)} {ci_text(r.ci)} ({r.n})")
        rows.append(row)
    lines += table(["dataset", "strategy", *[f"run {k + 1}" for k in range(len(runs))]], rows)
    paired: list[tuple[str, str, int, PairedComparison]] = []
    base = {(r.dataset, r.strategy, r.question_id): r for r in runs[0][3] if r.ok}
    for k, (_, _, _, records) in enumerate(runs[1:], start=2):
        other = {(r.dataset, r.strategy, r.question_id): r for r in records if r.ok}
        for dataset, strategy in dict.fromkeys((d, s) for d, s, _ in other):
            shared = [key for key in other if key[:2] == (dataset, strategy) and key in base]
            if shared:
                paired.append(
                    (
                        dataset,
                        strategy,
                        k,
                        paired_comparison(
                            f"run {k}", "run 1", [other[q].correct is True for q in shared], [base[q].correct is True for q in shared]
                        ),
                    )
                )
    if paired:
        lines += ["", "Same strategy on the same questions: run k minus run 1 (points, 95% paired bootstrap CI, McNemar exact p).", ""]
        lines += table(
            ["dataset", "strategy", "runs", "N", "difference", "95% CI", "p (exact)"],
            [[d, s, f"{k} - 1", c.n, pct(c.difference), ci_text(c.ci), p_text(c.mcnemar.p_exact)] for d, s, k, c in paired],
        )
    return "\n".join(lines) + "\n"
