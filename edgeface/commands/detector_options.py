"""The ``--detector`` option that every command taking photos or frames shares.

Light on purpose (no OpenCV, no numpy): ``edgeface --help`` imports it.  The names and the default are
:mod:`edgeface.runtime.settings`' copy of :data:`edgeface.runtime.detector.DETECTOR_KINDS` and its default, which a
test keeps equal.
"""

from __future__ import annotations

import typer

from edgeface.runtime.settings import DEFAULT_DETECTOR

DETECTOR_MODES_HELP = ("auto (default: faces from 32 px wide up to filling the frame, anywhere in it), short "
                       "(BlazeFace 128 on the whole frame: fastest, faces wider than ~1/8 of the frame), full "
                       "(BlazeFace 192: faces ~1/10 to 1/2 of the frame), haar (OpenCV fallback, no landmarks).")
DETECTOR_HELP = "Face detector: " + DETECTOR_MODES_HELP


DETECTOR_PRECISION_HELP = ("BlazeFace files to run on the CPU: float (the wheel's) or int8 (rebuilt and quantized "
                           "from them, shipped in the default bundle: faster, same faces). With --delegate "
                           "edgetpu the bundle's Edge TPU-compiled detector files run on the accelerator.")


def detector_option(help: str = DETECTOR_HELP) -> str:
    """A ``--detector`` typer option defaulting to :data:`DEFAULT_DETECTOR`."""
    return typer.Option(DEFAULT_DETECTOR, "--detector", help=help)


def detector_precision_option() -> str:
    """A ``--detector-precision`` typer option (float by default)."""
    return typer.Option("float", "--detector-precision", help=DETECTOR_PRECISION_HELP)
