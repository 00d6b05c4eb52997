"""InsightFace `.bin` verification sets: the restricted unpickler on every way real files were written, refusal of
anything else with one line, and `evaluate --bin` agreeing with `evaluate --pairs` on the same LFW pairs."""

from __future__ import annotations

import json
import pickle
import struct
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from lfw_bins import write_lfw_bins
from typer.testing import CliRunner

from edgeface.cli import app
from edgeface.errors import UserError
from edgeface.evaluate.binsets import read_bin, write_bin

runner = CliRunner()
JPEG = cv2.imencode(".jpg", np.full((112, 112, 3), 128, np.uint8))[1]  # what cv2.imencode gives: (N, 1) uint8


# --------------------------------------------------------------------------- how real files were written


def _py2_str(data: bytes) -> bytes:
    """A Python 2 ``str`` as pickle protocol 2 writes it (BINSTRING)."""
    return b"T" + struct.pack("<i", len(data)) + data


def _py2_lfw2pack(images: list[bytes], issame: list[bool]) -> bytes:
    """What InsightFace's lfw2pack.py wrote under Python 2: a list of str (JPEG bytes), a list of bools."""
    body = b"\x80\x02]q\x00(" + b"".join(_py2_str(b) for b in images) + b"e]q\x01("
    body += b"".join(b"\x88" if s else b"\x89" for s in issame) + b"e\x86q\x02."
    return body


def _py2_numpy_uint8(data: bytes) -> bytes:
    """A numpy uint8 array of shape (N, 1) as numpy pickled it under Python 2 (agedb2pack2.py, cfp2pack.py)."""
    return (b"cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02K\x00\x85U\x01b\x87R("
            b"K\x01" + b"J" + struct.pack("<i", len(data)) + b"K\x01\x86"
            b"cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
            b"\x89" + _py2_str(data) + b"tb")


def _py2_agedb2pack(images: list[bytes], issame: list[bool]) -> bytes:
    body = b"\x80\x02](" + b"".join(_py2_numpy_uint8(b) for b in images) + b"e]("
    body += b"".join(b"\x88" if s else b"\x89" for s in issame) + b"e\x86."
    return body


@pytest.mark.parametrize("how", ["lfw2pack_py2", "agedb2pack_py2", "numpy_py3_protocol3", "numpy_protocol5",
                                 "bytes_protocol2_py3", "write_bin"])
def test_every_way_real_bin_files_were_written_reads_back(tmp_path, how):
    images = [JPEG.tobytes(), b"\xff\xd8second", JPEG.tobytes()[:50], b"\xff\xd8fourth"]
    issame = [True, False]
    path = tmp_path / "x.bin"
    if how == "lfw2pack_py2":
        path.write_bytes(_py2_lfw2pack(images, issame))
    elif how == "agedb2pack_py2":
        path.write_bytes(_py2_agedb2pack(images, issame))
    elif how == "numpy_py3_protocol3":  # PaddlePaddle's small_lfw.bin: cv2.imencode arrays, protocol 3
        arrays = [np.frombuffer(b, np.uint8).reshape(-1, 1) for b in images]
        path.write_bytes(pickle.dumps((arrays, issame), protocol=3))
    elif how == "numpy_protocol5":
        arrays = [np.frombuffer(b, np.uint8) for b in images]
        path.write_bytes(pickle.dumps((arrays, issame), protocol=5))
    elif how == "bytes_protocol2_py3":  # Python 3 writing bytes at protocol 2 goes through _codecs.encode
        path.write_bytes(pickle.dumps((images, issame), protocol=2))
    else:
        write_bin(path, images, issame)
    b = read_bin(path)
    assert b.images == images and b.issame.tolist() == issame


def test_folds_are_insightfaces_ten_consecutive_blocks(tmp_path):
    write_bin(tmp_path / "x.bin", [b"i"] * 2 * 23, [bool(i % 2) for i in range(23)])
    pairs = read_bin(tmp_path / "x.bin").pairs()
    sizes = np.bincount([p.fold for p in pairs])[1:]
    assert sizes.tolist() == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]  # sklearn KFold(10): the first n % 10 one longer
    assert [(p.a, p.b) for p in pairs[:2]] == [("0", "1"), ("2", "3")]
    assert [p.fold for p in pairs] == sorted(p.fold for p in pairs)


# --------------------------------------------------------------------------- refused, one line, nothing run


def _evil(tmp_path: Path, marker: Path) -> bytes:
    """A pickle that would run a shell command if any pickle loader honoured it."""
    return b"cos\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR."


@pytest.mark.parametrize("payload, message", [
    (lambda t, m: _evil(t, m), r"refused, the pickle asks for os\.system; a \.bin verification set holds only"),
    (lambda t, m: b"cbuiltins\neval\n(V1+1\ntR.", r"refused, the pickle asks for builtins\.eval"),
    (lambda t, m: pickle.dumps(([np.zeros(2, np.float32)] * 2, [True]), protocol=4),
     r"refused, the pickle asks for a numpy array of dtype 'f4'"),
    (lambda t, m: pickle.dumps(([np.array([b"x"], object)] * 2, [True]), protocol=4),
     r"refused, the pickle asks for a numpy array of dtype 'O8'"),
    (lambda t, m: pickle.dumps(([b"a", b"b"], [np.bool_(True)]), protocol=4),
     r"refused, the pickle asks for numpy\._?core\.multiarray\.scalar"),
    (lambda t, m: pickle.dumps(([b"a", b"b"], [1])), r"same/different flag 0 is int 1, not a bool"),
    (lambda t, m: pickle.dumps(([b"a", "b"], [True])), r"image 1 is str, not encoded image bytes"),
    (lambda t, m: pickle.dumps(([b"a", b"b", b"c"], [True])), r"3 images for 1 pairs"),
    (lambda t, m: pickle.dumps({"images": []}), r"holds a dict, not the \(images, issame\) pair"),
    (lambda t, m: b"not a pickle at all", r"not a \.bin verification set"),
])
def test_anything_but_bytes_and_bools_is_refused_with_one_line(tmp_path, payload, message):
    marker = tmp_path / "ran"
    path = tmp_path / "bad.bin"
    path.write_bytes(payload(tmp_path, marker))
    with pytest.raises(UserError, match=message) as err:
        read_bin(path)
    assert "\n" not in str(err.value) and str(err.value).startswith(str(path))
    assert not marker.exists()


# --------------------------------------------------------------------------- evaluate --bin == evaluate --pairs


@pytest.fixture(scope="module")
def lfw_pairs_and_crops(lfw_dir, tmp_path_factory):
    """40 LFW pairs (2 same + 2 different from each of pairs.txt's 10 folds) as a pairs file in LFW's format,
    their photos aligned by `edgeface data prepare`, and the same pairs as a .bin of those crops (PNG bytes,
    lossless, and JPEG at quality 95 as InsightFace's files)."""
    return write_lfw_bins(lfw_dir, tmp_path_factory.mktemp("lfwbin"), per_fold=4)


@pytest.fixture(scope="module")
def tiny_models(lfw_pairs_and_crops, tmp_path_factory) -> dict[int, Path]:
    """Small untrained MobileFaceNets (112 and 96 input) with BatchNorm statistics from real crops, as .keras."""
    import keras

    from edgeface.data.dataset import load_crops
    from edgeface.train.models import get_model

    crops = load_crops(lfw_pairs_and_crops[1]).images[:48].astype(np.float32)
    out = tmp_path_factory.mktemp("models")
    paths = {}
    for size in (112, 96):
        keras.utils.set_random_seed(0)
        model = get_model("mobilefacenet", embedding_dim=64, width=0.25, input_size=size)
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.0
        model(crops if size == 112 else keras.ops.image.resize(crops, (size, size)), training=True)
        with warnings.catch_warnings():  # Keras' own numpy-2 `__array__` DeprecationWarning while saving
            warnings.simplefilter("ignore", DeprecationWarning)
            model.save(out / f"tiny{size}.keras")
        paths[size] = out / f"tiny{size}.keras"
    return paths


def _json(args: list[str]) -> dict:
    result = runner.invoke(app, ["evaluate", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_evaluate_bin_agrees_with_evaluate_pairs_on_the_same_pairs(lfw_pairs_and_crops, tiny_models):
    pairs_file, crops, base = lfw_pairs_and_crops
    model = str(tiny_models[112])
    by_pairs = _json([model, "--pairs", str(pairs_file), "--images", str(crops)])["verification"]
    report = _json([model, "--bin", str(base / "lfw_png.bin"), "--bin", str(base / "lfw_jpeg.bin")])
    png, jpeg = report["bins"]
    assert png["folds"] == by_pairs["folds"] == list(range(1, 11))
    # the same crops, the same folds, the same protocol code: the same numbers
    for key in ("fold_accuracies", "fold_thresholds", "accuracy_mean", "accuracy_std", "auc", "tar_at_far",
                "best_threshold", "n_pairs", "n_genuine"):
        assert png[key] == pytest.approx(by_pairs[key], abs=1e-6), key
    assert png["images"] == "aligned crops of lfw_png.bin" and png["no_face"] == 0
    # InsightFace's JPEG at quality 95 moves the scores a little, not the protocol
    assert jpeg["n_pairs"] == 40 and abs(jpeg["auc"] - png["auc"]) < 0.1
    one = _json([model, "--bin", str(base / "lfw_png.bin"), "--fold", "3"])["bins"][0]
    assert one["folds"] == [3] and one["fold_accuracies"] == [png["fold_accuracies"][2]]


def test_evaluate_bin_refuses_a_model_that_takes_other_crops(lfw_pairs_and_crops, tiny_models, tmp_path):
    base = lfw_pairs_and_crops[2]
    result = runner.invoke(app, ["evaluate", str(tiny_models[96]), "--bin", str(base / "lfw_png.bin")])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: lfw_png.bin holds 112x112 face crops aligned by a template; tiny96.keras "
                                    "takes 96x96 faces aligned by template: a .bin cannot feed it")
    assert len(result.stderr.strip().splitlines()) == 1


def test_evaluate_bin_refuses_a_pickle_with_code_before_loading_the_model(tiny_models, tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "evil.bin").write_bytes(_evil(tmp_path, marker))
    result = runner.invoke(app, ["evaluate", str(tiny_models[112]), "--bin", str(tmp_path / "evil.bin")])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {tmp_path / 'evil.bin'}: refused, the pickle asks for os.system")
    assert len(result.stderr.strip().splitlines()) == 1 and not marker.exists()
    for args, message in ((["--bin", str(tmp_path / "none.bin")], "error: verification set not found"),
                          (["--fold", "2", "--gallery", str(tmp_path), "--probe", str(tmp_path)],
                           "error: --fold and --roc belong to verification")):
        result = runner.invoke(app, ["evaluate", str(tiny_models[112]), *args])
        assert result.exit_code == 2 and result.stderr.startswith(message), result.output
