"""Property-based tests (hypothesis): building a `Question` and rendering its prompts never goes wrong silently.

For arbitrary Unicode (template syntax included), empty and whitespace-only strings, 0 to 28 options,
duplicates and very long options, either the `Question` is refused with pydantic's ValidationError
(a one-line reason) exactly when the input is invalid, or every prompt of every strategy shows each
option exactly once, on its own line, in the options list (options with the same text are kept and flagged).
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from voc.engines.base import ChatPrompt, render_chat
from voc.strategies import ChainOfThought, Direct, VerificationOfChoice
from voc.types import Question, one_line

TEMPLATE_SYNTAX = ["{{", "}}", "{%", "%}", "{#", "#}", "{{ 7*7 }}", "{% for x in y %}", "{% endfor %}", "{# c #}", "{% raw %}"]
BLANKS = ["", " ", "\t", "\n", " \r\n ", "\u3000", "\u2028", "\x85"]

fragments = st.one_of(st.text(max_size=12), st.sampled_from(TEMPLATE_SYNTAX), st.sampled_from(BLANKS))
blank_texts = st.sampled_from(BLANKS)
long_texts = st.builds(lambda part, n: part * n, st.text(min_size=1, max_size=4), st.integers(200, 1500))
filled_texts = st.one_of(st.lists(fragments, min_size=1, max_size=5).map("".join).filter(one_line), long_texts.filter(one_line))
texts = st.one_of(filled_texts, filled_texts, filled_texts, filled_texts, blank_texts)  # mostly filled, sometimes blank
good_labels = st.text(st.characters(categories=["L", "N", "P", "S"]), min_size=1, max_size=4)  # printable, no whitespace
odd_labels = st.one_of(st.text(max_size=4), st.sampled_from(["", " ", "\u200b", " C ", "A\tB", "\x00", "A\nB"]))


def text_key(text: str) -> str:
    return " ".join(text.split()).casefold()


@st.composite
def option_inputs(draw: st.DrawFn) -> list[str] | dict[str, str]:
    """A list of texts (labelled A, B, ...) or a dict label -> text; mostly valid, sometimes with one flaw:
    a count outside 2..26, a blank text, an odd label, or a duplicated text (allowed, but flagged)."""
    n = draw(st.one_of(st.integers(2, 26), st.integers(2, 6), st.sampled_from([0, 1, 26, 27])))
    items = draw(st.lists(filled_texts, min_size=n, max_size=n, unique_by=text_key))
    flaw = draw(st.sampled_from(["none"] * 6 + ["blank", "duplicate", "odd label"]))
    if items and flaw == "blank":
        items[draw(st.integers(0, n - 1))] = draw(blank_texts)
    if n >= 2 and flaw == "duplicate":
        items[draw(st.integers(1, n - 1))] = draw(st.sampled_from(items[:-1])).upper()  # the same text up to case
    if flaw != "odd label" and draw(st.booleans()):
        return items
    keys = draw(st.lists(good_labels, min_size=n, max_size=n, unique=True))
    if keys and flaw == "odd label":
        keys[draw(st.integers(0, n - 1))] = draw(odd_labels.filter(lambda label: label not in keys))
    return dict(zip(keys, items, strict=True))


def expected_errors(question: str, options: list[str] | dict[str, str]) -> list[str]:
    """What the documented rules say is wrong with the question and with the options (one reason each); [] when valid."""
    errors = ["question is empty"] if not question.strip() else []
    if isinstance(options, list) and len(options) > 26:
        return [*errors, "at most 26"]
    pairs = list(options.items()) if isinstance(options, dict) else list(zip(string.ascii_uppercase, options, strict=False))
    stripped = [label.strip() for label, _ in pairs]
    if len(set(stripped)) < len(stripped):
        return [*errors, "duplicate option label"]
    if len(pairs) < 2:
        return [*errors, "at least 2 options"]
    for label, (_, text) in zip(stripped, pairs, strict=True):
        if not label:
            return [*errors, "label is empty"]
        if any(ch.isspace() for ch in label):
            return [*errors, "contains whitespace"]
        if not label.isprintable():
            return [*errors, "unprintable character"]
        if not one_line(text):
            return [*errors, "has no text"]
    return errors


def expected_duplicates(labels: list[str], texts: list[str]) -> list[list[str]]:
    """Groups of labels whose texts are equal ignoring case and spacing, in the order of their first label."""
    groups: dict[str, list[str]] = {}
    for label, text in zip(labels, texts, strict=True):
        groups.setdefault(text_key(text), []).append(label)
    return [group for group in groups.values() if len(group) > 1]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def strategies() -> tuple[Direct, ChainOfThought, VerificationOfChoice]:
    return Direct(), ChainOfThought(), VerificationOfChoice()


def all_prompts(question: Question, strategies: tuple[Direct, ChainOfThought, VerificationOfChoice]) -> list[ChatPrompt]:
    """The prompts of direct, cot, and voc's verify (first and last option) and choose rounds."""
    direct, cot, voc = strategies
    verifications = [{"label": lab, "option_text": text, "text": "It fits."} for lab, text in question.options.items()]
    return [
        direct.prompt(question),
        cot.reasoning_prompt(question),
        voc.verify_prompt(question, question.labels[0]),
        voc.verify_prompt(question, question.labels[-1]),
        voc.choose_prompt(question, verifications),
    ]


def assert_options_listed_once(question: Question, prompt: ChatPrompt, rendered: str) -> None:
    """The user message starts with context and question, then lists each option once, one per line."""
    (user,) = [m["content"] for m in prompt.messages if m["role"] == "user"]
    assert user in rendered  # the chat template passes the text through unchanged
    head = (f"Context:\n{question.context}\n\n" if question.context else "") + f"Question: {question.question}\n\nOptions:\n"
    assert user.startswith(head)
    lines = user[len(head) :].split("\n")
    n = len(question.options)
    listed, after = lines[:n], lines[n]
    assert after == ""  # a blank line ends the list: no option text spilled onto a further line
    for label, text in question.options.items():
        assert sum(line == f"{label}. {text}" for line in listed) == 1
    assert len(listed) == n


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(question=texts, options=option_inputs(), context=st.one_of(st.none(), texts))
def test_question_either_renders_every_option_once_or_is_refused(
    tokenizer: Any, strategies: tuple[Direct, ChainOfThought, VerificationOfChoice], question: str, options: Any, context: str | None
) -> None:
    reasons = expected_errors(question, options)
    event(f"refused: {reasons[-1]}" if reasons else f"accepted, {len(options)} options")
    try:
        built = Question(question=question, options=options, context=context)
    except ValidationError as error:
        assert reasons, f"refused valid input: {error}"
        messages = [detail["msg"] for detail in error.errors()]
        assert len(messages) == len(reasons)
        for reason, message in zip(reasons, messages, strict=True):
            assert reason in message and "\n" not in message
        return
    assert not reasons, f"accepted invalid input ({reasons})"
    given_labels = list(options) if isinstance(options, dict) else list(string.ascii_uppercase[: len(options)])
    given_texts = list(options.values()) if isinstance(options, dict) else options
    assert built.labels == [label.strip() for label in given_labels]
    assert list(built.options.values()) == [one_line(text) for text in given_texts]
    assert all(text.splitlines() == [text] and text == text.strip() for text in built.options.values())
    assert built.context == (context if context and context.strip() else None)
    assert built.duplicate_options == expected_duplicates(built.labels, given_texts)  # kept, and flagged
    for prompt in all_prompts(built, strategies):
        assert_options_listed_once(built, prompt, render_chat(tokenizer, prompt))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=3), min_size=2, max_size=26, unique=True))
def test_label_text_pairs_keep_labels_and_order(labels: list[str]) -> None:
    pairs = [(label, f"option {i}") for i, label in enumerate(labels)]
    question = Question(question="Which?", options=pairs)
    assert list(question.options.items()) == pairs
    assert Question(question="Which?", options=dict(pairs)) == question


@given(st.integers(2, 26))
def test_plain_lists_get_letters_in_order(n: int) -> None:
    question = Question(question="Which?", options=[f"choice {i}" for i in range(n)])
    assert question.labels == list(string.ascii_uppercase[:n])
    assert question.options["A"] == "choice 0" and question.options[string.ascii_uppercase[n - 1]] == f"choice {n - 1}"
