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

# --- model fixtures ---
@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama folder (see tests/tiny_model.py), built once per test session."""
    from tests.tiny_model import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir: Path):
    """One transformers engine on the tiny model, shared by the tests of a session."""
    from voc.engines.hf import HFEngine

    return HFEngine(str(tiny_model_dir), batch_size=4)


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct, converted to an HF folder (skips if not installed)."""
    from voc.models import ModelNotFoundError, resolve_model

    try:
        return Path(resolve_model(None))
    except ModelNotFoundError as error:
        pytest.skip(str(error))
