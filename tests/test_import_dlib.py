"""dlib's face ResNet imported without dlib: the numpy .dat reader, its one-line refusals, and the Keras rebuild
checked against dlib's own descriptors, after a save and reload, and as float32 TFLite."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from edgeface.errors import UserError
from edgeface.importers.dlib_dat import ANET_AVG, FIX_HINT, DlibFormatError, read_dlib_resnet

PARAMS = 5_614_592
AFFINE_PARAMS = 7_104  # 2 x the channels of the 29 affine layers, folded into the convolutions by the import
MIN_COSINE = 0.9999


@cache
def agreement_script():
    """tests/benchmarks/dlib_import_agreement.py: LFW chips made by dlib, dlib's descriptors, the figures."""
    path = Path(__file__).parent / "benchmarks" / "dlib_import_agreement.py"
    spec = importlib.util.spec_from_file_location("dlib_import_agreement", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.fixture(scope="module")
def model_files() -> tuple[Path, Path]:
    from edgeface.distill.teachers import dlib_model_files

    try:
        return dlib_model_files()
    except UserError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def dat_bytes(model_files) -> bytes:
    return model_files[0].read_bytes()


@pytest.fixture(scope="module")
def net(model_files):
    return read_dlib_resnet(model_files[0])


@pytest.fixture(scope="module")
def model(net):
    from edgeface.importers.dlib_keras import build_dlib_keras

    return build_dlib_keras(net)


def lfw_faces(lfw_dir: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` LFW chips made by dlib (detector, 5-point predictor, get_face_chip) and dlib's descriptors."""
    pytest.importorskip("dlib")
    script = agreement_script()
    chips, _ = script.dlib_chips(script.lfw_photos(lfw_dir / "lfw-deepfunneled"), count)
    assert len(chips) == count
    reference, _ = script.dlib_descriptors(chips)
    return chips, reference


@pytest.fixture(scope="module")
def faces(lfw_dir, model_files) -> tuple[np.ndarray, np.ndarray]:
    return lfw_faces(lfw_dir, 60)


def refusal(path) -> str:
    """read_dlib_resnet's message for ``path``, checked to be one line that names the file and says what to pass."""
    with pytest.raises(DlibFormatError) as info:
        read_dlib_resnet(path)
    message = str(info.value)
    assert isinstance(info.value, UserError)
    assert "\n" not in message and str(path) in message and message.endswith(FIX_HINT), message
    return message


# --- the reader ------------------------------------------------------------------------------------------------


def test_reader_finds_anet_type(net):
    assert net.counts() == {"con": 29, "affine": 29, "relu": 29, "max_pool": 1, "add_prev": 14, "avg_pool": 5,
                            "fc": 1}
    assert net.param_count == PARAMS
    assert net.input_size == 150 and net.input_avg == pytest.approx(ANET_AVG, abs=1e-4)
    assert net.embedding_dim == 128 and net.distance_threshold == pytest.approx(0.6)
    by_name = {layer.name: layer for layer in net.layers}
    assert by_name["conv1"].weights[0].shape == (7, 7, 3, 32) and by_name["conv1"].padding == (0, 0)
    assert by_name["embedding"].weights[0].shape == (256, 128) and by_name["embedding"].inputs == ("global_pool",)
    # Stride-2 convolutions are not padded, 3x3 stride-1 ones by 1: as stored in the file.
    convs = [layer for layer in net.layers if layer.kind == "con" and layer.name != "conv1"]
    assert {(c.stride, c.padding) for c in convs} == {((2, 2), (0, 0)), ((1, 1), (1, 1))}
    assert sum(c.stride == (2, 2) for c in convs) == 4
    # ares_down: the shortcut is pooled from the block's input and added to the block's output.
    assert by_name["level3_block0_pool"].inputs == ("level4_block2_relu",)
    assert by_name["level3_block0_add"].inputs == ("level3_block0_pool", "level3_block0_affine_b")
    assert all(w.dtype == np.float32 for layer in net.layers for w in layer.weights)


def test_reader_needs_neither_tensorflow_nor_dlib(model_files):
    code = ("import sys; from edgeface.importers.dlib_dat import read_dlib_resnet; "
            f"n = read_dlib_resnet({str(model_files[0])!r}); "
            "print(n.param_count, sorted(m for m in ('tensorflow', 'keras', 'dlib') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(PARAMS), "[]"]


# Where a copy is cut: inside the header, mid-integer (1 of a 3-byte mantissa's bytes of the input averages),
# mid-tensor (conv1's weights, the fc's weights), inside a wrapper's training state, one byte short.
CUTS = {
    "header": lambda data: 9,
    "mid-integer": lambda data: data.index(b"input_rgb_image_sized") + 21 + 2,
    "conv1 weights": lambda data: data.index(b"con_4") + 1000,
    "a layer's training state": lambda data: data.index(b"relu_") + 6,
    "fc weights": lambda data: len(data) - 60_000,
    "one byte short": lambda data: len(data) - 1,
}


@pytest.mark.parametrize("where", list(CUTS))
def test_truncated_copies_are_refused_in_one_line(tmp_path, dat_bytes, where):
    path = tmp_path / "cut.dat"
    path.write_bytes(dat_bytes[:CUTS[where](dat_bytes)])
    assert "a truncated copy?" in refusal(path)


def _set_byte(data: bytes, at: int, value: int) -> bytes:
    return data[:at] + bytes([value]) + data[at + 1:]


def _huge_state_tensor(data: bytes) -> bytes:
    """conv1's wrapper state ("110", then three empty tensors) with a first tensor of 2**40 - 1 x 1 x 1 x 1."""
    state = data.index(b"110", data.index(b"affine_") - 40) + 3
    huge = b"\x01\x02" + b"\x06" + b"\xff" * 5 + b"\x00" + b"\x01\x01" * 3
    return data[:state] + huge + data[state + 10:]


# Copies altered where the format leaves no doubt: each must be refused, none may allocate what a size claims.
ALTERED = {
    # conv1's parameter tensor claims 2**62 values (a control byte for 8 magnitude bytes).
    "huge tensor": (lambda d: d[:d.index(b"con_4") + 7] + b"\x08" + (2**62).to_bytes(8, "little")
                    + d[d.index(b"con_4") + 10:], "parameters of shape (4611686018427387904, 1, 1, 1)"),
    # The first layer's input-gradient tensor claims 2**40 values (skipped, never read).
    "huge state tensor": (lambda d: _huge_state_tensor(d), "a truncated copy?"),
    # The outermost wrapper (the fc's) says "tag" (version 1).
    "tag where a layer is": (lambda d: _set_byte(d, d.index(b"loss_metric_2") + 26, 1),
                             "layer nesting differs from anet_type at wrapper 1"),
    "other input averages": (lambda d: _set_byte(d, d.index(b"input_rgb_image_sized") + 24, 0xE5),
                             "input channel averages (114.782, 117.001, 104.298) differ"),
    "nan weight": (lambda d: d[:d.index(b"con_4") + 16] + b"\x00\x00\xc0\x7f" + d[d.index(b"con_4") + 20:],
                   "layer 1 of 108 (con_4, conv1) has weights that are not finite numbers"),
    "trailing bytes": (lambda d: d + b"\x00\x00", "2 extra bytes after the last layer"),
    "another loss": (lambda d: b"\x01\x01\x01\x0dloss_mmod_xx1" + d[17:], "a dlib network with loss 'loss_mmod_xx1'"),
}


@pytest.mark.parametrize("what", list(ALTERED))
def test_altered_copies_are_refused_in_one_line(tmp_path, dat_bytes, what):
    alter, expected = ALTERED[what]
    path = tmp_path / "altered.dat"
    path.write_bytes(alter(dat_bytes))
    assert expected in refusal(path)


def test_other_files_are_refused_in_one_line(tmp_path, model_files, media_dir):
    not_a_net = "is not dlib's face recognition ResNet (it does not start like a dlib network saved with loss_metric_2)"
    assert not_a_net in refusal(model_files[1])  # dlib's 5-point shape predictor
    assert not_a_net in refusal(media_dir / "lin-manuel-miranda.png")
    noise = tmp_path / "noise.dat"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert not_a_net in refusal(noise)
    empty = tmp_path / "empty.dat"
    empty.write_bytes(b"")
    assert "(the file is empty)" in refusal(empty)
    assert refusal(tmp_path / "missing.dat") == f"dlib model file not found: {tmp_path / 'missing.dat'}: {FIX_HINT}"
    assert refusal(tmp_path) == f"{tmp_path} is not a file: {FIX_HINT}"
    # A newline in the name must not break the one line.
    odd = tmp_path / "odd\nname.dat"
    odd.write_bytes(b"\x89PNG")
    with pytest.raises(DlibFormatError, match=r"odd\\nname\.dat is not dlib's face recognition ResNet") as info:
        read_dlib_resnet(odd)
    assert "\n" not in str(info.value)


# --- the Keras model -------------------------------------------------------------------------------------------


def test_keras_model_layout(model):
    from edgeface.nn.layers import ChannelPad, L2Normalize

    assert model.input.name == "image" and tuple(model.input.shape) == (None, 150, 150, 3)
    assert tuple(model.output.shape) == (None, 128)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Conv2D") == 29 and kinds.count("Add") == 14 and kinds.count("Lambda") == 0
    assert model.count_params() == PARAMS - AFFINE_PARAMS
    assert model.get_layer("embedding").output.shape[-1] == 128 and model.get_layer("embedding").use_bias is False
    assert isinstance(model.layers[-1], L2Normalize) and model.layers[-1].name == "l2_normalize"
    assert model.get_layer("level4_block0_conv_a").padding == "same"
    assert model.get_layer("level3_block0_conv_a").padding == "valid"
    # dlib's add_prev pads the smaller input at the end: channels where a level doubles them, rows and columns
    # where a stride-2 branch (3x3, 1x1) meets its pooled shortcut (4x4, 2x2).
    channel_pads = {layer.name: layer.extra for layer in model.layers if isinstance(layer, ChannelPad)}
    assert channel_pads == {"level3_block0_pool_pad_channels": 32, "level2_block0_pool_pad_channels": 64,
                            "level1_block0_pool_pad_channels": 128}
    spatial = {layer.name: layer.padding for layer in model.layers if type(layer).__name__ == "ZeroPadding2D"}
    assert spatial == {"level1_block0_conv_b_pad": ((0, 1), (0, 1)), "level0_block0_conv_b_pad": ((0, 1), (0, 1))}


def check_agreement(model, chips: np.ndarray, reference: np.ndarray) -> dict:
    unit, raw, _ = agreement_script().keras_outputs(model, chips, batch=16)
    figures = agreement_script().agreement(reference, unit, raw)
    assert figures["min_cosine"] >= MIN_COSINE, figures
    # dlib's same-person threshold is a Euclidean distance of 0.6 between raw descriptors (norm ~1.4).
    assert figures["max_abs_diff_raw"] < 1e-3, figures
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    return figures


def test_keras_model_gives_dlibs_descriptors(model, faces):
    check_agreement(model, *faces)


@pytest.mark.slow
def test_keras_model_gives_dlibs_descriptors_on_500_lfw_faces(model, lfw_dir, model_files):
    check_agreement(model, *lfw_faces(lfw_dir, 500))


def test_saved_model_reloads_with_the_same_outputs(model, faces, tmp_path):
    from edgeface.nn.loading import load_embedding_model

    model.save(tmp_path / "m.keras")
    reloaded = load_embedding_model(tmp_path / "m.keras")
    x = faces[0][:8].astype(np.float32)
    np.testing.assert_allclose(reloaded.predict_on_batch(x), model.predict_on_batch(x), atol=1e-6)


def test_tflite_float32_uses_builtin_ops_and_agrees(model, faces, tmp_path):
    from edgeface.converters.convert import batch_one, check_graph, make_converter, run_converter
    from edgeface.converters.formats import get_format
    from edgeface.runtime.interpreter import TFLiteModel
    from edgeface.runtime.tflite_graph import read_graph

    fp32 = get_format("fp32")
    data = run_converter(make_converter(batch_one(model), fp32))  # TFLiteConverter.from_keras_model, builtins only
    graph = read_graph(data)
    check_graph(graph, fp32)  # no Flex or custom ops, one subgraph, fixed batch 1, float32 in and out
    ops = graph.op_counts()
    assert set(ops) == {"CONV_2D", "MAX_POOL_2D", "ADD", "AVERAGE_POOL_2D", "PAD", "MEAN", "FULLY_CONNECTED",
                        "L2_NORMALIZATION"}, ops
    assert (ops["CONV_2D"], ops["ADD"], ops["PAD"]) == (29, 14, 5)
    path = tmp_path / "dlib_float32.tflite"
    path.write_bytes(data)
    tflite = TFLiteModel(path, threads=2)
    chips = faces[0][:4].astype(np.float32)
    ours = np.concatenate([tflite.run(chip[None])[0] for chip in chips])
    cos = np.sum(ours * model.predict_on_batch(chips), axis=1)
    assert cos.min() >= MIN_COSINE, cos
