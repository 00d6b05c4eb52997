"""The on-board runtime as a whole: no TensorFlow on the board.

Each room has its tests: test_capture.py (sources), test_recognizer.py (loading, recognition quality),
test_matcher.py, test_gallery.py, test_enroll.py, test_pipeline.py (the run loop), test_sinks.py,
test_settings.py, test_selftest.py, test_soak.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from run_cli import events_of

RUNTIME_MODULES = ("align", "bundle", "capture", "detector", "enroll", "faces", "gallery", "gallery_crypto",
                   "images", "interpreter", "matcher", "pipeline", "preview", "procstats", "recognizer", "results",
                   "selftest", "settings", "sinks", "stats")

# Every test in its own folder: `edgeface run` picks up ./gallery.npz when present.
pytestmark = [pytest.mark.board, pytest.mark.usefixtures("in_tmp_dir")]


# --- no TensorFlow on the board ----------------------------------------------------------------


def test_runtime_and_run_help_do_not_import_tensorflow():
    code = (
        "import sys\n"
        "import edgeface.runtime\n"
        + "".join(f"import edgeface.runtime.{m}\n" for m in RUNTIME_MODULES)
        + "from typer.testing import CliRunner\n"
        "from edgeface.cli import app\n"
        "for args in (['--help'], ['run', '--help'], ['enroll', '--help'], ['gallery', '--help']):\n"
        "    r = CliRunner().invoke(app, args)\n"
        "    assert r.exit_code == 0, r.output\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "print(heavy[:5])\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_run_and_enroll_work_with_tensorflow_unimportable(runtime_bundle, media_dir, tmp_path):
    """The board install has no TensorFlow: make it unimportable and do the whole job."""
    gallery = tmp_path / "g.npz"
    code = (
        "import sys\n"
        "sys.modules['tensorflow'] = None\n"  # `import tensorflow` now raises ImportError
        "sys.modules['keras'] = None\n"
        + "from typer.testing import CliRunner\n"
        "from edgeface.cli import app\n"
        f"r = CliRunner().invoke(app, ['enroll', 'obama', {str(media_dir / 'obama2.jpg')!r}, '-g', {str(gallery)!r},"
        f" '-m', {str(runtime_bundle)!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        f"r = CliRunner().invoke(app, ['run', '-s', {str(media_dir / 'obama2.jpg')!r}, '-g', {str(gallery)!r},"
        f" '-m', {str(runtime_bundle)!r}, '-q'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(r.stdout)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    frames, summary = events_of(proc.stdout)
    assert frames[0]["detections"][0]["identity"] == "obama"
