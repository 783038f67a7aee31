"""A dataset as a declarative spec (YAML or pydantic): its source, the fields holding a question's parts, checks and
splits; the built-in ones are specs/*.yaml."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, ValidationError, model_validator

from voc.datasets.common import DataError, display_name, one_line

HUB = re.compile(r"^hf:(?P<id>[\w.-]+/[\w.-]+)(?::(?P<config>[\w.-]+))?(?:@(?P<split>[\w.-]+))?$")
SLOT = re.compile(r"\{([^{}]+)\}")


class Fields(BaseModel, extra="forbid"):
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

    def used(self, options: bool = True) -> list[str]:
        """The record fields this mapping reads, but for metadata; options=False leaves out the option fields (a spec
        with fixed options reads none)."""
        option_fields = (self.options if isinstance(self.options, list) else [self.options]) if options else []
        names = [self.question, self.gold, self.answer_text, self.context, self.context_labels, self.subject, *option_fields]
        names += "|".join(SLOT.findall(self.id)).split("|")
        return [n.strip() for n in names if n]


class DatasetSpec(BaseModel, extra="forbid"):
    """A dataset, declared. `source`: a file or glob under the data root (under the spec's folder if it starts with './'
    or '../'), or a hub dataset `hf:org/name[:config][@split]`. A split is the records whose key (in a JSON-object file)
    a file beside the data (a JSON list of keys, or an object keyed by them) or a list gives; "rest": those in no other."""

    name: str | None = None
    description: str = ""
    source: str
    format: Literal["jsonl", "json", "csv", "tsv", "parquet"] | None = None  # default: from the file's suffix
    fields: Fields = Field(default_factory=Fields)
    infer: bool = False  # recognise fields not given from the first records (data files given by path)
    options: dict[str, str] | None = None  # the same options for every row (PubMedQA's yes/no/maybe)
    n_options: int | None = Field(default=None, ge=2)  # every question has this many options (after placeholders are dropped)
    placeholders: list[str] = ["n/a", "none given"]  # option texts dropped, ignoring case and spacing ("" always is)
    key_name: str = "key"  # how messages name a record's key, e.g. PMID
    splits: dict[str, str | list[str | int]] = {}  # name -> a file, a list of keys, or "rest"
    default_split: str | None = None  # with splits: the one loaded by default; without: which split the whole source is

    @model_validator(mode="after")
    def _default_split(self) -> DatasetSpec:
        if self.splits and self.default_split not in self.splits:
            raise ValueError(f"default_split must be one of {list(self.splits)}")
        return self

    def pick_split(self, split: str | None) -> str | None:
        """The split to load (default: default_split); one the spec lacks is a one-line error. A hub source takes any."""
        if self.splits and (split or self.default_split) not in (*self.splits, "all"):
            raise ValueError(f"unknown split {split!r} of {self.name}; use one of {', '.join([*self.splits, 'all'])}")
        if not self.splits and split not in (None, "all", self.default_split) and not HUB.match(self.source):
            what = f"is a {self.default_split} split" if self.default_split else "has no splits"
            raise ValueError(f"{self.name} {what}; drop split={split!r}")
        return (split or self.default_split) if self.splits else split


def reason(error: Exception) -> str:
    """A one-line reason for an error; of a pydantic ValidationError, a misspelt key (of a spec or --field) first."""
    if not isinstance(error, ValidationError):
        return one_line(error)
    if unknown := [".".join(map(str, e["loc"])) for e in error.errors() if e["type"] == "extra_forbidden"]:
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
        raise DataError(name, reason(exc), skippable=False) from None
    if spec.source.startswith(("./", "../")):
        spec.source = str(path.parent.absolute() / spec.source)
    return spec


DATASETS = {path.stem: read_spec(path) for path in sorted((Path(__file__).parent / "specs").glob("*.yaml"))}  # the built-in ones
