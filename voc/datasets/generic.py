"""Load your own questions from JSONL or CSV with a field mapping.

Options may come as one field holding a dict label -> text or a list of texts (in CSV: a JSON-encoded column),
or as one field/column per option (`option_fields=["A", "B", "C", "D"]`, the names become the labels; empty
cells are left out, so rows may have different numbers of options).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voc.datasets.common import (
    DataError,
    QuestionList,
    RowError,
    collect,
    display_name,
    get_field,
    iter_jsonl,
    read_bytes,
)
from voc.types import Question


@dataclass(frozen=True)
class FieldMap:
    """Which row fields hold the question's parts."""

    question_field: str = "question"
    options_field: str | None = "options"
    option_fields: Sequence[str] | None = None
    context_field: str | None = None
    gold_field: str | None = None
    id_field: str | None = None
    metadata_fields: Sequence[str] | None = None

    def used(self) -> set[str]:
        names = [self.question_field, self.options_field, self.context_field, self.gold_field, self.id_field]
        return {n for n in names if n} | set(self.option_fields or ())


def _options(row: Mapping[str, Any], fields: FieldMap) -> Any:
    if fields.option_fields:
        return {name: row[name] for name in fields.option_fields if row.get(name) not in (None, "")}
    if not fields.options_field:
        raise ValueError("give options_field (one field with all options) or option_fields (one per option)")
    value = get_field(row, fields.options_field)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise RowError(
                f"field {fields.options_field!r} must be a JSON list or object of options, got {value[:40]!r}"
            ) from None
    if not isinstance(value, dict | list):
        raise RowError(f"field {fields.options_field!r} must be a list or dict of options, got {type(value).__name__}")
    return value


def map_row(row: Mapping[str, Any], fields: FieldMap) -> Question:
    """Build a Question from one row by the field mapping."""
    gold = None
    if fields.gold_field:
        gold = row.get(fields.gold_field)
        if gold == "":
            gold = None
        if gold is not None and not isinstance(gold, str):
            raise RowError(
                f"field {fields.gold_field!r} must be an option label like 'A', got {type(gold).__name__} {gold!r}"
            )
        gold = gold.strip() if gold is not None else None
    context = None
    if fields.context_field:
        context = row.get(fields.context_field)
        if context is not None and not isinstance(context, str):
            raise RowError(f"field {fields.context_field!r} must be str, got {type(context).__name__}")
    qid = ""
    if fields.id_field:
        qid = get_field(row, fields.id_field, (str, int))
        qid = str(qid).strip()
    used = fields.used()
    keep = fields.metadata_fields if fields.metadata_fields is not None else [k for k in row if k not in used]
    metadata = {name: row.get(name) for name in keep}
    return Question(
        question=get_field(row, fields.question_field, str),
        options=_options(row, fields),
        context=context,
        gold=gold,
        id=qid,
        metadata=metadata,
    )


def load_jsonl(
    path: str | Path,
    question_field: str = "question",
    options_field: str | None = "options",
    context_field: str | None = None,
    gold_field: str | None = None,
    id_field: str | None = None,
    option_fields: Sequence[str] | None = None,
    metadata_fields: Sequence[str] | None = None,
    skip_invalid: bool = False,
) -> QuestionList:
    """Load questions from a JSONL file, one JSON object a line, by field names.

    Fields not mapped go to metadata unless `metadata_fields` lists the ones to keep. Ids must be unique when
    `id_field` is given; otherwise each id is the question's content fingerprint.
    """
    fields = FieldMap(
        question_field, options_field, option_fields, context_field, gold_field, id_field, metadata_fields
    )
    path = Path(path)
    return collect(
        display_name(path),
        iter_jsonl(path),
        lambda row, _line: map_row(row, fields),
        skip_invalid=skip_invalid,
        check_ids=id_field is not None,
    )


CsvRecords = Iterator[tuple[int, dict[str, str] | DataError]]


def iter_csv(path: str | Path, delimiter: str = ",") -> tuple[list[str], int, CsvRecords]:
    """The header, its line and (first line number, row dict or DataError) of each record.

    Handles a BOM, CRLF and quoted newlines; a bad header raises DataError.
    """
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
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    header_line = 0
    while header is None:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            raise DataError(name, "the file is empty; expected a header row", line=1, skippable=False) from None
        except csv.Error as exc:
            raise DataError(name, f"bad CSV header ({exc})", line=start, skippable=False) from None
        if record and any(cell.strip() for cell in record):
            header = [cell.strip() for cell in record]
            header_line = start
    duplicates = sorted({c for c in header if header.count(c) > 1})
    if duplicates or "" in header:
        problem = f"duplicate columns {duplicates}" if duplicates else "an empty column name"
        raise DataError(name, f"the header has {problem}", line=header_line, skippable=False)

    def records() -> Iterator[tuple[int, dict[str, str] | DataError]]:
        while True:
            start = reader.line_num + 1
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                reason = "unterminated quote, it runs to the end of the file" if "end of data" in str(exc) else exc
                yield start, DataError(name, f"bad CSV ({reason})", line=start)
                if reader.line_num < start:
                    return  # no progress: stop rather than loop
                continue  # the reader goes on with the next line
            if not record or not any(cell.strip() for cell in record):
                continue
            if len(record) != len(header):
                yield start, DataError(name, f"row has {len(record)} fields, the header has {len(header)}", line=start)
                continue
            yield start, dict(zip(header, record, strict=True))

    return header, header_line, records()


def load_csv(
    path: str | Path,
    question_field: str = "question",
    option_fields: Sequence[str] | None = None,
    options_field: str | None = None,
    gold_field: str | None = None,
    context_field: str | None = None,
    id_field: str | None = None,
    metadata_fields: Sequence[str] | None = None,
    skip_invalid: bool = False,
    delimiter: str = ",",
) -> QuestionList:
    """Load questions from a CSV file with a header row.

    Options come from `option_fields` (columns such as A,B,C,D; their names are the labels) or `options_field`
    (one JSON-encoded column); with neither, single-letter columns A, B, ... or an "options" column are used.
    Errors name the file and the line where the record starts.
    """
    path = Path(path)
    name = display_name(path)
    header, header_line, records = iter_csv(path, delimiter)
    if option_fields is None and options_field is None:
        letters = [c for c in header if len(c) == 1 and c.isalpha() and c.isupper()]
        if len(letters) >= 2:
            option_fields = letters
        elif "options" in header:
            options_field = "options"
        else:
            raise DataError(
                name,
                f"no option columns found in the header {header}; pass option_fields or options_field",
                line=header_line,
                skippable=False,
            )
    fields = FieldMap(
        question_field, options_field, option_fields, context_field, gold_field, id_field, metadata_fields
    )
    wanted = [
        question_field,
        options_field,
        gold_field,
        context_field,
        id_field,
        *(option_fields or ()),
        *(metadata_fields or ()),
    ]
    missing = [c for c in wanted if c and c not in header]
    if missing:
        raise DataError(name, f"no column(s) {missing} in the header {header}", line=header_line, skippable=False)
    return collect(
        name,
        records,
        lambda row, _line: map_row(row, fields),
        skip_invalid=skip_invalid,
        check_ids=id_field is not None,
    )
