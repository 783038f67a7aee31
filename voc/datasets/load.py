"""The one loader: the records of a spec's source become `Question`s by its field mapping, placeholder rule, checks and
splits. `load_dataset` takes what a user gives: a built-in name, a spec file, a data file or a hub id."""

from __future__ import annotations

import glob
import itertools
import logging
import os
import re
import socket
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pydantic import ValidationError

from voc.datasets.common import DataError, LoadReport, Loc, QuestionList, Record, data_root, display_name, one_line, parse_json, records
from voc.datasets.spec import FORMATS, SLOT, DatasetSpec, Fields, infer_fields, pydantic_reason, resolve
from voc.types import Question, default_labels

logger = logging.getLogger("voc.datasets")


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _options(spec: DatasetSpec, get: Callable[[str], Any]) -> dict[str, Any]:
    """label -> text as in the source: fixed options, one field per option, or one field holding a dict, a list or their JSON."""
    names = spec.fields.options
    if spec.options:
        return dict(spec.options)
    if isinstance(names, list):
        labels = names if all(len(n) == 1 and n.isupper() for n in names) else default_labels(len(names))
        return {label: get(name) for label, name in zip(labels, names, strict=True)}
    value = get(names)
    try:
        value = parse_json(value.encode(), names, 1) if isinstance(value, str) else value
    except DataError:
        raise ValueError(f"field {names!r} must be a JSON list or object of options, got {value[:40]!r}") from None
    if value is None:
        raise ValueError(f"missing field {names!r}")
    if not isinstance(value, list | dict):
        raise ValueError(f"field {names!r} must be a list or dict of options, got {type(value).__name__}")
    return dict(zip(default_labels(len(value)), value, strict=True)) if isinstance(value, list) else dict(value)


def _gold(how: str, raw: Any, name: str, options: dict[str, Any], fail: Callable[[str], ValueError] = ValueError) -> str:
    """The label of a gold value read as `how` (gold_as) says: a label, an index (0- or 1-based) or an option's text."""
    if how == "auto":
        how = "index" if isinstance(raw, int) else "label" if isinstance(raw, str) and raw.strip() in options else "text"
    if how.startswith("index"):
        if isinstance(raw, bool) or not str(raw).strip().isdigit():
            raise fail(f"{name} must be an option index (0, 1, ...), got {raw!r}")
        position = int(raw) - (how == "index1")
        if not 0 <= position < len(options):
            raise fail(f"{name} {raw!r} is out of range for {len(options)} options")
        return list(options)[position]
    if not isinstance(raw, str):
        what = "label like 'A'" if how == "label" else "text"
        raise fail(f"field {name!r} must be an option {what}, got {type(raw).__name__} {raw!r}")
    if how == "label":
        return raw.strip()
    matches = [label for label, text in options.items() if isinstance(text, str) and _norm(text) == _norm(raw)]
    if len(matches) != 1:
        which = f"options {' and '.join(matches)}" if matches else "none of the options"
        texts = one_line("; ".join(str(t) for t in options.values()), 120)
        raise fail(f"{name} {one_line(raw, 80)!r} matches {which} ({texts}); give the gold as a label or fix it")
    return matches[0]


def _context(f: Fields, get: Callable[[str], Any]) -> str | None:
    """The context field; a list is joined by context_join, each part prefixed by its label from context_labels."""
    value = get(f.context) if f.context else None
    if value is None:
        return None
    parts = [value] if isinstance(value, str) else value
    labels = get(f.context_labels) if f.context_labels else None
    labels = [""] * len(parts) if labels is None and isinstance(parts, list) else labels
    if not isinstance(parts, list):
        raise ValueError(f"field {f.context!r} must be a text or a list of texts, got {type(value).__name__}")
    if not isinstance(labels, list) or len(labels) != len(parts):
        raise ValueError(
            f"{f.context} has {len(parts)} items but {f.context_labels} has {len(labels) if isinstance(labels, list) else labels!r}"
        )
    if not all(isinstance(x, str) for x in (*parts, *labels)):
        raise ValueError(f"{f.context} and {f.context_labels} must hold strings")
    return f.context_join.join(f"{label.strip()}: {text}" if label.strip() else text for label, text in zip(labels, parts, strict=True))


def _question(spec: DatasetSpec, row: Any, key: str | None, index: int, listed: tuple[Any, Loc] | None, metadata: dict[str, Any]
              ) -> tuple[Question, int]:  # fmt: skip
    """The question of a record and how many of its options were dropped as placeholders; `listed`: the gold its split's
    file gives (or None) and where."""
    f = spec.fields
    if not isinstance(row, Mapping):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")

    def get(name: str) -> Any:  # a field (or `_index`, `_key`); None when absent
        return {"_index": index, "_key": key}[name] if name in ("_index", "_key") else row.get(name)

    def slot(match: re.Match[str]) -> str:  # one {a|b} slot of the id template: the first of its fields that is set
        names = [n.strip() for n in match.group(1).split("|")]
        if (value := next((v for v in map(get, names) if v not in (None, "")), None)) is None:
            raise ValueError(f"missing field {names[0]!r} (used in the id)")
        return str(value).strip()

    options, placeholders = _options(spec, get), {"", *map(_norm, spec.placeholders)}
    dropped = {label: t for label, t in options.items() if t is None or (isinstance(t, str) and _norm(t) in placeholders)}
    own = get(f.gold) if f.gold else None
    if f.gold and own in (None, ""):
        raise ValueError(f"missing field {f.gold!r} (the gold answer)")
    gold = None if own is None else _gold(f.gold_as, own, f.gold or "gold", options)
    if listed and listed[0] is not None:  # the split's file gives the gold; the record's, if any, must agree
        theirs = _gold(f.gold_as, listed[0], "its gold", options, listed[1].error)
        if gold not in (None, theirs):
            raise listed[1].error(f"gold {listed[0]!r} differs from the row's {f.gold} {own!r}; fix one of them")
        gold = theirs
    if gold in dropped:
        raise ValueError(f"the gold option {gold!r} is a placeholder ({dropped[gold]!r}); fix the row's gold or its options")
    kept = {label: t for label, t in options.items() if label not in dropped}
    answer, text = get(f.answer_text) if f.answer_text else None, kept.get(gold or "")
    if isinstance(answer, str) and isinstance(text, str) and _norm(answer) != _norm(text):
        raise ValueError(f"{f.answer_text} {one_line(answer, 80)!r} is not the text of the gold option {gold!r} ({one_line(text, 80)!r})")
    used = f.used()
    metadata.update({k: v for k, v in row.items() if k not in used} if f.metadata is None else {n: get(s) for n, s in f.metadata.items()})
    if f.subject and get(f.subject) is not None:
        metadata["subject"] = get(f.subject)
    qid, stem = SLOT.sub(slot, f.id), get(f.question)
    if not isinstance(stem, str):
        raise ValueError(
            f"missing field {f.question!r}" if stem is None else f"field {f.question!r} must be str, got {type(stem).__name__}"
        )
    question = Question(question=stem, options=kept, context=_context(f, get), gold=gold, id=qid, metadata=metadata)
    if spec.n_options is not None and len(question.options) != spec.n_options:
        raise ValueError(f"expected {spec.n_options} options, got {len(question.options)}")
    return question, len(dropped)


def _check_fields(spec: DatasetSpec, names: list[str], at: Loc, header: bool) -> DatasetSpec:
    """The spec with its fields recognised from a CSV header or the first records' fields (if it `infer`s them), checked."""
    fields = Fields(**{**infer_fields(names), **spec.fields.model_dump(exclude_unset=True)}) if spec.infer else spec.fields
    options = [] if spec.options else [fields.options] if isinstance(fields.options, str) else fields.options
    needed = [fields.question, fields.gold, *options, *([*fields.used(), *(fields.metadata or {}).values()] if header else [])]
    if missing := [n for n in dict.fromkeys(needed) if n and not n.startswith("_") and n not in names]:
        hint = "map them with --field KEY=FIELD (voc bench), fields= (load_file) or a spec file" if spec.infer else "fix the spec's fields"
        raise at.error(f"no field(s) {missing} in the {'header' if header else 'first records'} {names}; {hint}", skippable=False)
    return spec.model_copy(update={"fields": fields})


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
    return ((Loc(source, None, f"row {n}"), None, dict(row)) for n, row in enumerate(rows, start=1))


def _open(spec: DatasetSpec, root: str | Path | None, path: str | Path | None, split: str | None
          ) -> tuple[DatasetSpec, str, Path, Iterator[Record]]:  # fmt: skip
    """(the spec, its fields checked; the source's name in messages; its folder; its records): the hub dataset's `split`,
    the file `path` (or the source's file in the folder `path`), else the source's path or glob under the data root."""
    header, folder = None, Path(".")
    if spec.source.hub:
        hub_split = spec.source.split if split in (None, "all") else split
        label, rows = f"hf:{spec.source.hub}[{hub_split}]", hub_records(spec.source.hub, spec.source.config, hub_split)
    else:
        raw = str(spec.source.path)
        full = Path(path or raw).expanduser()
        if path is not None and full.is_dir():
            full = full / Path(raw).name
        elif path is None and not full.is_absolute():
            full = Path(root or data_root()).expanduser() / full
        files = sorted(map(Path, glob.glob(str(full), recursive=True))) if path is None and any(c in raw for c in "*?[") else [full]
        if not files:
            raise FileNotFoundError(f"no files match {full}; check the spec's source path (or set VOC_DATA_ROOT / --data-root)")
        streams = [records(file, spec.format, spec.key_name) for file in files]
        label, folder, header = display_name(files[0]) if len(files) == 1 else raw, files[0].parent, streams[0][0]
        rows = itertools.chain.from_iterable(stream for _, stream in streams)
    if header is not None:  # a CSV header: every mapped field must be in it
        spec = _check_fields(spec, header, Loc(display_name(files[0]), 1, "line 1"), header=True)
    elif spec.infer or spec.source.hub:  # recognise (data files) and check the fields on the first 20 records
        head = list(itertools.islice(rows, 20))
        rows, dicts = itertools.chain(head, rows), [(loc, row) for loc, _, row in head if isinstance(row, Mapping)]
        if dicts:
            spec = _check_fields(spec, list(dict.fromkeys(k for _, row in dicts for k in row)), dicts[0][0], header=False)
    return spec, label, folder, rows


def load_spec(spec: DatasetSpec, root: str | Path | None = None, path: str | Path | None = None, split: str | None = None,
              skip_invalid: bool = False) -> QuestionList:  # fmt: skip
    """The questions of a spec. `root`: the data root (default data_root()); `path` replaces the source's file (the
    file or its folder); `split`: one of the spec's splits or 'all' (for a hub source: the hub split). A bad record
    raises DataError naming file and line, or with `skip_invalid` is skipped and counted in `.report`."""
    spec, label, folder, rows = _open(spec, root, path, split := spec.pick_split(split))
    lists: dict[str, dict[str, tuple[Any, Loc]]] = {}  # a split's keys -> (the gold its file gives, or None; where it is listed)
    for name, rule in spec.splits.items():
        if rule.ids is not None:
            lists[name] = {str(k).strip(): (None, Loc(f"split {name!r} of {spec.name}", None, f"{spec.key_name} {k}")) for k in rule.ids}
        elif rule.file is not None:
            entries = records(folder / rule.file, "json", spec.key_name)[1]  # a JSON object key -> gold, or a list of keys
            lists[name] = {(str(v).strip() if k is None else k): (None if k is None else v, at) for at, k, v in entries}
    report, questions, seen, keys = LoadReport(source=label), [], {}, set()

    def listed_but_missing() -> Iterator[Record]:  # read after the records, when `keys` holds theirs
        for key, (_, at) in lists.get(split or "", {}).items():
            if key not in keys:
                yield at, None, at.error(f"listed in split {split!r} but missing from {label}")

    for index, (loc, key, row) in enumerate(itertools.chain(rows, listed_but_missing())):
        keys.add(key)
        try:
            if isinstance(row, DataError):
                raise row
            metadata = {}
            if spec.splits:  # the record's split, from its key, before anything else is read
                if key is None:
                    what = f"no key (the file must be an object keyed by {spec.key_name}); it names the record in the splits"
                    raise ValueError(f"the record has {what}")
                inside = {
                    n: key in lists[n] if s.not_in is None else all(key not in lists[o] for o in s.not_in) for n, s in spec.splits.items()
                }
                metadata["split"] = next((n for n, yes in inside.items() if yes), None)
                if split != "all" and metadata["split"] != split:
                    continue
            question, dropped = _question(spec, row, key, index, lists.get(metadata.get("split") or "", {}).get(key), metadata)
            if question.id in seen:
                raise ValueError(f"duplicate question id {question.id!r} (also at {seen[question.id]}); ids must be unique")
        except (ValueError, TypeError) as exc:  # DataError and pydantic's ValidationError are ValueErrors
            reason = pydantic_reason(exc) if isinstance(exc, ValidationError) else one_line(exc)
            report.errors.append(exc if isinstance(exc, DataError) else loc.error(reason))
            if not skip_invalid:
                raise report.errors[-1] from None
            continue
        seen[question.id] = loc.where
        questions.append(question)
        report.dropped_options += dropped
        report.rows_with_dropped += bool(dropped)
    if not keys:  # not a single record
        raise DataError(label, "the file holds no rows", line=1, skippable=False)
    if not questions and report.errors:
        first = report.errors[0]
        raise DataError(label, f"all {report.skipped} rows are invalid (first: {first.where}: {first.reason})", skippable=False)
    if not questions:
        reason = "no questions selected" + (f" for split {split!r}" if split else "")
        if split in lists:
            file = spec.splits[split].file
            reason += f"; {display_name(folder / file) if file else spec.name} lists {len(lists[split])}"
        raise DataError(label, reason, skippable=False)
    report.loaded = len(questions)
    if report.errors or report.dropped_options:
        logger.warning(report.summary())
    return QuestionList(questions, report)


def load_dataset(name: str, path: str | Path | None = None, split: str | None = None, skip_invalid: bool = False,
                 root: str | Path | None = None, fields: dict[str, Any] | None = None) -> QuestionList:  # fmt: skip
    """Load what a user gives: a built-in name (`pubmedqa`, `pubmedqa:dev`, `medqa`, ... see DATASETS), a spec file, a
    data file (its layout recognised; `fields` override it) or `hf:org/name`. `path` replaces a built-in's file (the
    file or its folder); `root` is the data root (default data_root())."""
    spec, named_split = resolve(str(name), fields)
    return load_spec(spec, root=root, path=path, split=split or named_split, skip_invalid=skip_invalid)


def load_file(path: str | Path, skip_invalid: bool = False, **fields: Any) -> QuestionList:
    """Your own questions from a .jsonl/.json/.csv/.tsv/.parquet file: the layout is recognised from the first records;
    `fields` (keys of `Fields`: question, options, gold, gold_as, context, id, subject, metadata, ...) override it."""
    if Path(path).suffix not in FORMATS:
        raise ValueError(f"cannot tell the format of {path}: name it .jsonl, .json, .csv, .tsv or .parquet")
    return load_dataset(str(path), skip_invalid=skip_invalid, fields=fields)


def load_pubmedqa(path: str | Path | None = None, split: str = "test", skip_invalid: bool = False) -> QuestionList:
    """PubMedQA PQA-L (specs/pubmedqa.yaml): split "test" (the official 500), "dev" (a fixed 100 of the others),
    "train" (the other 400) or "all". `path`: the folder or either of its files; default <data root>/pubmedqa."""
    folder = Path(path).parent if path is not None and Path(path).is_file() else path
    return load_dataset("pubmedqa", folder, split=split, skip_invalid=skip_invalid)
