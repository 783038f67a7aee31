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
HFEngine encodes them), so training sees exactly the text inference sends. PubMedQA's official test split is
refused everywhere: any question whose PMID is in `pubmedqa_test_ids()` raises `TestSplitError`.
"""

from __future__ import annotations

import functools
import glob
import logging
import random
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from finetune.config import (
    ConfigError,
    FinetuneConfig,
    MCQInstructions,
    MCQTask,
    MessagesSource,
    PubMedQAAbstracts,
    PubMedQAInstructions,
    PubMedQATask,
    Stage,
    TextSource,
)
from voc.datasets import DataError, load_dataset, load_pubmedqa, pubmedqa_test_ids, read_jsonl, stratified_sample
from voc.datasets.common import display_name
from voc.engines.base import ChatPrompt, PromptTooLongError, render_chat
from voc.prompts import Templates
from voc.strategies import ChainOfThought, Direct, Strategy, VerificationOfChoice
from voc.strategies.cot import TEMPLATE as COT
from voc.strategies.voc import VERIFY
from voc.types import Question

log = logging.getLogger("finetune")

IGNORE = -100  # label of tokens that carry no loss (prompt and padding)
ROLES = ("system", "user", "assistant")


class TestSplitError(ValueError):
    """A fine-tuning builder was given questions of PubMedQA's official test split."""

    __test__ = False  # not a pytest test class


@dataclass
class Example:
    """One chat example: the prompt as inference sends it, and the reply the model should learn."""

    prompt: ChatPrompt
    response: str
    kind: str  # e.g. "voc_verify", "messages", "pubmedqa_instruction"


@dataclass
class StageData:
    """Token records ({input_ids, labels}) for one stage, and what went into them."""

    records: list[dict[str, list[int]]]
    counts: dict[str, Any] = field(default_factory=dict)


# --- guarding the test split -------------------------------------------------------------------------------------


def pmid_of(question: Question) -> str | None:
    """The PubMedQA PMID of a question (from metadata or an id like 'pubmedqa-<pmid>'), else None."""
    pmid = question.metadata.get("pmid")
    if pmid is not None:
        return str(pmid).strip()
    if question.id.startswith("pubmedqa-"):
        return question.id.removeprefix("pubmedqa-")
    return None


@functools.lru_cache(maxsize=8)
def _test_ids(path: str | None) -> frozenset[str]:
    return frozenset(pubmedqa_test_ids(path))


def refuse_test_split(questions: Iterable[Question], test_ids: Collection[str] | None = None) -> None:
    """Raise TestSplitError if any question is from PubMedQA's official test split.

    `test_ids`: the test PMIDs; default those of the data root's pubmedqa/test_ground_truth.json.
    """
    for question in questions:
        pmid = pmid_of(question)
        if pmid is None:
            continue
        if test_ids is None:
            try:
                test_ids = _test_ids(None)
            except FileNotFoundError as error:
                raise TestSplitError(f"cannot check question {question.id} against PubMedQA's test split ({error})") from None
        if pmid in test_ids:
            raise TestSplitError(
                f"question {question.id} (PMID {pmid}) is in PubMedQA's official test split; fine-tuning on test questions "
                "is refused: use load_pubmedqa(split='train'), the 500 labelled non-test questions"
            )


def pubmedqa_train_questions(path: Path | None, limit: int | None, seed: int) -> list[Question]:
    """PubMedQA's labelled non-test questions (a stratified seeded sample of `limit`), checked against the test PMIDs."""
    questions = list(load_pubmedqa(path, split="train"))
    refuse_test_split(questions, _test_ids(None if path is None else str(path)))
    return stratified_sample(questions, limit, seed) if limit else questions


def mcq_training_questions(dataset: str, path: Path, limit: int | None, seed: int, data_root: Path | None = None) -> list[Question]:
    """A user's labelled multiple-choice training file in a voc.datasets loader format; test files are refused."""
    if not path.is_file():
        raise FileNotFoundError(f"no training file {path}; give the path of your own {dataset} training file (JSONL)")
    shared_tests = [data_root / dataset / "test.jsonl"] if data_root is not None else []
    if path.name.lower().startswith("test") or any(t.is_file() and t.samefile(path) for t in shared_tests):
        raise TestSplitError(f"{path} is a test file; fine-tuning on test questions is refused: give your own {dataset} training file")
    questions = list(load_dataset(dataset, path))
    refuse_test_split(questions)
    gold_missing = [q.id for q in questions if q.gold is None]
    if gold_missing:
        reason = f"question {gold_missing[0]} has no gold answer; training needs labelled questions"
        raise DataError(display_name(path), reason, skippable=False)
    return stratified_sample(questions, limit, seed) if limit else questions


def explanation_of(question: Question) -> str | None:
    """A reference explanation kept by the loader (PubMedQA's LONG_ANSWER, or an `explanation`/`exp` field)."""
    for key in ("long_answer", "explanation", "exp"):
        value = question.metadata.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


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
    for file in text_files(path):
        if file.suffix == ".jsonl":
            for line, row in read_jsonl(file):
                text = row.get(text_field)
                if not isinstance(text, str):
                    raise DataError(display_name(file), f"field {text_field!r} is missing or not a string", line=line, skippable=False)
                if text.strip():
                    yield text
        else:
            text = file.read_text(encoding="utf-8")
            if text.strip():
                yield text


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
        examples.append(Example(prompt, messages[-1]["content"], "messages"))
    return examples


INSTRUCTION_TEMPLATES = {"pubmedqa_instruction": "instruct_pubmedqa.jinja", "mcq_instruction": "instruct_mcq.jinja"}


def instruction_example(question: Question, templates: Templates, kind: str, test_ids: Collection[str] | None = None) -> Example:
    """A labelled question as a free-form instruction answered with its explanation.

    `kind` picks the template: "pubmedqa_instruction" (instruct_pubmedqa.jinja, answered with PubMedQA's long
    answer) or "mcq_instruction" (instruct_mcq.jinja).
    """
    refuse_test_split([question], test_ids)
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
    question: Question, templates: Templates, formats: Sequence[str], test_ids: Collection[str] | None = None
) -> list[Example]:
    """One question in each inference format, with the gold target continuing the prompt as the strategies continue it.

    - voc_verify (one per option): verify_prompt(q, label) -> verification + verdict_prefix + verdict_true/false
      (what the voc strategy scores after `generation.rstrip() + verdict_prefix`);
    - voc_choose: choose_prompt(q, the target verifications) -> the gold candidate;
    - direct: Direct.prompt(q) -> the gold candidate;
    - cot: reasoning_prompt(q) -> reasoning + answer_prefix + the gold candidate.

    A question of PubMedQA's test split raises TestSplitError.
    """
    refuse_test_split([question], test_ids)
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
            response = text.rstrip() + templates.block(VERIFY, "verdict_prefix", question=question, option=option) + verdict
            examples.append(Example(voc.verify_prompt(question, label), response, "voc_verify"))
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
        response = reasoning.rstrip() + templates.block(COT, "answer_prefix") + candidate
        examples.append(Example(cot.reasoning_prompt(question), response, "cot"))
    return examples


# --- tokenising --------------------------------------------------------------------------------------------------


def encode_prompt(tokenizer: Any, prompt: ChatPrompt) -> list[int]:
    """Token ids of a prompt exactly as voc's HFEngine encodes it: render_chat, then special tokens only without a chat template."""
    text = render_chat(tokenizer, prompt)
    return tokenizer(text, add_special_tokens=not getattr(tokenizer, "chat_template", None))["input_ids"]


def encode_example(tokenizer: Any, example: Example) -> dict[str, list[int]]:
    """{input_ids, labels}: the prompt tokens (no loss), then the response tokens and EOS (the loss)."""
    prompt = encode_prompt(tokenizer, example.prompt)
    response = tokenizer(example.response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return {"input_ids": prompt + response, "labels": [IGNORE] * len(prompt) + response}


@dataclass
class _Window:
    """Stands in for an engine in Strategy.fit_context: only the length limit matters."""

    max_model_len: int


def encode_question(
    tokenizer: Any, question: Question, build: Callable[[Question], list[Example]], max_length: int, fitter: Strategy | None = None
) -> tuple[list[dict[str, list[int]]], list[str], bool]:
    """Encode a question's examples; a context too long for `max_length` is shortened the way the strategies shorten it.

    Returns (records, their example kinds, context_truncated); raises PromptTooLongError when even the question
    without its context is too long.
    """

    def longest(q: Question) -> int:
        return max(len(encode_example(tokenizer, e)["input_ids"]) for e in build(q))

    fitter = fitter or Strategy()
    fitted, truncated = fitter.fit_context(question, _Window(max_length), longest, 0)  # type: ignore[arg-type]
    examples = build(fitted)
    return [encode_example(tokenizer, e) for e in examples], [e.kind for e in examples], truncated


# --- one stage -----------------------------------------------------------------------------------------------------


def _sample(items: list[Any], limit: int | None, seed: int) -> list[Any]:
    if not limit or limit >= len(items):
        return items
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


def build_stage_data(config: FinetuneConfig, stage: Stage, tokenizer: Any, templates: Templates, progress: bool = True) -> StageData:
    """All records of one stage, and counts per source (for run.json)."""
    seed = config.seed
    root = _data_root_or_none(config)
    if stage.kind == "knowledge":
        texts: list[str] = []
        sources = []
        for source in stage.data:
            if isinstance(source, TextSource):
                docs = _sample(list(read_texts(config.resolve_data_path(source.path), source.text_field)), source.limit, seed)  # type: ignore[arg-type]
            elif isinstance(source, PubMedQAAbstracts):
                docs = [pubmedqa_abstract(q) for q in pubmedqa_train_questions(config.resolve_data_path(source.path), source.limit, seed)]
            else:  # pragma: no cover - the config validator rules this out
                raise ValueError(f"data type {source.type!r} does not fit a knowledge stage")
            sources.append({"type": source.type, "path": getattr(source, "path", None), "documents": len(docs)})
            texts.extend(docs)
        bar = tqdm(texts, desc=f"{stage.label}: tokenise", disable=not progress, unit="doc")
        records, n_tokens = pack_blocks(bar, tokenizer, stage.max_length)
        counts = {"sources": sources, "documents": len(texts), "tokens": n_tokens, "blocks": len(records), "block_size": stage.max_length}
        return StageData(records, counts)

    fitter = Strategy(templates)
    records = []
    sources = []
    dropped = truncated = 0
    kinds: dict[str, int] = {}
    for source in stage.data:
        path = config.resolve_data_path(getattr(source, "path", None))
        builders: list[tuple[Question | None, Callable[[Question], list[Example]] | list[Example]]] = []
        if isinstance(source, MessagesSource):
            assert path is not None
            builders = [(None, [e]) for e in _sample(read_messages(path), source.limit, seed)]
        elif isinstance(source, PubMedQAInstructions):
            ids = _test_ids(None if path is None else str(path))
            questions = pubmedqa_train_questions(path, source.limit, seed)
            builders = [(q, lambda q, i=ids: [instruction_example(q, templates, "pubmedqa_instruction", test_ids=i)]) for q in questions]
        elif isinstance(source, MCQInstructions):
            assert path is not None
            questions = mcq_training_questions(source.dataset, path, source.limit, seed, root)
            builders = [(q, lambda q: [instruction_example(q, templates, "mcq_instruction")]) for q in questions]
        elif isinstance(source, PubMedQATask | MCQTask):
            ids: Collection[str] | None = None
            if isinstance(source, PubMedQATask):
                questions = pubmedqa_train_questions(path, source.limit, seed)
                ids = _test_ids(None if path is None else str(path))
            else:
                assert path is not None
                questions = mcq_training_questions(source.dataset, path, source.limit, seed, root)
            formats = list(dict.fromkeys(source.formats))
            builders = [(q, lambda q, f=formats, i=ids: task_examples(q, templates, f, i)) for q in questions]
        n_records = 0
        for question, build in tqdm(builders, desc=f"{stage.label}: {source.type}", disable=not progress, unit="item"):
            if question is None:
                assert isinstance(build, list)
                encoded = [encode_example(tokenizer, e) for e in build]
                if any(len(r["input_ids"]) > stage.max_length for r in encoded):
                    dropped += 1
                    continue
                kinds["messages"] = kinds.get("messages", 0) + 1
            else:
                assert callable(build)
                try:
                    encoded, example_kinds, cut = encode_question(tokenizer, question, build, stage.max_length, fitter)
                except PromptTooLongError:
                    dropped += 1
                    continue
                truncated += cut
                for kind in example_kinds:
                    kinds[kind] = kinds.get(kind, 0) + 1
            records.extend(encoded)
            n_records += len(encoded)
        sources.append({"type": source.type, "path": str(path) if path else None, "items": len(builders), "examples": n_records})
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
    }
    return StageData(records, counts)


def _data_root_or_none(config: FinetuneConfig) -> Path | None:
    try:
        return config.data_root_path()
    except FileNotFoundError:
        return None
