"""Training data for the three stages, as token ids ready for the Trainer.

- Stage 1 (`knowledge`): plain text (.txt files, JSONL `text`, PubMedQA's non-test abstracts), tokenised and
  packed into fixed-length blocks; every token is a target.
- Stage 2 (`instruction`): chat examples (JSONL `messages`, or labelled questions turned into instructions by the
  templates instruct_pubmedqa.jinja / instruct_mcq.jinja); the loss covers only the assistant's reply.
- Stage 3 (`task`): labelled questions rendered by the very prompt methods the `voc` strategies call at inference
  (`VerificationOfChoice.verify_prompt` / `choose_prompt`, `Direct.prompt`, `ChainOfThought.reasoning_prompt`),
  with targets made of template blocks (voc_verify_target.jinja, cot_target.jinja, the strategies' verdict and
  candidate blocks), joined exactly as the strategies join them. The loss covers only the target.

Prompt tokens are the engine's rendering (`voc.engines.base.render_chat` with the model's tokenizer, encoded as
HFEngine encodes them), so training sees exactly the text inference sends. Every record of every source is checked
by content against all the test splits under the data root (finetune/leakage.py): a leak raises `TestSplitError`
naming the file and line, or with `leakage: filter` is dropped and counted (`counts["leakage"]`, in run.json).
"""

from __future__ import annotations

import glob
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from finetune.config import (
    ConfigError,
    DataSource,
    FinetuneConfig,
    MCQInstructions,
    MCQTask,
    MessagesSource,
    PubMedQAAbstracts,
    PubMedQAInstructions,
    PubMedQATask,
    QAInstructions,
    Stage,
    TextSource,
)
from finetune.leakage import Guard, LeakageIndex, Match, TestSplitError, leakage_index, text_location
from voc.datasets import DataError, load_dataset, load_pubmedqa, read_jsonl, stratified_sample
from voc.datasets.common import display_name, iter_jsonl
from voc.engines.base import (
    ChatPrompt,
    PromptTooLongError,
    encode_after,
    encode_rendered,
    joint_encoding,
    render_chat,
    without_trailing_space,
)
from voc.prompts import Templates
from voc.strategies import ChainOfThought, Direct, VerificationOfChoice
from voc.strategies.base import fit_context
from voc.strategies.cot import TEMPLATE as COT
from voc.strategies.voc import VERIFY
from voc.types import Question, explanation_of

log = logging.getLogger("finetune")

IGNORE = -100  # label of tokens that carry no loss (prompt and padding)
ROLES = ("system", "user", "assistant")


@dataclass
class Example:
    """One chat example: the prompt as inference sends it, and the reply the model should learn.

    `continuation` is text that inference appends after the tokens the model generated (VoC's verdict prefix and
    verdict, cot's answer prefix and label); the model learns its tokens as the strategies score them.
    """

    prompt: ChatPrompt
    response: str
    kind: str  # e.g. "voc_verify", "messages", "pubmedqa_instruction"
    continuation: str = ""

    @property
    def target(self) -> str:
        """The whole text the model learns after the prompt."""
        return self.response + self.continuation


@dataclass
class StageData:
    """Token records ({input_ids, labels}) for one stage, and what went into them."""

    records: list[dict[str, list[int]]]
    counts: dict[str, Any] = field(default_factory=dict)


# --- guarding the test splits (finetune/leakage.py) ------------------------------------------------------------------

def refuse_test_questions(questions: Iterable[Question], index: LeakageIndex | None = None) -> None:
    """Raise TestSplitError if any question matches a test split by content (PMID, question text, abstract sentences).

    `index`: the test splits to check against; default those under voc.datasets.data_root().
    """
    index = index or leakage_index(None)
    Guard(index).screen(list(questions), index.match_question, "these questions", lambda _, q, __: f"question {q.id}")


def pubmedqa_train_questions(path: Path | None, limit: int | None, seed: int, guard: Guard | None = None) -> list[Question]:
    """PubMedQA's training split (the 400 labelled PMIDs in neither the test split nor the fixed dev split, so that dev
    questions never reach training), screened by `guard` (default: refuse any that match a test split), then a
    stratified seeded sample of `limit`."""
    questions = list(load_pubmedqa(path, split="train"))
    guard = guard or Guard(leakage_index(None))
    source = str(path) if path is not None else "pubmedqa"
    questions = guard.screen(questions, guard.index.match_question, source, lambda _, q, __: f"{source} PMID {q.metadata['pmid']}")
    return stratified_sample(questions, limit, seed) if limit else questions


def mcq_training_questions(
    dataset: str, path: Path, limit: int | None, seed: int, data_root: Path | None = None, guard: Guard | None = None
) -> list[Question]:
    """A user's labelled multiple-choice training file in a voc.datasets loader format, screened by `guard` (default:
    refuse any question that matches a test split of `data_root`), then a stratified seeded sample of `limit`."""
    if not path.is_file():
        raise FileNotFoundError(f"no training file {path}; give the path of your own {dataset} training file (JSONL)")
    shared_tests = [data_root / dataset / "test.jsonl"] if data_root is not None else []
    if any(t.is_file() and t.samefile(path) for t in shared_tests):
        raise TestSplitError(f"{path} is a test file; fine-tuning on test questions is refused: give your own {dataset} training file")
    questions = list(load_dataset(dataset, path))
    lines = [line for line, _ in iter_jsonl(path)]  # the loaders refuse bad rows, so row i is the i-th non-blank line
    guard = guard or Guard(leakage_index(data_root))

    def where(position: int, _question: Question, _match: Match) -> str:
        return f"{path} line {lines[position]}" if len(lines) == len(questions) else f"{path} record {position + 1}"

    questions = guard.screen(questions, guard.index.match_question, str(path), where)
    gold_missing = [q.id for q in questions if q.gold is None]
    if gold_missing:
        reason = f"question {gold_missing[0]} has no gold answer; training needs labelled questions"
        raise DataError(display_name(path), reason, skippable=False)
    return stratified_sample(questions, limit, seed) if limit else questions



def gold_option(question: Question) -> dict[str, str]:
    if question.gold is None:
        raise DataError(question.id, "no gold answer; training needs labelled questions", skippable=False)
    return {"label": question.gold, "text": question.options[question.gold]}


# --- stage 1: text --------------------------------------------------------------------------------------------


def text_files(path: Path) -> list[Path]:
    """The .txt/.jsonl files named by a file, a folder (recursively) or a glob pattern."""
    if any(ch in str(path) for ch in "*?["):
        files = [Path(p) for p in sorted(glob.glob(str(path), recursive=True))]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl"))
    else:
        files = [path]
    files = [f for f in files if f.is_file()]
    if not files:
        raise FileNotFoundError(f"no .txt or .jsonl files at {path}; give a file, a folder or a glob of medical text")
    return files


def read_texts(path: Path, text_field: str = "text") -> Iterator[str]:
    """Documents from text files: a .txt file is one document; a .jsonl file has one per line in `text_field`."""
    for _, _, text in text_records(path, text_field):
        yield text


def text_records(path: Path, text_field: str = "text") -> Iterator[tuple[Path, int | None, str]]:
    """(file, line, document) triples of `read_texts`: the line of a JSONL row, None for a .txt file."""
    for file in text_files(path):
        if file.suffix == ".jsonl":
            for line, row in read_jsonl(file):
                text = row.get(text_field)
                if not isinstance(text, str):
                    raise DataError(display_name(file), f"field {text_field!r} is missing or not a string", line=line, skippable=False)
                if text.strip():
                    yield file, line, text
        else:
            text = file.read_text(encoding="utf-8")
            if text.strip():
                yield file, None, text


def pubmedqa_abstract(question: Question) -> str:
    """A PubMedQA entry as a plain document: the title question, the abstract sections and the conclusion."""
    parts = [question.question, question.context or "", explanation_of(question) or ""]
    return "\n".join(p for p in parts if p)


def pack_blocks(texts: Iterable[str], tokenizer: Any, block_size: int) -> tuple[list[dict[str, list[int]]], int]:
    """Tokenise documents, join them with the EOS token and cut the stream into `block_size` blocks.

    The incomplete last block is dropped (kept only when the text is shorter than one block).
    Returns the records and the number of tokens in the stream.
    """
    stream: list[int] = []
    for text in texts:
        stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        stream.append(tokenizer.eos_token_id)
    n_blocks = max(1, len(stream) // block_size) if stream else 0
    records = []
    for i in range(n_blocks):
        block = stream[i * block_size : (i + 1) * block_size]
        records.append({"input_ids": block, "labels": list(block)})
    return records, len(stream)


# --- stage 2: instructions ------------------------------------------------------------------------------------


def read_messages(path: Path) -> list[Example]:
    """Chat examples from JSONL rows `{"messages": [{"role", "content"}, ...]}`; the last message must be the assistant's.

    Earlier turns (including earlier assistant turns) are the prompt; the loss covers the last reply.
    """
    return [example for _, example in read_message_records(path)]


def read_message_records(path: Path) -> list[tuple[int, Example]]:
    """(line number, example) pairs of `read_messages`."""
    source = display_name(path)
    examples = []
    for line, row in read_jsonl(path):
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages:
            raise DataError(source, "field 'messages' must be a non-empty list of {role, content} objects", line=line, skippable=False)
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise DataError(source, f"each message needs a role ({'/'.join(ROLES)}) and a string content, got {m!r}"[:200],
                                line=line, skippable=False)
        if messages[-1]["role"] != "assistant" or not any(m["role"] == "user" for m in messages):
            reason = "a conversation needs a user message and must end with the assistant's reply"
            raise DataError(source, reason, line=line, skippable=False)
        prompt = ChatPrompt(tuple({"role": m["role"], "content": m["content"]} for m in messages[:-1]))
        examples.append((line, Example(prompt, messages[-1]["content"], "messages")))
    return examples


def read_qa_records(
    path: Path, templates: Templates, question_field: str = "question", answer_field: str = "answer"
) -> list[tuple[int, Example]]:
    """(line number, example) pairs from JSONL question-answer rows (MedQuAD's layout by default), each rendered by
    instruct_qa.jinja: the question as the user's message, the answer as the reply the model learns."""
    source = display_name(path)
    examples = []
    for line, row in read_jsonl(path):
        question, answer = row.get(question_field), row.get(answer_field)
        for name, value in ((question_field, question), (answer_field, answer)):
            if not isinstance(value, str):
                raise DataError(source, f"field {name!r} is missing or not a string; set question_field/answer_field to the file's fields",
                                line=line, skippable=False)
        if not question.strip() or not answer.strip():
            continue
        variables = {"question": question.strip(), "answer": answer.strip()}
        reply = templates.block(QA_TEMPLATE, "assistant", **variables)
        examples.append((line, Example(templates.chat(QA_TEMPLATE, **variables), reply, "qa_instruction")))
    return examples


QA_TEMPLATE = "instruct_qa.jinja"


def example_text(example: Example) -> str:
    """Every message of a chat example and its reply, as one document (what the leakage check reads)."""
    return "\n".join([*(m["content"] for m in example.prompt.messages), example.target])


INSTRUCTION_TEMPLATES = {"pubmedqa_instruction": "instruct_pubmedqa.jinja", "mcq_instruction": "instruct_mcq.jinja"}


def instruction_example(question: Question, templates: Templates, kind: str, index: LeakageIndex | None = None) -> Example:
    """A labelled question as a free-form instruction answered with its explanation.

    `kind` picks the template: "pubmedqa_instruction" (instruct_pubmedqa.jinja, answered with PubMedQA's long
    answer) or "mcq_instruction" (instruct_mcq.jinja). A question that matches a test split of `index` (default: the data
    root's) raises TestSplitError.
    """
    refuse_test_questions([question], index)
    file = INSTRUCTION_TEMPLATES[kind]
    variables = {"question": question, "gold": gold_option(question), "explanation": explanation_of(question)}
    return Example(templates.chat(file, **variables), templates.block(file, "assistant", **variables).strip(), kind)


# --- stage 3: the task in the inference format ---------------------------------------------------------------------


def verification_target(question: Question, label: str, templates: Templates) -> str:
    """The verification of option `label` the model should write after the verify prompt's prefix (voc_verify_target.jinja)."""
    option = {"label": label, "text": question.options[label]}
    text = templates.block(
        "voc_verify_target.jinja", "verification",
        question=question, option=option, gold=gold_option(question), correct=label == question.gold, explanation=explanation_of(question),
    )
    stop = templates.block(VERIFY, "stop", question=question, option=option)
    if stop in text:
        reason = f"the verification target contains the stop text {stop!r}; it would end generation early"
        raise DataError(question.id, reason, skippable=False)
    return text


def task_examples(
    question: Question, templates: Templates, formats: Sequence[str], index: LeakageIndex | None = None
) -> list[Example]:
    """One question in each inference format, with the gold target continuing the prompt as the strategies continue it.

    - voc_verify (one per option): verify_prompt(q, label) -> verification, then verdict_prefix + verdict_true/false
      as the continuation (what the voc strategy scores after the generated verification's tokens);
    - voc_choose: choose_prompt(q, the target verifications) -> the gold candidate;
    - direct: Direct.prompt(q) -> the gold candidate;
    - cot: reasoning_prompt(q) -> reasoning, then answer_prefix + the gold candidate as the continuation.

    A question that matches a test split of `index` (default: the data root's) raises TestSplitError.
    """
    refuse_test_questions([question], index)
    gold = gold_option(question)
    voc = VerificationOfChoice(templates)
    examples: list[Example] = []
    verifications = []
    for label in question.labels:
        option = {"label": label, "text": question.options[label]}
        text = verification_target(question, label, templates)
        verifications.append({"label": label, "option_text": option["text"], "text": text.strip()})
        if "voc_verify" in formats:
            verdict = templates.block(VERIFY, "verdict_true" if label == question.gold else "verdict_false", option=option)
            verdict = templates.block(VERIFY, "verdict_prefix", question=question, option=option) + verdict
            examples.append(Example(voc.verify_prompt(question, label), text.rstrip(), "voc_verify", verdict))
    if "voc_choose" in formats:
        candidate = voc.candidates("voc_choose.jinja", question)[question.labels.index(gold["label"])]
        examples.append(Example(voc.choose_prompt(question, verifications), candidate, "voc_choose"))
    if "direct" in formats:
        direct = Direct(templates)
        candidate = direct.candidates("direct.jinja", question)[question.labels.index(gold["label"])]
        examples.append(Example(direct.prompt(question), candidate, "direct"))
    if "cot" in formats:
        cot = ChainOfThought(templates)
        reasoning = templates.block("cot_target.jinja", "reasoning", question=question, gold=gold, explanation=explanation_of(question))
        stop = templates.block(COT, "stop")
        if stop in reasoning:
            raise DataError(question.id, f"the reasoning target contains the stop text {stop!r}", skippable=False)
        candidate = cot.candidates(COT, question)[question.labels.index(gold["label"])]
        answer = templates.block(COT, "answer_prefix") + candidate
        examples.append(Example(cot.reasoning_prompt(question), reasoning.rstrip(), "cot", answer))
    return examples


# --- tokenising --------------------------------------------------------------------------------------------------


def encode_example(tokenizer: Any, example: Example) -> dict[str, list[int]]:
    """{input_ids, labels}: the prompt tokens (no loss), then the reply's tokens and EOS (the loss), tokenized as
    inference tokenizes them (voc.engines.base): the prompt as `generate` encodes it, the response encoded jointly
    with it (its tokens are those `encode(prompt + response)` has beyond `encode(prompt)`), and a continuation after
    the response's tokens (trailing whitespace-only tokens dropped) as text that comes after other text."""
    text = render_chat(tokenizer, example.prompt)
    prompt, (response,) = joint_encoding(lambda t: encode_rendered(tokenizer, t), text, [example.response], move_space=False)
    if example.continuation:
        response = without_trailing_space(tokenizer, response) + encode_after(tokenizer, example.continuation)
    response = [*response, tokenizer.eos_token_id]
    return {"input_ids": prompt + response, "labels": [IGNORE] * len(prompt) + response}


def encode_question(
    tokenizer: Any, question: Question, build: Callable[[Question], list[Example]], max_length: int
) -> tuple[list[dict[str, list[int]]], list[str], bool]:
    """Encode a question's examples; a context too long for `max_length` is shortened the way the strategies shorten it
    (`voc.strategies.base.fit_context`).

    Returns (records, their example kinds, context_truncated); raises PromptTooLongError when even the question
    without its context is too long.
    """

    def measure(q: Question) -> tuple[int, tuple[list[dict[str, list[int]]], list[str]]]:
        examples = build(q)
        records = [encode_example(tokenizer, e) for e in examples]
        return max(len(r["input_ids"]) for r in records), (records, [e.kind for e in examples])

    _, (records, kinds), truncated = fit_context(question, measure, max_length)
    return records, kinds, truncated


# --- one stage -----------------------------------------------------------------------------------------------------


def _sample(items: list[Any], limit: int | None, seed: int) -> list[Any]:
    if not limit or limit >= len(items):
        return items
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


def build_stage_data(config: FinetuneConfig, stage: Stage, tokenizer: Any, templates: Templates, progress: bool = True) -> StageData:
    """All records of one stage, and counts per source (for run.json)."""
    root = _data_root_or_none(config)
    index = leakage_index(root)  # every source is screened against the test splits before its `limit` sample is drawn
    if stage.kind == "knowledge":
        return knowledge_data(config, stage, tokenizer, index, progress)
    return example_data(config, stage, tokenizer, templates, root, index, progress)


def knowledge_data(config: FinetuneConfig, stage: Stage, tokenizer: Any, index: LeakageIndex, progress: bool) -> StageData:
    """A knowledge stage: every source's documents, tokenised and packed into blocks of `max_length` tokens."""
    texts: list[str] = []
    sources = []
    guards: list[Guard] = []
    for source in stage.data:
        guard = Guard(index, config.leakage_mode(source))
        guards.append(guard)
        if isinstance(source, TextSource):
            docs = [text for _, _, text in _sample(text_documents(config.resolve_data_path(source.path), source.text_field, guard),  # type: ignore[arg-type]
                                                   source.limit, config.seed)]
        elif isinstance(source, PubMedQAAbstracts):
            path = config.resolve_data_path(source.path or "pubmedqa")
            docs = [pubmedqa_abstract(q) for q in pubmedqa_train_questions(path, source.limit, config.seed, guard)]
        else:  # pragma: no cover - the config validator rules this out
            raise ValueError(f"data type {source.type!r} does not fit a knowledge stage")
        sources.append({"type": source.type, "path": getattr(source, "path", None), "documents": len(docs), **_guard_counts(guard)})
        texts.extend(docs)
    bar = tqdm(texts, desc=f"{stage.label}: tokenise", disable=not progress, unit="doc")
    records, n_tokens = pack_blocks(bar, tokenizer, stage.max_length)
    counts = {"sources": sources, "documents": len(texts), "tokens": n_tokens, "blocks": len(records), "block_size": stage.max_length,
              "leakage": leakage_counts(index, guards)}
    return StageData(records, counts)


Builder = tuple[Question | None, Callable[[Question], list[Example]] | list[Example]]  # a question and its examples' builder, or examples


def example_data(
    config: FinetuneConfig, stage: Stage, tokenizer: Any, templates: Templates, root: Path | None, index: LeakageIndex, progress: bool
) -> StageData:
    """An instruction or task stage: every source's examples encoded; examples longer than `max_length` are dropped."""
    records: list[dict[str, list[int]]] = []
    sources = []
    guards: list[Guard] = []
    dropped = truncated = 0
    kinds: dict[str, int] = {}
    for source in stage.data:
        is_pubmedqa = isinstance(source, PubMedQAInstructions | PubMedQATask)
        path = config.resolve_data_path(getattr(source, "path", None) or ("pubmedqa" if is_pubmedqa else None))
        assert path is not None
        guard = Guard(index, config.leakage_mode(source))
        guards.append(guard)
        builders = source_builders(source, path, config.seed, templates, root, index, guard)
        bar = tqdm(builders, desc=f"{stage.label}: {source.type}", disable=not progress, unit="item")
        encoded, source_kinds, source_dropped, source_truncated = encode_builders(bar, tokenizer, stage.max_length)
        records.extend(encoded)
        for kind, n in source_kinds.items():
            kinds[kind] = kinds.get(kind, 0) + n
        dropped, truncated = dropped + source_dropped, truncated + source_truncated
        sources.append({"type": source.type, "path": str(path), "items": len(builders), "examples": len(encoded), **_guard_counts(guard)})
    if not records:
        raise ConfigError(
            f"stage {stage.label!r} has no training examples (all {dropped} are longer than max_length={stage.max_length}); "
            "raise max_length"
        )
    counts = {
        "sources": sources,
        "examples": len(records),
        "examples_by_format": kinds,
        "tokens": sum(len(r["input_ids"]) for r in records),
        "response_tokens": sum(sum(1 for t in r["labels"] if t != IGNORE) for r in records),
        "dropped_too_long": dropped,
        "context_truncated": truncated,
        "max_length": stage.max_length,
        "leakage": leakage_counts(index, guards),
    }
    return StageData(records, counts)


def source_builders(
    source: DataSource, path: Path, seed: int, templates: Templates, root: Path | None, index: LeakageIndex, guard: Guard
) -> list[Builder]:
    """The items of one instruction or task source: ready examples, or questions with the function that builds theirs."""
    if isinstance(source, MessagesSource):
        return [(None, [e]) for _, e in _sample(message_documents(path, guard), source.limit, seed)]
    if isinstance(source, QAInstructions):
        rows = read_qa_records(path, templates, source.question_field, source.answer_field)
        return [(None, [e]) for _, e in _sample(example_documents(rows, path, guard), source.limit, seed)]
    if isinstance(source, PubMedQAInstructions):
        questions = pubmedqa_train_questions(path, source.limit, seed, guard)
        return [(q, lambda q: [instruction_example(q, templates, "pubmedqa_instruction", index)]) for q in questions]
    if isinstance(source, MCQInstructions):
        questions = mcq_training_questions(source.dataset, path, source.limit, seed, root, guard)
        return [(q, lambda q: [instruction_example(q, templates, "mcq_instruction", index)]) for q in questions]
    if isinstance(source, PubMedQATask | MCQTask):
        if isinstance(source, PubMedQATask):
            questions = pubmedqa_train_questions(path, source.limit, seed, guard)
        else:
            questions = mcq_training_questions(source.dataset, path, source.limit, seed, root, guard)
        formats = list(dict.fromkeys(source.formats))
        return [(q, lambda q, f=formats: task_examples(q, templates, f, index)) for q in questions]
    return []


def encode_builders(
    builders: Iterable[Builder], tokenizer: Any, max_length: int
) -> tuple[list[dict[str, list[int]]], dict[str, int], int, int]:
    """Encode a source's items: (records, examples per kind, items dropped as too long, questions whose context was cut)."""
    records: list[dict[str, list[int]]] = []
    kinds: dict[str, int] = {}
    dropped = truncated = 0
    for question, build in builders:
        if question is None:
            assert isinstance(build, list)
            encoded = [encode_example(tokenizer, e) for e in build]
            if any(len(r["input_ids"]) > max_length for r in encoded):
                dropped += 1
                continue
            kinds[build[0].kind] = kinds.get(build[0].kind, 0) + 1
        else:
            assert callable(build)
            try:
                encoded, example_kinds, cut = encode_question(tokenizer, question, build, max_length)
            except PromptTooLongError:
                dropped += 1
                continue
            truncated += cut
            for kind in example_kinds:
                kinds[kind] = kinds.get(kind, 0) + 1
        records.extend(encoded)
    return records, kinds, dropped, truncated


def text_documents(path: Path, text_field: str, guard: Guard) -> list[tuple[Path, int | None, str]]:
    """The `text_records` of a text source that match no test split (a leak is refused, or dropped and counted)."""
    return guard.screen(
        list(text_records(path, text_field)), lambda r: guard.index.match_text(r[2]), str(path),
        lambda _, r, match: f"{r[0]} line {r[1]}" if r[1] is not None else f"{r[0]}{text_location(r[2], match)}",
    )


def message_documents(path: Path, guard: Guard) -> list[tuple[int, Example]]:
    """The `read_message_records` of a messages source whose turns match no test split (refused, or dropped and counted)."""
    return example_documents(read_message_records(path), path, guard)


def example_documents(rows: list[tuple[int, Example]], path: Path, guard: Guard) -> list[tuple[int, Example]]:
    """The (line, example) rows of a file whose text matches no test split (a leak is refused, or dropped and counted)."""
    return guard.screen(rows, lambda r: guard.index.match_text(example_text(r[1])), str(path), lambda _, r, __: f"{path} line {r[0]}")


def _guard_counts(guard: Guard) -> dict[str, Any]:
    return {"leakage": guard.mode, "dropped_leaking": guard.dropped}


def leakage_counts(index: LeakageIndex, guards: Sequence[Guard]) -> dict[str, Any]:
    """The stage's leakage report for run.json: records dropped (by test split) and what the index was built from."""
    by_split: Counter[str] = Counter()
    for guard in guards:
        by_split.update(guard.by_split)
    return {"dropped": sum(g.dropped for g in guards), "dropped_by_split": dict(by_split), **index.summary()}


def _data_root_or_none(config: FinetuneConfig) -> Path | None:
    try:
        return config.data_root_path()
    except FileNotFoundError:
        return None
