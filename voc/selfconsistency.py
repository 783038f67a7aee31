"""Self-consistency: answer from several sampled paths instead of one.

A path is one sampled reasoning (`cot`) or one sampled verification of every option (`voc`), followed by the same
scoring of the option labels as with one path. The paths' label probabilities are averaged: the most probable option
of that mean is the answer. The majority vote of the paths' own choices is reported beside it (`Answer.majority`):
the classic self-consistency rule, which throws away how sure each path was.

`direct` generates nothing (it scores the labels right after the question), so N paths would be N identical copies of
its exact scores: it ignores the number of samples (see README).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from voc.types import whole_number


def check_samples(n: object) -> int:
    """`n` as a number of paths; a one-line error unless it is an int of at least 1."""
    return whole_number("samples", n, 1, "paths", "at least 1 (1 is one greedy or sampled path, as without self-consistency)")


def chosen(labels: Sequence[str], probabilities: Mapping[str, float]) -> str:
    """The most probable label; ties go to the earlier option."""
    return max(labels, key=lambda label: probabilities[label])


def mean_probabilities(labels: Sequence[str], paths: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The mean over paths of each label's probability."""
    if not paths:
        raise ValueError("no paths to average")
    return {label: sum(p[label] for p in paths) / len(paths) for label in labels}


def majority_vote(labels: Sequence[str], choices: Sequence[str], probabilities: Mapping[str, float]) -> str:
    """The option most paths chose. A tie goes to the tied option with the higher mean probability (`probabilities`),
    then to the earlier option."""
    if not choices:
        raise ValueError("no paths to vote")
    votes = Counter(choices)
    return max(labels, key=lambda label: (votes[label], probabilities[label], -labels.index(label)))


def agreement(choices: Sequence[str], winner: str) -> float:
    """Share of the paths that chose `winner`."""
    return sum(1 for c in choices if c == winner) / len(choices) if choices else 0.0
