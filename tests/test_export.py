"""`edgeface export` and `edgeface info`: conversion, verification, manifest, Edge TPU check, bad input.

The heavy tests export the session's briefly trained model (``trained_model``)
once to every format, calibrated and verified on real aligned faces (AT&T crops),
with a small pairs file over those crops so the accuracy columns and the
threshold calibration run too.  The pure-numpy parts (format table, compiler-log
parser, static Edge TPU rules, mixed-precision search) are tested without models.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeface.cli import app
from edgeface.converters.calibration import spread_over_identities
from edgeface.converters.convert import ConversionError, captured_output, check_graph, integer_only_problems
from edgeface.converters.edgetpu import (
    AFTER_CUT,
    BAD_TYPE,
    MAPPED,
    NOT_SUPPORTED,
    check_compatibility,
    find_compiler,
    parse_compiler_log,
)
from edgeface.converters.formats import FORMATS, get_format, resolve_formats
from edgeface.converters.mixed import LayerError, parse_layer_statistics, search_float_layers, short_layer_name
from edgeface.converters.verify import row_cosines
from edgeface.errors import UserError
from edgeface.runtime.tflite_graph import Graph, OperatorDesc, TensorDesc, read_graph

runner = CliRunner()

# Per-face cosine to the Keras embedding on real aligned faces.  Float files must
# be near-identical; full-integer files are held to the format table's bounds
# (min 0.90 per face, mean 0.97): a correct calibration averages 0.985-0.996 on AT&T
# crops, a broken one (per-tensor weights, wrong input scale) averages near 0.
FLOAT_BOUND = 0.99
FORMAT_ORDER = ["fp32", "fp16", "dynamic", "int8", "edgetpu"]
INT8_BOUND = get_format("int8").min_cosine
INT8_MEAN_BOUND = get_format("int8").mean_cosine


# --- pure parts -------------------------------------------------------------------


def test_format_table_drives_the_choices():
    assert [f.name for f in resolve_formats("all")] == ["fp32", "fp16", "dynamic", "int8", "edgetpu"]
    assert [f.name for f in resolve_formats("int8, fp32,int8")] == ["fp32", "int8"]  # table order, no duplicates
    assert len({f.suffix for f in FORMATS}) == len(FORMATS)
    assert get_format("int8").integer_only and get_format("int8").input_dtype == "int8"
    assert get_format("edgetpu").input_dtype == "uint8" and get_format("edgetpu").needs_calibration


def test_unknown_format_gets_a_suggestion():
    with pytest.raises(UserError, match=r"unknown export format 'int9' \(did you mean 'int8'\?\)"):
        resolve_formats("fp32,int9")


def test_every_row_of_the_table_resolves():
    """Each row names a step that exists; a derived row comes from an asked-for format and is switched by an export
    setting; every option a row lists is an export setting that is off by default, with the flag its error names."""
    import dataclasses
    import inspect

    from edgeface.commands.export import export_cmd
    from edgeface.converters.export_config import ExportConfig
    from edgeface.converters.formats import (
        COMPILE,
        DERIVED_FORMATS,
        EDGETPU_COMPILED,
        FORMAT_NAMES,
        format_options,
        made_from,
    )
    from edgeface.converters.steps import STEPS
    from edgeface.runtime.bundle import EDGETPU_FORMAT

    settings = {f.name: f.default for f in dataclasses.fields(ExportConfig)}
    params = inspect.signature(export_cmd).parameters.values()
    flags = {d for p in params for d in getattr(p.default, "param_decls", None) or ()}
    for row in (*FORMATS, *DERIVED_FORMATS):
        assert row.step in STEPS, row.name
        assert (row.min_cosine is None) == (row.step == COMPILE), row.name  # the compiler's report judges, not cosine
        for option in row.options:
            assert settings.get(option, "missing") in (False, None), (row.name, option)
            assert "--" + option.replace("_", "-") in flags, option  # SettingError.as_flag names this flag
    for row in DERIVED_FORMATS:
        assert row.name not in FORMAT_NAMES and row in made_from(get_format(row.derived_from))
        assert isinstance(settings[row.enabled_by], bool), row.name
    assert format_options() == ("auto_mixed", "per_tensor")
    assert [d.name for d in made_from(get_format("int8"))] == ["int8_mixed"]
    assert [d.name for d in made_from(get_format("edgetpu"))] == [EDGETPU_FORMAT]
    assert made_from(get_format("fp32")) == []
    # the compiled row's file is the name edgetpu_compiler gives the edgetpu file (run_compiler)
    assert EDGETPU_COMPILED.filename("m") == Path(get_format("edgetpu").filename("m")).stem + "_edgetpu.tflite"


def test_an_option_no_chosen_format_takes_is_refused_naming_the_formats_and_their_options():
    from edgeface.converters.export_config import ExportConfig, given_options
    from edgeface.converters.formats import check_options
    from edgeface.errors import SettingError

    with pytest.raises(SettingError, match=r"^per_tensor is not an option of format fp32 \(fp32 takes no options; "
                                           r"int8, edgetpu take it\)$") as err:
        check_options(resolve_formats("fp32"), ["per_tensor"])
    assert err.value.key == "per_tensor" and str(err.value.as_flag()).startswith("--per-tensor is not an option")
    with pytest.raises(SettingError, match=r"^auto_mixed is not an option of formats fp32, edgetpu \(fp32 takes no "
                                           r"options; edgetpu takes per_tensor; int8 takes it\)$"):
        check_options(resolve_formats("edgetpu,fp32"), ["auto_mixed"])
    check_options(resolve_formats("fp32,edgetpu"), ["per_tensor"])  # one chosen format takes it: accepted
    check_options(resolve_formats("all"), ["per_tensor", "auto_mixed"])
    # only the table's options, and only when moved off their default, count as given
    assert given_options(ExportConfig(model=Path("m.keras"))) == []
    assert given_options(ExportConfig(model=Path("m.keras"), calib_count=5, compile_edgetpu=False)) == []
    assert given_options(ExportConfig(model=Path("m.keras"), per_tensor=True, auto_mixed=True)) == [
        "auto_mixed", "per_tensor"]


def test_exit_code_lets_a_verified_file_stand_in_for_its_source_only_where_the_table_says():
    from edgeface.commands.export import exit_code
    from edgeface.converters.results import ExportResult, FormatResult
    from edgeface.runtime.bundle import EDGETPU_FORMAT

    def code(*rows):
        return exit_code(ExportResult(Path("b"), [FormatResult(f, status=s) for f, s in rows], None, {}, {}))

    assert code(("fp32", "ok"), ("int8", "failed_verification"), ("int8_mixed", "ok")) == 0  # rescued
    assert code(("fp32", "ok"), ("int8", "failed_verification"), ("int8_mixed", "failed_verification")) == 1
    assert code(("int8", "failed"), ("fp32", "failed_verification"), ("int8_mixed", "ok")) == 1  # fp32 still failed
    # the compiled file runs only on an Edge TPU: it does not stand in for the edgetpu file
    assert code(("edgetpu", "failed_verification"), (EDGETPU_FORMAT, "ok")) == 1
    assert code(("fp32", "ok"), ("edgetpu", "ok"), (EDGETPU_FORMAT, "ok")) == 0


def test_calibration_order_spreads_over_identities():
    items = [("a", Path(f"a{i}")) for i in range(10)] + [("b", Path("b0")), ("c", Path("c0")), ("c", Path("c1"))]
    order = spread_over_identities(items, seed=1)
    assert sorted(order) == sorted(items)
    assert {ident for ident, _ in order[:3]} == {"a", "b", "c"}  # one of each before any repeats
    assert [ident for ident, _ in order[-7:]] == ["a"] * 7


def test_row_cosines():
    a = np.array([[1, 0], [0, 2]], np.float32)
    b = np.array([[2, 0], [1, 1]], np.float32)
    np.testing.assert_allclose(row_cosines(a, b), [1.0, np.sqrt(0.5)], rtol=1e-6)


def test_captured_output_silences_c_level_writes(capfd):
    with captured_output() as log:
        print("Saved artifact at '/tmp/x'. The following endpoints are available")  # TF prints from Python
        os.write(2, b"MLIR noise\n")  # and logs from C++
        seen = log()
    out, err = capfd.readouterr()
    assert "Saved artifact" not in out and "MLIR" not in err
    assert "Saved artifact" in seen and "MLIR noise" in seen
    print("after")
    assert capfd.readouterr().out == "after\n"


def _t(i, dtype="int8", shape=(1, 8), constant=False, sig=None):
    return TensorDesc(i, f"t{i}", dtype, shape, sig, constant, (0.1,) if "int" in dtype else (), (0,))


def test_flex_and_dynamic_batch_are_refused():
    fmt = get_format("fp32")
    flex = Graph([_t(0, "float32"), _t(1, "float32")], [OperatorDesc(0, "FlexConv2D", True, (0,), (1,))], [0], [1])
    with pytest.raises(ConversionError, match="Flex ops .*FlexConv2D.*never ships them"):
        check_graph(flex, fmt)
    dyn = Graph([_t(0, "float32", sig=(-1, 8)), _t(1, "float32")], [OperatorDesc(0, "RELU", False, (0,), (1,))],
                [0], [1])
    with pytest.raises(ConversionError, match="fixed batch of 1"):
        check_graph(dyn, fmt)


def test_integer_only_check_names_the_float_op():
    g = Graph([_t(0), _t(1, "float32"), _t(2)],
              [OperatorDesc(0, "DEQUANTIZE", False, (0,), (1,)), OperatorDesc(1, "QUANTIZE", False, (1,), (2,))],
              [0], [2])
    problems = integer_only_problems(g)
    assert len(problems) == 2 and problems[0].startswith("DEQUANTIZE (op 0) uses float tensor t1")


def test_static_edgetpu_check_cuts_the_graph_at_the_first_unsupported_op():
    tensors = [_t(i) for i in range(5)]
    ops = [OperatorDesc(0, "CONV_2D", False, (0,), (1,), {"dilationWFactor": 1, "dilationHFactor": 1}),
           OperatorDesc(1, "SIN", False, (1,), (2,)),
           OperatorDesc(2, "ADD", False, (2, 2), (3,), {"fusedActivationFunction": "NONE"}),
           OperatorDesc(3, "MAX_POOL_2D", False, (3,), (4,), {"fusedActivationFunction": "RELU"})]
    report = check_compatibility(Graph(tensors, ops, [0], [4]))
    assert report.rows == [("CONV_2D", 1, MAPPED), ("SIN", 1, NOT_SUPPORTED), ("ADD", 1, AFTER_CUT),
                           ("MAX_POOL_2D", 1, "Operation is otherwise supported, but not mapped: no fused "
                                           "activation function allowed (has RELU)")]
    assert (report.tpu_ops, report.cpu_ops) == (1, 3) and not report.fully_mapped
    assert "op 1 SIN" in report.problems[0]


def test_static_edgetpu_check_rejects_float_tensors():
    g = Graph([_t(0, "float32"), _t(1, "float32")], [OperatorDesc(0, "RELU", False, (0,), (1,))], [0], [1])
    report = check_compatibility(g)
    assert report.rows == [("RELU", 1, BAD_TYPE)] and report.tpu_ops == 0
    assert any("not 8-bit" in p for p in report.problems)


COMPILER_LOG = """Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 612 ms.

Input model: model_full_integer_quant.tflite
Input size: 1.25MiB
Output model: model_full_integer_quant_edgetpu.tflite
Output size: 1.38MiB
Number of Edge TPU subgraphs: 1
Total number of operations: 68
Operation log: model_full_integer_quant_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model \
will instead run on the CPU, which is slower.
Number of operations that will run on Edge TPU: 66
Number of operations that will run on CPU: 2

Operator                       Count      Status

CONV_2D                        33         Mapped to Edge TPU
DEPTHWISE_CONV_2D              17         Mapped to Edge TPU
ADD                            13         Mapped to Edge TPU
QUANTIZE                       1          Mapped to Edge TPU
MUL                            1          Mapped to Edge TPU
RESHAPE                        1          Mapped to Edge TPU
L2_NORMALIZATION               1          Operation is otherwise supported, but not mapped due to some \
unspecified limitation
QUANTIZE                       1          More than one subgraph is not supported
"""


def test_compiler_log_is_parsed_into_the_same_table():
    report = parse_compiler_log(COMPILER_LOG)
    assert report.compiler_version == "16.0.384591198"
    assert (report.tpu_ops, report.cpu_ops) == (66, 2)
    assert report.rows[0] == ("CONV_2D", 33, MAPPED)
    assert report.rows[-1] == ("QUANTIZE", 1, AFTER_CUT)
    assert len(report.rows) == 8 and sum(c for _, c, _ in report.rows) == 68
    assert report.problems == ["1 x L2_NORMALIZATION: Operation is otherwise supported, but not mapped due to "
                               "some unspecified limitation", f"1 x QUANTIZE: {AFTER_CUT}"]


# What edgetpu_compiler writes to <stem>_edgetpu.log beside the compiled file: the same op table as its
# stdout with -s, under a short header without the op counts.
COMPILER_LOG_FILE = COMPILER_LOG[:COMPILER_LOG.index("\n") + 1] + """Input: model_full_integer_quant.tflite
Output: model_full_integer_quant_edgetpu.tflite

""" + COMPILER_LOG[COMPILER_LOG.index("Operator  "):]


def _fake_compiler(tmp_path: Path, write_log: bool) -> Path:
    """An ``edgetpu_compiler`` stand-in: prints the -s report, writes the compiled file (and the log)."""
    (tmp_path / "stdout.txt").write_text(COMPILER_LOG)
    (tmp_path / "log.txt").write_text(COMPILER_LOG_FILE)
    script = tmp_path / "edgetpu_compiler"
    log = f'cp {tmp_path}/log.txt "$out/$stem"_edgetpu.log\n' if write_log else ""
    script.write_text('#!/bin/sh\n# args: -s -o OUT MODEL\nout="$3"; stem=$(basename "$4" .tflite)\n'
                      f'cat {tmp_path}/stdout.txt\nprintf x > "$out/$stem"_edgetpu.tflite\n{log}')
    script.chmod(0o755)
    return script


def _compiler_input(tmp_path: Path) -> tuple[Path, Path]:
    """A stand-in int8 file to compile and an empty output folder."""
    model = tmp_path / "model_full_integer_quant.tflite"
    model.write_bytes(b"model")
    out = tmp_path / "out"
    out.mkdir()
    return model, out


@pytest.mark.parametrize("write_log", [True, False])
def test_compiler_report_counts_each_op_once(tmp_path, write_log):
    """stdout (-s) and the .log file hold the same table: the report is read from one copy, not both."""
    from edgeface.converters.edgetpu import run_compiler

    model, out = _compiler_input(tmp_path)
    result = run_compiler(model, out, str(_fake_compiler(tmp_path, write_log)))
    assert result.path == out / "model_full_integer_quant_edgetpu.tflite" and result.error == ""
    report = result.report
    assert len(report.rows) == 8 and sum(c for _, c, _ in report.rows) == 68
    assert (report.tpu_ops, report.cpu_ops) == (66, 2)  # stdout's counts, which the log file lacks
    assert len(report.problems) == 2 and report.compiler_version == "16.0.384591198"
    assert not (out / "model_full_integer_quant_edgetpu.log").exists()  # read, then removed


@pytest.mark.parametrize("timeout", [False, True])
def test_a_compiler_that_fails_part_way_leaves_no_file(tmp_path, timeout):
    from edgeface.converters.edgetpu import run_compiler

    model, out = _compiler_input(tmp_path)
    script = tmp_path / "edgetpu_compiler"
    # writes part of its output, then dies (out of memory) or hangs
    end = "sleep 30" if timeout else "echo 'ERROR: out of memory' >&2; exit 1"
    script.write_text('#!/bin/sh\nout="$3"; stem=$(basename "$4" .tflite)\n'
                      f'head -c 1000 /dev/zero > "$out/$stem"_edgetpu.tflite\n{end}\n')
    script.chmod(0o755)
    result = run_compiler(model, out, str(script), timeout=1.0 if timeout else 60.0)
    assert result.path is None
    assert result.error == ("edgetpu_compiler did not finish in 1 s" if timeout else
                            "edgetpu_compiler failed: ERROR: out of memory")
    assert list(out.iterdir()) == []


def test_compiler_log_file_alone_sums_its_rows():
    report = parse_compiler_log(COMPILER_LOG_FILE)
    assert (report.tpu_ops, report.cpu_ops) == (66, 2) and len(report.rows) == 8


def test_layer_statistics_are_ranked_by_rmse_over_scale():
    dump = ("op_name,tensor_idx,num_elements,stddev,mean_error,max_abs_error,mean_squared_error,scale,zero_point,"
            "tensor_name\n"
            "CONV_2D,5,100,0.1,0.0,0.3,0.0004,0.01,0,model/block0_0_expand_conv_1/Conv2D\n"
            "ADD,9,100,0.1,0.0,0.3,0.0100,0.02,0,model/block1_add_1/Add\n"
            "MUL,3,100,0.1,0.0,0.3,nan,0.02,0,model/broken\n")
    ranking = parse_layer_statistics(dump)
    assert [e.layer for e in ranking] == ["block1_add", "block0_0_expand_conv"]
    assert ranking[0].rmse_over_scale == pytest.approx(5.0) and ranking[1].rmse_over_scale == pytest.approx(2.0)
    assert short_layer_name("mobilefacenet_1/gdc_linear_1/convolution;x/y") == "gdc_linear"
    assert short_layer_name("m_1/m_1/block2_0_project_bn_1/batchnorm/add_1;m_1/m_1/x/Conv2D") == "block2_0_project_bn"


def _ranking(n):
    return [LayerError(f"model/layer{i}/op", "CONV_2D", float(n - i)) for i in range(n)]


def test_mixed_search_finds_the_fewest_float_layers():
    tried = []

    def build(names):
        return f"{len(names)}".encode()

    def judge(data):
        k = int(data)
        tried.append(k)
        return k >= 5, float(k), {}

    res = search_float_layers(_ranking(20), build, judge)
    assert res.met_budget and len(res.float_layers) == 5 and res.data == b"5"
    assert res.float_layers == [f"model/layer{i}/op" for i in range(5)]  # the worst-ranked ones
    assert tried == [1, 2, 4, 8, 6, 5]  # doubling, then bisection


def test_mixed_search_keeps_the_best_file_when_the_budget_cannot_be_met():
    res = search_float_layers(_ranking(6), lambda names: bytes([len(names)]),
                              lambda data: (False, {1: 0.2, 2: 0.9, 4: 0.5, 6: 0.4}[data[0]], {}))
    assert not res.met_budget and res.data == bytes([2]) and len(res.float_layers) == 2
    assert "budget not met" in res.message and "kept the best file (2 float layers)" in res.message


def test_mixed_search_stops_at_max_layers():
    tried = []
    res = search_float_layers(_ranking(20), lambda names: bytes([len(names)]),
                              lambda data: (tried.append(data[0]) or False, float(data[0]), {}), max_layers=3)
    assert tried == [1, 2, 3] and not res.met_budget and "even with 3 layers in float" in res.message
    with pytest.raises(ValueError, match="max_layers must be at least 1"):
        search_float_layers(_ranking(20), lambda names: b"", lambda data: (True, 1.0, {}), max_layers=0)


# --- bad input (CLI, exit code 2, one line) ------------------------------------------


def _export(*args):
    return runner.invoke(app, ["export", *map(str, args)])


def _one_error_line(result, pattern):
    """Exit 2 and exactly one ``error:`` line, the last thing printed, matching ``pattern``; no traceback."""
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.output
    assert "Traceback" not in result.output
    assert re.search(pattern, errors[0]), errors[0]


def test_not_a_keras_file(tmp_path, att_crops):
    txt = tmp_path / "model.txt"
    txt.write_text("hello")
    _one_error_line(_export(txt, "--calib", att_crops, "--out", tmp_path / "b"), r"is not a Keras model")
    fake = tmp_path / "fake.keras"
    fake.write_bytes(b"not a zip")
    _one_error_line(_export(fake, "--calib", att_crops, "--out", tmp_path / "b"), r"cannot load .* as a Keras model")
    assert not (tmp_path / "b").exists()


def test_unknown_format_exits_2(trained_model, att_crops, tmp_path):
    _one_error_line(_export(trained_model, "--formats", "fp32,int9", "--calib", att_crops, "--out", tmp_path / "b"),
                    r"unknown export format 'int9' \(did you mean 'int8'\?\)")


def test_calibration_folder_problems(trained_model, tmp_path):
    empty = tmp_path / "empty"
    (empty / "someone").mkdir(parents=True)
    _one_error_line(_export(trained_model, "--calib", empty, "--out", tmp_path / "b"),
                    r"--calib folder .* has no images")
    _one_error_line(_export(trained_model, "--calib", tmp_path / "nope", "--out", tmp_path / "b"),
                    r"--calib folder not found")
    import cv2

    blank = tmp_path / "faceless"
    for person in ("p1", "p2"):
        (blank / person).mkdir(parents=True)
        for i in range(3):  # raw photos (not crop-sized) of a grey wall: the detector finds nothing
            img = np.full((240, 320, 3), 90 + 20 * i, np.uint8)
            cv2.putText(img, person, (20, 120), cv2.FONT_HERSHEY_SIMPLEX, 2, (200, 200, 200), 3)
            cv2.imwrite(str(blank / person / f"{i}.jpg"), img)
    _one_error_line(_export(trained_model, "--formats", "fp32", "--calib", blank, "--out", tmp_path / "b"),
                    r"no faces found in 6 images of --calib")
    assert not (tmp_path / "b").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".b.tmp")]


def test_output_not_an_embedding(tmp_path, att_crops):
    import keras

    inp = keras.Input((112, 112, 3))
    model = keras.Model(inp, keras.layers.Conv2D(4, 3)(inp))
    path = tmp_path / "featuremap.keras"
    model.save(path)
    _one_error_line(_export(path, "--calib", att_crops, "--out", tmp_path / "b"),
                    r"is not a face-embedding model: its output has shape \(None, 110, 110, 4\)")


def test_output_dir_not_writable(trained_model, att_crops, tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    _one_error_line(_export(trained_model, "--calib", att_crops, "--out", a_file / "bundle"),
                    r"output folder is not writable: cannot create .* is a file")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    _one_error_line(_export(trained_model, "--calib", att_crops, "--out", other),
                    r"exists and is not an edgeface bundle")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_output_dir_without_write_permission(trained_model, att_crops, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        _one_error_line(_export(trained_model, "--calib", att_crops, "--out", locked / "bundle"),
                        r"output folder is not writable")
    finally:
        locked.chmod(0o755)


def test_pairs_need_images(trained_model, att_crops, tmp_path, lfw_dir):
    _one_error_line(_export(trained_model, "--calib", att_crops, "--pairs", lfw_dir / "pairs.txt", "--out",
                            tmp_path / "b"), r"--pairs and --images go together")


# --- a real export of the trained model ------------------------------------------------


def _att_pairs(att_crops: Path, root: Path) -> tuple[Path, Path]:
    """A 2-fold LFW-style pairs file over AT&T crops: 150 same + 150 different pairs per fold (20 people each).

    Pairs files name images LFW's way (``s8/s8_0004``), so the crops are copied
    under such names into a prepared-crops folder; returns (pairs file, images folder).
    One pair is 1/300 of a fold (0.33 pt), hence the test's --max-drop of 1.5 pt.
    """
    images = root / "att_lfw_names"
    for person in sorted(p for p in att_crops.iterdir() if p.is_dir()):
        (images / person.name).mkdir(parents=True)
        for crop in person.glob("*.png"):
            shutil.copyfile(crop, images / person.name / f"{person.name}_{int(crop.stem):04d}.png")
    (images / "manifest.jsonl").write_text("")  # marks a folder of prepared crops
    rng = random.Random(3)
    lines = ["2\t150"]
    for fold in range(2):
        people = [f"s{i}" for i in range(1 + 20 * fold, 21 + 20 * fold)]
        same = rng.sample([(p, i, j) for p in people for i in range(1, 11) for j in range(i + 1, 11)], 150)
        lines += [f"{p}\t{i}\t{j}" for p, i, j in same]
        for _ in range(150):
            p, q = rng.sample(people, 2)
            lines.append(f"{p}\t{rng.randint(1, 10)}\t{q}\t{rng.randint(1, 10)}")
    path = root / "pairs.txt"
    path.write_text("\n".join(lines) + "\n")
    return path, images


@pytest.fixture(scope="module")
def full_export(trained_model, att_crops, tmp_path_factory):
    """Every format, through the CLI with --json, with accuracy on a small pairs file."""
    tmp = tmp_path_factory.mktemp("export_all")
    pairs, images = _att_pairs(att_crops, tmp)
    out = tmp / "bundle"
    result = runner.invoke(app, ["export", str(trained_model), "--formats", "all", "--calib", str(att_crops),
                                 "--calib-count", "100", "--verify-count", "40", "--pairs", str(pairs),
                                 "--images", str(images), "--out", str(out), "--max-drop", "1.5",
                                 "--auto-mixed", "--json"])
    assert result.exit_code in (0, 1), result.output
    report = json.loads(result.stdout)
    return out, report, result.exit_code


def test_every_format_exports_and_verifies(full_export):
    out, report, code = full_export
    rows = {r["format"]: r for r in report["formats"]}
    assert list(rows)[:5] == FORMAT_ORDER
    for fmt in FORMAT_ORDER:
        r = rows[fmt]
        assert r["status"] == "ok", (fmt, r)
        assert (out / r["file"]).is_file() and r["size_bytes"] == (out / r["file"]).stat().st_size
        assert r["accuracy"] is not None and r["accuracy_drop_pt"] <= 1.5
    assert code == 0
    assert rows["fp32"]["cosine_min"] >= 0.9999
    for fmt in ("fp16", "dynamic"):
        assert rows[fmt]["cosine_min"] >= FLOAT_BOUND
    for fmt in ("int8", "edgetpu"):
        assert rows[fmt]["cosine_min"] >= INT8_BOUND and rows[fmt]["cosine_mean"] >= INT8_MEAN_BOUND
    # Quantized files are smaller: int8 weights are a quarter of float32 plus per-channel scales.
    assert rows["int8"]["size_bytes"] < 0.35 * rows["fp32"]["size_bytes"]
    assert rows["fp16"]["size_bytes"] < 0.55 * rows["fp32"]["size_bytes"]
    assert report["threshold"]["source"] == "pairs" and report["threshold"]["far"] == 1e-3
    tpu = report["edgetpu"]["static"]
    assert tpu["fully_mapped"] and tpu["cpu_ops"] == 0 and tpu["tpu_ops"] == rows["edgetpu"]["ops_total"]
    if find_compiler() is None:  # the usual case: Coral's compiler is x86-64 Debian only, installed by hand
        assert report["edgetpu"]["compiler_hint"].startswith("edgetpu_compiler not found")
        assert "edgetpu_compiled" not in rows
    else:
        assert rows["edgetpu_compiled"]["status"] == "ok" and report["edgetpu"]["compiler"]["cpu_ops"] == 0
    # --auto-mixed has nothing to do when int8 is within budget, and says so.
    assert report["mixed"]["met_budget"] and report["mixed"]["float_layers"] == []


def test_files_match_keras_through_the_runtime(full_export, trained_model, att_crops):
    """Independent of export's own check: other faces, the runtime Embedder, the Keras model."""
    from edgeface.data.dataset import load_crops
    from edgeface.nn.loading import load_embedding_model
    from edgeface.runtime.interpreter import Embedder

    out, report, _ = full_export
    crops = load_crops(att_crops).images[5::20]  # 20 faces, 20 people
    keras_emb = np.asarray(load_embedding_model(trained_model)(crops.astype(np.float32), training=False))
    for r in report["formats"][:5]:  # an edgetpu_compiled file would need the Edge TPU itself
        cos = row_cosines(keras_emb, Embedder(out / r["file"]).embed(crops))
        if r["format"] in ("fp32", "fp16", "dynamic"):
            assert cos.min() >= FLOAT_BOUND, (r["format"], cos.min())
        else:
            assert cos.min() >= INT8_BOUND and cos.mean() >= INT8_MEAN_BOUND, (r["format"], cos.min(), cos.mean())


def test_integer_files_are_integer_only(full_export):
    out, report, _ = full_export
    rows = {r["format"]: r for r in report["formats"]}
    for fmt, io_dtype in (("int8", "int8"), ("edgetpu", "uint8")):
        g = read_graph(out / rows[fmt]["file"])
        assert [t.dtype for t in g.input_tensors() + g.output_tensors()] == [io_dtype, io_dtype]
        assert integer_only_problems(g) == []
        assert {t.dtype for t in g.tensors} <= {"int8", "uint8", "int32"}
        assert not g.custom_ops() and g.input_tensors()[0].shape == (1, 112, 112, 3)
    assert set(read_graph(out / rows["int8"]["file"]).op_counts()) >= {"CONV_2D", "DEPTHWISE_CONV_2D",
                                                                       "L2_NORMALIZATION"}
    assert "DEQUANTIZE" in rows["fp16"]["ops"]  # fp16 weights are dequantized once at load


def test_manifest_describes_and_verifies_every_file(full_export, trained_model):
    from edgeface.runtime.bundle import Bundle, sha256_file

    out, report, _ = full_export
    b = Bundle.load(out)
    m = b.manifest
    assert m["schema_version"] == 1 and b.formats[:5] == FORMAT_ORDER
    assert m["model"]["embedding_dim"] == b.embedding_dim == 128 and m["model"]["color_order"] == "RGB"
    assert (m["model"]["arch"], m["model"]["width"]) == ("mobilefacenet", 1.0)  # from the run's train.json
    assert len(m["alignment"]["template"]) == 4
    assert m["threshold"]["source"] == "pairs" and -1.0 <= b.threshold <= 1.0
    assert m["provenance"]["source_sha256"] == sha256_file(trained_model)
    int8 = b.entry("int8")
    assert int8["input"]["dtype"] == "int8" and int8["input"]["shape"] == [1, 112, 112, 3]
    assert int8["input"]["scale"] > 0 and int8["output"]["dtype"] == "int8" and int8["verified"]
    assert int8["weight_quantization"] == b.entry("edgetpu")["weight_quantization"] == "per-channel"
    assert b.entry("dynamic")["weight_quantization"] == "per-channel" and "weight_quantization" not in b.entry("fp32")
    for fmt in b.formats:
        assert b.model_path(fmt).is_file()  # checks the SHA-256
    kinds = {(d["kind"], d.get("format")): d for d in m["detectors"]}
    assert set(kinds) == {(k, f) for k in ("short", "full") for f in ("float", "int8", "edgetpu")}
    assert "Apache" in kinds[("short", "float")]["license"]
    assert b.detector_path("short").is_file()
    for kind in ("short", "full"):  # the shipped int8 detectors come along, with the check they passed
        assert b.detector_path(kind, fmt="int8").is_file() and kinds[(kind, "int8")]["verification"]["passed"]
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name]  # temp folder renamed away


def test_exported_bundle_fixture_and_tampering(exported_bundle, tmp_path):
    from edgeface.runtime.bundle import Bundle

    b = Bundle.load(exported_bundle)
    assert b.formats == ["fp32", "int8"] and b.detector_path("short") is not None
    copy = tmp_path / "bundle"
    shutil.copytree(exported_bundle, copy)
    path = copy / Bundle.load(copy).entry("int8")["path"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"checksum mismatch for .*_int8\.tflite: the file differs from manifest.json"):
        Bundle.load(copy).model_path("int8")
    assert Bundle.load(copy).model_path("fp32").is_file()  # untouched files still load

    # info reports the whole bundle and fails like `sha256sum -c`: exit 1, the damaged file named on stderr
    result = runner.invoke(app, ["info", str(copy), "--json"])
    assert result.exit_code == 1, result.output
    info = json.loads(result.stdout)
    assert {f["format"]: f["checksum"] for f in info["files"]} == {"fp32": "ok", "int8": "MISMATCH"}
    assert result.stderr.strip().splitlines() == [
        f"error: 1 file(s) missing or modified: {path.name}; the runtime will refuse them: export the bundle "
        "again or restore the files"]
    path.unlink()
    result = runner.invoke(app, ["info", str(copy)])
    assert result.exit_code == 1 and "match threshold" in result.stdout and f"modified: {path.name};" in result.stderr
    result = runner.invoke(app, ["info", str(copy), "--json"])
    assert result.exit_code == 1 and json.loads(result.stdout)["files"][1]["checksum"] == "missing"
    result = runner.invoke(app, ["info", str(exported_bundle)])
    assert result.exit_code == 0 and "int8" in result.stdout and "match threshold" in result.stdout
    assert result.stderr == ""


def test_info_on_a_folder_without_manifest(tmp_path):
    result = runner.invoke(app, ["info", str(tmp_path)])
    assert result.exit_code == 2 and "is not a model bundle: manifest.json not found" in result.output


@pytest.mark.slow
def test_auto_mixed_keeps_the_worst_layers_in_float(trained_model, att_crops, tmp_path):
    """The real debugger and re-quantizer: float layers raise fidelity; the search stops at the fewest."""
    from edgeface.converters.convert import batch_one
    from edgeface.converters.mixed import LayerDebugger
    from edgeface.converters.verify import keras_embeddings
    from edgeface.data.dataset import load_crops
    from edgeface.nn.loading import load_embedding_model
    from edgeface.runtime.interpreter import Embedder

    crops = load_crops(att_crops).images
    calib, held_out = crops[::4][:100], crops[2::10]
    model = load_embedding_model(trained_model)
    reference = keras_embeddings(model, held_out)
    dbg = LayerDebugger(batch_one(model), calib, held_out[:16])
    ranking = dbg.rank()
    assert len(ranking) >= 30
    assert ranking[0].rmse_over_scale >= ranking[len(ranking) // 2].rmse_over_scale >= ranking[-1].rmse_over_scale

    def fidelity(data: bytes) -> float:
        path = tmp_path / "mixed.tflite"
        path.write_bytes(data)
        return float(row_cosines(reference, Embedder(path).embed(held_out)).mean())

    plain = fidelity(dbg.quantize([]))
    floated = fidelity(dbg.quantize([e.tensor for e in ranking]))
    assert floated > plain
    target = plain + 0.5 * (floated - plain)
    res = search_float_layers(ranking, dbg.quantize, lambda d: ((f := fidelity(d)) >= target, f, {}))
    assert res.met_budget and 1 <= len(res.float_layers) < len(ranking)
    g = read_graph(res.data)
    assert "DEQUANTIZE" in g.op_counts() and any(t.dtype == "float32" for t in g.tensors)


def test_per_tensor_int8_is_smaller_and_says_so(trained_model, att_crops, full_export, tmp_path):
    from edgeface.runtime.bundle import sha256_file
    from edgeface.runtime.interpreter import Embedder

    out = tmp_path / "bundle"
    result = runner.invoke(app, ["export", str(trained_model), "--formats", "int8", "--calib", str(att_crops),
                                 "--calib-count", "100", "--verify-count", "40", "--per-tensor", "--out", str(out),
                                 "--json"])
    assert result.exit_code in (0, 1), result.output
    row = json.loads(result.stdout)["formats"][0]
    g = read_graph(out / row["file"])
    weights = [t for t in g.tensors if t.constant and t.dtype == "int8"]
    assert weights and all(len(t.scale) == 1 for t in weights)  # one scale per weight tensor
    per_channel = {r["format"]: r for r in full_export[1]["formats"]}["int8"]
    # MobileFaceNet's many narrow depthwise channels make per-channel scales a large share of the file
    assert row["size_bytes"] < 0.9 * per_channel["size_bytes"], (row["size_bytes"], per_channel["size_bytes"])
    entry = next(f for f in json.loads((out / "manifest.json").read_text())["files"] if f["format"] == "int8")
    assert entry["weight_quantization"] == "per-tensor" and entry["sha256"] == sha256_file(out / row["file"])
    # verified or not (coarser scales cost accuracy: the row says how much), the file runs in the runtime
    assert row["cosine_mean"] is not None and Embedder(out / row["file"]).dim == 128


@pytest.fixture
def int8_held_to_unreachable_mean(monkeypatch):
    """The format table with int8 held to a mean cosine of 0.9999, which no 8-bit file reaches."""
    import dataclasses

    from edgeface.converters import formats

    strict = tuple(dataclasses.replace(f, mean_cosine=0.9999) if f.name == "int8" else f for f in formats.FORMATS)
    monkeypatch.setattr(formats, "FORMATS", strict)


def test_int8_that_misses_its_budget_is_flagged_with_the_way_out(trained_model, att_crops, tmp_path,
                                                                 int8_held_to_unreachable_mean):
    """int8 held to an average cosine no 8-bit file reaches: ❎ in the manifest, the missed bound in words, and
    the hint to --auto-mixed (without searching: that is the slow test below)."""
    from edgeface.converters.export import export_bundle
    from edgeface.converters.export_config import ExportConfig
    from edgeface.runtime.bundle import Bundle

    out = tmp_path / "bundle"
    result = export_bundle(ExportConfig(model=trained_model, out=out, formats="int8", calib=att_crops,
                                        calib_count=100, verify_count=40))
    (row,) = result.formats
    assert row.status == "failed_verification" and row.cosine.cosine_mean < 0.9999
    assert row.notes[0].startswith("cosine mean") and "--auto-mixed" in row.notes[-1]
    assert not Bundle.load(out).entry("int8")["verified"] and result.mixed is None


@pytest.mark.slow
def test_auto_mixed_rescues_an_int8_file_that_misses_its_budget(trained_model, att_crops, tmp_path,
                                                                int8_held_to_unreachable_mean):
    """End to end: int8 held to an average cosine no 8-bit file reaches -> ❎, then --auto-mixed
    writes an int8_mixed file with the fewest float layers that pass the normal int8 bounds."""
    from edgeface.converters.export import export_bundle
    from edgeface.converters.export_config import ExportConfig
    from edgeface.runtime.bundle import Bundle

    out = tmp_path / "bundle"
    result = export_bundle(ExportConfig(model=trained_model, out=out, formats="int8", calib=att_crops,
                                        calib_count=100, verify_count=40, auto_mixed=True))
    rows = {r.format: r for r in result.formats}
    assert rows["int8"].status == "failed_verification" and "cosine mean" in rows["int8"].notes[0]
    mixed = rows["int8_mixed"]
    assert mixed.status == "ok" and result.mixed["met_budget"] and result.mixed["float_layers"]
    # The cost is reported, whatever its sign (a float activation layer adds no weights; float I/O drops two ops).
    assert result.mixed["cost"]["size_bytes"] == mixed.size_bytes - rows["int8"].size_bytes
    assert result.mixed["cost"]["mixed_p50_ms"] > 0
    entry = Bundle.load(out).entry("int8_mixed")
    assert entry["verified"] and entry["mixed"]["float_layers"] == result.mixed["float_layers"]
    assert "DEQUANTIZE" in entry["ops"] and not Bundle.load(out).entry("int8")["verified"]


def test_calibration_leaves_excluded_people_out(att_crops, tmp_path):
    from edgeface.converters.calibration import load_calibration

    people = sorted(p.name for p in att_crops.iterdir() if p.is_dir())
    kept = set(people[:3])
    excluded = set(people) - kept
    cal = load_calibration(att_crops, calib_count=10, verify_count=5, exclude=excluded)
    assert set(cal.calib.identities) | set(cal.verify.identities) <= kept
    assert len(cal.calib) == 10 and cal.summary()["excluded_people"] == len(excluded)
    with pytest.raises(UserError, match="leaves no images"):
        load_calibration(att_crops, calib_count=10, verify_count=5, exclude=set(people))


def test_calibration_counts_the_people_it_actually_left_out(tmp_path):
    import cv2

    from edgeface.converters.calibration import load_calibration

    crops, flat = tmp_path / "crops", tmp_path / "flat"
    flat.mkdir()
    for person in ("p0", "p1", "p2"):
        (crops / person).mkdir(parents=True)
        for i in range(2):
            img = np.full((112, 112, 3), 40 * i + 60, np.uint8)
            cv2.imwrite(str(crops / person / f"{i}.png"), img)
            cv2.imwrite(str(flat / f"{person}_{i}.png"), img)
    cal = load_calibration(crops, calib_count=2, verify_count=1, exclude={"p0", "someone_else", "another"})
    assert cal.summary()["excluded_people"] == 1  # the one name that is a folder here, not the 3 asked for
    assert "p0" not in set(cal.calib.identities) | set(cal.verify.identities)
    with pytest.raises(UserError, match=r"none of its 2 names is a person folder in .*crops; check the people file"):
        load_calibration(crops, calib_count=2, verify_count=1, exclude={"Aaron_Eckhart", "Zico"})
    with pytest.raises(UserError, match=r"needs identity folders: .*flat is a flat folder of images"):
        load_calibration(flat, calib_count=2, verify_count=1, exclude={"p0"})
    assert load_calibration(flat, calib_count=2, verify_count=1).summary()["excluded_people"] == 0


def test_missing_calibration_people_file_is_one_line(trained_model, att_crops, tmp_path):
    _one_error_line(_export(trained_model, "--calib", att_crops, "--calib-exclude-people", tmp_path / "no.txt:10",
                            "--out", tmp_path / "b"), r"people file not found")
    assert not (tmp_path / "b").exists()


def test_train_summary_keeps_what_reproduces_the_model(tmp_path):
    from edgeface.converters.manifest import train_summary

    model = tmp_path / "model.keras"
    model.write_bytes(b"x")
    (tmp_path / "train.json").write_text(json.dumps({
        "task": "distillation", "epochs_run": 9, "config": {"seed": 7, "lr": 0.001},
        "teacher": {"spec": "dlib"}, "loss": {"match": "cosine"}, "history": [1, 2, 3],
        "dataset": {"root": "/data", "sha256": "ab", "images": 10, "excluded_people": ["a", "b"]}}))
    s = train_summary(model)
    assert s["seed"] == 7 and s["epochs_run"] == 9 and s["teacher"] == {"spec": "dlib"}
    assert s["loss"] == {"match": "cosine"} and s["dataset"]["excluded_people"] == 2
    assert "history" not in s and "lr" not in s  # the summary, not the whole log


# --- a cheap real export: a tiny untrained model on synthetic crops (no training, seconds) ----------


@pytest.fixture(scope="module")
def tiny_model_and_crops(tmp_path_factory):
    """A tiny embedding model (.keras, 112x112 RGB in, 16-d out) and 4 'people' x 3 synthetic 112x112
    crops: enough for every export step to run for real (conversion, calibration, verification, manifest)."""
    import cv2
    import keras

    root = tmp_path_factory.mktemp("tiny")
    inp = keras.Input((112, 112, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    x = keras.layers.Conv2D(8, 3, strides=4, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(16)(x)  # no normalisation layer: Keras' decomposes into float ops, not int8-only
    path = root / "tiny.keras"
    keras.Model(inp, x, name="tiny").save(path)
    crops = root / "crops"
    rng = np.random.default_rng(0)
    for person in range(4):
        (crops / f"p{person}").mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(crops / f"p{person}" / f"{i}.png"), rng.integers(0, 256, (112, 112, 3), np.uint8))
    return path, crops


@pytest.fixture
def int8_never_verifies(monkeypatch):
    """int8 held to a mean cosine above 1, so it always fails verification and --auto-mixed starts."""
    import dataclasses

    from edgeface.converters import formats

    strict = tuple(dataclasses.replace(f, mean_cosine=1.01) if f.name == "int8" else f for f in formats.FORMATS)
    monkeypatch.setattr(formats, "FORMATS", strict)


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def _tiny_export(model, crops, out, *args):
    result = runner.invoke(app, ["export", str(model), "--calib", str(crops), "--calib-count", "6",
                                 "--verify-count", "3", "--out", str(out), "--json", *map(str, args)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result, {r["format"]: r for r in json.loads(result.stdout)["formats"]}


def test_edgetpu_compiler_also_compiles_the_detectors(tiny_model_and_crops, tmp_path, monkeypatch):
    from edgeface.converters import edgetpu as tpu
    from edgeface.runtime.bundle import Bundle

    monkeypatch.setattr(tpu, "find_compiler", lambda: str(_fake_compiler(tmp_path, write_log=True)))
    out = tmp_path / "bundle"
    result, rows = _tiny_export(*tiny_model_and_crops, out, "--formats", "fp32,edgetpu")
    # (the stand-in's compiled file is one byte, which the model's row reads as a graph and fails: not checked here)
    assert rows["edgetpu"]["status"] != "failed"
    b = Bundle.load(out)
    for kind in ("short", "full"):
        path = b.detector_path(kind, fmt="edgetpu_compiled")  # listed, its SHA-256 checked
        assert path.name == f"face_detection_{kind}_range_full_integer_quant_edgetpu.tflite"
        entry = next(d for d in b.manifest["detectors"] if d["kind"] == kind and d["format"] == "edgetpu_compiled")
        assert entry["edgetpu"] == {"tpu_ops": 66, "cpu_ops": 2, "compiler_version": "16.0.384591198"}
    notes = json.loads(result.stdout)["notes"]
    assert "short detector: 2 op(s) left on the CPU by edgetpu_compiler" in notes


def test_auto_mixed_crash_is_a_failed_row_and_the_bundle_is_kept(tiny_model_and_crops, tmp_path, monkeypatch,
                                                                   int8_never_verifies, umask_027):
    from edgeface.converters import steps
    from edgeface.runtime.bundle import Bundle

    def crash(*args, **kwargs):
        raise RuntimeError("layer debugger crashed\nC++ detail")

    monkeypatch.setattr(steps, "_run_auto_mixed", crash)
    out = tmp_path / "bundle"
    result, rows = _tiny_export(*tiny_model_and_crops, out, "--formats", "fp32,int8", "--auto-mixed")
    assert result.exit_code == 1  # a row failed: the export itself went on
    assert rows["fp32"]["status"] == "ok" and rows["int8"]["status"] == "failed_verification"
    assert rows["int8_mixed"]["status"] == "failed" and rows["int8_mixed"]["file"] is None
    assert rows["int8_mixed"]["error"] == "--auto-mixed failed: RuntimeError: layer debugger crashed"
    assert json.loads(result.stdout)["mixed"]["met_budget"] is False
    b = Bundle.load(out)
    assert b.formats == ["fp32", "int8"] and not list(out.glob("*int8_mixed*"))
    # Readable as the umask allows (mkdtemp/mkstemp would have made them owner-only).
    assert out.stat().st_mode & 0o777 == 0o750
    for f in out.iterdir():
        assert f.stat().st_mode & 0o777 == 0o640, f.name


def test_edgetpu_step_crashes_fail_their_row_only(tiny_model_and_crops, tmp_path, monkeypatch):
    from edgeface.converters import edgetpu as tpu
    from edgeface.runtime.bundle import Bundle

    def crash(*args, **kwargs):
        raise ValueError("unexpected tensor")

    # The compiler step: the verified edgetpu file stays, the compiled row says what went wrong.
    monkeypatch.setattr(tpu, "find_compiler", lambda: "/opt/edgetpu_compiler")
    monkeypatch.setattr(tpu, "run_compiler", crash)
    out = tmp_path / "compiled"
    result, rows = _tiny_export(*tiny_model_and_crops, out, "--formats", "fp32,edgetpu")
    assert rows["edgetpu"]["file"] and rows["edgetpu"]["status"] != "failed"
    assert rows["edgetpu_compiled"]["status"] == "failed"
    assert rows["edgetpu_compiled"]["error"] == "edgetpu_compiler step failed: ValueError: unexpected tensor"
    assert Bundle.load(out).formats == ["fp32", "edgetpu"] and result.exit_code == 1
    # The static check: the edgetpu row fails like a format that did not convert; fp32 is kept.
    monkeypatch.setattr(tpu, "check_compatibility", crash)
    out = tmp_path / "static"
    result, rows = _tiny_export(*tiny_model_and_crops, out, "--formats", "fp32,edgetpu")
    assert rows["fp32"]["status"] == "ok" and rows["edgetpu"]["status"] == "failed"
    assert rows["edgetpu"]["error"] == "Edge TPU check failed: ValueError: unexpected tensor"
    assert Bundle.load(out).formats == ["fp32"] and not list(out.glob("*edgetpu*")) and result.exit_code == 1


def test_the_table_drives_the_export_a_new_derived_row_runs_after_its_source(tiny_model_and_crops, tmp_path,
                                                                              monkeypatch):
    """A row added to the table with a step of its own is made right after its source, announced in the progress,
    and listed in the summary and the manifest: export_bundle has no per-format branches."""
    import dataclasses
    import shutil as sh

    from edgeface.converters import formats, steps
    from edgeface.converters import manifest as mf
    from edgeface.converters.export import export_bundle
    from edgeface.converters.export_config import ExportConfig
    from edgeface.converters.results import OK, FormatResult
    from edgeface.runtime.bundle import Bundle

    def copy_step(ctx, fmt, source):
        path = ctx.work / fmt.filename(ctx.stem)
        sh.copyfile(ctx.work / source.file, path)
        row = FormatResult(fmt.name, status=OK, file=path.name, size_bytes=path.stat().st_size)
        return steps.Made([row], [mf.file_entry(fmt.name, path, ctx.work, read_graph(path), verified=True)])

    copy = dataclasses.replace(get_format("fp32"), name="fp32_copy", suffix="_copy.tflite", step="copy",
                               derived_from="fp32", enabled_by="compile_edgetpu")
    monkeypatch.setattr(formats, "DERIVED_FORMATS", (*formats.DERIVED_FORMATS, copy))
    monkeypatch.setitem(steps.STEPS, "copy", steps.Step(copy_step, "copying fp32"))
    seen = []
    model, crops = tiny_model_and_crops
    result = export_bundle(ExportConfig(model=model, out=tmp_path / "b", formats="fp16,fp32", calib=crops,
                                        calib_count=6, verify_count=3),
                           progress=lambda desc, done, total: seen.append((desc, done, total)))
    assert [r.format for r in result.formats] == ["fp32", "fp32_copy", "fp16"]
    assert Bundle.load(tmp_path / "b").formats == ["fp32", "fp32_copy", "fp16"]
    assert [d for d, _, _ in seen] == ["loading the model", "collecting calibration faces", "exporting fp32",
                                       "copying fp32", "exporting fp16", "writing the bundle"]
    assert [done for _, done, _ in seen] == list(range(6)) and {total for _, _, total in seen} == {6}


def test_failed_final_rename_puts_the_previous_bundle_back(tmp_path, monkeypatch):
    from edgeface.converters import bundle_folder

    out = tmp_path / "bundle"
    out.mkdir()
    (out / "manifest.json").write_text("old")
    work = tmp_path / ".bundle.tmp-1"
    work.mkdir()
    (work / "manifest.json").write_text("new")
    real_replace = os.replace

    def replace(src, dst):
        if Path(src) == work:
            raise OSError(18, "Invalid cross-device link")
        real_replace(src, dst)

    monkeypatch.setattr(bundle_folder.os, "replace", replace)
    with pytest.raises(UserError, match=r"cannot move the new bundle into place at .*bundle: Invalid cross-device "
                                        r"link; the previous bundle is back in place"):
        bundle_folder.finish_bundle(work, out)
    assert (out / "manifest.json").read_text() == "old" and [p.name for p in tmp_path.iterdir()] != []
    assert not [p for p in tmp_path.iterdir() if ".old-" in p.name]


@pytest.mark.parametrize("args, pattern", [
    (["--name", "../evil"], r"--name '\.\./evil' cannot name the bundle's files"),
    (["--name", "/tmp/x"], r"--name '/tmp/x' cannot name the bundle's files"),
    (["--max-drop", "nan"], r"--max-drop must be a finite number >= 0 percentage points \(got nan\)"),
    (["--detector", "bogus"], r"unknown detector 'bogus'"),
    # an option no chosen format takes: the library names the option, the CLI its flag
    (["--formats", "fp32", "--per-tensor"],
     r"^error: --per-tensor is not an option of format fp32 \(fp32 takes no options; int8, edgetpu take it\)$"),
    (["--formats", "edgetpu,fp16", "--auto-mixed"],
     r"^error: --auto-mixed is not an option of formats fp16, edgetpu \(fp16 takes no options; edgetpu takes "
     r"per_tensor; int8 takes it\)$"),
])
def test_bad_export_options_write_nothing(tiny_model_and_crops, tmp_path, args, pattern):
    model, crops = tiny_model_and_crops
    result = runner.invoke(app, ["export", str(model), "--calib", str(crops), "--out", str(tmp_path / "b"), *args])
    _one_error_line(result, pattern)
    assert list(tmp_path.iterdir()) == []  # no bundle, and nothing written beside it


def test_re_export_keeps_the_users_files_and_drops_the_old_models(tiny_model_and_crops, tmp_path):
    model, crops = tiny_model_and_crops
    out = tmp_path / "bundle"
    result, _ = _tiny_export(model, crops, out, "--formats", "fp32,fp16")
    assert result.exit_code == 0, result.output
    (out / "people.npz").write_bytes(b"a gallery enrolled on the board")
    (out / "notes").mkdir()
    (out / "notes" / "a.txt").write_text("mine\n")
    result, _ = _tiny_export(model, crops, out, "--formats", "fp32")
    assert result.exit_code == 0, result.output
    assert (out / "people.npz").read_bytes() == b"a gallery enrolled on the board"
    assert (out / "notes" / "a.txt").read_text() == "mine\n"
    assert not list(out.glob("*float16*"))  # listed by the old manifest: the old export's, replaced
    assert "kept from the bundle this export replaced (not model files): notes, people.npz" in \
        json.loads(result.stdout)["notes"]


def test_default_calibration_leaves_out_the_people_training_left_out(tiny_model_and_crops, tmp_path, monkeypatch):
    model, crops = tiny_model_and_crops
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(model, run / "model.keras")
    people = tmp_path / "people.txt"
    people.write_text("p0\np1\n")
    monkeypatch.chdir(tmp_path / "run")  # train.json's paths are absolute: export runs from anywhere
    (run / "train.json").write_text(json.dumps({
        "config": {"seed": 0, "exclude_people": "../people.txt"},
        "dataset": {"root": "crops", "path": str(crops), "exclude_people_path": str(people)}}))
    result = runner.invoke(app, ["export", "model.keras", "--calib-count", "2", "--verify-count", "2",
                                 "--formats", "fp32", "--out", str(tmp_path / "b"), "--json"])
    assert result.exit_code == 0, result.output
    calibration = json.loads(result.stdout)["calibration"]
    assert calibration["excluded_people"] == 2 and calibration["identities"] == 2
    people.unlink()
    _one_error_line(runner.invoke(app, ["export", "model.keras", "--formats", "fp32", "--out", str(tmp_path / "c")]),
                    r"model\.keras was trained without the people in .*people\.txt, which is not found from here: "
                    r"pass --calib DIR")
