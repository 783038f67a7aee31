"""PubMedQA PQA-L (pubmedqa/ori_pqal.json + test_ground_truth.json): yes/no/maybe questions on an abstract.

The 500 PMIDs of test_ground_truth.json are the official test split; the other 500 labelled PMIDs ("train") are
the only ones that may be used for fine-tuning or few-shot examples.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from voc.datasets.common import (
    DataError,
    QuestionList,
    RowError,
    collect,
    data_root,
    display_name,
    get_field,
    is_hub_id,
    iter_hub,
    read_json_object,
)
from voc.types import Question

ORI_FILE = "ori_pqal.json"
GROUND_TRUTH_FILE = "test_ground_truth.json"
PUBMEDQA_OPTIONS: dict[str, str] = {"A": "yes", "B": "no", "C": "maybe"}
_LETTER = {text: label for label, text in PUBMEDQA_OPTIONS.items()}
Split = Literal["test", "train", "all"]


def _files(path: str | Path | None) -> tuple[Path, Path]:
    """(ori_pqal.json, test_ground_truth.json) from a folder, either file, or data_root()/pubmedqa."""
    base = data_root() / "pubmedqa" if path is None else Path(path).expanduser()
    folder = base.parent if base.is_file() else base
    ori, truth = folder / ORI_FILE, folder / GROUND_TRUTH_FILE
    for file in (ori, truth):
        if not file.is_file():
            raise FileNotFoundError(
                f"no {file.name} in {folder}; pass the folder holding {ORI_FILE} and "
                f"{GROUND_TRUTH_FILE}, or set VOC_DATA_ROOT"
            )
    return ori, truth


def _ground_truth(truth_file: Path) -> tuple[dict[str, str | DataError], str]:
    """PMID -> 'yes'/'no'/'maybe', or a DataError for that PMID (it still counts as a test PMID)."""
    source = display_name(truth_file)
    labels: dict[str, str | DataError] = {}
    for key, label in read_json_object(truth_file).items():
        pmid = key.strip()
        if not pmid.isdigit():
            labels[pmid] = DataError(source, f"{pmid!r} is not a PMID", where=f"key {pmid!r}")
        elif label not in _LETTER:
            labels[pmid] = DataError(source, f"label {label!r} is not one of yes/no/maybe", where=f"PMID {pmid}")
        else:
            labels[pmid] = label
    return labels, source


def pubmedqa_test_ids(path: str | Path | None = None) -> set[str]:
    """The PMIDs of the official test split (never train on these). `path`: folder or either PubMedQA file."""
    _, truth = _files(path)
    return {pmid.strip() for pmid in read_json_object(truth)}


def _context(row: Mapping[str, Any]) -> str:
    contexts = get_field(row, "CONTEXTS", (list, str))
    if isinstance(contexts, str):
        contexts = [contexts]
    labels = row.get("LABELS")
    if labels is None:
        labels = [""] * len(contexts)
    if not isinstance(labels, list) or len(labels) != len(contexts):
        count = len(labels) if isinstance(labels, list) else type(labels).__name__
        raise RowError(f"CONTEXTS has {len(contexts)} items but LABELS has {count}")
    parts = []
    for label, text in zip(labels, contexts, strict=True):
        if not isinstance(text, str) or not isinstance(label, str):
            raise RowError("CONTEXTS and LABELS must hold strings")
        parts.append(f"{label.strip()}: {text}" if label.strip() else text)
    return "\n".join(parts)


def pubmedqa_row_to_question(pmid: str, row: Mapping[str, Any], split: str, label: str | None = None) -> Question:
    """One ori_pqal.json entry -> Question; `label` (test split) overrides final_decision as the gold answer."""
    if not isinstance(row, Mapping):
        raise RowError(f"expected a JSON object, got {type(row).__name__}")
    decision = row.get("final_decision")
    if label is None:
        decision = get_field(row, "final_decision", str)
        label = decision
    elif isinstance(decision, str) and decision in _LETTER and decision != label:
        raise RowError(f"{GROUND_TRUTH_FILE} says {label!r} but final_decision is {decision!r}")
    if label not in _LETTER:
        raise RowError(f"final_decision {label!r} is not one of yes/no/maybe")
    meshes = row.get("MESHES")
    if meshes is not None and not (isinstance(meshes, list) and all(isinstance(m, str) for m in meshes)):
        raise RowError("field 'MESHES' must be a list of strings")
    year = row.get("YEAR")
    if year is not None and not isinstance(year, str | int):
        raise RowError(f"field 'YEAR' must be str, got {type(year).__name__}")
    long_answer = row.get("LONG_ANSWER")
    if long_answer is not None and not isinstance(long_answer, str):
        raise RowError(f"field 'LONG_ANSWER' must be str, got {type(long_answer).__name__}")
    return Question(
        question=get_field(row, "QUESTION", str),
        options=PUBMEDQA_OPTIONS,
        context=_context(row),
        gold=_LETTER[label],
        id=f"pubmedqa-{pmid}",
        metadata={"pmid": pmid, "split": split, "long_answer": long_answer, "year": year, "meshes": meshes or []},
    )


def _from_hub_schema(row: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """qiaojin/PubMedQA pqa_labeled rows (pubid, question, context{contexts,labels,meshes}, ...) -> ori format."""
    context = row.get("context") or {}
    return str(row.get("pubid")), {
        "QUESTION": row.get("question"),
        "CONTEXTS": context.get("contexts"),
        "LABELS": context.get("labels"),
        "MESHES": context.get("meshes"),
        "YEAR": row.get("year"),
        "LONG_ANSWER": row.get("long_answer"),
        "final_decision": row.get("final_decision"),
    }


def load_pubmedqa(
    path: str | Path | None = None,
    split: Split = "test",
    skip_invalid: bool = False,
    hub_name: str = "pqa_labeled",
    hub_split: str = "train",
) -> QuestionList:
    """Load PubMedQA PQA-L: split "test" (the 500 official test PMIDs), "train" (the other labelled 500) or "all".

    `path`: the folder with ori_pqal.json and test_ground_truth.json (default data_root()/"pubmedqa"), or a hub id
    like "qiaojin/PubMedQA" (config `hub_name`, split `hub_split`); the test PMIDs then come from the local
    test_ground_truth.json under data_root().
    Options are A=yes, B=no, C=maybe; ids "pubmedqa-<pmid>"; errors name the file and the PMID.
    """
    if split not in ("test", "train", "all"):
        raise ValueError(f"split must be 'test', 'train' or 'all', not {split!r}")
    if is_hub_id(path):
        _, truth_file = _files(None)
        source = f"hub:{path}[{hub_split}]"
        entries: Iterator[tuple[str, Any]] = (
            _from_hub_schema(row) for _, row in iter_hub(str(path), hub_split, hub_name)
        )
    else:
        ori_file, truth_file = _files(path)
        source = display_name(ori_file)
        entries = iter(read_json_object(ori_file).items())
    truth, truth_source = _ground_truth(truth_file)

    def rows() -> Iterator[tuple[str, Any]]:
        seen: set[str] = set()
        for pmid, row in entries:
            pmid = pmid.strip()
            seen.add(pmid)
            in_test = pmid in truth
            if (split == "test" and not in_test) or (split == "train" and in_test):
                yield pmid, None  # the other split: left out on purpose
                continue
            label = truth.get(pmid)
            yield pmid, label if isinstance(label, DataError) else (row, label)
        if split != "train":
            for pmid, label in truth.items():
                if pmid not in seen:
                    missing = DataError(truth_source, f"test PMID is missing from {ORI_FILE}", where=f"PMID {pmid}")
                    yield pmid, label if isinstance(label, DataError) else missing

    def convert(item: tuple[Any, str | None] | None, pmid: int | str) -> Question | None:
        if item is None:
            return None
        row, label = item
        return pubmedqa_row_to_question(str(pmid), row, "test" if label is not None else "train", label)

    return collect(source, rows(), convert, skip_invalid=skip_invalid, locator=lambda pmid: f"PMID {pmid}")
