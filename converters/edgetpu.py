"""Edge TPU readiness: a static check against the documented constraints, and the real compiler when present.

The static check reads the ``.tflite`` file and applies the rules Coral
documents for the Edge TPU compiler ("TensorFlow models on the Edge TPU",
coral.ai/docs/edgetpu/models-intro): 8-bit tensors, sizes fixed at compile
time, at most 3 dimensions larger than 1, the supported-operator list with its
known limitations, and a single TPU partition (the compiler maps the graph up
to the first op it cannot run; everything after it runs on the CPU).  The
result is a table shaped like the compiler's own ``Operator | Count | Status``.

When ``edgetpu_compiler`` is on PATH it is run, and its log is parsed into the
same table.  Nothing is ever installed from here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from edgeface.runtime.tflite_graph import Graph, OperatorDesc

COMPILER = "edgetpu_compiler"
COMPILER_INSTALL_HINT = (
    "edgetpu_compiler not found: on x86-64 Debian/Ubuntu add Coral's apt repository "
    "(https://coral.ai/docs/edgetpu/compiler/) and `sudo apt-get install edgetpu-compiler`, "
    "then re-run export (or compile the _full_integer_quant.tflite file there)"
)

MAPPED = "Mapped to Edge TPU"
NOT_SUPPORTED = "Operation not supported"
BAD_TYPE = "Operation is working on an unsupported data type"
BAD_RANK = "Tensor has unsupported rank (up to 3 innermost dimensions mapped)"
DYNAMIC = ("Attempting to use a delegate that only supports static-sized tensors with a graph that has "
           "dynamic-sized tensors")
AFTER_CUT = "More than one subgraph is not supported"

EIGHT_BIT = ("int8", "uint8")


def _no_fused_activation(graph: Graph, op: OperatorDesc) -> Optional[str]:
    act = op.options.get("fusedActivationFunction", "NONE")
    return None if act == "NONE" else f"no fused activation function allowed (has {act})"


def _same_dilation(graph: Graph, op: OperatorDesc) -> Optional[str]:
    w, h = op.options.get("dilationWFactor", 1), op.options.get("dilationHFactor", 1)
    return None if w == h else f"dilation must be equal in x and y (has {w}x{h})"


def _fully_connected(graph: Graph, op: OperatorDesc) -> Optional[str]:
    if op.options.get("weightsFormat", 0) not in (0, "DEFAULT"):
        return "only the default weights format is supported"
    out = graph.tensors[op.outputs[0]]
    if sum(d > 1 for d in out.shape) > 1:
        return f"output tensor must be one-dimensional (has shape {list(out.shape)})"
    return None


def _axis_values(graph: Graph, op: OperatorDesc, position: int) -> Optional[tuple]:
    if len(op.inputs) <= position or op.inputs[position] < 0:
        return None
    t = graph.tensors[op.inputs[position]]
    return t.values


def _not_batch_axis(position: int, what: str) -> Callable[[Graph, OperatorDesc], Optional[str]]:
    def rule(graph: Graph, op: OperatorDesc) -> Optional[str]:
        axes = _axis_values(graph, op, position)
        if axes is None:
            return f"{what} axes must be compile-time constants"
        rank = len(graph.tensors[op.inputs[0]].shape)
        if any(a % max(rank, 1) == 0 for a in axes):
            return f"no {what} in the batch dimension"
        return None

    return rule


def _mean(graph: Graph, op: OperatorDesc) -> Optional[str]:
    problem = _not_batch_axis(1, "reduction")(graph, op)
    if problem:
        return problem
    shape = graph.tensors[op.inputs[0]].shape
    axes = _axis_values(graph, op, 1) or ()
    if any(a % len(shape) == len(shape) - 1 for a in axes) and shape[-1] % 4:
        return f"a reduction over channels needs a multiple of 4 channels (has {shape[-1]})"
    return None


def _pack(graph: Graph, op: OperatorDesc) -> Optional[str]:
    return "no packing in the batch dimension" if op.options.get("axis", 0) == 0 else None


def _pad(graph: Graph, op: OperatorDesc) -> Optional[str]:
    pads = _axis_values(graph, op, 1)
    if pads is None:
        return "paddings must be compile-time constants"
    return "no padding in the batch dimension" if any(pads[:2]) else None


def _split(graph: Graph, op: OperatorDesc) -> Optional[str]:
    axis = _axis_values(graph, op, 0)
    rank = len(graph.tensors[op.inputs[1]].shape) if len(op.inputs) > 1 else 0
    if axis is None:
        return "the split axis must be a compile-time constant"
    return "no splitting in the batch dimension" if rank and axis[0] % rank == 0 else None


def _softmax(graph: Graph, op: OperatorDesc) -> Optional[str]:
    shape = graph.tensors[op.inputs[0]].shape
    n = 1
    for d in shape:
        n *= d
    if sum(d > 1 for d in shape) > 1:
        return f"only a 1-D input is supported (has shape {list(shape)})"
    return None if n <= 16000 else f"at most 16,000 elements (has {n})"


def _strided_slice(graph: Graph, op: OperatorDesc) -> Optional[str]:
    strides = _axis_values(graph, op, 3)
    if strides is None or any(s != 1 for s in strides):
        return "only strides of 1 are supported"
    if op.options.get("ellipsisMask", 0) or op.options.get("newAxisMask", 0):
        return "ellipsis and new-axis masks must be 0"
    return None


def _prelu(graph: Graph, op: OperatorDesc) -> Optional[str]:
    alpha = graph.tensors[op.inputs[1]].shape
    return None if sum(d > 1 for d in alpha[:-1]) == 0 else "alpha must vary along the innermost dimension only"


# Operator -> (documented limitation, checker or None).  From Coral's supported-operations table.
SUPPORTED_OPS: dict[str, tuple[str, Optional[Callable[[Graph, OperatorDesc], Optional[str]]]]] = {
    "ADD": ("", None),
    "AVERAGE_POOL_2D": ("No fused activation function.", _no_fused_activation),
    "CONCATENATION": ("No fused activation function; a constant input must be all zeros.", _no_fused_activation),
    "CONV_2D": ("Same dilation in x and y.", _same_dilation),
    "DEPTHWISE_CONV_2D": ("Same dilation in x and y.", _same_dilation),
    "EXPAND_DIMS": ("", None),
    "FULLY_CONNECTED": ("Default weights format; one-dimensional output.", _fully_connected),
    "L2_NORMALIZATION": ("", None),
    "LOGISTIC": ("", None),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": ("Unidirectional LSTM only.", None),
    "MAXIMUM": ("", None),
    "MAX_POOL_2D": ("No fused activation function.", _no_fused_activation),
    "MEAN": ("No reduction in batch dimension; a z-reduction needs a multiple of 4 channels.", _mean),
    "MINIMUM": ("", None),
    "MUL": ("", None),
    "PACK": ("No packing in batch dimension.", _pack),
    "PAD": ("No padding in batch dimension.", _pad),
    "PRELU": ("Alpha must be 1-dimensional.", _prelu),
    "QUANTIZE": ("", None),
    "REDUCE_MAX": ("Cannot operate on the batch dimension.", _not_batch_axis(1, "reduction")),
    "REDUCE_MIN": ("Cannot operate on the batch dimension.", _not_batch_axis(1, "reduction")),
    "RELU": ("", None),
    "RELU6": ("", None),
    "RELU_N1_TO_1": ("", None),
    "RESHAPE": ("Certain reshapes might not be mapped for large tensor sizes.", None),
    "RESIZE_BILINEAR": ("3-D input/output; may stay on CPU to avoid precision loss.", None),
    "RESIZE_NEAREST_NEIGHBOR": ("3-D input/output; may stay on CPU to avoid precision loss.", None),
    "RSQRT": ("", None),
    "SLICE": ("", None),
    "SOFTMAX": ("1-D input with at most 16,000 elements.", _softmax),
    "SPACE_TO_DEPTH": ("", None),
    "SPLIT": ("No splitting in batch dimension.", _split),
    "SQUEEZE": ("", None),
    "STRIDED_SLICE": ("Strides of 1 only; no ellipsis or new-axis mask.", _strided_slice),
    "SUB": ("", None),
    "SUM": ("No reduction in batch dimension.", _not_batch_axis(1, "reduction")),
    "SQUARED_DIFFERENCE": ("", None),
    "TANH": ("", None),
    "TRANSPOSE": ("", None),
    "TRANSPOSE_CONV": ("", None),
}


@dataclass
class EdgeTpuReport:
    """Per-op verdicts grouped like the compiler's table."""

    rows: list[tuple[str, int, str]]
    tpu_ops: int
    cpu_ops: int
    source: str  # "static check" or "edgetpu_compiler"
    problems: list[str] = field(default_factory=list)
    compiler_version: str = ""

    @property
    def fully_mapped(self) -> bool:
        return self.cpu_ops == 0 and self.tpu_ops > 0

    def to_dict(self) -> dict:
        return {"source": self.source, "tpu_ops": self.tpu_ops, "cpu_ops": self.cpu_ops,
                "fully_mapped": self.fully_mapped, "compiler_version": self.compiler_version or None,
                "operators": [{"operator": o, "count": c, "status": s} for o, c, s in self.rows],
                "problems": self.problems}


def op_verdict(graph: Graph, op: OperatorDesc) -> str:
    """Why one op would not map to the Edge TPU (judged alone), or :data:`MAPPED`."""
    if op.custom or op.name not in SUPPORTED_OPS:
        return NOT_SUPPORTED
    for t in graph.op_tensors(op):
        if t.dynamic:
            return DYNAMIC
    for pos, i in enumerate(op.inputs):
        if i < 0:
            continue
        t = graph.tensors[i]
        if t.dtype in EIGHT_BIT:
            continue
        if t.dtype in ("int32", "int64") and t.constant and pos > 0:
            continue  # a bias (int32 by the quantization spec) or a shape/axis/padding constant
        return BAD_TYPE
    for i in op.outputs:
        if graph.tensors[i].dtype not in EIGHT_BIT:
            return BAD_TYPE
    for t in graph.op_tensors(op):
        if not t.constant and len(t.shape) > 3 and sum(d > 1 for d in t.shape[:-3]) > 0:
            return BAD_RANK
    _, rule = SUPPORTED_OPS[op.name]
    if rule is not None:
        problem = rule(graph, op)
        if problem:
            return f"Operation is otherwise supported, but not mapped: {problem}"
    return MAPPED


def check_compatibility(graph: Graph) -> EdgeTpuReport:
    """Static Edge TPU check of a parsed ``.tflite`` graph, emulating the compiler's single partition."""
    verdicts: list[tuple[str, str]] = []
    cut = False
    problems = []
    for t in graph.input_tensors() + graph.output_tensors():
        if t.dtype not in EIGHT_BIT:
            problems.append(f"model {'input' if t.index in graph.inputs else 'output'} {t.name} is {t.dtype}, "
                            "not 8-bit: the Edge TPU needs a full-integer model")
        if t.dynamic:
            problems.append(f"tensor {t.name} has a dynamic shape {t.shape_signature}: fix the batch to 1")
    for op in graph.operators:
        verdict = op_verdict(graph, op)
        if cut and verdict == MAPPED:
            verdict = AFTER_CUT
        if verdict != MAPPED and not cut:
            cut = True
            problems.append(f"op {op.index} {op.name}: {verdict}; it and every later op run on the CPU")
        verdicts.append((op.name, verdict))
    rows: dict[tuple[str, str], int] = {}
    for name, verdict in verdicts:
        rows[(name, verdict)] = rows.get((name, verdict), 0) + 1
    tpu = sum(1 for _, v in verdicts if v == MAPPED)
    return EdgeTpuReport(rows=[(o, c, s) for (o, s), c in rows.items()], tpu_ops=tpu, cpu_ops=len(verdicts) - tpu,
                         source="static check", problems=problems)


# --- the real compiler ---------------------------------------------------------

_COUNT_RE = re.compile(r"Number of operations that will run on (Edge TPU|CPU):\s*(\d+)")


def parse_compiler_log(text: str) -> EdgeTpuReport:
    """Parse ``edgetpu_compiler -s`` output (stdout or the ``*_edgetpu.log`` file) into a report."""
    rows: list[tuple[str, int, str]] = []
    in_table = False
    counts = {"Edge TPU": None, "CPU": None}
    version = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("Edge TPU Compiler version"):
            version = stripped.rsplit(" ", 1)[-1]
        m = _COUNT_RE.search(stripped)
        if m:
            counts[m.group(1)] = int(m.group(2))
            continue
        if re.match(r"^Operator\s+Count\s+Status$", stripped):
            in_table = True
            continue
        if in_table:
            if not stripped:
                if rows:
                    in_table = False
                continue
            parts = re.split(r"\s{2,}", stripped, maxsplit=2)
            if len(parts) == 3 and parts[1].isdigit():
                rows.append((parts[0], int(parts[1]), parts[2]))
            elif rows:
                in_table = False
    tpu = counts["Edge TPU"] if counts["Edge TPU"] is not None else sum(c for _, c, s in rows if s == MAPPED)
    cpu = counts["CPU"] if counts["CPU"] is not None else sum(c for _, c, s in rows if s != MAPPED)
    problems = [f"{c} x {o}: {s}" for o, c, s in rows if s != MAPPED]
    return EdgeTpuReport(rows=rows, tpu_ops=tpu, cpu_ops=cpu, source=COMPILER, problems=problems,
                         compiler_version=version)


def find_compiler() -> Optional[str]:
    """Path of ``edgetpu_compiler`` if installed."""
    return shutil.which(COMPILER)


@dataclass
class CompileResult:
    path: Optional[Path]
    report: Optional[EdgeTpuReport]
    error: str = ""


def run_compiler(model_path: Path, out_dir: Path, compiler: str, timeout: float = 300.0) -> CompileResult:
    """Compile one file; the output is ``<stem>_edgetpu.tflite`` in ``out_dir``.

    The compiler writes into a scratch folder and only a finished file moves to ``out_dir``: a run that
    fails or times out part way leaves nothing behind (its partial file would otherwise ship, unlisted).
    """
    with tempfile.TemporaryDirectory(prefix=".edgetpu-", dir=out_dir) as scratch_name:
        scratch = Path(scratch_name)
        cmd = [compiler, "-s", "-o", str(scratch), str(model_path)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return CompileResult(None, None, f"{COMPILER} did not finish in {timeout:.0f} s")
        except OSError as exc:
            return CompileResult(None, None, f"cannot run {COMPILER}: {exc.strerror}")
        log_text = proc.stdout
        log_file = scratch / f"{model_path.stem}_edgetpu.log"
        if log_file.is_file():
            log_text += "\n" + log_file.read_text(errors="replace")
        produced = scratch / f"{model_path.stem}_edgetpu.tflite"
        if proc.returncode != 0 or not produced.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()
            return CompileResult(None, None, f"{COMPILER} failed: {tail[-1] if tail else f'exit {proc.returncode}'}")
        compiled = out_dir / produced.name
        os.replace(produced, compiled)
    return CompileResult(compiled, parse_compiler_log(log_text))


def compile_detectors(bundle_dir: Path, detectors: list[dict], compiler: str) -> tuple[list[dict], list[str]]:
    """Compile each Edge TPU-ready BlazeFace file of a bundle (``format`` edgetpu) to ``<stem>_edgetpu.tflite``,
    which ``run --delegate edgetpu`` puts on the accelerator; returns the new detector entries and a note per
    file that did not compile or left ops on the CPU (the CPU detector files stay either way)."""
    from edgeface.runtime.bundle import sha256_file

    entries, notes = [], []
    for d in detectors:
        if d.get("format") != "edgetpu":
            continue
        try:
            result = run_compiler(bundle_dir / d["path"], bundle_dir, compiler)
        except Exception as exc:  # a detector that does not compile must not lose the bundle's verified files
            notes.append(f"{d['kind']} detector not compiled for the Edge TPU: {type(exc).__name__}: {exc}")
            continue
        if result.path is None:
            notes.append(f"{d['kind']} detector not compiled for the Edge TPU: {result.error}")
            continue
        report = result.report
        if report.cpu_ops:
            notes.append(f"{d['kind']} detector: {report.cpu_ops} op(s) left on the CPU by {COMPILER}")
        entries.append({"kind": d["kind"], "format": "edgetpu_compiled", "path": result.path.name,
                        "sha256": sha256_file(result.path), "size_bytes": result.path.stat().st_size,
                        "license": d.get("license", ""),
                        "edgetpu": {"tpu_ops": report.tpu_ops, "cpu_ops": report.cpu_ops,
                                    "compiler_version": report.compiler_version}})
    return entries, notes
