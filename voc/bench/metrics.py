"""Statistics of a benchmark: accuracy with bootstrap CIs, macro-F1, confusion matrices, position bias,
paired strategy comparisons (difference with CI, McNemar test), calibration (expected calibration error, Brier score,
reliability bins, accuracy against coverage), option-order robustness (identity, ensemble and CircularEval accuracy,
flip rate), self-consistency (average, majority and single-path accuracy, agreement) and throughput.

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
from voc.selfconsistency import agreement

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


def under_final_rule(records: Sequence[ResultRecord], rule: str) -> list[ResultRecord] | None:
    """VoC's records as the final rule `rule` answers them, from the rounds they stored: label, probabilities and
    `correct` recomputed, `seconds` the time of the rounds the rule needs. None when a record that was answered lacks
    a round the rule needs (a `verdicts` run has no choice round). `calibrated_verdicts` takes its position means over
    each record's chunk (the questions of one strategy call, as in the run). Ties go to the earlier option."""
    from voc.engines.base import softmax
    from voc.strategies.voc import combine, position_prior, rule_rounds

    def verdicts(r: ResultRecord) -> list[float | None]:
        return [r.verifications[lab].verdict_probability if r.verifications.get(lab) else None for lab in r.labels]

    needs = rule_rounds(rule)
    answered = [r for r in records if r.ok]
    def lacks(r: ResultRecord) -> bool:
        return ("verdict" in needs and None in verdicts(r)) or ("choose" in needs and set(r.choice_logprobs) != set(r.labels))

    if any(lacks(r) for r in answered):
        return None
    chunks: dict[int, list[list[float | None]]] = {}
    for r in answered:
        chunks.setdefault(r.chunk, []).append(verdicts(r))
    priors = {chunk: position_prior(batch) for chunk, batch in chunks.items()} if "verdict" in needs else {}
    result = []
    for r in records:
        if not r.ok:
            result.append(r)
            continue
        choice = softmax([r.choice_logprobs[lab] for lab in r.labels]) if "choose" in needs else None
        probabilities = dict(zip(r.labels, combine(rule, choice, verdicts(r), priors.get(r.chunk)), strict=True))
        label = max(r.labels, key=lambda lab: probabilities[lab])  # the first of equal maxima
        seconds = sum(r.round_seconds.get(name, 0.0) for name in needs) if r.round_seconds else r.seconds
        correct = label == r.gold if r.gold is not None else None
        result.append(r.model_copy(update={"label": label, "probabilities": probabilities, "correct": correct, "seconds": seconds}))
    return result


def final_rule_accuracy(records: Sequence[ResultRecord]) -> dict[str, float | None]:
    """Accuracy of each VoC final rule recomputed from the same records (those that stored both the choice round's
    label scores and every verdict probability, i.e. runs with the `combined` rule): how the rules compare without
    generating again (`under_final_rule`)."""
    from voc.strategies.voc import FINAL_RULES

    usable = [r for r in records if r.ok and r.gold is not None and under_final_rule([r], "combined") is not None]
    return {rule: accuracy([bool(r.correct) for r in under_final_rule(usable, rule) or []]) for rule in FINAL_RULES}


# --- calibration and selective answering ---------------------------------------------------------------------

N_BINS = 10


@dataclass
class ReliabilityBin:
    """One equal-width confidence bin: [low, high) (the last bin includes 1)."""

    low: float
    high: float
    count: int
    confidence: float | None  # mean confidence in the bin; None when it is empty
    accuracy: float | None  # share of outcomes that are true in the bin


def bin_index(probability: float, bins: int = N_BINS) -> int:
    """The equal-width bin of a probability: floor(p * bins), with 1.0 in the last bin (rounded first, so that 0.3 falls
    in [0.3, 0.4) despite floating point)."""
    if not 0.0 <= probability <= 1.0 or math.isnan(probability):
        raise ValueError(f"a probability must lie in [0, 1], got {probability}")
    return min(math.floor(round(probability * bins, 9)), bins - 1)


def reliability_bins(probabilities: Sequence[float], outcomes: Sequence[bool], bins: int = N_BINS) -> list[ReliabilityBin]:
    """Equal-width bins of `probabilities` (the confidence that each outcome is true), with the mean probability and the
    share of true outcomes in each: the points of a reliability diagram."""
    if len(probabilities) != len(outcomes):
        raise ValueError(f"{len(probabilities)} probabilities but {len(outcomes)} outcomes")
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    members: list[list[int]] = [[] for _ in range(bins)]
    for i, p in enumerate(probabilities):
        members[bin_index(p, bins)].append(i)
    result = []
    for b, items in enumerate(members):
        count = len(items)
        result.append(
            ReliabilityBin(
                b / bins,
                (b + 1) / bins,
                count,
                sum(probabilities[i] for i in items) / count if count else None,
                sum(1 for i in items if outcomes[i]) / count if count else None,
            )
        )
    return result


def expected_calibration_error(probabilities: Sequence[float], outcomes: Sequence[bool], bins: int = N_BINS) -> float | None:
    """ECE with equal-width bins: sum over bins of (bin size / N) * |share of true outcomes - mean probability|.

    For an answer, `probabilities` are the confidences of the chosen options and `outcomes` whether each was right;
    for VoC's verdicts, each verification's P(correct) and whether its option is the gold one. None for no data.
    """
    if not probabilities:
        return None
    total = len(probabilities)
    return sum(b.count / total * abs(b.accuracy - b.confidence) for b in reliability_bins(probabilities, outcomes, bins) if b.count)  # type: ignore[operator]


def brier_score(probabilities: Sequence[Sequence[float]], gold: Sequence[int]) -> float | None:
    """Multi-class Brier score: per question the sum over options of (p - onehot(gold))^2, averaged over questions
    (0 is perfect, 2 the worst). `probabilities[i]` is question i's distribution over its options, `gold[i]` the gold
    option's index. For binary events (VoC's verdicts) pass [p, 1 - p] and index 0 for true, 1 for false, or use
    `binary_brier_score`. None for no questions."""
    if len(probabilities) != len(gold):
        raise ValueError(f"{len(probabilities)} distributions but {len(gold)} gold indices")
    if not probabilities:
        return None
    return sum(sum((p - (k == g)) ** 2 for k, p in enumerate(ps)) for ps, g in zip(probabilities, gold, strict=True)) / len(gold)


def binary_brier_score(probabilities: Sequence[float], outcomes: Sequence[bool]) -> float | None:
    """Brier score of probabilities of single events: the mean of (p - outcome)^2 (0 perfect, 1 worst)."""
    if len(probabilities) != len(outcomes):
        raise ValueError(f"{len(probabilities)} probabilities but {len(outcomes)} outcomes")
    return sum((p - float(o)) ** 2 for p, o in zip(probabilities, outcomes, strict=True)) / len(outcomes) if outcomes else None


def coverage_curve(confidences: Sequence[float], correct: Sequence[bool]) -> list[tuple[float, float]]:
    """Selective answering: answer only the most confident questions. For every m = 1..N, (m / N, accuracy of the m most
    confident answers); ties in confidence keep the questions' order."""
    if len(confidences) != len(correct):
        raise ValueError(f"{len(confidences)} confidences but {len(correct)} outcomes")
    order = sorted(range(len(confidences)), key=lambda i: -confidences[i])
    curve, right = [], 0
    for m, i in enumerate(order, start=1):
        right += bool(correct[i])
        curve.append((m / len(order), right / m))
    return curve


def selective_accuracy(confidences: Sequence[float], correct: Sequence[bool], coverage: float) -> float | None:
    """Accuracy of the ceil(coverage * N) most confident answers (at least one); None for no answers."""
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage must lie in (0, 1], got {coverage}")
    curve = coverage_curve(confidences, correct)
    if not curve:
        return None
    return curve[max(1, math.ceil(round(coverage * len(curve), 9))) - 1][1]


COVERAGES = (1.0, 0.8, 0.5)  # the report's accuracy-at-coverage columns


@dataclass
class Calibration:
    """Calibration of one strategy on one group: of the chosen option's confidence, or (kind "verdicts") of VoC's
    verdict probabilities against "this option is the gold one"."""

    kind: str  # "answer" or "verdicts"
    n: int  # answers (or verifications) counted
    ece: float | None
    brier: float | None  # multi-class for answers, binary for verdicts
    bins: list[ReliabilityBin]
    selective: dict[str, float | None] = field(default_factory=dict)  # coverage (as text, e.g. "0.8") -> accuracy
    curve: list[tuple[float, float]] = field(default_factory=list)  # (coverage, accuracy) for every m most confident


def answer_calibration(records: Sequence[ResultRecord], bins: int = N_BINS) -> Calibration | None:
    """Calibration of the answers: confidence = the final probability of the chosen option; Brier over all options.
    Records without a gold label or without probabilities for every option are left out."""
    usable = [r for r in records if r.ok and r.gold is not None and r.label is not None and set(r.probabilities) >= set(r.labels)]
    if not usable:
        return None
    confidences = [r.probabilities[r.label] for r in usable]  # type: ignore[index]
    correct = [r.label == r.gold for r in usable]
    return Calibration(
        kind="answer",
        n=len(usable),
        ece=expected_calibration_error(confidences, correct, bins),
        brier=brier_score([[r.probabilities[lab] for lab in r.labels] for r in usable], [r.labels.index(r.gold) for r in usable]),  # type: ignore[arg-type]
        bins=reliability_bins(confidences, correct, bins),
        selective={str(c): selective_accuracy(confidences, correct, c) for c in COVERAGES},
        curve=coverage_curve(confidences, correct),
    )


def verdict_calibration(records: Sequence[ResultRecord], bins: int = N_BINS) -> Calibration | None:
    """Calibration of VoC's verdicts: each verification's P(correct) against whether its option is the gold one
    (records whose final rule ran no verdict round have no verdict probabilities and are left out)."""
    pairs = [
        (v.verdict_probability, label == r.gold)
        for r in records
        if r.ok and r.gold is not None
        for label, v in r.verifications.items()
        if v.verdict_probability is not None
    ]
    if not pairs:
        return None
    probabilities, outcomes = [p for p, _ in pairs], [o for _, o in pairs]
    return Calibration(
        kind="verdicts",
        n=len(pairs),
        ece=expected_calibration_error(probabilities, outcomes, bins),
        brier=binary_brier_score(probabilities, outcomes),
        bins=reliability_bins(probabilities, outcomes, bins),
    )


# --- option-order robustness ------------------------------------------------------------------------------------


@dataclass
class OrderRobustness:
    """How one strategy's answers change when the options are reordered (records of a `--permutations` run)."""

    n: int  # questions answered under several orderings
    orderings: int  # orderings per question (the most; a question with n options has at most n!)
    identity_accuracy: float | None  # the options in their given order
    ensemble_accuracy: float | None  # the mean of the orderings' probabilities
    circular_accuracy: float | None  # CircularEval: right under every ordering
    flip_rate: float | None  # share of questions whose chosen original option is not the same under every ordering
    ensemble_vs_identity: PairedComparison


def order_robustness(records: Sequence[ResultRecord], seed: int = 0) -> OrderRobustness | None:
    """Identity, ensemble and CircularEval accuracy and the flip rate, from the orderings each record keeps (labels there
    are original labels); None when no record was asked under more than one ordering."""
    usable = [r for r in records if r.ok and r.gold is not None and len(r.orderings) > 1]
    if not usable:
        return None
    identity = [r.orderings[0].label == r.gold for r in usable]
    ensemble = [r.label == r.gold for r in usable]
    return OrderRobustness(
        n=len(usable),
        orderings=max(len(r.orderings) for r in usable),
        identity_accuracy=accuracy(identity),
        ensemble_accuracy=accuracy(ensemble),
        circular_accuracy=accuracy([all(o.label == r.gold for o in r.orderings) for r in usable]),
        flip_rate=flip_rate([[o.label for o in r.orderings] for r in usable]),
        ensemble_vs_identity=paired_comparison("ensemble", "identity", ensemble, identity, seed=seed),
    )


def flip_rate(chosen: Sequence[Sequence[str]]) -> float | None:
    """Share of questions whose chosen option (original labels, one per ordering) is not the same under all orderings."""
    return sum(1 for labels in chosen if len(set(labels)) > 1) / len(chosen) if chosen else None


# --- self-consistency -------------------------------------------------------------------------------------------


@dataclass
class SelfConsistency:
    """How one strategy's answers from several sampled paths compare (records of a `--samples N` run)."""

    n: int  # questions answered from several paths
    samples: int  # paths per question (the most; times the orderings when permuted)
    average_accuracy: float | None  # the answer: the mean of the paths' probabilities
    majority_accuracy: float | None  # the majority vote of the paths' choices
    single_accuracy: float | None  # the first path alone (what one sampled path gives)
    agreement: float | None  # mean share of a question's paths that chose its majority option
    majority_vs_average: PairedComparison


def path_choices(record: ResultRecord) -> list[str]:
    """The options a record's paths chose: every ordering's paths when permuted (original labels), else its own."""
    if any(o.samples for o in record.orderings):
        return [s.label for o in record.orderings for s in o.samples]
    return [s.label for s in record.samples]


def self_consistency(records: Sequence[ResultRecord], seed: int = 0) -> SelfConsistency | None:
    """Average, majority and single-path accuracy and the paths' agreement, from the paths each record keeps; None when
    no record has several paths."""
    usable = [r for r in records if r.ok and r.gold is not None and r.majority is not None and r.samples]
    if not usable:
        return None
    average = [r.label == r.gold for r in usable]
    majority = [r.majority == r.gold for r in usable]
    choices = [path_choices(r) for r in usable]
    return SelfConsistency(
        n=len(usable),
        samples=max(len(c) for c in choices),
        average_accuracy=accuracy(average),
        majority_accuracy=accuracy(majority),
        single_accuracy=accuracy([r.samples[0].label == r.gold for r in usable]),
        agreement=sum(agreement(c, r.majority) for c, r in zip(choices, usable, strict=True) if r.majority) / len(usable),
        majority_vs_average=paired_comparison("majority", "average", majority, average, seed=seed),
    )


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
    calibration: Calibration | None = None  # of the chosen option's confidence
    verdict_calibration: Calibration | None = None  # VoC's verdict probabilities, each against "this option is gold"
    order: OrderRobustness | None = None  # --permutations runs only
    consistency: SelfConsistency | None = None  # --samples runs only (cot, voc)

    @property
    def questions_per_second(self) -> float | None:
        return (self.n + self.errors) / self.wall_seconds if self.wall_seconds > 0 else None

    def to_dict(self) -> dict[str, object]:
        """As in results.json: the coverage curve thinned to every 5% of coverage."""
        data = asdict(self)
        data["questions_per_second"] = self.questions_per_second
        if self.calibration is not None:
            data["calibration"]["curve"] = thin_curve(self.calibration.curve)  # type: ignore[index]
        if self.order is not None:
            data["order"]["ensemble_vs_identity"] = comparison_to_dict(self.order.ensemble_vs_identity)  # type: ignore[index]
        if self.consistency is not None:
            data["consistency"]["majority_vs_average"] = comparison_to_dict(self.consistency.majority_vs_average)  # type: ignore[index]
        return data


def thin_curve(curve: Sequence[tuple[float, float]], step: float = 0.05) -> list[tuple[float, float]]:
    """The points of a coverage curve at the first coverage reaching each multiple of `step` (and the last point)."""
    thinned: list[tuple[float, float]] = []
    target = step
    for coverage, value in curve:
        if coverage + 1e-9 >= target or coverage == curve[-1][0]:
            thinned.append((coverage, value))
            while target <= coverage + 1e-9:
                target += step
    return thinned


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
        calibration=answer_calibration(records),
        verdict_calibration=verdict_calibration(records),
        order=order_robustness(records, seed=seed),
        consistency=self_consistency(records, seed=seed),
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
