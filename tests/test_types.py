"""The data model: what users may pass as a Question, and the errors they get otherwise."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from voc.types import Answer, Question


def test_list_options_get_letter_labels_in_order() -> None:
    q = Question(question="Is aspirin an anticoagulant?", options=["yes", "no", "maybe"])
    assert q.options == {"A": "yes", "B": "no", "C": "maybe"}
    assert q.labels == ["A", "B", "C"]


def test_dict_and_pair_options_keep_their_labels_and_order() -> None:
    assert Question(question="q", options={"yes": "Yes", "no": "No"}).labels == ["yes", "no"]
    assert Question(question="q", options=[("Z", "last"), ("A", "first")]).labels == ["Z", "A"]


def test_id_defaults_to_a_stable_content_hash() -> None:
    a = Question(question="q", options=["x", "y"], context="c")
    b = Question(question="q", options=["x", "y"], context="c")
    c = Question(question="q", options=["x", "y"], context="other")
    assert a.id == b.id and a.id != c.id
    assert Question(question="q", options=["x", "y"], id="mine").id == "mine"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"question": "   ", "options": ["a", "b"]}, "question is empty"),
        ({"question": "q", "options": ["only one"]}, "at least 2 options"),
        ({"question": "q", "options": [("A", "x"), ("A", "y")]}, "duplicate option label 'A'"),
        ({"question": "q", "options": ["a", "b"], "gold": "C"}, "gold label 'C' is not among"),
        ({"question": "q", "options": ["a", ""]}, "has no text"),
        ({"question": "q", "options": "a,b"}, "not a single string"),
    ],
)
def test_invalid_questions_raise_a_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Question(**kwargs)


def test_more_than_26_listed_options_need_explicit_labels() -> None:
    with pytest.raises(ValidationError, match="at most 26"):
        Question(question="q", options=[f"option {i}" for i in range(27)])
    assert len(Question(question="q", options={f"O{i}": f"option {i}" for i in range(27)}).options) == 27


def test_blank_context_becomes_none_and_answer_reports_correctness() -> None:
    q = Question(question="q", options=["a", "b"], context="  \n", gold="B")
    assert q.context is None
    answer = Answer(question_id=q.id, strategy="direct", label="B", choice="b", probabilities={"A": 0.2, "B": 0.8}, gold=q.gold)
    assert answer.correct is True


def test_options_with_the_same_text_are_kept_and_flagged() -> None:
    q = Question(question="q", options=["same", "other", " Same ", "x", "SAME", "x"], gold="B", metadata={"source": "row 7"})
    assert q.options == {"A": "same", "B": "other", "C": "Same", "D": "x", "E": "SAME", "F": "x"}
    assert q.duplicate_options == [["A", "C", "E"], ["D", "F"]]
    assert q.metadata == {"source": "row 7", "duplicate_options": [["A", "C", "E"], ["D", "F"]]}
    plain = Question(question="q", options=["a", "b"], metadata={"duplicate_options": [["A", "B"]]})  # derived, never trusted
    assert plain.duplicate_options == [] and "duplicate_options" not in plain.metadata
    again = Question.model_validate(q.model_dump())  # a stored question reloads with the same flag
    assert again == q
