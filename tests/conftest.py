"""Shared fixtures: real faces from ../shared/data (override with EDGEFACE_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("EDGEFACE_DATA", REPO.parent / "shared" / "data"))


def pytest_configure(config):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"face data not found at {DATA}: set EDGEFACE_DATA to the shared data folder")
    return DATA


@pytest.fixture(scope="session")
def att_dir(data_dir) -> Path:
    return data_dir / "att_faces"


@pytest.fixture(scope="session")
def lfw_dir(data_dir) -> Path:
    return data_dir / "lfw"


@pytest.fixture(scope="session")
def media_dir(data_dir) -> Path:
    return data_dir / "media"


@pytest.fixture(scope="session")
def att_crops(att_dir, tmp_path_factory) -> Path:
    """AT&T faces aligned once per test session by `edgeface data prepare` (all 40 people)."""
    from edgeface.data.prepare import PrepareConfig, prepare

    out = tmp_path_factory.mktemp("att_crops")
    summary = prepare(PrepareConfig(src=att_dir, out=out, workers=2))
    assert summary.aligned >= 390
    return out
