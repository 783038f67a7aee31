"""A dataset as a declarative spec (YAML or pydantic): its source, the fields holding the question's parts, checks and
splits. `resolve` makes one of a built-in `name[:split]`, a spec file, a data file or `hf:org/name[:config][@split]`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from voc.datasets.common import FORMATS, DataError, display_name, one_line

HUB = re.compile(r"^hf:(?P<id>[\w.-]+/[\w.-]+)(?::(?P<config>[\w.-]+))?(?:@(?P<split>[\w.-]+))?$")
SLOT = re.compile(r"\{([^{}]+)\}")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Fields(Strict):
    """Which fields of a record hold the question's parts (`_index`: its position, `_key`: its key in a JSON object). `id`
    is a field or a template like "medqa-{realidx|_index}" ("|": the first that is set); `metadata`: the fields kept (a
    list, or names -> fields), None for every field not mapped."""

    question: str = "question"
    options: str | list[str] = "options"  # one field (dict label -> text, list of texts, or their JSON text), or one per option
    gold: str | None = None
    gold_as: Literal["label", "index", "index1", "text", "auto"] = "label"  # index: 0-based; auto: index if int, label if one, else text
    answer_text: str | None = None  # a field holding the gold option's text: checked against it (catches shifted labels)
    context: str | None = None  # a text, or a list of texts joined by context_join
    context_labels: str | None = None  # a list beside the context list: each part becomes "LABEL: text"
    context_join: str = "\n"
    id: Annotated[str, AfterValidator(lambda v: v if "{" in v else "{" + v + "}")] = "{_index}"
    subject: str | None = None  # kept as metadata["subject"]: reports then give per-subject tables
    metadata: Annotated[dict[str, str] | None, BeforeValidator(lambda v: {n: n for n in v} if isinstance(v, list) else v)] = None

    def used(self) -> list[str]:
        """The record fields this mapping reads, but for metadata."""
        names = [self.question, self.gold, self.answer_text, self.context, self.context_labels, self.subject]
        names += [*(self.options if isinstance(self.options, list) else [self.options]), *"|".join(SLOT.findall(self.id)).split("|")]
        return [n.strip() for n in names if n]


class Source(Strict):
    """A file or glob (relative to the data root; './' or '../' to the spec file), or a Hugging Face dataset."""

    path: str | None = None
    hub: str | None = None
    config: str | None = None
    split: str = "test"  # the hub dataset's split

    @model_validator(mode="after")
    def _one(self) -> Source:
        if (self.path is None) == (self.hub is None):
            raise ValueError("give the source as path (a file or glob under the data root) or hub (a Hugging Face dataset id)")
        return self


class Split(Strict):
    """The records whose key (in a JSON-object file) is listed in `file` (beside the data file: a JSON object key ->
    gold, which must agree with the record's, or a JSON list of keys) or in `ids`; or those in none of the `not_in`."""

    file: str | None = None
    ids: list[str | int] | None = None
    not_in: list[str] | None = None

    @model_validator(mode="after")
    def _one(self) -> Split:
        if sum(x is not None for x in (self.file, self.ids, self.not_in)) != 1:
            raise ValueError("give a split as exactly one of file, ids or not_in")
        return self


class DatasetSpec(Strict):
    """A dataset, declared."""

    name: str | None = None
    description: str = ""
    source: Source
    format: Literal["jsonl", "json", "csv", "tsv", "parquet"] | None = None  # default: from the file's suffix
    fields: Fields = Field(default_factory=Fields)
    infer: bool = False  # recognise fields not given from the first records (data files given by path)
    options: dict[str, str] | None = None  # the same options for every row (PubMedQA's yes/no/maybe)
    n_options: int | None = Field(default=None, ge=2)  # every question has this many options (after placeholders are dropped)
    placeholders: list[str] = ["n/a", "none given"]  # option texts dropped, ignoring case and spacing ("" always is)
    key_name: str = "key"  # how messages name a record's key, e.g. PMID
    splits: dict[str, Split] = {}
    default_split: str | None = None  # with splits: the one loaded by default; without: which split the whole source is

    @model_validator(mode="after")
    def _splits(self) -> DatasetSpec:
        for name, split in self.splits.items():
            if any(n not in self.splits or self.splits[n].not_in is not None for n in split.not_in or []):
                raise ValueError(f"split {name!r}: not_in must name splits given by file or ids")
        if self.splits and self.default_split not in self.splits:
            raise ValueError(f"default_split must be one of {list(self.splits)}")
        return self

    def pick_split(self, split: str | None) -> str | None:
        """The split to load (default: default_split); one the spec lacks is a one-line error. A hub source takes any."""
        if self.splits and (split or self.default_split) not in (*self.splits, "all"):
            raise ValueError(f"unknown split {split!r} of {self.name}; use one of {', '.join([*self.splits, 'all'])}")
        if not self.splits and split not in (None, "all", self.default_split) and not self.source.hub:
            what = f"is a {self.default_split} split" if self.default_split else "has no splits"
            raise ValueError(f"{self.name} {what}; drop split={split!r}")
        return (split or self.default_split) if self.splits else split


def pydantic_reason(error: ValidationError) -> str:
    """A one-line reason from a pydantic ValidationError; a misspelt key (of a spec or --field) first."""
    unknown = [".".join(map(str, e["loc"])) for e in error.errors() if e["type"] == "extra_forbidden"]
    if unknown:
        return f"unknown key {unknown[0]!r}; the keys are those of voc.datasets.DatasetSpec and Fields"
    parts = [(".".join(map(str, e["loc"])), e["msg"].removeprefix("Value error, ")) for e in error.errors()]
    return one_line("; ".join(f"{loc}: {msg}" if loc else msg for loc, msg in parts))


def read_spec(path: str | Path) -> DatasetSpec:
    """A spec from a YAML file; a bad file is a one-line DataError naming it."""
    path, name = Path(path), display_name(path)
    if not path.is_file():
        raise FileNotFoundError(f"no spec file {path}; check the path")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise DataError(name, "a spec is a YAML mapping with at least `source`", skippable=False)
        spec = DatasetSpec.model_validate({"name": path.stem, **raw})
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise DataError(name, f"not valid YAML ({getattr(exc, 'problem', exc)})", mark and mark.line + 1, skippable=False) from None
    except ValidationError as exc:
        raise DataError(name, pydantic_reason(exc), skippable=False) from None
    if spec.source.path and spec.source.path.startswith(("./", "../")):
        spec.source.path = str(path.parent.absolute() / spec.source.path)
    return spec


DATASETS = {path.stem: read_spec(path) for path in sorted((Path(__file__).parent / "specs").glob("*.yaml"))}  # the built-in ones


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
    a spec file's `name`, a data file's name, `hf:org_name` for a hub id. Never a '/': reports read 'dataset/subject'."""
    if given.endswith((".yaml", ".yml")) and Path(given).is_file():
        given = read_spec(given).name or Path(given).stem
    name, _, split = given.partition(":")
    if name in DATASETS and split == DATASETS[name].default_split:
        return name
    return given.replace("/", "_") if HUB.match(given) else Path(given).name if "/" in given else given


def resolve(given: str, fields: dict[str, Any] | None = None) -> tuple[DatasetSpec, str | None]:
    """(spec, split) for what a user gave; `fields` overrides the mapping of data files and hub ids."""
    name, _, split = given.partition(":")
    if name in DATASETS:
        return DATASETS[name], DATASETS[name].pick_split(split or None)
    path, hub = Path(given).expanduser(), HUB.match(given)
    if hub:
        source = Source(hub=hub["id"], config=hub["config"], split=hub["split"] or "test")
    elif path.suffix in (".yaml", ".yml"):
        return read_spec(path), None
    elif path.suffix in FORMATS and (path.is_file() or any(ch in given for ch in "*?[")):
        source = Source(path=str(path.absolute()))
    elif path.suffix in FORMATS:
        raise FileNotFoundError(f"no data file {given}; check the path")
    else:
        known = ", ".join(n + (f" ({'|'.join(s.splits)})" if s.splits else "") for n, s in DATASETS.items())
        raise ValueError(f"unknown dataset {given!r}; give a built-in name ({known}; a split as name:split), a spec file (.yaml), "
                         f"a data file ({', '.join(FORMATS)}) or a hub id hf:org/name")  # fmt: skip
    if "gold" in (fields := fields or {}) and "gold_as" not in fields:  # a gold alone is read as `auto`, not checked against `answer`
        fields = {"answer_text": None, **fields, "gold_as": "auto"}
    try:
        return DatasetSpec(name=dataset_name(given), source=source, fields=Fields(**fields), infer=True), None
    except ValidationError as exc:
        raise DataError("--field", pydantic_reason(exc), skippable=False) from None
