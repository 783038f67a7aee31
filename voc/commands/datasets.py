"""`voc datasets`: the built-in datasets (each split, with question and gold-label counts) and the other data files."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    datasets = subparsers.add_parser("datasets", help="list the datasets under the data root, with their question counts")
    datasets.add_argument("--data-root", default=None, help="folder holding pubmedqa/, medqa/, ... (default: $VOC_DATA_ROOT, shared/data)")
    datasets.set_defaults(handler=cmd_datasets)


def cmd_datasets(args: argparse.Namespace) -> int:
    """List the built-in datasets (each split, with question and gold-label counts) and the other data files under the data root."""
    from voc.datasets import DATASETS, DataError, data_root, dataset_name, load_dataset, load_file
    from voc.datasets.common import FORMATS

    root = Path(args.data_root).expanduser() if args.data_root else data_root()
    print(f"Built-in datasets under {root} (voc bench --dataset NAME):")
    known: set[Path] = set()
    for name, spec in DATASETS.items():
        file = root / spec.source
        known |= {file.resolve(), *((file.parent / s).resolve() for s in spec.splits.values() if isinstance(s, str) and s != "rest")}
        try:
            questions = load_dataset(name, root=root, split="all" if spec.splits else None)
        except (OSError, ValueError) as error:
            print(f"  {name:<16} not available: {str(error).splitlines()[0]}")
            continue
        parts = {dataset_name(f"{name}:{s}"): [q for q in questions if q.metadata["split"] == s] for s in spec.splits}
        for label, items in (parts or {name: list(questions)}).items():
            gold = ", ".join(f"{g} {n}" for g, n in sorted(Counter(q.gold for q in items).items()))
            print(f"  {label:<16} {len(items):>5} questions  gold {gold:<34} {spec.source}  {spec.description}")
    others = sorted(f for f in root.rglob("*") if f.suffix in FORMATS and f.is_file() and f.resolve() not in known)
    if others:
        print("Other data files (voc bench --dataset PATH, with --field KEY=FIELD where the layout is not recognised):")
    for file in others:
        try:
            text = f"{len(load_file(file)):>5} questions"
        except (OSError, ValueError) as error:
            reason = error.reason if isinstance(error, DataError) else str(error)
            lines = sum(1 for line in file.read_bytes().splitlines() if line.strip()) if file.suffix == ".jsonl" else None
            text = (f"{lines} records; " if lines is not None else "") + f"not recognised as questions ({reason})"
        print(f"  {file.relative_to(root)}: {text}")
    return 0
