"""Shared machinery of the dataset loader: errors that name file and line, the load report, JSONL reading, turning rows
into questions with skip-and-count of bad rows, the data root and stratified sampling.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from voc.types import Question

logger = logging.getLogger("voc.datasets")
SKIP_HINT = "fix the row or pass skip_invalid=True (voc bench: --skip-invalid)"


class DataError(ValueError):
    """A bad data file or row; the message names the file and the line (or key) and says what is wrong."""

    def __init__(self, source: str, reason: str, *, line: int | None = None, where: str | None = None, skippable: bool = True) -> None:
        self.source, self.reason, self.line, self.skippable = source, reason, line, skippable
        self.where = where if where is not None else (f"line {line}" if line is not None else None)
        super().__init__((f"{source} {self.where}" if self.where else source) + f": {reason}" + (f"; {SKIP_HINT}" if skippable else ""))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.source, self.reason, self.line, self.where, self.skippable))


def _rebuild(source: str, reason: str, line: int | None, where: str | None, skippable: bool) -> DataError:
    return DataError(source, reason, line=line, where=where, skippable=skippable)


class RowError(ValueError):
    """A bad row; the loader adds file and line. `at` points the error at another file (a split list)."""

    def __init__(self, reason: str, at: Loc | None = None) -> None:
        super().__init__(reason)
        self.at = at


@dataclass(frozen=True)
class Loc:
    """Where a record is: its file as messages show it, its line (None where there are no lines) and how to say it."""

    source: str
    line: int | None
    where: str


@dataclass
class LoadReport:
    """What a load read: questions loaded, bad rows skipped, empty or placeholder options dropped."""

    source: str
    loaded: int = 0
    errors: list[DataError] = field(default_factory=list)
    dropped_options: int = 0
    rows_with_dropped: int = 0

    @property
    def skipped(self) -> int:
        return len(self.errors)

    def summary(self) -> str:
        text = f"loaded {self.loaded} questions from {self.source}"
        if self.errors:
            first = self.errors[0]
            where = first.where if first.source == self.source else f"{first.source} {first.where}"
            text = f"skipped {self.skipped} invalid rows in {self.source} (first: {where}: {first.reason})"
        if self.dropped_options:
            text += f"; dropped {self.dropped_options} empty or placeholder options in {self.rows_with_dropped} rows"
        return text


class QuestionList(list[Question]):
    """A plain list of questions that also carries the `LoadReport` (`.report.skipped`)."""

    def __init__(self, questions: Iterable[Question] = (), report: LoadReport | None = None) -> None:
        super().__init__(questions)
        self.report = report if report is not None else LoadReport(source="")


def display_name(path: str | Path) -> str:
    """Short file name for messages: 'medqa/test.jsonl'."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validation_reason(error: ValidationError) -> str:
    """A one-line reason from a pydantic ValidationError."""
    parts = []
    for item in error.errors():
        loc, msg = ".".join(str(p) for p in item.get("loc", ())), item.get("msg", "").removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return one_line("; ".join(parts))


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise RowError(f"duplicate key {key!r} in a JSON object")
        result[key] = value
    return result


def _bad_constant(name: str) -> Any:
    raise RowError(f"{name} is not valid JSON")


def parse_json(text: str) -> Any:
    """json.loads that refuses duplicate keys and NaN/Infinity (RowError)."""
    return json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_bad_constant)


def read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"no {path.name} in {path.parent}; check the path (or set VOC_DATA_ROOT / --data-root)")
    return path.read_bytes().removeprefix(b"\xef\xbb\xbf")


def read_text(path: Path) -> str:
    """A UTF-8 file without its BOM; invalid UTF-8 is a DataError naming the line."""
    data = read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(display_name(path), f"not valid UTF-8 ({exc.reason})", line=line, skippable=False) from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | DataError]]:
    """(line number, row dict or DataError) for each non-blank line; never raises for a bad line (BOM, CRLF handled)."""
    name = display_name(path)
    for number, raw in enumerate(read_bytes(Path(path)).split(b"\n"), start=1):
        try:
            text = raw.removesuffix(b"\r").removeprefix(b"\xef\xbb\xbf").decode("utf-8")
            row = parse_json(text) if text.strip() else None
        except UnicodeDecodeError as exc:
            yield number, DataError(name, f"not valid UTF-8 ({exc.reason} at byte {exc.start})", line=number)
        except json.JSONDecodeError as exc:
            yield number, DataError(name, f"invalid JSON ({exc.msg}: column {exc.colno}); truncated line?", line=number)
        except RowError as exc:
            yield number, DataError(name, str(exc), line=number)
        else:
            if text.strip() and not isinstance(row, dict):
                row = DataError(name, f"expected a JSON object, got {type(row).__name__}", line=number)
            if text.strip():
                yield number, row


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row dict) for each non-blank line; a bad line raises DataError naming file and line."""
    for number, row in iter_jsonl(path):
        if isinstance(row, DataError):
            raise row
        yield number, row


def collect(source: str, rows: Iterable[tuple[Loc, Any]], convert: Callable[[Any], Question | None], report: LoadReport,
            skip_invalid: bool = False) -> QuestionList:  # fmt: skip
    """Turn rows into questions. A bad row raises DataError, or with `skip_invalid` is skipped and counted.

    `rows` yields (location, row or DataError); `convert` returns a Question, None to leave the row out on purpose
    (another split, a filter), or raises RowError / pydantic ValidationError / ValueError / TypeError.
    """
    questions: list[Question] = []
    seen: dict[str, str] = {}
    total = 0
    for loc, row in rows:
        total += 1
        try:
            question = row if isinstance(row, DataError) else convert(row)
            if question is not None and not isinstance(question, DataError) and question.id in seen:
                raise RowError(f"duplicate question id {question.id!r} (also at {seen[question.id]}); ids must be unique")
        except (ValidationError, ValueError, TypeError) as exc:
            at = getattr(exc, "at", None) or loc
            reason = validation_reason(exc) if isinstance(exc, ValidationError) else one_line(str(exc))
            question = DataError(at.source, reason, line=at.line, where=at.where)
        if isinstance(question, DataError):
            if not skip_invalid:
                raise question
            report.errors.append(question)
        elif question is not None:
            seen[question.id] = loc.where
            questions.append(question)
    if total == 0:
        raise DataError(source, "the file holds no rows", line=1, skippable=False)
    if not questions and report.errors:
        first = report.errors[0]
        raise DataError(source, f"all {report.skipped} rows are invalid (first: {first.where}: {first.reason})", skippable=False)
    report.loaded = len(questions)
    if report.errors or report.dropped_options:
        logger.warning(report.summary())
    return QuestionList(questions, report)


def data_root() -> Path:
    """The folder holding pubmedqa/, medqa/, ...: $VOC_DATA_ROOT, else shared/data in or above the working folder or the repository."""
    env = os.environ.get("VOC_DATA_ROOT")
    if env:
        if not Path(env).expanduser().is_dir():
            raise FileNotFoundError(f"VOC_DATA_ROOT={env} is not a folder; set it to the folder holding pubmedqa/, medqa/ ...")
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[2]
    candidates = [Path.cwd() / "shared/data", Path.cwd() / "../shared/data", repo / "shared/data", repo / "../shared/data"]
    found = next((c for c in candidates if c.is_dir()), None)
    if found is None:
        tried = ", ".join(str(c) for c in candidates)
        raise FileNotFoundError(f"no data folder found (tried {tried}); set VOC_DATA_ROOT to the folder holding pubmedqa/, medqa/ ...")
    return found.resolve()


def stratified_sample(questions: Sequence[Question], n: int, seed: int = 0) -> list[Question]:
    """A seeded random sample of `n` questions stratified by gold label, in the original order.

    Each label gets n * share questions (largest-remainder rounding); all are returned if n >= len(questions).
    """
    if n < 0:
        raise ValueError(f"sample size must be >= 0, got {n}")
    items = list(questions)
    if n >= len(items):
        return items
    strata: dict[str, list[int]] = {}
    for index, question in enumerate(items):
        strata.setdefault("" if question.gold is None else f"={question.gold}", []).append(index)
    keys = sorted(strata)
    exact = {key: n * len(strata[key]) / len(items) for key in keys}
    quota = {key: int(exact[key]) for key in keys}
    for key in sorted(keys, key=lambda k: (-(exact[k] - quota[k]), -len(strata[k]), k))[: n - sum(quota.values())]:
        quota[key] += 1
    rng = random.Random(seed)
    chosen = [index for key in keys for index in rng.sample(strata[key], quota[key])]
    return [items[i] for i in sorted(chosen)]
