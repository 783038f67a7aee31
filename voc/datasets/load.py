"""The one loader: the rows of a spec's source become `Question`s by its field mapping, placeholder rule, checks and
splits. `load_dataset` takes what a user gives (a built-in name, a spec file, a data file, a hub id)."""

from __future__ import annotations

import glob
import itertools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voc.datasets.common import DataError, LoadReport, Loc, QuestionList, RowError, collect, data_root, display_name, one_line, parse_json
from voc.datasets.readers import hub_records, json_values, records
from voc.datasets.spec import FORMATS, SLOT, DatasetSpec, Fields, infer_fields, resolve
from voc.types import Question, default_labels

Listed = dict[str, tuple[Any, Loc | None]]  # a split's keys -> (the gold its file gives, or None; where in that file)


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


@dataclass
class RowBuilder:
    """Makes the Question of one row by the spec, or None for a row of another split; counts dropped options."""

    spec: DatasetSpec
    fields: Fields
    split: str | None
    lists: dict[str, Listed]
    report: LoadReport
    seen_keys: set[str] = field(default_factory=set)

    def __call__(self, item: tuple[str | None, Any, int]) -> Question | None:
        key, row, index = item
        f, listed = self.fields, None
        metadata: dict[str, Any] = {}
        get = self.getter(row, {"_index": index, "_key": key})
        if self.spec.splits:  # the record's split, from its key, before anything else is read
            if get(f.key or "_key") is None:
                what = f"key (the file must be an object keyed by {self.spec.key_name})" if f.key in (None, "_key") else f"field {f.key!r}"
                raise RowError(f"the record has no {what}; it names the record in the splits")
            key = str(get(f.key or "_key")).strip()
            self.seen_keys.add(key)
            name = next((n for n, s in self.spec.splits.items() if self.member(key, n, s.not_in)), None)
            if self.split not in (None, "all") and name != self.split:
                return None
            listed, metadata["split"] = self.lists.get(name or "", {}).get(key), name
        if not isinstance(row, Mapping):
            raise RowError(f"expected a JSON object, got {type(row).__name__}")
        options = self.options(get)
        placeholders = {"", *(_norm(p) for p in self.spec.placeholders)}
        dropped = {lab: t for lab, t in options.items() if t is None or (isinstance(t, str) and _norm(t) in placeholders)}
        kept = {lab: t for lab, t in options.items() if lab not in dropped}
        own = get(f.gold) if f.gold else None
        if f.gold and own in (None, ""):
            raise RowError(f"missing field {f.gold!r} (the gold answer)")
        gold = None if own is None else self.match(own, f.gold or "gold", options, dropped)
        if listed is not None and listed[0] is not None and self.match(listed[0], "its gold", options, dropped, listed[1]) != gold:
            raise RowError(f"gold {listed[0]!r} differs from the row's {f.gold} {own!r}; fix one of them", at=listed[1])
        answer, text = get(f.answer_text) if f.answer_text else None, kept.get(gold or "")
        if isinstance(answer, str) and isinstance(text, str) and _norm(answer) != _norm(text):
            raise RowError(f"{f.answer_text} {one_line(answer, 80)!r} is not the text of the gold option {gold!r} ({one_line(text, 80)!r})")
        if f.metadata is None:
            metadata.update({k: v for k, v in row.items() if k not in f.used()})
        else:
            metadata.update({n: get(s) for n, s in (f.metadata.items() if isinstance(f.metadata, dict) else ((n, n) for n in f.metadata))})
        if f.subject and get(f.subject) is not None:
            metadata["subject"] = get(f.subject)
        qid, context = SLOT.sub(lambda slot: self.slot(get, slot.group(1)), f.id), self.context(get)
        question = Question(question=self.text(get, f.question), options=kept, context=context, gold=gold, id=qid, metadata=metadata)
        if self.spec.n_options is not None and len(question.options) != self.spec.n_options:
            raise ValueError(f"expected {self.spec.n_options} options, got {len(question.options)}")
        self.report.dropped_options += len(dropped)
        self.report.rows_with_dropped += bool(dropped)
        return question

    def member(self, key: str, name: str, not_in: list[str] | None) -> bool:
        return key in self.lists[name] if not_in is None else all(key not in self.lists[other] for other in not_in)

    @staticmethod
    def getter(row: Any, specials: dict[str, Any]) -> Any:
        """name -> row[name], or the record's `_index`/`_key`; None when absent."""
        return lambda name: specials[name] if name in specials else row.get(name) if isinstance(row, Mapping) else None

    @staticmethod
    def text(get: Any, name: str) -> str:
        value = get(name)
        if not isinstance(value, str):
            raise RowError(f"missing field {name!r}" if value is None else f"field {name!r} must be str, got {type(value).__name__}")
        return value

    @staticmethod
    def slot(get: Any, names: str) -> str:
        """One {a|b} slot of the id template: the first of its fields that is set."""
        value = next((v for v in map(get, [n.strip() for n in names.split("|")]) if v not in (None, "")), None)
        if value is None:
            raise RowError(f"missing field {names.split('|')[0].strip()!r} (used in the id)")
        return str(value).strip()

    def options(self, get: Any) -> dict[str, Any]:
        """label -> text as in the source: fixed options, one field per option, or one field holding a dict or a list."""
        names = self.fields.options
        if self.spec.options:
            return dict(self.spec.options)
        if isinstance(names, list):
            labels = names if all(len(n) == 1 and n.isupper() for n in names) else default_labels(len(names))
            return {label: get(name) for label, name in zip(labels, names, strict=True)}
        value = get(names)
        try:
            value = parse_json(value) if isinstance(value, str) else value
        except (json.JSONDecodeError, RowError):
            raise RowError(f"field {names!r} must be a JSON list or object of options, got {value[:40]!r}") from None
        if isinstance(value, list):
            return dict(zip(default_labels(len(value)), value, strict=True))
        if value is None:
            raise RowError(f"missing field {names!r}")
        if not isinstance(value, dict):
            raise RowError(f"field {names!r} must be a list or dict of options, got {type(value).__name__}")
        return dict(value)

    def match(self, raw: Any, name: str, options: dict[str, Any], dropped: dict[str, Any], at: Loc | None = None) -> str:
        """A gold value read as `gold_as` says: a label, an index (0- or 1-based) or an option's text."""
        how = self.fields.gold_as
        if how == "auto":
            how = "index" if isinstance(raw, int) else "label" if isinstance(raw, str) and raw.strip() in options else "text"
        if how.startswith("index") and (isinstance(raw, bool) or not str(raw).strip().isdigit()):
            raise RowError(f"{name} must be an option index (0, 1, ...), got {raw!r}", at)
        if how.startswith("index"):
            position = int(raw) - (how == "index1")
            if not 0 <= position < len(options):
                raise RowError(f"{name} {raw!r} is out of range for {len(options)} options", at)
            label = list(options)[position]
        elif not isinstance(raw, str):
            what = "label like 'A'" if how == "label" else "text"
            raise RowError(f"field {name!r} must be an option {what}, got {type(raw).__name__} {raw!r}", at)
        else:
            matches = [lab for lab, text in options.items() if isinstance(text, str) and _norm(text) == _norm(raw)]
            if how == "text" and len(matches) != 1:
                which = f"options {' and '.join(matches)}" if matches else "none of the options"
                texts = one_line("; ".join(str(t) for t in options.values()), 120)
                raise RowError(f"{name} {one_line(raw, 80)!r} matches {which} ({texts}); give the gold as a label or fix it", at)
            label = raw.strip() if how == "label" else matches[0]
        if label in dropped:
            raise RowError(f"the gold option {label!r} is a placeholder ({dropped[label]!r}); fix the row's gold or its options", at)
        return label

    def context(self, get: Any) -> str | None:
        """The context field; a list is joined by context_join, each part prefixed by its label from context_labels."""
        f = self.fields
        value = get(f.context) if f.context else None
        parts = [value] if isinstance(value, str) else value
        labels = get(f.context_labels) if f.context_labels else None
        labels = [""] * len(parts) if labels is None and isinstance(parts, list) else labels
        if parts is None:
            return None
        if not isinstance(parts, list):
            raise RowError(f"field {f.context!r} must be a text or a list of texts, got {type(value).__name__}")
        if not isinstance(labels, list) or len(labels) != len(parts):
            count = len(labels) if isinstance(labels, list) else repr(labels)
            raise RowError(f"{f.context} has {len(parts)} items but {f.context_labels} has {count}")
        if not all(isinstance(x, str) for x in (*parts, *labels)):
            raise RowError(f"{f.context} and {f.context_labels} must hold strings")
        return f.context_join.join(f"{label.strip()}: {text}" if label.strip() else text for label, text in zip(labels, parts, strict=True))


def check_fields(spec: DatasetSpec, fields: Fields, names: list[str], loc: Loc, header: bool = False) -> Fields:
    """The fields of a data file recognised from its first record (or CSV header), then checked against it: a mapped
    field it lacks is a one-line error naming the file and the fields it has."""
    if spec.infer:
        fields = Fields(**{**infer_fields(names), **fields.model_dump(exclude_unset=True)})
    options = [] if spec.options else [fields.options] if isinstance(fields.options, str) else fields.options
    needed = [fields.question, fields.gold, *options]
    if header:  # every cell is there in every row: check them all
        needed += [*fields.used(), *(fields.metadata.values() if isinstance(fields.metadata, dict) else fields.metadata or [])]
    missing = [n for n in dict.fromkeys(needed) if n and not n.startswith("_") and n not in names]
    if missing:
        hint = "map them with --field KEY=FIELD (voc bench), fields= (load_file) or a spec file" if spec.infer else "fix the spec's fields"
        reason = f"no field(s) {missing} in the {'header' if header else 'first records'} {names}; {hint}"
        raise DataError(loc.source, reason, line=loc.line, where=loc.where, skippable=False)
    return fields


def load_spec(spec: DatasetSpec, root: str | Path | None = None, path: str | Path | None = None, split: str | None = None,
              skip_invalid: bool = False) -> QuestionList:  # fmt: skip
    """The questions of a spec. `root`: the data root (default data_root()); `path` replaces the source's file (the
    file or its folder); `split`: one of the spec's splits or 'all' (for a hub source: the hub split)."""
    source, fields = spec.source, spec.fields
    if spec.splits and (split := split or spec.default_split) not in (*spec.splits, "all"):
        raise ValueError(f"unknown split {split!r} of {spec.name}; use one of {', '.join([*spec.splits, 'all'])}")
    if not spec.splits and split not in (None, "all", spec.default_split) and not source.hub:
        what = f"is a {spec.default_split} split" if spec.default_split else "has no splits"
        raise ValueError(f"{spec.name} {what}; drop split={split!r}")
    if source.hub:
        source, split = source.model_copy(update={"split": split if split not in (None, "all") else source.split}), None
        label, folder, rows = f"hf:{source.hub}[{source.split}]", Path("."), hub_records(source.hub, source.config, source.split)
    else:
        files = _files(spec, root, path)
        label, folder = display_name(files[0]) if len(files) == 1 else str(spec.source.path), files[0].parent
        streams = [records(file, _format(spec, file), spec.key_name) for file in files]
        if streams[0][0] is not None:  # a CSV header
            fields = check_fields(spec, fields, streams[0][0], Loc(display_name(files[0]), 1, "line 1"), header=True)
        rows = itertools.chain.from_iterable(stream for _, stream in streams)
    if spec.infer or source.hub:  # check (for data files: recognise) the fields on the first 20 records
        head = list(itertools.islice(rows, 20))
        names = list(dict.fromkeys(k for _, _, row in head if isinstance(row, Mapping) for k in row))
        if names:
            fields = check_fields(spec, fields, names, next(loc for loc, _, row in head if isinstance(row, Mapping)))
        rows = itertools.chain(head, rows)
    lists = {name: _listed(rule, folder, spec.key_name) for name, rule in spec.splits.items() if rule.not_in is None}
    builder = RowBuilder(spec, fields, split, lists, LoadReport(source=label))

    def items() -> Iterator[tuple[Loc, Any]]:
        for index, (loc, key, row) in enumerate(rows):
            yield loc, row if isinstance(row, DataError) else (key, row, index)
        for key, (_, at) in lists.get(split or "", {}).items():  # listed in the split, absent from the data
            if key not in builder.seen_keys:
                at = at or Loc(f"split {split!r} of {spec.name}", None, f"{spec.key_name} {key}")
                yield at, DataError(at.source, f"listed in split {split!r} but missing from {label}", line=at.line, where=at.where)

    questions = collect(label, items(), builder, builder.report, skip_invalid)
    if not questions:
        reason = "no questions selected" + (f" for split {split!r}" if split else "")
        if split in lists:
            file = spec.splits[split].file
            reason += f"; {display_name(folder / file) if file else spec.name} lists {len(lists[split])}"
        raise DataError(label, reason, skippable=False)
    return questions


def _files(spec: DatasetSpec, root: str | Path | None, path: str | Path | None) -> list[Path]:
    raw = spec.source.path or ""
    if path is not None:
        return [Path(path).expanduser() / Path(raw).name if Path(path).is_dir() and raw else Path(path).expanduser()]
    full = Path(raw).expanduser()
    if not full.is_absolute():
        full = (spec._base if raw.startswith(("./", "../")) and spec._base else Path(root or data_root()).expanduser()) / raw
    files = [Path(p) for p in sorted(glob.glob(str(full), recursive=True))] if any(ch in raw for ch in "*?[") else [full]
    if not files:
        raise FileNotFoundError(f"no files match {full}; check the spec's source path (or set VOC_DATA_ROOT / --data-root)")
    return files


def _format(spec: DatasetSpec, file: Path) -> str:
    if not (spec.format or FORMATS.get(file.suffix.lower())):
        raise ValueError(f"cannot tell the format of {file.name}: name it .jsonl, .json, .csv, .tsv or .parquet, or give a spec's `format`")
    return spec.format or FORMATS[file.suffix.lower()]


def _listed(rule: Any, folder: Path, key_name: str) -> Listed:
    """A split's keys: its `ids`, or its file's keys (a JSON object key -> gold) or items (a JSON list)."""
    if rule.ids is not None:
        return {str(key).strip(): (None, None) for key in rule.ids}
    values = json_values(folder / rule.file, key_name)
    return {(str(value).strip() if key is None else key): (None if key is None else value, loc) for loc, key, value in values}


def load_dataset(name: str, path: str | Path | None = None, split: str | None = None, skip_invalid: bool = False,
                 root: str | Path | None = None, fields: dict[str, Any] | None = None) -> QuestionList:  # fmt: skip
    """Load what a user gives: a built-in name (`pubmedqa`, `pubmedqa:dev`, `medqa`, ... see DATASETS), a spec file, a
    data file (its layout recognised; `fields` override it) or `hf:org/name`. `path` replaces a built-in's file (the
    file or its folder); `root` is the data root (default data_root())."""
    spec, named_split = resolve(str(name), fields)
    return load_spec(spec, root=root, path=path, split=split or named_split, skip_invalid=skip_invalid)


def load_file(path: str | Path, skip_invalid: bool = False, **fields: Any) -> QuestionList:
    """Your own questions from a .jsonl/.json/.csv/.tsv/.parquet file: the layout is recognised from the first record;
    `fields` (keys of `Fields`: question, options, gold, gold_as, context, id, subject, metadata, ...) override it."""
    if Path(path).suffix not in FORMATS:
        raise ValueError(f"cannot tell the format of {path}: name it .jsonl, .json, .csv, .tsv or .parquet")
    return load_dataset(str(path), skip_invalid=skip_invalid, fields=fields)
