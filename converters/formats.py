"""Every export format in one table: the CLI choices, file names, converter settings and checks all read it.

Like Ultralytics' ``export_formats()``: add a row here and ``edgeface export``
knows the format.  Plain data only (no TensorFlow objects) so the table is
importable anywhere; :mod:`edgeface.converters.convert` turns a row into
converter settings.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable, Union

from edgeface.errors import UserError


@dataclass(frozen=True)
class ExportFormat:
    """One TFLite flavour.

    ``quantize``: "" (plain float32), "float16" (fp16 weights), "dynamic"
    (int8 weights, float activations), "full_integer" (weights and activations
    8-bit, calibrated).  ``ops``: "builtins" (TFLITE_BUILTINS) or
    "builtins_int8" (TFLITE_BUILTINS_INT8 only: conversion fails rather than
    leave a float op behind).  ``min_cosine`` / ``mean_cosine``: the lowest
    per-face and the lowest average cosine similarity to the Keras embedding
    that still count as verified.
    """

    name: str
    description: str
    suffix: str
    quantize: str
    ops: str
    input_dtype: str
    output_dtype: str
    min_cosine: float
    mean_cosine: float
    options: tuple[str, ...]
    edgetpu: bool = False

    @property
    def needs_calibration(self) -> bool:
        return self.quantize == "full_integer"

    @property
    def integer_only(self) -> bool:
        return self.ops == "builtins_int8"

    def filename(self, stem: str) -> str:
        return f"{stem}{self.suffix}"


# Cosine bounds measured on real aligned faces (tests/test_export.py, README): float32
# agrees with Keras to ~1e-7, fp16 to ~1e-5, dynamic range to ~1e-3.  Full-integer
# files of a briefly trained MobileFaceNet average 0.985-0.996 on AT&T crops with single
# hard faces down to ~0.93, so their per-face bound is 0.90 and the average must
# stay >= 0.97; a broken calibration (per-tensor weights, wrong input scale) lands
# near 0 on average and fails both; a model whose early depthwise layers have outlier
# channels lands between (mean 0.94 measured, see tests/conftest.py) and is flagged too:
# --auto-mixed keeps its worst layers in float.
FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat("fp32", "TFLite float32", "_float32.tflite", "", "builtins", "float32", "float32",
                 0.999, 0.9999, ()),
    ExportFormat("fp16", "TFLite float16 weights", "_float16.tflite", "float16", "builtins", "float32", "float32",
                 0.99, 0.999, ()),
    ExportFormat("dynamic", "TFLite dynamic-range int8 weights", "_dynamic_range_quant.tflite", "dynamic",
                 "builtins", "float32", "float32", 0.99, 0.995, ()),
    ExportFormat("int8", "TFLite full integer, int8 I/O", "_int8.tflite", "full_integer", "builtins_int8", "int8",
                 "int8", 0.90, 0.97, ("calib", "calib_count", "auto_mixed")),
    ExportFormat("edgetpu", "Edge TPU-ready full integer, uint8 I/O", "_full_integer_quant.tflite", "full_integer",
                 "builtins_int8", "uint8", "uint8", 0.90, 0.97, ("calib", "calib_count"), edgetpu=True),
)
FORMAT_NAMES = tuple(f.name for f in FORMATS)
# Produced by other steps, never asked for with --formats: the Edge TPU compiler's
# output and the accuracy-budgeted mixed int8/float file of --auto-mixed.
DERIVED_FORMATS = ("edgetpu_compiled", "int8_mixed")


def get_format(name: str) -> ExportFormat:
    """The table row of a format name (with a did-you-mean on a typo)."""
    for f in FORMATS:
        if f.name == name:
            return f
    close = difflib.get_close_matches(name, FORMAT_NAMES, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UserError(f"unknown export format {name!r}{hint}: choose from {', '.join(FORMAT_NAMES)} or 'all'")


def resolve_formats(spec: Union[str, Iterable[str]]) -> list[ExportFormat]:
    """Parse ``--formats``: 'all' or a comma-separated list; table order, duplicates dropped."""
    names = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n]
    if not names:
        raise UserError(f"--formats is empty: choose from {', '.join(FORMAT_NAMES)} or 'all'")
    if "all" in names:
        return list(FORMATS)
    wanted = {get_format(n).name for n in names}
    return [f for f in FORMATS if f.name in wanted]


def export_formats() -> list[dict]:
    """The format table as rows (for ``edgeface export --list-formats`` and docs)."""
    return [
        {"format": f.name, "description": f.description, "suffix": f.suffix, "input": f.input_dtype,
         "output": f.output_dtype, "calibration": f.needs_calibration, "min_cosine": f.min_cosine,
         "mean_cosine": f.mean_cosine,
         "options": list(f.options)}
        for f in FORMATS
    ]
