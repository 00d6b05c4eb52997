"""The on-board commands run in-process, for the runtime's tests: :func:`invoke` and :func:`events_of`, and
:data:`NEEDS_DEFAULT` for the tests that need the default bundle shipped in edgeface/models/default."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgeface.cli import app
from edgeface.runtime.bundle import default_bundle_dir

runner = CliRunner()
CLIP = "short_hamilton_clip.mp4"
NEEDS_DEFAULT = pytest.mark.skipif(not (default_bundle_dir() / "manifest.json").is_file(),
                                   reason="needs the default bundle at edgeface/models/default/")


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def events_of(text: str) -> tuple[list[dict], dict]:
    """Per-frame events and the summary from run's JSON lines."""
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    frames = [e for e in lines if "frame" in e]
    summary = next(e["summary"] for e in lines if "summary" in e)
    return frames, summary
