"""Shared machinery of the dataset loaders: errors that name file and line, JSONL/JSON reading,
skip-and-count of bad rows, the data root, Hugging Face hub rows and stratified sampling.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from voc.types import Question

logger = logging.getLogger("voc.datasets")

SKIP_HINT = "fix the row or pass skip_invalid=True (voc bench: --skip-invalid)"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class DataError(ValueError):
    """A bad data file or row; the message names the file and the line (or key) and says what is wrong."""

    def __init__(
        self, source: str, reason: str, *, line: int | None = None, where: str | None = None, skippable: bool = True
    ) -> None:
        self.source = source
        self.reason = reason
        self.line = line
        self.where = where if where is not None else (f"line {line}" if line is not None else None)
        self.skippable = skippable
        location = f"{source} {self.where}" if self.where else source
        hint = f"; {SKIP_HINT}" if skippable else ""
        super().__init__(f"{location}: {reason}{hint}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_data_error, (self.source, self.reason, self.line, self.where, self.skippable))


def _rebuild_data_error(source: str, reason: str, line: int | None, where: str | None, skippable: bool) -> DataError:
    return DataError(source, reason, line=line, where=where, skippable=skippable)


class RowError(ValueError):
    """Raised by row converters for a bad row; the loader adds file and line."""


@dataclass
class LoadReport:
    """What a loader read from one source: questions loaded and bad rows skipped."""

    source: str
    loaded: int = 0
    errors: list[DataError] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return len(self.errors)

    def summary(self) -> str:
        if not self.errors:
            return f"loaded {self.loaded} questions from {self.source}"
        first = self.errors[0]
        return f"skipped {self.skipped} invalid rows in {self.source} (first: {first.where}: {first.reason})"


class QuestionList(list[Question]):
    """A plain list of questions that also carries the `LoadReport` (`.report.skipped`)."""

    report: LoadReport

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
        msg = item.get("msg", "")
        msg = msg.removeprefix("Value error, ")
        loc = ".".join(str(p) for p in item.get("loc", ()))
        parts.append(f"{loc}: {msg}" if loc else msg)
    return one_line("; ".join(parts))


# --- reading -------------------------------------------------------------------------------------------------


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise RowError(f"duplicate key {key!r} in a JSON object")
        result[key] = value
    return result


def parse_json(text: str) -> Any:
    """json.loads that refuses duplicate keys (raises RowError) and NaN/Infinity."""

    def bad_constant(name: str) -> Any:
        raise RowError(f"{name} is not valid JSON")

    return json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=bad_constant)


def read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"no data file {path}; check the path (or set VOC_DATA_ROOT)")
    return path.read_bytes()


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | DataError]]:
    """Yield (line number, row dict or DataError) for each non-blank line; never raises for a bad line."""
    path = Path(path)
    name = display_name(path)
    for number, raw in enumerate(read_bytes(path).split(b"\n"), start=1):
        raw = raw.removesuffix(b"\r")
        if raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield number, DataError(name, f"not valid UTF-8 ({exc.reason} at byte {exc.start})", line=number)
            continue
        if not text.strip():
            continue
        try:
            row = parse_json(text)
        except json.JSONDecodeError as exc:
            reason = f"invalid JSON ({exc.msg} at column {exc.colno}); truncated line?"
            yield number, DataError(name, reason, line=number)
            continue
        except RowError as exc:
            yield number, DataError(name, str(exc), line=number)
            continue
        if not isinstance(row, dict):
            yield number, DataError(name, f"expected a JSON object, got {type(row).__name__}", line=number)
            continue
        yield number, row


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, row dict) for each non-blank line; a bad line raises DataError naming file and line.

    Handles a UTF-8 BOM, CRLF line ends and blank lines.
    """
    for number, row in iter_jsonl(path):
        if isinstance(row, DataError):
            raise row
        yield number, row


def read_json_object(path: str | Path) -> dict[str, Any]:
    """Read a JSON file whose top level is an object; errors name the file and the line."""
    path = Path(path)
    name = display_name(path)
    data = read_bytes(path)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(name, f"not valid UTF-8 ({exc.reason})", line=line, skippable=False) from None
    if not text.strip():
        raise DataError(name, "the file is empty; expected a JSON object", line=1, skippable=False)
    try:
        obj = parse_json(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            name, f"invalid JSON ({exc.msg} at column {exc.colno}); truncated file?", line=exc.lineno, skippable=False
        ) from None
    except RowError as exc:  # a duplicate key: the message names it
        raise DataError(name, str(exc), skippable=False) from None
    if not isinstance(obj, dict):
        raise DataError(
            name, f"expected a JSON object at the top level, got {type(obj).__name__}", line=1, skippable=False
        )
    return obj


# --- hub -----------------------------------------------------------------------------------------------------


def is_hub_id(path: str | Path | None) -> bool:
    """True when `path` is a string like 'org/name' that is not an existing local path."""
    return isinstance(path, str) and not Path(path).exists() and bool(_HUB_ID.match(path))


def iter_hub(hub_id: str, split: str, name: str | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (row number, row dict) from `datasets.load_dataset(hub_id, name, split=split)` (needs network)."""
    try:
        import datasets  # optional dependency, imported only for hub ids
    except ImportError as exc:
        raise ImportError(f"loading {hub_id!r} from the Hugging Face hub needs `pip install datasets`") from exc
    dataset = datasets.load_dataset(hub_id, name, split=split) if name else datasets.load_dataset(hub_id, split=split)
    for number, row in enumerate(dataset, start=1):
        yield number, dict(row)


def hub_source(hub_id: str, split: str) -> str:
    return f"hub:{hub_id}[{split}]"


# --- collecting ----------------------------------------------------------------------------------------------


def collect(
    source: str,
    rows: Iterable[tuple[int | str, Mapping[str, Any] | DataError]],
    convert: Callable[[Mapping[str, Any], int | str], Question | None],
    *,
    skip_invalid: bool = False,
    locator: Callable[[int | str], str] | None = None,
    check_ids: bool = True,
) -> QuestionList:
    """Turn rows into questions. A bad row raises DataError, or with `skip_invalid` is skipped and counted.

    `rows` yields (line number or key, row or DataError); `convert` returns a Question, None to leave the row
    out on purpose (a filter), or raises RowError / pydantic ValidationError / ValueError / TypeError.
    """
    report = LoadReport(source=source)
    questions: list[Question] = []
    seen_ids: dict[str, str] = {}
    total = 0

    def where_of(key: int | str) -> str:
        if locator is not None:
            return locator(key)
        return f"line {key}" if isinstance(key, int) else str(key)

    for key, row in rows:
        total += 1
        line = key if isinstance(key, int) else None
        error: DataError | None = None
        if isinstance(row, DataError):
            error = row
        else:
            try:
                question = convert(row, key)
            except ValidationError as exc:
                error = DataError(source, validation_reason(exc), line=line, where=where_of(key))
            except (RowError, ValueError, TypeError) as exc:
                error = DataError(source, one_line(str(exc)), line=line, where=where_of(key))
            else:
                if question is None:
                    continue
                if check_ids and question.id in seen_ids:
                    reason = (
                        f"duplicate question id {question.id!r} (also at {seen_ids[question.id]}); ids must be unique"
                    )
                    error = DataError(source, reason, line=line, where=where_of(key))
                else:
                    seen_ids[question.id] = where_of(key)
                    questions.append(question)
                    continue
        if not skip_invalid:
            raise error
        report.errors.append(error)

    if total == 0:
        raise DataError(source, "the file holds no rows", line=1, skippable=False)
    if not questions and report.errors:
        first = report.errors[0]
        raise DataError(
            source, f"all {report.skipped} rows are invalid (first: {first.where}: {first.reason})", skippable=False
        )
    report.loaded = len(questions)
    if report.errors:
        logger.warning(report.summary())
    return QuestionList(questions, report)


# --- row helpers ---------------------------------------------------------------------------------------------


def get_field(row: Mapping[str, Any], name: str, kind: type | tuple[type, ...] | None = None) -> Any:
    """row[name], with RowError "missing field 'name'" or "field 'name' must be str, got int"."""
    if name not in row or row[name] is None:
        raise RowError(f"missing field {name!r}")
    value = row[name]
    if kind is not None and (not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind))):
        expected = " or ".join(k.__name__ for k in _kinds(kind))
        raise RowError(f"field {name!r} must be {expected}, got {type(value).__name__}")
    return value


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def check_answer_text(row: Mapping[str, Any], options: Mapping[str, Any], gold: str) -> None:
    """If the row has an 'answer' text, it must be the text of the gold option (catches shifted labels)."""
    answer = row.get("answer")
    if not isinstance(answer, str) or not isinstance(options, Mapping) or gold not in options:
        return
    text = options[gold]
    if isinstance(text, str) and " ".join(answer.split()).casefold() != " ".join(text.split()).casefold():
        raise RowError(
            f"answer {one_line(answer, 80)!r} is not the text of the gold option {gold!r} ({one_line(text, 80)!r})"
        )


# --- data root -----------------------------------------------------------------------------------------------


def data_root() -> Path:
    """The folder holding pubmedqa/, medqa/, ...: $VOC_DATA_ROOT, else ./shared/data, ../shared/data, or next to
    the repository."""
    env = os.environ.get("VOC_DATA_ROOT")
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(
                f"VOC_DATA_ROOT={env} is not a folder; set it to the folder holding pubmedqa/, medqa/ ..."
            )
        return root
    repo = Path(__file__).resolve().parents[2]
    candidates = [
        Path.cwd() / "shared/data",
        Path.cwd() / "../shared/data",
        repo / "shared/data",
        repo / "../shared/data",
    ]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"no data folder found (tried {tried}); set VOC_DATA_ROOT to the folder holding pubmedqa/, medqa/ ..."
    )


def resolve_file(path: str | Path | None, default_folder: str, filename: str) -> Path:
    """`path` may be the file, or a folder holding `filename`; None means data_root()/default_folder/filename."""
    base = data_root() / default_folder if path is None else Path(path).expanduser()
    if base.is_dir():
        base = base / filename
    if not base.is_file():
        raise FileNotFoundError(f"no data file {base}; pass the file or its folder, or set VOC_DATA_ROOT")
    return base


# --- sampling ------------------------------------------------------------------------------------------------


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
    total = len(items)
    exact = {key: n * len(strata[key]) / total for key in keys}
    quota = {key: int(exact[key]) for key in keys}
    left = n - sum(quota.values())
    by_remainder = sorted(keys, key=lambda k: (-(exact[k] - quota[k]), -len(strata[k]), k))
    for key in by_remainder[:left]:
        quota[key] += 1
    rng = random.Random(seed)
    chosen: list[int] = []
    for key in keys:
        chosen.extend(rng.sample(strata[key], quota[key]))
    return [items[i] for i in sorted(chosen)]
