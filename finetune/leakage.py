"""The test-split leakage guard: every fine-tuning source is checked by content against every test split voc knows.

`leakage_index(root)` reads the test files under a data root with the `voc.datasets` loaders, once per root (cached):

- PubMedQA: the 500 test PMIDs, their question texts, and the sentences of their abstracts (CONTEXTS and the
  LONG_ANSWER conclusion, which states the answer);
- MedQA (4 and 5 options), MedMCQA and MMLU-medical: the test question texts and their options.

Two checks use it:

- `LeakageIndex.match_question(question)`: a question-like record (a row of an MCQ or PubMedQA training file) leaks
  if its PMID is a test PMID, if its normalised question text equals a test question's (a short or repeated stem
  also needs most of the test question's options: see `LONE_STEM_WORDS`), or if its text contains test content as
  a document would;
- `LeakageIndex.match_text(text)`: a document (a `text` corpus entry, a `messages` conversation) leaks if it contains
  a test question or enough of a test abstract.

`Guard.screen` applies a check to the records of one source: it refuses them with a one-line `TestSplitError`
naming the source, the record and the test split, or (mode "filter") drops them and counts them.

Normalisation: question texts are compared after casefolding, collapsing whitespace and stripping punctuation at
the edges (`normalise`). Containment works on word sequences (`words`: casefolded runs of letters and digits), so
line breaks, spacing and punctuation between words do not hide a pasted text. The index keys Python dicts by the
normalised texts themselves (hashed by Python, then compared in full), so a hash collision cannot make a false match.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from voc.datasets import DataError, load_dataset, load_pubmedqa
from voc.datasets.common import iter_jsonl
from voc.types import Question

log = logging.getLogger("finetune")

LeakageMode = Literal["refuse", "filter"]
T = TypeVar("T")

# The test splits, by voc.datasets name, and the files under the data root they are read from.
MCQ_SPLITS: dict[str, str] = {
    "medqa": "medqa/test.jsonl",
    "medqa_5options": "medqa_5options/test.jsonl",
    "medmcqa": "medmcqa/test.jsonl",
    "mmlu_medical": "mmlu_medical/test.jsonl",
}
TEST_SPLITS: tuple[str, ...] = ("pubmedqa", *MCQ_SPLITS)
PUBMEDQA_FILES = ("pubmedqa/ori_pqal.json", "pubmedqa/test_ground_truth.json")  # the data and the test split's list

# Why these thresholds. Containment is exact (a whole test question or a whole abstract sentence must appear, word for
# word), so a match never comes from a shared phrase inside a sentence. What can still collide by chance is a whole
# short test text that is itself a common phrase: "Which of the following is true about hepatitis B?" or
# "The study was approved by the ethics committee of our hospital." Hence:
# - a multiple-choice stem alone identifies its test question only when it has >= LONE_STEM_WORDS words (MedQA's
#   vignettes, MMLU's professional-medicine cases) and is unique in its test set; a shorter or repeated stem leaks
#   only together with most of its options (OPTIONS_NEEDED), right after it in a document or among a record's options;
# - an abstract sentence is indexed only with >= SENTENCE_MIN_WORDS words and >= SENTENCE_MIN_CHARS characters, and
#   only if it occurs in no other PubMedQA abstract (test or training: such a sentence is boilerplate, not this paper);
# - a document leaks on a test abstract when it holds one of its sentences with >= LONE_SENTENCE_WORDS words, its
#   question (the article's title) with >= LONE_TITLE_WORDS words, or any two of its pieces (title and sentences).
#   A pasted abstract has ~10 indexed sentences, so it is caught many times over; a single short sentence is not.
LONE_STEM_WORDS = 20
SENTENCE_MIN_WORDS = 8
SENTENCE_MIN_CHARS = 40
LONE_SENTENCE_WORDS = 20
LONE_TITLE_WORDS = 8
ANCHOR_WORDS = 8  # texts are found by their first ANCHOR_WORDS words (a dict lookup per position), then compared whole

_EDGES = re.compile(r"^[\W_]+|[\W_]+$")
_WORD = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\n+")
_SECTION_LABEL = re.compile(r"^[A-Z][A-Z0-9 ,&/()-]*:\s+")  # "RESULTS: " as voc's PubMedQA loader writes it


class TestSplitError(ValueError):
    """Fine-tuning data that matches a test split (or that cannot be checked against one)."""

    __test__ = False  # not a pytest test class


def normalise(text: str) -> str:
    """Casefolded, whitespace collapsed, punctuation stripped at the edges: the form question texts are compared in."""
    return _EDGES.sub("", " ".join(text.casefold().split()))


def words(text: str) -> list[str]:
    """The casefolded words (runs of letters and digits) of a text: the form containment is checked in."""
    return _WORD.findall(text.casefold())


def sentences(text: str) -> list[str]:
    """Sentences of an abstract section (split after . ! ? ; and at line breaks)."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


# --- the index -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestRef:
    """One test item: its split (a voc.datasets name) and its id (question id, or PMID for PubMedQA)."""

    __test__ = False

    split: str
    id: str


@dataclass(frozen=True)
class _TestQuestion:
    """A test question as records are compared with it: its options, and whether the stem alone identifies it."""

    ref: TestRef
    options: frozenset[str]  # normalised option texts
    lone: bool


@dataclass(frozen=True)
class _Piece:
    """A word sequence to look for inside documents: a test question stem, or an abstract's title or sentence."""

    words: tuple[str, ...]
    refs: tuple[TestRef, ...]
    kind: Literal["question", "title", "sentence"]
    options: tuple[str, ...] = ()  # joined option words that must follow a short stem (`needed` of them)
    needed: int = 0


@dataclass(frozen=True)
class Match:
    """Why a record leaks: the test item it matches, where in the text (a word index), and a readable reason."""

    ref: TestRef
    reason: str
    also: tuple[str, ...] = ()  # other splits holding the same test question (MedQA's 4- and 5-option sets)
    word: int | None = None

    def describe(self) -> str:
        also = f" (also in {', '.join(self.also)})" if self.also else ""
        return f"{self.reason}{also}"


@dataclass
class LeakageIndex:
    """What the test splits under one data root hold, in the forms the checks compare (see the module docstring)."""

    root: Path | None
    pmids: frozenset[str] = frozenset()
    questions: dict[str, list[_TestQuestion]] = field(default_factory=dict)  # normalised stem -> test questions
    anchors: dict[tuple[str, ...], list[_Piece]] = field(default_factory=dict)  # first words -> pieces
    anchor_lengths: dict[str, tuple[int, ...]] = field(default_factory=dict)  # first word -> anchor lengths
    sizes: dict[str, int] = field(default_factory=dict)  # split -> test questions indexed
    n_sentences: int = 0  # abstract sentences indexed
    missing: dict[str, str] = field(default_factory=dict)  # split -> why it could not be read
    seconds: float = 0.0
    pmid_split: str = "pubmedqa"  # what the PMIDs belong to: PubMedQA's test split, or the questions of `question_index`
    item: str = "test question"  # what an indexed question is called in messages

    # -- records -------------------------------------------------------------------------------------------------

    def match_question(self, question: Question) -> Match | None:
        """Whether a labelled training question is (or contains) a test item; None when it is clean."""
        pmid = _pmid_of(question)
        if pmid is not None and pmid in self.pmids:
            where = "PubMedQA's test split" if self.pmid_split == "pubmedqa" else self.pmid_split
            return Match(TestRef(self.pmid_split, pmid), f"PMID {pmid} is in {where}")
        options = frozenset(normalise(text) for text in question.options.values())
        tests = self.questions.get(normalise(question.question), ())
        matched = [(t, len(t.options & options)) for t in tests]
        matched = [(t, shared) for t, shared in matched if t.lone or shared >= _needed(len(t.options))]
        matched.sort(key=lambda pair: -pair[1])  # the test question whose options it shares most (MedQA 4 vs 5 options)
        if matched:
            test, shared = matched[0]
            how = "" if test.lone else f" with {shared} of its {len(test.options)} options"
            also = tuple(sorted({t.ref.split for t, _ in matched} - {test.ref.split}))
            return Match(test.ref, f"the question text equals {test.ref.split} {self.item} {test.ref.id}{how}", also)
        explanation = next((question.metadata.get(k) for k in ("long_answer", "explanation", "exp")
                            if isinstance(question.metadata.get(k), str)), None)
        parts = [question.question, *question.options.values(), question.context or "", explanation or ""]
        return self.match_text("\n".join(p for p in parts if p))

    # -- documents -----------------------------------------------------------------------------------------------

    def match_text(self, text: str) -> Match | None:
        """Whether a document contains a test question or enough of a test abstract; None when it is clean."""
        tokens = words(text)
        found: dict[str, dict[int, tuple[_Piece, int]]] = {}  # PMID -> pieces of its abstract found (by id) and where
        n = len(tokens)
        for i, word in enumerate(tokens):
            lengths = self.anchor_lengths.get(word)
            if lengths is None:
                continue
            for length in lengths:
                pieces = self.anchors.get(tuple(tokens[i : i + length])) if i + length <= n else None
                for piece in pieces or ():
                    end = i + len(piece.words)
                    if end > n or tuple(tokens[i:end]) != piece.words:
                        continue
                    if piece.kind == "question":
                        if piece.needed and not _options_follow(piece, tokens, end):
                            continue
                        ref = piece.refs[0]
                        how = "" if not piece.needed else " with its options"
                        return Match(ref, f"it contains {ref.split} {self.item} {ref.id}{how}",
                                     tuple(r.split for r in piece.refs[1:]), i)
                    pmid = piece.refs[0].id
                    found.setdefault(pmid, {}).setdefault(id(piece), (piece, i))
                    match = self._abstract_match(pmid, found[pmid])
                    if match is not None:
                        return match
        return None

    def _abstract_match(self, pmid: str, pieces: dict[int, tuple[_Piece, int]]) -> Match | None:
        lone = [(p, i) for p, i in pieces.values()
                if len(p.words) >= (LONE_TITLE_WORDS if p.kind == "title" else LONE_SENTENCE_WORDS)]
        if not lone and len(pieces) < 2:
            return None
        first = min(i for _, i in pieces.values())
        n_sentences = sum(p.kind == "sentence" for p, _ in pieces.values())
        what = ["the question"] if n_sentences < len(pieces) else []
        if n_sentences:
            what.append(f"{n_sentences} sentence{'s' if n_sentences > 1 else ''} of the abstract")
        return Match(TestRef("pubmedqa", pmid), f"it contains {' and '.join(what)} of PubMedQA test PMID {pmid}", (), first)

    # -- reporting -----------------------------------------------------------------------------------------------

    def summary(self) -> dict[str, object]:
        """What the index was built from, for run.json."""
        return {"checked": dict(self.sizes), "abstract_sentences": self.n_sentences, "missing": dict(self.missing),
                "seconds": round(self.seconds, 3), "data_root": str(self.root) if self.root else None}


def _needed(n_options: int) -> int:
    """How many of a short stem's options must match: more than half of them."""
    return n_options // 2 + 1


def _options_follow(piece: _Piece, tokens: list[str], end: int) -> bool:
    """Whether enough of a short stem's options appear in the words right after it (labels like 'A.' allowed between)."""
    span = sum(len(o.split()) for o in piece.options) + 3 * len(piece.options) + 10
    window = " " + " ".join(tokens[end : end + span]) + " "
    return sum(f" {option} " in window for option in piece.options) >= piece.needed


def _pmid_of(question: Question) -> str | None:
    """The PubMedQA PMID of a question (from metadata or an id like 'pubmedqa-<pmid>'), else None."""
    pmid = question.metadata.get("pmid")
    if pmid is not None:
        return str(pmid).strip()
    if question.id.startswith("pubmedqa-"):
        return question.id.removeprefix("pubmedqa-")
    return None


# --- building ------------------------------------------------------------------------------------------------------


def leakage_index(root: Path | str | None = None) -> LeakageIndex:
    """The index of the test splits under `root` (default voc.datasets.data_root()); built once per root and file state."""
    if root is None:
        from voc.datasets import data_root

        try:
            root = data_root()
        except FileNotFoundError as error:
            return _empty_index(str(error))
    root = Path(root).expanduser().resolve()
    return _cached_index(root, _file_state(root))


def _file_state(root: Path) -> tuple[tuple[str, int, int], ...]:
    """(file, mtime, size) of every test file: a changed test file gives a new index."""
    files = [*PUBMEDQA_FILES, *MCQ_SPLITS.values()]
    state = []
    for name in files:
        try:
            stat = (root / name).stat()
            state.append((name, stat.st_mtime_ns, stat.st_size))
        except OSError:
            state.append((name, -1, -1))
    return tuple(state)


@functools.lru_cache(maxsize=1)
def _empty_index(why: str) -> LeakageIndex:
    log.warning(f"no data root: fine-tuning data cannot be checked against the test splits ({why})")
    return LeakageIndex(None, missing={split: why for split in TEST_SPLITS})


@functools.lru_cache(maxsize=4)
def _cached_index(root: Path, state: tuple[tuple[str, int, int], ...]) -> LeakageIndex:
    return build_index(root)


def build_index(root: Path) -> LeakageIndex:
    """Read every test split under `root` with the voc.datasets loaders and index it (uncached; see leakage_index)."""
    clock = time.perf_counter()
    index = LeakageIndex(root)
    stems: dict[tuple[str, ...], list[_Piece]] = {}
    try:
        _add_pubmedqa(index, root / "pubmedqa", stems)
    except FileNotFoundError as error:
        index.missing["pubmedqa"] = str(error)
    for split, name in MCQ_SPLITS.items():
        file = root / name
        if not file.is_file():
            index.missing[split] = f"no {file}"
            continue
        _add_mcq(index, split, file, stems)
    for pieces in stems.values():
        for piece in _merge_lone(pieces):
            _anchor(index, piece)
    index.anchor_lengths = {first: tuple(sorted(lengths)) for first, lengths in _lengths(index.anchors).items()}
    index.seconds = time.perf_counter() - clock
    if index.missing:
        log.warning(f"test splits not found under {root}, not checked for leakage: {', '.join(index.missing)}")
    return index


def _add_pubmedqa(index: LeakageIndex, folder: Path, stems: dict[tuple[str, ...], list[_Piece]]) -> None:
    test = load_pubmedqa(folder, split="test")
    every = load_pubmedqa(folder, split="all", skip_invalid=True)  # test, dev and train
    index.pmids = frozenset(str(q.metadata["pmid"]) for q in test)
    index.sizes["pubmedqa"] = len(test)
    # a sentence found in more than one abstract (test or training) is boilerplate: it does not point at one paper
    seen = Counter(tuple(words(s)) for q in every for s in set(_abstract_sentences(q)))
    for q in test:
        ref = TestRef("pubmedqa", str(q.metadata["pmid"]))
        index.questions.setdefault(normalise(q.question), []).append(_TestQuestion(ref, frozenset(), lone=True))
        title = tuple(words(q.question))
        if title:
            stems.setdefault(title, []).append(_Piece(title, (ref,), "title"))
        for sentence in dict.fromkeys(_abstract_sentences(q)):
            tokens = tuple(words(sentence))
            if len(tokens) >= SENTENCE_MIN_WORDS and len(normalise(sentence)) >= SENTENCE_MIN_CHARS and seen[tokens] == 1:
                _anchor(index, _Piece(tokens, (ref,), "sentence"))
                index.n_sentences += 1


def _abstract_sentences(question: Question) -> list[str]:
    """The sentences of a PubMedQA entry's abstract sections and its LONG_ANSWER conclusion, without section labels."""
    lines = [_SECTION_LABEL.sub("", line) for line in (question.context or "").split("\n")]
    long_answer = question.metadata.get("long_answer")
    if isinstance(long_answer, str):
        lines.append(long_answer)
    return [s for line in lines for s in sentences(line)]


def _add_mcq(index: LeakageIndex, split: str, file: Path, stems: dict[tuple[str, ...], list[_Piece]]) -> None:
    questions = load_dataset(split, file, skip_invalid=True)
    items = [(q.id, q.question, list(q.options.values())) for q in questions]
    # rows the loader refuses as malformed are still test questions: read their text raw
    bad_lines = {e.line for e in questions.report.errors if isinstance(e, DataError) and e.line is not None}
    if bad_lines:
        for line, row in iter_jsonl(file):
            if line in bad_lines and isinstance(row, dict) and isinstance(row.get("question"), str):
                options = row.get("options")
                texts = [str(v) for v in (options.values() if isinstance(options, dict) else options or [])]
                items.append((f"{split}-line{line}", row["question"], texts))
    _add_items(index, split, items, stems)


def _add_items(
    index: LeakageIndex, split: str, items: list[tuple[str, str, list[str]]], stems: dict[tuple[str, ...], list[_Piece]]
) -> None:
    """Index questions given as (id, stem, option texts) under `split`."""
    counts = Counter(normalise(stem) for _, stem, _ in items)
    for qid, stem, options in items:
        key = normalise(stem)
        tokens = tuple(words(stem))
        lone = len(tokens) >= LONE_STEM_WORDS and counts[key] == 1
        ref = TestRef(split, qid)
        index.questions.setdefault(key, []).append(_TestQuestion(ref, frozenset(normalise(o) for o in options), lone))
        if not tokens:
            continue
        joined = tuple(dict.fromkeys(" ".join(words(o)) for o in options if words(o)))
        piece = _Piece(tokens, (ref,), "question") if lone else _Piece(tokens, (ref,), "question", joined, _needed(len(joined)))
        stems.setdefault(tokens, []).append(piece)
    index.sizes[split] = len(items)


def question_index(questions: Sequence[Question], split: str) -> LeakageIndex:
    """An index of the given questions under the name `split`, checked like a test split (their PMIDs, and their stems
    with their options), e.g. to keep a few-shot pool apart from the questions it is used on."""
    clock = time.perf_counter()
    index = LeakageIndex(None, pmid_split=split, item="question")
    index.pmids = frozenset(pmid for q in questions if (pmid := _pmid_of(q)) is not None)
    stems: dict[tuple[str, ...], list[_Piece]] = {}
    _add_items(index, split, [(q.id, q.question, list(q.options.values())) for q in questions], stems)
    for pieces in stems.values():
        for piece in _merge_lone(pieces):
            _anchor(index, piece)
    index.anchor_lengths = {first: tuple(sorted(lengths)) for first, lengths in _lengths(index.anchors).items()}
    index.seconds = time.perf_counter() - clock
    return index


def _merge_lone(pieces: list[_Piece]) -> list[_Piece]:
    """One piece for a stem shared by several splits (MedQA's 4- and 5-option sets) when the stem alone identifies it."""
    lone = [p for p in pieces if p.kind == "question" and not p.needed]
    rest = [p for p in pieces if p not in lone]
    if len(lone) > 1:
        lone = [_Piece(lone[0].words, tuple(r for p in lone for r in p.refs), "question")]
    return lone + rest


def _anchor(index: LeakageIndex, piece: _Piece) -> None:
    index.anchors.setdefault(piece.words[:ANCHOR_WORDS], []).append(piece)


def _lengths(anchors: dict[tuple[str, ...], list[_Piece]]) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for key in anchors:
        out.setdefault(key[0], set()).add(len(key))
    return out


# --- screening a source --------------------------------------------------------------------------------------------


@dataclass
class Guard:
    """Screens the records of fine-tuning sources against an index: refuses a leak (the default) or drops and counts it."""

    index: LeakageIndex
    mode: LeakageMode = "refuse"
    dropped: int = 0
    by_split: Counter[str] = field(default_factory=Counter)
    matches: str = "test splits"  # what a match is a match of, in messages
    refusal: str = (
        "training on test data is refused: "
        "remove those records, or set `leakage: filter` on this source (or the whole config) to drop and count them"
    )

    def screen(
        self, records: Sequence[T], match: Callable[[T], Match | None], source: str, where: Callable[[int, T, Match], str]
    ) -> list[T]:
        """The records of `source` that match no test split.

        In "refuse" mode a match raises TestSplitError naming the first one (`where(position, record, match)` says where it
        is, e.g. "medqa/train.jsonl line 12"); in "filter" mode the matches are dropped, counted here and logged.
        """
        kept: list[T] = []
        leaks: list[tuple[int, T, Match]] = []
        for position, record in enumerate(records):
            found = match(record)
            if found is None:
                kept.append(record)
            else:
                leaks.append((position, record, found))
        if not leaks:
            return kept
        splits = Counter(m.ref.split for _, _, m in leaks)
        position, record, first = leaks[0]
        location = where(position, record, first)
        share = f"{len(leaks)} of {len(records)} records of {source} match {self.matches} ({_counts(splits)})"
        if self.mode == "refuse":
            raise TestSplitError(f"{location}: {first.describe()}; {share}; {self.refusal}")
        self.dropped += len(leaks)
        self.by_split.update(splits)
        log.warning(f"leakage: dropped {share}; first: {location}: {first.describe()}")
        return kept


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{split} {n}" for split, n in counter.most_common())


def text_location(text: str, match: Match) -> str:
    """' line N' of a multi-line document where a match starts ('' when unknown or the text is one line)."""
    if match.word is None or "\n" not in text:
        return ""
    for i, token in enumerate(_WORD.finditer(text)):
        if i == match.word:
            return f" line {text.count(chr(10), 0, token.start()) + 1}"
    return ""

