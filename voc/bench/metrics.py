"""Statistics of a benchmark: accuracy with bootstrap CIs, macro-F1, confusion matrices, position bias,
paired strategy comparisons (difference with CI, McNemar test) and throughput.

Plain functions over lists; `summarise` turns a run's records into the numbers the report shows.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from voc.bench.records import ResultRecord

N_BOOTSTRAP = 2000
CONFIDENCE = 0.95


# --- single statistics ----------------------------------------------------------------------------------------


def accuracy(correct: Sequence[bool]) -> float | None:
    return sum(correct) / len(correct) if correct else None


def bootstrap_ci(
    values: Sequence[float], n_resamples: int = N_BOOTSTRAP, seed: int = 0, confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """Percentile bootstrap confidence interval of the mean of `values` (None for no values)."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return None
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(n_resamples, data.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def macro_f1(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str] | None = None) -> float | None:
    """Unweighted mean over classes of F1 (precision or recall of a class with no predictions / no gold counts as 0).

    `labels`: the classes to average over; default every label seen in gold or predicted.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    if not gold:
        return None
    classes = list(labels) if labels is not None else sorted(set(gold) | set(predicted))
    scores = []
    for label in classes:
        tp = sum(1 for g, p in zip(gold, predicted, strict=True) if g == label and p == label)
        fp = sum(1 for g, p in zip(gold, predicted, strict=True) if g != label and p == label)
        fn = sum(1 for g, p in zip(gold, predicted, strict=True) if g == label and p != label)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        scores.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return sum(scores) / len(scores)


def confusion_matrix(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> list[list[int]]:
    """matrix[i][j] = number of questions with gold labels[i] answered labels[j]."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for g, p in zip(gold, predicted, strict=True):
        matrix[index[g]][index[p]] += 1
    return matrix


@dataclass
class McNemar:
    """McNemar's test on paired outcomes. `b`: first right, second wrong; `c`: first wrong, second right."""

    b: int
    c: int
    statistic: float  # chi-square with continuity correction
    p_chi2: float
    p_exact: float  # two-sided exact binomial test on the discordant pairs

    @property
    def p_value(self) -> float:
        """The exact p-value for few discordant pairs (b + c < 25), else the chi-square one."""
        return self.p_exact if self.b + self.c < 25 else self.p_chi2


def mcnemar(b: int, c: int) -> McNemar:
    """McNemar's test for the discordant counts `b` and `c` (both tests are reported)."""
    n = b + c
    if n == 0:
        return McNemar(b, c, 0.0, 1.0, 1.0)
    statistic = (abs(b - c) - 1) ** 2 / n if abs(b - c) >= 1 else 0.0
    p_chi2 = math.erfc(math.sqrt(statistic / 2))  # survival function of chi-square with 1 degree of freedom
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return McNemar(b, c, statistic, p_chi2, min(1.0, 2 * tail))


@dataclass
class PairedComparison:
    """Strategy `first` minus strategy `second` on the questions both answered."""

    first: str
    second: str
    n: int
    accuracy_first: float | None
    accuracy_second: float | None
    difference: float | None
    ci: tuple[float, float] | None
    mcnemar: McNemar


def paired_comparison(
    first: str, second: str, correct_first: Sequence[bool], correct_second: Sequence[bool], seed: int = 0
) -> PairedComparison:
    """Paired accuracy difference (first - second) with a bootstrap CI over questions, and McNemar's test."""
    if len(correct_first) != len(correct_second):
        raise ValueError("paired outcomes must have the same length")
    diffs = [int(a) - int(b) for a, b in zip(correct_first, correct_second, strict=True)]
    b = sum(1 for a, s in zip(correct_first, correct_second, strict=True) if a and not s)
    c = sum(1 for a, s in zip(correct_first, correct_second, strict=True) if s and not a)
    return PairedComparison(
        first,
        second,
        len(diffs),
        accuracy(correct_first),
        accuracy(correct_second),
        sum(diffs) / len(diffs) if diffs else None,
        bootstrap_ci(diffs, seed=seed),
        mcnemar(b, c),
    )


def position_distribution(positions: Sequence[int], n_options: int) -> list[float]:
    """Share of answers at each option position (0 = first option)."""
    counts = Counter(positions)
    total = len(positions)
    return [counts.get(i, 0) / total if total else 0.0 for i in range(n_options)]


def final_rule_accuracy(records: Sequence[ResultRecord]) -> dict[str, float | None]:
    """Accuracy of each VoC final rule recomputed from the same records (those that stored both the choice round's
    label scores and every verdict probability, i.e. runs with the `combined` rule): how the rules compare without
    generating again. Ties go to the earlier option, as in the strategy."""
    from voc.engines.base import softmax
    from voc.strategies.voc import FINAL_RULES, combine

    usable = [
        r for r in records
        if r.ok and r.gold is not None and set(r.choice_logprobs) == set(r.labels)
        and all(r.verifications.get(lab) and r.verifications[lab].verdict_probability is not None for lab in r.labels)
    ]  # fmt: skip
    result: dict[str, float | None] = {}
    for rule in FINAL_RULES:
        correct = []
        for r in usable:
            choice = softmax([r.choice_logprobs[lab] for lab in r.labels])
            probabilities = combine(rule, choice, [r.verifications[lab].verdict_probability for lab in r.labels])
            correct.append(r.labels[probabilities.index(max(probabilities))] == r.gold)
        result[rule] = accuracy(correct)
    return result


# --- a run's summary --------------------------------------------------------------------------------------------


@dataclass
class StrategyResult:
    """The numbers of one strategy on one group of questions (a dataset, or one MMLU subject)."""

    group: str
    strategy: str
    n: int  # questions answered (errors excluded)
    errors: int
    correct: int
    accuracy: float | None
    ci: tuple[float, float] | None
    macro_f1: float | None
    labels: list[str]
    confusion: list[list[int]]
    answer_positions: list[float]  # share of chosen answers at each option position
    gold_positions: list[float]  # share of gold answers at each position, for comparison
    context_truncated: int
    wall_seconds: float
    round_seconds: dict[str, float]
    prompt_tokens: int
    completion_tokens: int
    error_messages: list[str] = field(default_factory=list)

    @property
    def questions_per_second(self) -> float | None:
        return (self.n + self.errors) / self.wall_seconds if self.wall_seconds > 0 else None

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["questions_per_second"] = self.questions_per_second
        return data


def strategy_result(group: str, strategy: str, records: Sequence[ResultRecord], seed: int = 0) -> StrategyResult:
    answered = [r for r in records if r.ok and r.gold is not None]
    failed = [r for r in records if not r.ok]
    labels: list[str] = []
    for r in records:
        labels.extend(lab for lab in r.labels if lab not in labels)
    gold = [r.gold for r in answered if r.gold is not None]
    chosen = [r.label for r in answered if r.label is not None]
    correct = [g == p for g, p in zip(gold, chosen, strict=True)]
    n_positions = max((len(r.labels) for r in records), default=0)
    rounds: Counter[str] = Counter()
    for r in records:
        rounds.update(r.round_seconds)
    return StrategyResult(
        group=group,
        strategy=strategy,
        n=len(answered),
        errors=len(failed),
        correct=sum(correct),
        accuracy=accuracy(correct),
        ci=bootstrap_ci([float(c) for c in correct], seed=seed),
        macro_f1=macro_f1(gold, chosen),
        labels=labels,
        confusion=confusion_matrix(gold, chosen, labels),
        answer_positions=position_distribution([r.labels.index(r.label) for r in answered if r.label in r.labels], n_positions),
        gold_positions=position_distribution([r.labels.index(r.gold) for r in answered if r.gold in r.labels], n_positions),
        context_truncated=sum(1 for r in records if r.context_truncated),
        wall_seconds=sum(r.seconds for r in records),
        round_seconds=dict(rounds),
        prompt_tokens=sum(r.prompt_tokens for r in records),
        completion_tokens=sum(r.completion_tokens for r in records),
        error_messages=sorted({r.error for r in failed if r.error})[:5],
    )


def group_records(records: Sequence[ResultRecord]) -> dict[str, list[ResultRecord]]:
    """Records by group: each dataset pooled, and for datasets with subjects (MMLU) also 'dataset/subject'."""
    groups: dict[str, list[ResultRecord]] = {}
    for r in records:
        groups.setdefault(r.dataset, []).append(r)
    for r in records:
        if r.subject:
            groups.setdefault(f"{r.dataset}/{r.subject}", []).append(r)
    return groups


@dataclass
class RunSummary:
    results: list[StrategyResult]
    comparisons: dict[str, list[PairedComparison]]  # group -> pairwise comparisons

    def result(self, group: str, strategy: str) -> StrategyResult | None:
        return next((r for r in self.results if r.group == group and r.strategy == strategy), None)


def summarise(records: Sequence[ResultRecord], strategies: Sequence[str] | None = None, seed: int = 0) -> RunSummary:
    """Metrics of every (group, strategy), and every strategy pair compared on the questions both answered."""
    groups = group_records(records)
    order = list(strategies) if strategies else []
    for r in records:
        if r.strategy not in order:
            order.append(r.strategy)
    results, comparisons = [], {}
    for group, items in groups.items():
        by_strategy: dict[str, dict[str, ResultRecord]] = {}
        for r in items:
            by_strategy.setdefault(r.strategy, {})[r.question_id] = r
        present = [s for s in order if s in by_strategy]
        for s in present:
            results.append(strategy_result(group, s, list(by_strategy[s].values()), seed=seed))
        pairs = []
        for a, b in itertools.combinations(present, 2):
            shared = [q for q, r in by_strategy[a].items() if r.ok and r.gold is not None and q in by_strategy[b] and by_strategy[b][q].ok]
            pairs.append(
                paired_comparison(
                    a,
                    b,
                    [by_strategy[a][q].label == by_strategy[a][q].gold for q in shared],
                    [by_strategy[b][q].label == by_strategy[b][q].gold for q in shared],
                    seed=seed,
                )
            )
        comparisons[group] = pairs
    return RunSummary(results, comparisons)


def comparison_to_dict(comparison: PairedComparison) -> dict[str, object]:
    data = asdict(comparison)
    data["mcnemar"]["p_value"] = comparison.mcnemar.p_value
    return data
