"""Dynamic few-shot: for each question, the K most similar questions of a training pool, shown as worked examples.

- The pool: a built-in dataset or split (`pubmedqa:train`, `medqa_train`), a spec or data file, or `hf:org/name`, loaded
  with `voc.datasets.load_dataset` (as `voc bench --dataset` resolves names); or a list of `Question`s. Every pool
  question needs its gold answer, since the examples are built from it.
- The pool goes through the test-split leakage guard of fine-tuning (finetune/leakage.py: `leakage_index`, `Guard`):
  a pool question that matches any test split under the data root (by PMID, question text and options, or test content
  in its text) is refused with a one-line `FewShotPoolError`, and so is a pool that holds any of the questions it is
  used on (`FewShotPool.check_disjoint`, run before any model work).
- Retrieval: TF-IDF over the question text (scikit-learn's `TfidfVectorizer`, English stop words dropped, sublinear term
  frequency) and cosine similarity; the K most similar pool questions, most similar first (ties to the earlier one).
- Rendering belongs to the strategies: each strategy's templates have an `example` block that renders one worked
  example (voc: verifications of every option built from the gold answer with voc_verify_target.jinja, as fine-tuning
  builds its targets; cot: a reasoning from cot_target.jinja; direct: the answer), and `_examples.jinja` puts them in
  the user message before the question.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voc.types import Question, questions_digest, whole_number

POOL_REFUSAL = "a few-shot pool must hold no test questions: use a training split (pubmedqa:train, medqa_train) or your own training file"
OVERLAP_REFUSAL = "a few-shot pool must not hold the questions it is used on: use another pool (a training split) or other questions"


class FewShotPoolError(ValueError):
    """A few-shot pool that cannot be used: unreadable, without gold answers, or overlapping test or evaluated questions."""


def check_fewshot(k: object) -> int:
    """`k` as a number of examples; a one-line error unless it is an int of at least 0."""
    return whole_number("fewshot", k, 0, "examples", "0 (no examples) or more")




@dataclass
class FewShotPool:
    """Labelled questions to draw worked examples from, indexed by TF-IDF over their question text.

    Build it with `load_pool`, which runs the leakage guard; the constructor checks gold answers and builds the index.
    """

    name: str
    questions: list[Question]
    identity: str = ""
    _vectorizer: Any = field(default=None, repr=False)
    _matrix: Any = field(default=None, repr=False)
    _nearest: dict[tuple[str, int], list[int]] = field(default_factory=dict, repr=False)
    _index: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.questions:
            raise FewShotPoolError(f"few-shot pool {self.name} holds no questions")
        unlabelled = [q.id for q in self.questions if q.gold is None]
        if unlabelled:
            raise FewShotPoolError(
                f"few-shot pool {self.name}: question {unlabelled[0]} has no gold answer ({len(unlabelled)} of {len(self.questions)}); "
                "examples are built from the gold answer, so give a labelled pool"
            )
        try:
            from sklearn.feature_extraction.text import TfidfVectorizer
        except ImportError as error:
            raise ImportError(f"few-shot retrieval needs scikit-learn ({error}); pip install 'voc[fewshot]'") from error
        self._vectorizer = TfidfVectorizer(stop_words="english", sublinear_tf=True)
        try:
            self._matrix = self._vectorizer.fit_transform([q.question for q in self.questions])
        except ValueError as error:  # e.g. an empty vocabulary: every question is stop words
            raise FewShotPoolError(f"few-shot pool {self.name} cannot be indexed: {error}") from None
        self.identity = self.identity or questions_digest(self.questions)

    def __len__(self) -> int:
        return len(self.questions)

    def nearest(self, question: Question, k: int) -> list[Question]:
        """The `k` pool questions most similar to `question` (TF-IDF cosine over the question text), most similar first;
        ties go to the earlier pool question. Fewer when the pool is smaller."""
        key = (question.question, k)
        if key not in self._nearest:
            import numpy as np

            similarity = (self._matrix @ self._vectorizer.transform([question.question]).T).toarray().ravel()
            self._nearest[key] = [int(i) for i in np.argsort(-similarity, kind="stable")[:k]]
        return [self.questions[i] for i in self._nearest[key]]

    def check_disjoint(self, questions: Sequence[Question], what: str = "the questions") -> None:
        """Refuse (one-line FewShotPoolError) when any of `questions` is in the pool: by PMID, or by question text with
        its options (finetune/leakage.py's checks, with the pool indexed as a split)."""
        from finetune.leakage import Guard, TestSplitError, question_index

        if self._index is None:
            self._index = question_index(self.questions, "the few-shot pool")
        guard = Guard(self._index, matches=f"the few-shot pool {self.name}", refusal=OVERLAP_REFUSAL)
        try:
            guard.screen(list(questions), self._index.match_question, what, lambda _, q, __: f"{what}: question {q.id}")
        except TestSplitError as error:
            raise FewShotPoolError(str(error)) from None


@dataclass
class FewShot:
    """K worked examples per question from a pool (K = 0: none)."""

    pool: FewShotPool
    k: int

    def __post_init__(self) -> None:
        check_fewshot(self.k)

    def examples(self, question: Question) -> list[Question]:
        return self.pool.nearest(question, self.k) if self.k else []


def load_pool(
    given: str | os.PathLike[str] | Sequence[Question], root: str | os.PathLike[str] | None = None, name: str | None = None
) -> FewShotPool:
    """The few-shot pool `given`: a dataset name (`pubmedqa:train`, `medqa_train`), a spec or data file, `hf:org/name`,
    or a list of questions; checked against every test split under `root` (default: the data root), refused with a
    one-line FewShotPoolError when any pool question matches one."""
    from finetune.leakage import Guard, TestSplitError, leakage_index

    if isinstance(given, str | os.PathLike):
        from voc.datasets import load_dataset

        label = name or os.fspath(given)
        try:
            questions = list(load_dataset(os.fspath(given), root=root))
        except (OSError, ValueError) as error:
            raise FewShotPoolError(f"few-shot pool {label}: {str(error).splitlines()[0]}") from None
    else:
        questions = list(given)
        bad = [type(q).__name__ for q in questions if not isinstance(q, Question)]
        if bad:
            raise TypeError(f"a few-shot pool is a dataset name, a file or a list of Question objects, got a list holding {bad[0]}")
        label = name or f"of {len(questions)} questions"
    index = leakage_index(Path(root) if root is not None else None)
    guard = Guard(index, refusal=POOL_REFUSAL)
    try:
        guard.screen(questions, index.match_question, f"few-shot pool {label}", lambda _, q, __: f"few-shot pool {label}: question {q.id}")
    except TestSplitError as error:
        raise FewShotPoolError(str(error)) from None
    return FewShotPool(label, questions)
