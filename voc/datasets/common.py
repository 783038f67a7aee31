"""Records of data files (JSONL, JSON, CSV/TSV, parquet) and hub datasets, each with where it is and its row, or a
DataError in place of a bad row (so that it can be skipped); the load report, the data root, stratified sampling."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import socket
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlparse

from voc.types import Question

FORMATS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
Record = tuple["Loc", str | None, Any]  # (where, its key in a JSON-object file or None, the row or a DataError)


class DataError(ValueError):
    """A bad data file or row; the message names the file and the line (or key) and says what is wrong."""

    def __init__(self, source: str, reason: str, line: int | None = None, where: str | None = None, skippable: bool = True) -> None:
        super().__init__(source, reason, line, where, skippable)  # the args rebuild it when unpickled
        self.source, self.reason, self.line, self.skippable = source, reason, line, skippable
        self.where = where or (f"line {line}" if line is not None else None)

    def __str__(self) -> str:
        place = f"{self.source} {self.where}" if self.where else self.source
        return f"{place}: {self.reason}" + ("; fix the row or pass skip_invalid=True (voc bench: --skip-invalid)" if self.skippable else "")


class Loc(NamedTuple):
    """Where a record is: its file as messages name it, its line (None where there are none) and how to say it."""

    source: str
    line: int | None
    where: str

    def error(self, reason: str, skippable: bool = True) -> DataError:
        return DataError(self.source, reason, self.line, self.where, skippable)


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
            what = f"skipped {self.skipped} invalid rows in {self.source}" if self.loaded else f"all {self.skipped} rows are invalid"
            text = f"{what} (first: {where}: {first.reason})"
        if self.dropped_options:
            text += f"; dropped {self.dropped_options} empty or placeholder options in {self.rows_with_dropped} rows"
        return text


class QuestionList(list[Question]):
    """A plain list of questions that also carries the `LoadReport` (`.report.skipped`)."""

    def __init__(self, questions: Iterable[Question] = (), report: LoadReport | None = None) -> None:
        super().__init__(questions)
        self.report = report or LoadReport(source="")


def display_name(path: str | Path) -> str:
    """Short file name for messages: 'medqa/test.jsonl'."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def one_line(text: Any, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_json(data: bytes, name: str, line: int | None = None) -> Any:
    """JSON from UTF-8 bytes, no duplicate keys or NaN; else a DataError naming the line (skippable for a JSONL `line`)."""

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        if len(set(keys)) < len(keys):
            raise ValueError(f"duplicate key {next(k for i, k in enumerate(keys) if k in keys[:i])!r} in a JSON object")
        return dict(pairs)

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=unique_keys, parse_constant=no_constant)
    except UnicodeDecodeError as exc:
        at, reason = (line or 1) + data[: exc.start].count(b"\n"), f"not valid UTF-8 ({exc.reason} at byte {exc.start})"
    except json.JSONDecodeError as exc:
        at, reason = (line or 1) + exc.lineno - 1, f"invalid JSON ({exc.msg}: column {exc.colno}); truncated {'line' if line else 'file'}?"
    except ValueError as exc:  # a duplicate key, NaN
        at, reason = line, str(exc)
    raise DataError(name, reason, at, skippable=line is not None)


def read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"no {path.name} in {path.parent}; check the path (or set VOC_DATA_ROOT / --data-root)")
    return path.read_bytes().removeprefix(b"\xef\xbb\xbf")


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | DataError]]:
    """(line number, row dict or DataError) for each non-blank line; never raises for a bad line (BOM, CRLF handled)."""
    name = display_name(path)
    for number, raw in enumerate(read_bytes(Path(path)).split(b"\n"), start=1):
        raw = raw.removesuffix(b"\r").removeprefix(b"\xef\xbb\xbf")
        if not raw.decode("utf-8", "replace").strip():
            continue
        try:
            row = parse_json(raw, name, number)
        except DataError as error:
            row = error
        if not isinstance(row, dict | DataError):
            row = DataError(name, f"expected a JSON object, got {type(row).__name__}", number)
        yield number, row


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row dict) for each non-blank line; a bad line raises DataError naming file and line."""
    for number, row in iter_jsonl(path):
        if isinstance(row, DataError):
            raise row
        yield number, row


def records(path: Path, fmt: str | None = None, key_name: str = "key") -> Iterator[Record]:
    """The records of a data file in format `fmt` (default: by its suffix). A JSON file holds a list of records or an
    object of them keyed by id (named `key_name` in messages); a broken file or CSV header raises DataError."""
    name, fmt = display_name(path), fmt or FORMATS.get(path.suffix.lower())
    if fmt in ("csv", "tsv"):
        yield from csv_records(path, "\t" if fmt == "tsv" else ",")
    elif fmt == "jsonl":
        yield from ((Loc(name, line, f"line {line}"), None, row) for line, row in iter_jsonl(path))
    elif fmt == "parquet":
        import pyarrow.parquet as pq  # a dependency of `datasets`

        rows = pq.read_table(io.BytesIO(read_bytes(path))).to_pylist()
        yield from ((Loc(name, None, f"row {n}"), None, row) for n, row in enumerate(rows, start=1))
    elif fmt == "json":
        data = read_bytes(path)
        value = parse_json(data, name) if data.strip() else None
        if isinstance(value, dict):
            yield from ((Loc(name, None, f"{key_name} {key.strip()}"), key.strip(), item) for key, item in value.items())
        elif isinstance(value, list):
            yield from ((Loc(name, None, f"record {n}"), None, item) for n, item in enumerate(value, start=1))
        else:
            what = "the file is empty" if value is None else f"got {type(value).__name__}"
            raise DataError(name, f"{what}; expected a JSON list or object of records", line=1, skippable=False)
    else:
        raise ValueError(f"cannot tell the format of {path.name}: name it .jsonl, .json, .csv, .tsv or .parquet, or give a spec's `format`")


def csv_records(path: Path, delimiter: str = ",") -> Iterator[Record]:
    """The records of a CSV file, keyed by its header row (quoted newlines handled); a bad header raises DataError."""
    name, data, header = display_name(path), read_bytes(path), None
    try:
        reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""), delimiter=delimiter, strict=True)
    except UnicodeDecodeError as exc:
        raise DataError(name, f"not valid UTF-8 ({exc.reason})", line=data[: exc.start].count(b"\n") + 1, skippable=False) from None
    while True:
        loc = Loc(name, reader.line_num + 1, f"line {reader.line_num + 1}")
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            if header is None:
                raise loc.error(f"bad CSV header ({exc})", skippable=False) from None
            reason = "unterminated quote, it runs to the end of the file" if "end of data" in str(exc) else exc
            yield loc, None, loc.error(f"bad CSV ({reason})")
            continue
        if not any(cell.strip() for cell in cells):
            continue
        if header is None:
            header = [cell.strip() for cell in cells]
            if (duplicates := sorted({c for c in header if header.count(c) > 1})) or "" in header:
                problem = f"duplicate columns {duplicates}" if duplicates else "an empty column name"
                raise loc.error(f"the header has {problem}", skippable=False)
        elif len(cells) != len(header):
            yield loc, None, loc.error(f"row has {len(cells)} fields, the header has {len(header)}")
        else:
            yield loc, None, dict(zip(header, cells, strict=True))
    if header is None:
        raise DataError(name, "the file is empty; expected a header row", line=1, skippable=False)


def hub_records(hub_id: str, config: str | None, split: str) -> Iterator[Record]:
    """Rows of `datasets.load_dataset(hub_id, config, split=split)`: needs network unless HF_DATASETS_OFFLINE=1 (its cache)."""
    source, advice = f"hf:{hub_id}[{split}]", "give a local path (a .jsonl/.json/.csv/.parquet file or a spec file) instead"
    if not os.environ.get("HF_DATASETS_OFFLINE") and not os.environ.get("HF_HUB_OFFLINE"):
        url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
        try:
            socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=5).close()
        except OSError as exc:
            reason = f"the Hugging Face hub is not reachable ({exc}); a hub dataset needs network access, or {advice}"
            raise DataError(source, reason, skippable=False) from None
    import datasets

    try:
        rows = datasets.load_dataset(hub_id, config, split=split)
    except Exception as exc:
        raise DataError(source, f"could not load it ({type(exc).__name__}: {one_line(exc, 200)}); {advice}", skippable=False) from None
    yield from ((Loc(source, None, f"row {n}"), None, dict(row)) for n, row in enumerate(rows, start=1))


def data_root() -> Path:
    """The folder holding pubmedqa/, medqa/, ...: $VOC_DATA_ROOT, else shared/data in or above the working folder or the repository."""
    if env := os.environ.get("VOC_DATA_ROOT"):
        if not Path(env).expanduser().is_dir():
            raise FileNotFoundError(f"VOC_DATA_ROOT={env} is not a folder; set it to the folder holding pubmedqa/, medqa/ ...")
        return Path(env).expanduser()
    candidates = [base / up / "shared/data" for base in (Path.cwd(), Path(__file__).resolve().parents[2]) for up in (".", "..")]
    if found := next((c.resolve() for c in candidates if c.is_dir()), None):
        return found
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"no data folder found (tried {tried}); set VOC_DATA_ROOT to the folder holding pubmedqa/, medqa/ ...")


def stratified_sample(questions: Sequence[Question], n: int, seed: int = 0) -> list[Question]:
    """A seeded random sample of `n` questions stratified by gold label (largest-remainder quotas), in the original
    order; all of them if n >= len(questions)."""
    if n < 0:
        raise ValueError(f"sample size must be >= 0, got {n}")
    if n >= len(questions):
        return list(questions)
    strata: dict[str, list[int]] = {}
    for index, question in enumerate(questions):
        strata.setdefault("" if question.gold is None else f"={question.gold}", []).append(index)
    exact = {key: n * len(strata[key]) / len(questions) for key in sorted(strata)}
    quota = {key: int(share) for key, share in exact.items()}
    for key in sorted(exact, key=lambda k: (quota[k] - exact[k], -len(strata[k]), k))[: n - sum(quota.values())]:
        quota[key] += 1
    rng = random.Random(seed)
    chosen = sorted(index for key, count in quota.items() for index in rng.sample(strata[key], count))
    return [questions[i] for i in chosen]
