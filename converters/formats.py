"""Every export format in one table: the CLI choices, file names, converter settings, steps and checks all read it.

Like Ultralytics' ``export_formats()``: add a row here and ``edgeface export``
knows the format.  Each row says what its file needs (calibration faces, the
options it takes), which step makes it (``step``), from what (the Keras model,
or another row's file: ``derived_from``) and so how it is judged;
:mod:`edgeface.converters.export` runs the steps in table order.  Plain data
only (no TensorFlow objects) so the table is importable anywhere;
:mod:`edgeface.converters.convert` turns a row into converter settings.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Union

from edgeface.errors import SettingError, UserError
from edgeface.runtime.bundle import EDGETPU_FORMAT

# The step that makes a row's file (converters/steps.py), and how that file is judged.
# Judged against Keras: the row's cosine bounds on held-out faces and, with --pairs, the accuracy drop.
CONVERT = "convert"  # TFLiteConverter on the Keras model (converters/convert.py); judged against Keras
AUTO_MIXED = "auto_mixed"  # the fewest float layers bringing int8 within budget (converters/mixed.py); against Keras
COMPILE = "compile"  # edgetpu_compiler on the edgetpu file (converters/edgetpu.py); judged by the compiler's
#                      report (every op on the Edge TPU): the file runs only there, so nothing here runs it


@dataclass(frozen=True)
class ExportFormat:
    """One TFLite flavour.

    ``quantize``: "" (plain float32), "float16" (fp16 weights), "dynamic"
    (int8 weights, float activations), "full_integer" (weights and activations
    8-bit, calibrated).  ``ops``: "builtins" (TFLITE_BUILTINS) or
    "builtins_int8" (TFLITE_BUILTINS_INT8 only: conversion fails rather than
    leave a float op behind).  ``min_cosine`` / ``mean_cosine``: the lowest
    per-face and the lowest average cosine similarity to the Keras embedding
    that still count as verified (None: the file is not judged by cosine, see
    ``step``).  ``options``: the export settings (``ExportConfig`` fields) that
    only some formats use; one set while no chosen format lists it is refused.
    ``edgetpu``: the file also gets the static Edge TPU check.  ``step``: what
    makes the file; ``derived_from``: the row whose written file it is made
    from (None: the Keras model); ``enabled_by``: the ``ExportConfig`` switch
    of that step; ``replaces_source``: a verified file of this row stands in
    for a source file that missed its budget (the exit code).
    """

    name: str
    description: str
    suffix: str
    quantize: str
    ops: str
    input_dtype: str
    output_dtype: str
    min_cosine: Optional[float]
    mean_cosine: Optional[float]
    options: tuple[str, ...]
    edgetpu: bool = False
    step: str = CONVERT
    derived_from: Optional[str] = None
    enabled_by: Optional[str] = None
    replaces_source: bool = False

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
                 "int8", 0.90, 0.97, ("auto_mixed", "per_tensor")),
    ExportFormat("edgetpu", "Edge TPU-ready full integer, uint8 I/O", "_full_integer_quant.tflite", "full_integer",
                 "builtins_int8", "uint8", "uint8", 0.90, 0.97, ("per_tensor",), edgetpu=True),
)
FORMAT_NAMES = tuple(f.name for f in FORMATS)

# The mixed file: an int8 body with float islands, so float builtins must stay
# allowed and the file keeps float32 input/output (the runtime handles either).
MIXED_FORMAT = ExportFormat("int8_mixed", "TFLite int8 with float layers (--auto-mixed)", "_int8_mixed.tflite",
                            "full_integer", "builtins", "float32", "float32", 0.90, 0.97, (), step=AUTO_MIXED,
                            derived_from="int8", enabled_by="auto_mixed", replaces_source=True)
# The edgetpu file mapped to the Edge TPU; the compiler names its output <input stem>_edgetpu.tflite.
EDGETPU_COMPILED = ExportFormat(EDGETPU_FORMAT, "Edge TPU compiler output (runs only with the Edge TPU delegate)",
                                "_full_integer_quant_edgetpu.tflite", "full_integer", "builtins_int8", "uint8",
                                "uint8", None, None, (), step=COMPILE, derived_from="edgetpu",
                                enabled_by="compile_edgetpu")
# Made by other steps from a row's file, never asked for with --formats: the accuracy-budgeted mixed
# int8/float file of --auto-mixed and the Edge TPU compiler's output.
DERIVED_FORMATS: tuple[ExportFormat, ...] = (MIXED_FORMAT, EDGETPU_COMPILED)


def made_from(source: ExportFormat) -> list[ExportFormat]:
    """The rows made from ``source``'s file, in table order (int8 -> int8_mixed, edgetpu -> edgetpu_compiled)."""
    return [d for d in DERIVED_FORMATS if d.derived_from == source.name]


def format_options() -> tuple[str, ...]:
    """Every option some row lists, in table order: the settings that only some formats use."""
    seen: dict[str, None] = {}
    for f in (*FORMATS, *DERIVED_FORMATS):
        seen.update(dict.fromkeys(f.options))
    return tuple(seen)


def check_options(chosen: Sequence[ExportFormat], given: Iterable[str]) -> None:
    """Refuse an option (an ExportConfig field the table lists) that none of the ``chosen`` formats takes.

    The error names the option by its key (``per_tensor``); the CLI names its flag (``--per-tensor``).
    """
    for option in given:
        if not any(option in f.options for f in chosen):
            takers = [f.name for f in FORMATS if option in f.options]
            takes = "; ".join(f"{f.name} takes {', '.join(f.options) or 'no options'}" for f in chosen)
            which = f"format {chosen[0].name}" if len(chosen) == 1 else f"formats {', '.join(f.name for f in chosen)}"
            raise SettingError(option, f"is not an option of {which} ({takes}; {', '.join(takers)} "
                                       f"{'takes' if len(takers) == 1 else 'take'} it)")


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
