"""The one loader: the records of a spec's source become `Question`s by its field mapping, placeholder rule, checks and
splits. `load_dataset` takes what a user gives: a built-in `name[:split]`, a spec file, a data file or a hub id."""

from __future__ import annotations

import glob
import itertools
import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from voc.datasets.common import FORMATS, DataError, LoadReport, Loc, QuestionList, data_root, display_name, hub_records, one_line, records
from voc.datasets.spec import DATASETS, HUB, SLOT, DatasetSpec, Fields, read_spec, reason
from voc.types import Question, default_labels

logger = logging.getLogger("voc.datasets")


def infer_fields(names: list[str]) -> dict[str, Any]:
    """The mapping of a common layout from a record's field names: question; options, choices or columns A, B, ...;
    answer_idx (a label, with `answer` its text), else gold, label or answer (auto); context, subject; id or realidx."""
    letters = [n for n in names if len(n) == 1 and n.isupper()]
    found: dict[str, Any] = {n: n for n in ("context", "subject") if n in names}
    found["options"] = next((n for n in ("options", "choices") if n in names), letters if len(letters) >= 2 else None)
    found["gold"] = next((n for n in ("answer_idx", "gold", "label", "answer") if n in names), None)
    if found["gold"]:
        found["gold_as"] = "label" if found["gold"] == "answer_idx" else "auto"
        found["answer_text"] = "answer" if found["gold"] == "answer_idx" and "answer" in names else None
    found["id"] = next((n for n in ("id", "realidx") if n in names), None)
    return {key: value for key, value in found.items() if value}


def dataset_name(given: str) -> str:
    """The name a dataset goes by in records and reports: a built-in name (`pubmedqa:test` is `pubmedqa`), `name:split`,
    a spec file's `name`, a data file's name, `hf:org_name` for a hub id."""
    spec, split = resolve(given)
    return spec.name if split in (None, spec.default_split) else f"{spec.name}:{split}"


def resolve(given: str, fields: dict[str, Any] | None = None) -> tuple[DatasetSpec, str | None]:
    """(spec, split) for what a user gave; `fields` overrides the mapping of data files and hub ids."""
    name, _, split = given.partition(":")
    if name in DATASETS:
        return DATASETS[name], DATASETS[name].pick_split(split or None)
    path = Path(given).expanduser()
    if HUB.match(given):
        source = given
    elif path.suffix in (".yaml", ".yml"):
        return read_spec(path), None
    elif path.suffix in FORMATS and (path.is_file() or any(ch in given for ch in "*?[")):
        source = str(path.absolute())
    elif path.suffix in FORMATS:
        raise FileNotFoundError(f"no data file {given}; check the path")
    else:
        known = ", ".join(n + (f" ({'|'.join(s.splits)})" if s.splits else "") for n, s in DATASETS.items())
        raise ValueError(f"unknown dataset {given!r}; give a built-in name ({known}; a split as name:split), a spec file (.yaml), "
                         f"a data file ({', '.join(FORMATS)}) or a hub id hf:org/name")  # fmt: skip
    if "gold" in (fields := fields or {}) and "gold_as" not in fields:  # a gold alone is read as `auto`, not checked against `answer`
        fields = {"answer_text": None, **fields, "gold_as": "auto"}
    name = given.replace("/", "_") if HUB.match(given) else path.name  # never a '/': reports read 'dataset/subject'
    try:
        return DatasetSpec(name=name, source=source, fields=Fields(**fields), infer=True), None
    except ValidationError as exc:
        raise DataError("--field", reason(exc), skippable=False) from None


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
    if (value := get(names)) is None:
        raise ValueError(f"missing field {names!r}")
    with suppress(ValueError):
        value = json.loads(value) if isinstance(value, str) else value
    if not isinstance(value, list | dict):
        raise ValueError(f"field {names!r} must be a JSON list or object of options, got {one_line(repr(value), 40)}")
    return dict(zip(default_labels(len(value)), value, strict=True)) if isinstance(value, list) else dict(value)


def _gold(how: str, raw: Any, name: str, options: dict[str, Any]) -> str:
    """The label of a gold value read as `how` (gold_as) says: a label, an index (0- or 1-based) or an option's text."""
    if raw in (None, ""):
        raise ValueError(f"missing field {name!r} (the gold answer)")
    if how == "auto":
        how = "index" if isinstance(raw, int) else "label" if isinstance(raw, str) and raw.strip() in options else "text"
    if how.startswith("index"):
        if isinstance(raw, bool) or not str(raw).strip().isdigit():
            raise ValueError(f"{name} must be an option index (0, 1, ...), got {raw!r}")
        if not 0 <= (position := int(raw) - (how == "index1")) < len(options):
            raise ValueError(f"{name} {raw!r} is out of range for {len(options)} options")
        return list(options)[position]
    if not isinstance(raw, str):
        raise ValueError(f"field {name!r} must be an option {'label' if how == 'label' else 'text'}, got {type(raw).__name__} {raw!r}")
    if how == "label":
        return raw.strip()
    if len(matches := [label for label, text in options.items() if isinstance(text, str) and _norm(text) == _norm(raw)]) != 1:
        which = f"options {' and '.join(matches)}" if matches else "none of the options"
        texts = one_line("; ".join(str(t) for t in options.values()), 120)
        raise ValueError(f"{name} {one_line(raw, 80)!r} matches {which} ({texts}); give the gold as a label or fix it")
    return matches[0]


def _context(f: Fields, get: Callable[[str | None], Any]) -> str | None:
    """The context field; a list is joined by context_join, each part prefixed by its label from context_labels."""
    if (value := get(f.context)) is None or isinstance(value, str):
        return value
    labels = get(f.context_labels) if f.context_labels else [""] * len(value) if isinstance(value, list) else None
    lists_match = isinstance(value, list) and isinstance(labels, list) and len(labels) == len(value)
    if not lists_match or not all(isinstance(part, str) for part in value + labels):
        raise ValueError(f"field {f.context!r} must be a text or a list of texts, with {f.context_labels or 'no labels'} a list of as many")
    return f.context_join.join(f"{label.strip()}: {text}" if label.strip() else text for label, text in zip(labels, value, strict=True))


def _question(spec: DatasetSpec, row: Any, key: str | None, index: int, metadata: dict[str, Any]) -> tuple[Question, int]:
    """The question of a record and how many of its options were dropped as placeholders."""
    f = spec.fields
    if not isinstance(row, Mapping):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    get = {**row, "_index": index, "_key": key}.get  # a field, the record's position or its key; None when absent or unmapped

    def slot(match: re.Match[str]) -> str:  # one {a|b} slot of the id template: the first of its fields that is set
        names = [n.strip() for n in match.group(1).split("|")]
        if (value := next((v for v in map(get, names) if v not in (None, "")), None)) is None:
            raise ValueError(f"missing field {names[0]!r} (used in the id)")
        return str(value).strip()

    options, placeholders = _options(spec, get), {"", *map(_norm, spec.placeholders)}
    dropped = {label: t for label, t in options.items() if t is None or (isinstance(t, str) and _norm(t) in placeholders)}
    gold = _gold(f.gold_as, get(f.gold), f.gold, options) if f.gold else None
    if gold in dropped:
        raise ValueError(f"the gold option {gold!r} is a placeholder ({dropped[gold]!r}); fix the row's gold or its options")
    kept = {label: t for label, t in options.items() if label not in dropped}
    answer, text = get(f.answer_text), kept.get(gold or "")
    if isinstance(answer, str) and isinstance(text, str) and _norm(answer) != _norm(text):
        raise ValueError(f"{f.answer_text} {one_line(answer, 80)!r} is not the text of the gold option {gold!r} ({one_line(text, 80)!r})")
    if spec.n_options is not None and len(kept) != spec.n_options:
        raise ValueError(f"expected {spec.n_options} options, got {len(kept)}")
    used = f.used()
    metadata.update({k: v for k, v in row.items() if k not in used} if f.metadata is None else {n: get(s) for n, s in f.metadata.items()})
    if get(f.subject) is not None:
        metadata["subject"] = get(f.subject)
    if not isinstance(stem := get(f.question), str):
        raise ValueError(f"field {f.question!r} must be a text, got {'nothing' if stem is None else type(stem).__name__}")
    question = Question(question=stem, options=kept, context=_context(f, get), gold=gold, id=SLOT.sub(slot, f.id), metadata=metadata)
    return question, len(dropped)


def _open(spec: DatasetSpec, root: str | Path | None, path: str | Path | None, split: str | None
          ) -> tuple[DatasetSpec, str, Path, Iterator[Any]]:  # fmt: skip
    """(the spec with its fields recognised and checked on the first records, read here; the source's name in messages;
    its folder; its records) of the hub dataset's `split`, the file `path` (or folder), else the source under the root."""
    folder, header = Path("."), False
    if hub := HUB.match(spec.source):
        hub_split = (hub["split"] or "test") if split in (None, "all") else split
        label, rows = f"hf:{hub['id']}[{hub_split}]", hub_records(hub["id"], hub["config"], hub_split)
    else:
        full = Path(path or spec.source).expanduser()
        if path is not None and full.is_dir():
            full = full / Path(spec.source).name
        elif path is None and not full.is_absolute():
            full = Path(root or data_root()).expanduser() / full
        pattern = path is None and any(c in spec.source for c in "*?[")
        if not (files := sorted(map(Path, glob.glob(str(full), recursive=True))) if pattern else [full]):
            raise FileNotFoundError(f"no files match {full}; check the spec's source path (or set VOC_DATA_ROOT / --data-root)")
        label, folder = display_name(files[0]) if len(files) == 1 else spec.source, files[0].parent
        header = (spec.format or FORMATS.get(files[0].suffix.lower())) in ("csv", "tsv")
        rows = itertools.chain.from_iterable(records(file, spec.format, spec.key_name) for file in files)
    head = list(itertools.islice(rows, 20))
    rows, dicts = itertools.chain(head, rows), [(loc, row) for loc, _, row in head if isinstance(row, Mapping)]
    if not dicts or not (spec.infer or hub or header):
        return spec, label, folder, rows
    names = list(dict.fromkeys(k for _, row in dicts for k in row))  # a CSV file's header, else the first records' fields
    fields = Fields(**{**infer_fields(names), **spec.fields.model_dump(exclude_unset=True)}) if spec.infer else spec.fields
    options = [] if spec.options else [fields.options] if isinstance(fields.options, str) else fields.options
    header_needs = [*fields.used(options=not spec.options), *(fields.metadata or {}).values()]  # every field read
    needed = header_needs if header else [fields.question, fields.gold, *options]
    if missing := [n for n in dict.fromkeys(needed) if n and not n.startswith("_") and n not in names]:
        hint = "map them with --field KEY=FIELD (voc bench), fields= (load_file) or a spec file" if spec.infer else "fix the spec's fields"
        at = Loc(dicts[0][0].source, 1, "line 1") if header else dicts[0][0]
        raise at.error(f"no field(s) {missing} in the {'header' if header else 'first records'} {names}; {hint}", skippable=False)
    return spec.model_copy(update={"fields": fields}), label, folder, rows


def load_spec(spec: DatasetSpec, root: str | Path | None = None, path: str | Path | None = None, split: str | None = None,
              skip_invalid: bool = False) -> QuestionList:  # fmt: skip
    """The questions of a spec; `path` replaces the source's file (the file or its folder), `split` is one of its splits,
    'all' or a hub split. A bad record raises DataError naming file and line, or with `skip_invalid` is counted in `.report`."""
    spec, label, folder, rows = _open(spec, root, path, split := spec.pick_split(split))
    lists: dict[str, dict[str, Loc]] = {}  # the keys a split lists, each with where it is listed
    for name, rule in spec.splits.items():
        if isinstance(rule, list):
            lists[name] = {str(k): Loc(f"split {name!r} of {spec.name}", None, f"{spec.key_name} {k}") for k in rule}
        elif rule != "rest":  # a JSON list of keys, or an object keyed by them
            lists[name] = {(str(v) if k is None else k): at for at, k, v in records(folder / rule, "json", spec.key_name)}
            if not lists[name]:
                raise DataError(display_name(folder / rule), f"lists no {spec.key_name} for split {name!r}", skippable=False)
    rest = next((name for name, rule in spec.splits.items() if rule == "rest"), None)
    report, questions, seen, keys = LoadReport(source=label), [], {}, set()
    listed = lists.get(split or "", {}).items()  # those missing from the records are read last, when `keys` holds theirs
    missing = ((at, None, at.error(f"listed in split {split!r} but missing from {label}")) for k, at in listed if k not in keys)
    for index, (loc, key, row) in enumerate(itertools.chain(rows, missing)):
        keys.add(key)
        try:
            if isinstance(row, DataError):
                raise row
            if spec.splits and key is None:
                raise ValueError(f"the record has no key (the file must be an object keyed by {spec.key_name}); splits list keys")
            member = next((name for name, keyed in lists.items() if key in keyed), rest)
            if spec.splits and split != "all" and member != split:
                continue
            question, dropped = _question(spec, row, key, index, {"split": member} if spec.splits else {})
            if question.id in seen:
                raise ValueError(f"duplicate question id {question.id!r} (also at {seen[question.id]}); ids must be unique")
        except (ValueError, TypeError) as exc:  # DataError and pydantic's ValidationError are ValueErrors
            report.errors.append(exc if isinstance(exc, DataError) else loc.error(reason(exc)))
            if not skip_invalid:
                raise report.errors[-1] from None
            continue
        seen[question.id] = loc.where
        questions.append(question)
        report.dropped_options += dropped
        report.rows_with_dropped += bool(dropped)
    report.loaded = len(questions)
    if not questions:
        empty = f"no questions in split {split!r}" if keys else "the file holds no rows"
        raise DataError(label, report.summary() if report.errors else empty, None if keys else 1, skippable=False)
    if report.errors or report.dropped_options:
        logger.warning(report.summary())
    return QuestionList(questions, report)


def load_dataset(name: str, path: str | Path | None = None, split: str | None = None, skip_invalid: bool = False,
                 root: str | Path | None = None, fields: dict[str, Any] | None = None) -> QuestionList:  # fmt: skip
    """Load what a user gives: a built-in name (`pubmedqa:dev`, `medqa`, ... see DATASETS), a spec file, a data file (its
    layout recognised; `fields` override it) or `hf:org/name`; `path` replaces a built-in's file (or folder)."""
    spec, named_split = resolve(str(name), fields)
    return load_spec(spec, root=root, path=path, split=split or named_split, skip_invalid=skip_invalid)


def load_file(path: str | Path, skip_invalid: bool = False, **fields: Any) -> QuestionList:
    """Your own questions from a .jsonl/.json/.csv/.tsv/.parquet file: the layout is recognised from the first records;
    `fields` (keys of `Fields`: question, options, gold, gold_as, context, id, subject, metadata, ...) override it."""
    return load_dataset(str(path), skip_invalid=skip_invalid, fields=fields)


def load_pubmedqa(path: str | Path | None = None, split: str = "test", skip_invalid: bool = False) -> QuestionList:
    """PubMedQA PQA-L (specs/pubmedqa.yaml): split "test" (the official 500), "dev" (a fixed 100 of the others),
    "train" (the other 400) or "all". `path`: the folder or either of its files; default <data root>/pubmedqa."""
    folder = Path(path).parent if path is not None and Path(path).is_file() else path
    return load_dataset("pubmedqa", folder, split=split, skip_invalid=skip_invalid)
