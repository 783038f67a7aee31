"""Records from data files and the Hugging Face hub, as (location, key, row) for JSONL, JSON, CSV/TSV, parquet and hub
datasets. A broken file raises DataError naming file and line; a bad record is yielded as a DataError in its place,
so that the loader can skip and count it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from voc.datasets.common import DataError, Loc, RowError, display_name, iter_jsonl, parse_json, read_text

Record = tuple[Loc, str | None, Any]  # (where, key of a JSON-object record or None, row or DataError)
FORMATS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}


def records(path: Path, fmt: str, key_name: str = "key") -> tuple[list[str] | None, Iterator[Record]]:
    """(CSV header or None, records) of a data file in format `fmt`."""
    if fmt == "jsonl":
        return None, ((Loc(display_name(path), line, f"line {line}"), None, row) for line, row in iter_jsonl(path))
    if fmt == "json":
        return None, json_values(path, key_name)
    if fmt == "parquet":
        return None, _parquet(path)
    return csv_records(path, "\t" if fmt == "tsv" else ",")


def json_values(path: Path, key_name: str = "key") -> Iterator[Record]:
    """The items of a JSON file whose top level is a list, or an object keyed by id (named `key_name` in messages). A
    broken file raises DataError (it cannot be skipped item by item); items are yielded as they are."""
    name, text = display_name(path), read_text(path)
    try:
        data = parse_json(text) if text.strip() else None
    except json.JSONDecodeError as exc:
        reason = f"invalid JSON ({exc.msg}: column {exc.colno}); truncated file?"
        raise DataError(name, reason, line=exc.lineno, skippable=False) from None
    except RowError as exc:  # a duplicate key, NaN
        raise DataError(name, str(exc), skippable=False) from None
    if not isinstance(data, dict | list):
        what = "the file is empty" if data is None else f"got {type(data).__name__}"
        raise DataError(name, f"{what}; expected a JSON list or object of records", line=1, skippable=False)
    if isinstance(data, list):
        return ((Loc(name, None, f"record {i}"), None, value) for i, value in enumerate(data, start=1))
    return ((Loc(name, None, f"{key_name} {key.strip()}"), key.strip(), value) for key, value in data.items())


def csv_records(path: Path, delimiter: str = ",") -> tuple[list[str], Iterator[Record]]:
    """The header and the records of a CSV file (BOM, CRLF and quoted newlines handled); a bad header raises DataError."""
    name = display_name(path)
    reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter=delimiter, strict=True)
    header: list[str] = []
    while not any(header):
        start = reader.line_num + 1
        try:
            header = [cell.strip() for cell in next(reader)]
        except StopIteration:
            raise DataError(name, "the file is empty; expected a header row", line=1, skippable=False) from None
        except csv.Error as exc:
            raise DataError(name, f"bad CSV header ({exc})", line=start, skippable=False) from None
    duplicates = sorted({c for c in header if header.count(c) > 1})
    if duplicates or "" in header:
        problem = f"duplicate columns {duplicates}" if duplicates else "an empty column name"
        raise DataError(name, f"the header has {problem}", line=start, skippable=False)

    def rows() -> Iterator[Record]:
        while True:
            line = reader.line_num + 1
            loc = Loc(name, line, f"line {line}")
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                reason = "unterminated quote, it runs to the end of the file" if "end of data" in str(exc) else exc
                yield loc, None, DataError(name, f"bad CSV ({reason})", line=line)
                if reader.line_num < line:
                    return  # no progress: stop rather than loop
            else:
                if len(cells) != len(header) and any(c.strip() for c in cells):
                    yield loc, None, DataError(name, f"row has {len(cells)} fields, the header has {len(header)}", line=line)
                elif any(c.strip() for c in cells):
                    yield loc, None, dict(zip(header, cells, strict=True))

    return header, rows()


def _parquet(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq  # a dependency of `datasets`

    if not path.is_file():
        raise FileNotFoundError(f"no {path.name} in {path.parent}; check the path (or set VOC_DATA_ROOT / --data-root)")
    rows = (row for batch in pq.ParquetFile(path).iter_batches() for row in batch.to_pylist())
    return ((Loc(display_name(path), None, f"row {n}"), None, row) for n, row in enumerate(rows, start=1))


def hub_records(hub_id: str, config: str | None, split: str) -> Iterator[Record]:
    """Rows of `datasets.load_dataset(hub_id, config, split=split)`: needs network unless HF_DATASETS_OFFLINE=1 (its cache)."""
    source = f"hf:{hub_id}[{split}]"
    advice = "give a local path (a .jsonl/.json/.csv/.parquet file or a spec file) instead"
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
        reason = f"could not load it ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); {advice}"
        raise DataError(source, reason, skippable=False) from None
    return ((Loc(source, None, f"row {n}"), None, dict(row)) for n, row in enumerate(rows, start=1))
