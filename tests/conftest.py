"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

# --- data fixtures ---


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared data folder (pubmedqa/, medqa/, ...); tests using it are skipped when it is absent."""
    from voc.datasets import data_root as find_data_root

    try:
        root = find_data_root()
    except FileNotFoundError as exc:
        pytest.skip(f"shared data folder not found ({exc})")
    if not (root / "pubmedqa" / "ori_pqal.json").is_file():
        pytest.skip(f"{root} holds no pubmedqa/ori_pqal.json; set VOC_DATA_ROOT to the shared data folder")
    return root


# --- end data fixtures ---
