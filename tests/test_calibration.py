"""Calibration and selective answering: ECE, Brier, reliability bins and accuracy against coverage on hand-computed
examples, from records (answers and VoC's verdicts); option-order statistics from hand-made records."""

from __future__ import annotations

import pytest

from voc.bench import ResultRecord, metrics
from voc.bench.records import VerificationRecord
from voc.types import OrderingAnswer


def test_bins_are_equal_width_and_robust_to_floating_point() -> None:
    assert [metrics.bin_index(p) for p in (0.0, 0.05, 0.1, 0.3, 0.7, 0.999, 1.0)] == [0, 0, 1, 3, 7, 9, 9]
    assert [metrics.bin_index(p, bins=5) for p in (0.19, 0.2, 0.6, 1.0)] == [0, 1, 3, 4]
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        metrics.bin_index(1.2)


def test_expected_calibration_error_matches_a_hand_computation() -> None:
    confidences = [0.91, 0.97, 0.55, 0.52, 0.3]
    correct = [True, True, False, True, False]
    # bins of width 0.2: [0.8, 1.0] holds 0.91, 0.97 (mean 0.94, both right: gap 0.06); [0.4, 0.6) holds 0.55, 0.52
    # (mean 0.535, one right: gap 0.035); [0.2, 0.4) holds 0.3 (wrong: gap 0.3). ECE = 2/5 * 0.06 + 2/5 * 0.035 + 1/5 * 0.3
    assert metrics.expected_calibration_error(confidences, correct, bins=5) == pytest.approx(0.098)
    assert metrics.expected_calibration_error(confidences, correct) == pytest.approx(0.098)  # 10 bins group them alike
    bins = metrics.reliability_bins(confidences, correct, bins=5)
    assert [b.count for b in bins] == [0, 1, 2, 0, 2]
    assert bins[4].confidence == pytest.approx(0.94) and bins[4].accuracy == 1.0 and bins[2].accuracy == 0.5
    assert bins[0].confidence is None and (bins[1].low, bins[1].high) == (0.2, 0.4)
    assert metrics.expected_calibration_error([1.0, 1.0], [True, True]) == 0.0
    assert metrics.expected_calibration_error([], []) is None


def test_brier_score_matches_a_hand_computation() -> None:
    # question 1: gold first, (0.7-1)^2 + 0.2^2 + 0.1^2 = 0.14; question 2: gold second, 0.5^2 + 0.5^2 + 0 = 0.5
    assert metrics.brier_score([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0]], [0, 1]) == pytest.approx(0.32)
    assert metrics.brier_score([[1.0, 0.0]], [1]) == pytest.approx(2.0)  # sure and wrong: the worst
    assert metrics.binary_brier_score([0.9, 0.2], [True, True]) == pytest.approx((0.01 + 0.64) / 2)
    assert metrics.brier_score([], []) is None


def test_accuracy_against_coverage_answers_the_most_confident_first() -> None:
    confidences, correct = [0.9, 0.6, 0.8, 0.4], [True, False, True, False]
    assert metrics.coverage_curve(confidences, correct) == [(0.25, 1.0), (0.5, 1.0), (0.75, pytest.approx(2 / 3)), (1.0, 0.5)]
    assert metrics.selective_accuracy(confidences, correct, 0.5) == 1.0
    assert metrics.selective_accuracy(confidences, correct, 0.8) == 0.5  # ceil(3.2) = 4 answers
    assert metrics.selective_accuracy(confidences, correct, 0.1) == 1.0  # at least one
    curve = [(i / 40, 1.0) for i in range(1, 41)]
    assert [c for c, _ in metrics.thin_curve(curve)] == pytest.approx([i / 20 for i in range(1, 21)])


def record(qid: str, label: str, probabilities: dict[str, float], gold: str = "A", **fields: object) -> ResultRecord:
    return ResultRecord(
        question_id=qid,
        dataset="toy",
        strategy="voc",
        labels=list(probabilities),
        gold=gold,
        label=label,
        probabilities=probabilities,
        **fields,
    )


def test_calibration_from_records_of_answers_and_of_voc_verdicts() -> None:
    records = [
        record("q1", "A", {"A": 0.7, "B": 0.2, "C": 0.1}),
        record("q2", "B", {"A": 0.4, "B": 0.6, "C": 0.0}),
        record("q3", "A", {"A": 0.9, "B": 0.1, "C": 0.0}, gold=None),  # no gold: left out
    ]
    records[0].verifications = {
        "A": VerificationRecord(text="", verdict_probability=0.8),
        "B": VerificationRecord(text="", verdict_probability=0.3),
    }
    records[1].verifications = {"A": VerificationRecord(text="", verdict_probability=0.6), "B": VerificationRecord(text="")}
    result = metrics.answer_calibration(records)
    assert result is not None and result.n == 2
    # confidences 0.7 (right) and 0.6 (wrong), bins 7 and 6: ECE = (0.3 + 0.6) / 2
    assert result.ece == pytest.approx(0.45)
    assert result.brier == pytest.approx((0.09 + 0.04 + 0.01 + 0.36 + 0.36 + 0.0) / 2)
    assert result.selective == {"1.0": 0.5, "0.8": 0.5, "0.5": 1.0}
    verdicts = metrics.verdict_calibration(records)
    # (0.8, A is gold), (0.3, B is not), (0.6, A is gold); B of q2 ran no verdict: bins 8, 3, 6 -> (0.2 + 0.3 + 0.4) / 3
    assert verdicts is not None and verdicts.n == 3 and verdicts.ece == pytest.approx(0.3)
    assert verdicts.brier == pytest.approx((0.04 + 0.09 + 0.16) / 3)
    summary = metrics.summarise(records).result("toy", "voc")
    assert summary is not None and summary.calibration == result and summary.order is None
    assert summary.to_dict()["verdict_calibration"]["ece"] == pytest.approx(0.3)  # type: ignore[index]


def test_order_robustness_from_records() -> None:
    def orders(*labels: str) -> list[OrderingAnswer]:
        return [OrderingAnswer(order=[0, 1], label=lab, probabilities={"A": 0.5, "B": 0.5}) for lab in labels]

    records = [
        record("q1", "A", {"A": 0.6, "B": 0.4}, orderings=orders("A", "A")),  # right every time
        record("q2", "A", {"A": 0.6, "B": 0.4}, orderings=orders("B", "A")),  # flips; the ensemble is right, identity wrong
        record("q3", "B", {"A": 0.4, "B": 0.6}, orderings=orders("A", "B")),  # flips; identity right, ensemble wrong
        record("q4", "B", {"A": 0.4, "B": 0.6}, orderings=orders("B", "B")),  # wrong every time
    ]
    order = metrics.order_robustness(records)
    assert order is not None and (order.n, order.orderings) == (4, 2)
    assert (order.identity_accuracy, order.ensemble_accuracy, order.circular_accuracy, order.flip_rate) == (0.5, 0.5, 0.25, 0.5)
    assert (order.ensemble_vs_identity.mcnemar.b, order.ensemble_vs_identity.mcnemar.c) == (1, 1)
    assert metrics.order_robustness(records[:0]) is None
