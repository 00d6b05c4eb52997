"""``edgeface run --self-test`` (edgeface.runtime.selftest): passes on a good bundle, catches a damaged model."""

from __future__ import annotations

import json
import shutil

import pytest
from run_cli import invoke

from edgeface.runtime.bundle import Bundle

# Every test in its own folder: `edgeface run` picks up ./gallery.npz when present.
pytestmark = [pytest.mark.board, pytest.mark.usefixtures("in_tmp_dir")]


def test_self_test_passes_on_the_bundle_and_catches_a_damaged_model(runtime_bundle, tmp_path):
    result = invoke("run", "--self-test", "-m", runtime_bundle)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True and all(report["checks"].values())
    assert report["embedding_dim"] == Bundle.load(runtime_bundle).embedding_dim
    assert abs(report["norm"] - 1) < 1e-3 and report["embed_ms"] > 0
    damaged = tmp_path / "damaged"
    shutil.copytree(runtime_bundle, damaged)
    model = damaged / Bundle.load(damaged).entry()["path"]
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    result = invoke("run", "--self-test", "-m", damaged)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["error"].startswith(f"checksum mismatch for {model}")
    assert result.stderr.startswith("error: self-test failed: checksum mismatch")
