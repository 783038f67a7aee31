"""Option-order permutations: ask each question under several orderings of its options, map every ordering's answer
back to the original options, and average them (the ensemble answer).

An ordering is a tuple `order` of original option indices by position: position j shows original option `order[j]`.
Labels stay with positions: the permuted question labels its options with the original labels in their original
sequence (A, B, C, ... or whatever the question uses), so the option texts move and the label letters are re-assigned
by position. Answers are mapped back by option identity (the index), never by text, since two options may read alike.

Which orderings: the identity first, then the cyclic shifts (with K = the number of options every option is shown once
at every position, as in CircularEval), then seeded shuffles not used yet. A question with n options has n! orderings;
asking for more asks each of them once.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from voc.selfconsistency import majority_vote
from voc.types import Answer, OrderingAnswer, Question, SampleAnswer, whole_number

T = TypeVar("T")
Order = tuple[int, ...]


def check_permutations(k: object) -> int:
    """`k` as a number of orderings; a one-line error unless it is an int of at least 1."""
    return whole_number("permutations", k, 1, "orderings", "at least 1 (1 asks each question in its given order only)")


def orderings(n: int, k: int, seed: int = 0) -> list[Order]:
    """K orderings of n options: the identity, the cyclic shifts (position j shows original option (j + s) % n), then
    shuffles drawn with `seed`, all distinct; at most n! of them."""
    check_permutations(k)
    if n < 1:
        raise ValueError(f"a question needs options to reorder, got {n}")
    k = min(k, math.factorial(n)) if n < 13 else k  # 13! is beyond any K anyone asks for
    result: list[Order] = [tuple((j + s) % n for j in range(n)) for s in range(min(k, n))]
    seen = set(result)
    rng = random.Random(seed)
    while len(result) < k:
        order = list(range(n))
        rng.shuffle(order)
        if tuple(order) not in seen:
            seen.add(tuple(order))
            result.append(tuple(order))
    return result


def _checked(question: Question, order: Sequence[int]) -> Order:
    if sorted(order) != list(range(len(question.options))):
        raise ValueError(f"ordering {list(order)} is not a permutation of the {len(question.options)} options of question {question.id}")
    return tuple(order)


def permute(question: Question, order: Sequence[int]) -> Question:
    """The question with its options shown in `order`: position j holds original option order[j]'s text under the label
    of position j. The gold label moves with its option; id, context and metadata are kept. The identity returns
    the question itself."""
    order = _checked(question, order)
    if order == tuple(range(len(order))):
        return question
    labels = question.labels
    options = {labels[j]: question.options[labels[i]] for j, i in enumerate(order)}
    gold = None if question.gold is None else labels[order.index(labels.index(question.gold))]
    return Question(
        question=question.question, options=options, context=question.context, gold=gold, id=question.id, metadata=question.metadata
    )


def original_label(question: Question, order: Sequence[int], label: str) -> str:
    """The original label of the option the permuted question shows under `label`."""
    labels = question.labels
    return labels[order[labels.index(label)]]


def map_back(question: Question, order: Sequence[int], values: Mapping[str, T]) -> dict[str, T]:
    """Per-label values of the permuted question (e.g. its probabilities), keyed by the original labels in their order."""
    order = _checked(question, order)
    labels = question.labels
    by_original = {labels[i]: values[labels[j]] for j, i in enumerate(order)}
    return {label: by_original[label] for label in labels}


def ensemble(question: Question, orders: Sequence[Sequence[int]], answers: Sequence[Answer]) -> Answer:
    """One answer from the answers to each ordering of `question` (the first ordering must be the identity): the mean of
    the probabilities mapped back to the original options; the most probable wins (ties go to the earlier option).
    Each ordering's chosen original label and probabilities go in `orderings`; the identity's verifications,
    completions, label scores and paths are kept; token counts are summed. With self-consistency paths, each ordering's
    paths are mapped back too, and `majority` is the vote of all orderings' paths."""
    if len(orders) != len(answers) or not answers:
        raise ValueError(f"{len(orders)} orderings but {len(answers)} answers for question {question.id}")
    if tuple(orders[0]) != tuple(range(len(question.options))):
        raise ValueError("the first ordering must be the identity (the question as given)")
    per = [
        OrderingAnswer(
            order=list(o),
            label=original_label(question, o, a.label),
            probabilities=map_back(question, o, a.probabilities),
            samples=[
                SampleAnswer(label=original_label(question, o, s.label), probabilities=map_back(question, o, s.probabilities))
                for s in a.samples
            ],
        )
        for o, a in zip(orders, answers, strict=True)
    ]
    probabilities = {label: sum(p.probabilities[label] for p in per) / len(per) for label in question.labels}
    label = max(question.labels, key=lambda lab: probabilities[lab])
    votes = [s.label for p in per for s in p.samples]  # with self-consistency paths: every ordering's paths vote
    return answers[0].model_copy(
        update={
            "question_id": question.id,
            "label": label,
            "choice": question.options[label],
            "probabilities": probabilities,
            "orderings": per,
            "majority": majority_vote(question.labels, votes, probabilities) if votes else None,
            "prompt_tokens": sum(a.prompt_tokens for a in answers),
            "completion_tokens": sum(a.completion_tokens for a in answers),
            "context_truncated": any(a.context_truncated for a in answers),
            "gold": question.gold,
        }
    )


def answer_permuted(run: Callable[[list[Question]], list[Answer]], questions: Sequence[Question], k: int, seed: int = 0) -> list[Answer]:
    """Answer `questions` under `k` orderings each with ONE call of `run` (list in, list out: every ordering of every
    question goes to the strategy together, so each of its rounds is one engine batch), then ensemble them."""
    plans = [(q, orderings(len(q.options), k, seed)) for q in questions]
    asked = [permute(q, o) for q, orders in plans for o in orders]
    answers = run(asked)
    if len(answers) != len(asked):
        raise RuntimeError(f"the strategy returned {len(answers)} answers for {len(asked)} permuted questions")
    result, start = [], 0
    for question, orders in plans:
        result.append(ensemble(question, orders, answers[start : start + len(orders)]))
        start += len(orders)
    return result
