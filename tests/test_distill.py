"""Distillation: teacher specs and options, teacher preprocessing against numpy references, the embedding
cache (keys, interruption), the dlib teacher on real photos, a distillation run on AT&T faces and bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edgeface.cli import app
from edgeface.distill import data as ddata
from edgeface.distill.cache import EmbeddingCache, image_sha256
from edgeface.distill.teachers import load_teacher, parse_option_pairs, parse_teacher_spec
from edgeface.errors import UserError
from edgeface.runtime.facemodel import FaceModelSpec, box_transform

runner = CliRunner()


@pytest.fixture(scope="module")
def detector():
    from edgeface.runtime.detector import create_detector

    return create_detector("short", threads=1)


def largest_face(path: Path, detector):
    from edgeface.runtime.images import read_image

    image = read_image(path)
    return image, max(detector.detect(image), key=lambda d: d.area)


# --- specs and options (no model) -------------------------------------------------------------------


def test_teacher_spec_forms(tmp_path):
    for name in ("m.onnx", "m.tflite", "m.keras"):
        (tmp_path / name).write_bytes(b"x")
    assert parse_teacher_spec("dlib").kind == "dlib" and parse_teacher_spec("dlib").path is None
    assert parse_teacher_spec(f"onnx:{tmp_path}/m.onnx").kind == "onnx"
    assert parse_teacher_spec(f"{tmp_path}/m.tflite").kind == "tflite"  # kind from the suffix
    assert str(parse_teacher_spec(f"keras:{tmp_path}/m.keras")) == f"keras:{tmp_path}/m.keras"


@pytest.mark.parametrize("spec, message", [
    ("dlb", "unknown teacher 'dlb' (did you mean 'dlib'?): use dlib, onnx:PATH, tflite:PATH or keras:PATH"),
    ("onx:{dir}/m.onnx", "unknown teacher kind 'onx' (did you mean 'onnx:{dir}/m.onnx'?)"),
    ("onnx:{dir}/missing.onnx", "teacher model file not found: {dir}/missing.onnx"),
    ("dlib:{dir}/m.onnx", "the dlib teacher takes no model path: use --teacher dlib"),
    ("tflite:", "--teacher tflite: needs a model path, e.g. tflite:model.tflite"),
    ("{dir}/m.txt", "unknown teacher '{dir}/m.txt'"),
])
def test_bad_teacher_specs_say_what_to_use(tmp_path, spec, message):
    (tmp_path / "m.onnx").write_bytes(b"x")
    (tmp_path / "m.txt").write_bytes(b"x")
    with pytest.raises(UserError) as exc:
        parse_teacher_spec(spec.format(dir=tmp_path))
    assert message.format(dir=tmp_path) in str(exc.value)


def test_option_values_are_typed_and_checked():
    opts = parse_option_pairs(["mean=127.5", "std=[128, 64, 32]", "color=BGR", "input_size=112,96",
                               "template=[[30,50],[80,50],[55,70],[55,90]]", "output=embedding"])
    spec = FaceModelSpec.from_options(opts)
    assert spec.mean == (127.5,) * 3 and spec.std == (128.0, 64.0, 32.0) and spec.color == "BGR"
    assert spec.size == (112, 96) and spec.output == "embedding" and len(spec.template) == 4
    # scale/offset is the same normalisation written the other way round.
    a = FaceModelSpec.from_options({"scale": 1 / 127.5, "offset": -1.0})
    b = FaceModelSpec.from_options({"mean": 127.5, "std": 127.5})
    assert np.allclose(a.mean, b.mean) and np.allclose(a.std, b.std)
    for options, message in (({"mean": 1, "scale": 2}, "as mean/std or as scale/offset, not both"),
                             ({"layout": "NWHC"}, "unknown layout 'NWHC' (did you mean 'NHWC'?)"),
                             ({"template": [[1, 2], [3, 4]]}, "must be 4 or 5 [x, y] points"),
                             ({"std": 0}, "std must not be 0")):
        with pytest.raises(UserError) as exc:
            FaceModelSpec.from_options(options)
        assert message in str(exc.value)


def test_unknown_or_misplaced_options_are_refused():
    with pytest.raises(UserError, match=r"unknown teacher option 'meen' \(did you mean 'mean'\?\)"):
        load_teacher("dlib", options={"meen": 1})
    with pytest.raises(UserError, match="teacher option 'mean' does not apply to the dlib teacher: it takes "
                                        "jitters, padding"):
        load_teacher("dlib", options={"mean": 1})


# --- preprocessing: pure numpy against hand computations -----------------------------------------


def test_model_input_colour_normalisation_and_layout():
    crop = np.zeros((4, 5, 3), np.uint8)
    crop[..., 0], crop[..., 1], crop[..., 2] = 10, 20, 30  # R, G, B
    spec = FaceModelSpec(color="BGR", mean=(0.0, 10.0, 20.0), std=(1.0, 2.0, 5.0), layout="NCHW")
    x = spec.to_input(crop)
    assert x.shape == (3, 4, 5) and x.dtype == np.float32
    assert x[0, 0, 0] == 30.0 and x[1, 0, 0] == 5.0 and x[2, 0, 0] == -2.0  # B, (G-10)/2, (R-20)/5


def test_box_alignment_maps_the_box_onto_the_input():
    m = box_transform(np.array([10, 20, 50, 100]), (32, 64))  # 40x80 box, same 1:2 aspect as 32x64
    corners = np.array([[10, 20, 1], [50, 100, 1]], np.float32) @ m.T
    assert np.allclose(corners, [[0, 0], [32, 64]])
    m = box_transform(np.array([0, 0, 40, 40]), (40, 40), margin=1.0)  # twice as wide around the centre
    assert np.allclose(np.array([20, 20, 1]) @ m.T, [20, 20]) and np.isclose(m[0, 0], 0.5)


def test_arcface_template_gives_edgeface_alignment(media_dir, detector):
    from edgeface.runtime.align import align_face

    image, det = largest_face(media_dir / "obama.jpg", detector)
    ours = FaceModelSpec(size=(112, 112)).align_detection(image, det)
    assert np.abs(ours.astype(int) - align_face(image, det.keypoints, 112).astype(int)).max() <= 1


# --- ONNX / TFLite teachers ------------------------------------------------------------------------


def tiny_onnx(path: Path, out: str = "vector", h: int = 24, w: int = 20, dim: int = 16, seed: int = 0,
              uint8: bool = False) -> np.ndarray:
    """A linear 'embedding' model: NCHW (dynamic batch) pixels -> flatten -> @ W; returns W.

    ``uint8``: the input is uint8 pixels, cast to float inside the model (as image models exported with
    their preprocessing built in take them)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(seed).standard_normal((3 * h * w, dim)).astype(np.float32)
    x = helper.make_tensor_value_info("pixels", TensorProto.UINT8 if uint8 else TensorProto.FLOAT, ["n", 3, h, w])
    cast = [helper.make_node("Cast", ["pixels"], ["pixels_f"], to=TensorProto.FLOAT)] if uint8 else []
    if out == "vector":
        nodes = cast + [helper.make_node("Reshape", ["pixels_f" if uint8 else "pixels", "shape"], ["flat"]),
                 helper.make_node("MatMul", ["flat", "W"], ["embedding"])]
        init = [numpy_helper.from_array(np.array([-1, 3 * h * w], np.int64), "shape"),
                numpy_helper.from_array(weights, "W")]
        y = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", dim])
    else:  # an image-to-image model: not a face embedding
        nodes, init = [helper.make_node("Identity", ["pixels"], ["embedding"])], []
        y = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", 3, h, w])
    model = helper.make_model(helper.make_graph(nodes, "tiny", [x], [y], init),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return weights


def test_onnx_teacher_prepares_its_input_as_configured(tmp_path, media_dir, detector):
    weights = tiny_onnx(tmp_path / "t.onnx")
    config = tmp_path / "teacher.toml"
    config.write_text('[teacher]\ncolor = "BGR"\nmean = 127.5\nstd = 64\n')
    teacher = load_teacher(f"onnx:{tmp_path}/t.onnx", config=config, options={"alignment": "box", "box_margin": 0.2})
    assert teacher.dim == 16 and teacher.spec.layout == "NCHW" and teacher.spec.size == (20, 24)
    faces = [largest_face(media_dir / n, detector) for n in ("obama.jpg", "biden.jpg")]
    got = teacher.run([teacher.prepare(img, det) for img, det in faces])  # one batch of 2 (dynamic batch)
    for (img, det), vec in zip(faces, got):
        m = box_transform(det.box, (20, 24), 0.2)
        crop = cv2.warpAffine(img, m, (20, 24), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        x = (crop[..., ::-1].astype(np.float32) - 127.5) / 64.0
        assert np.allclose(vec, x.transpose(2, 0, 1).reshape(-1) @ weights, rtol=1e-4, atol=1e-3)
    assert teacher.identity()["input"]["color"] == "BGR" and len(teacher.model_sha256) == 64


def test_uint8_onnx_teacher_gets_the_pixels_and_refuses_normalisation(tmp_path, media_dir, detector):
    weights = tiny_onnx(tmp_path / "u8.onnx", uint8=True)
    for options in ({"mean": 127.5}, {"std": 128}, {"scale": 1 / 255}):
        # (pixel - 127.5) cast to uint8 would wrap: a dark pixel, -100, would reach the model as 156
        with pytest.raises(UserError, match=r"u8\.onnx takes uint8 pixels \(0\.\.255\) and normalises them itself: "
                                            "drop the teacher's mean/std/scale/offset options"):
            load_teacher(f"onnx:{tmp_path}/u8.onnx", options=options)
    teacher = load_teacher(f"onnx:{tmp_path}/u8.onnx", options={"alignment": "box"})
    image, det = largest_face(media_dir / "obama.jpg", detector)
    (vec,) = teacher.run([teacher.prepare(image, det)])
    crop = cv2.warpAffine(image, box_transform(det.box, (20, 24)), (20, 24), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    assert np.allclose(vec, crop.astype(np.float32).transpose(2, 0, 1).reshape(-1) @ weights, rtol=1e-4, atol=1e-2)


def test_dlib_jitters_must_be_whole():
    with pytest.raises(UserError, match=r"teacher option jitters must be a whole number \(dlib's num_jitters\), "
                                        r"got 1\.5"):
        load_teacher("dlib", options={"jitters": 1.5})


def test_onnx_load_errors_keep_their_first_line():
    from edgeface.distill.teachers import _first_line

    assert _first_line(RuntimeError("Load model failed: bad protobuf\n  at line 3 of parser.cc")) == \
        "Load model failed: bad protobuf"
    assert _first_line(RuntimeError("")) == "RuntimeError"


def test_tflite_teacher_aligns_to_its_template_and_scales_pixels(tmp_path, media_dir, detector):
    import keras

    from edgeface.converters.convert import batch_one, make_converter, run_converter
    from edgeface.converters.formats import get_format
    from edgeface.runtime.align import TEMPLATE_112, alignment_points, umeyama

    weights = np.random.default_rng(1).standard_normal((24 * 20 * 3, 16)).astype(np.float32) / 100
    inp = keras.Input((24, 20, 3))
    dense = keras.layers.Dense(16, use_bias=False)
    model = keras.Model(inp, dense(keras.layers.Flatten()(inp)))
    dense.set_weights([weights])
    (tmp_path / "t.tflite").write_bytes(run_converter(make_converter(batch_one(model), get_format("fp32"))))

    teacher = load_teacher(f"{tmp_path}/t.tflite", options=parse_option_pairs(["scale=0.0078125", "offset=-1"]))
    assert teacher.kind == "tflite" and teacher.dim == 16 and teacher.spec.layout == "NHWC"
    image, det = largest_face(media_dir / "obama.jpg", detector)
    # The ArcFace template (mouth corners averaged) scaled from 112x112 to the model's 20 wide, 24 high input.
    matrix = umeyama(alignment_points(det.keypoints), TEMPLATE_112 * np.array([20 / 112, 24 / 112], np.float32))
    crop = cv2.warpAffine(image, matrix, (20, 24), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    expected = (crop.astype(np.float32) / 128.0 - 1.0).reshape(-1) @ weights
    # the runtime's embedder gives unit vectors (distillation normalises every teacher's anyway)
    assert np.allclose(teacher.embed(image, det), expected / np.linalg.norm(expected), rtol=1e-3, atol=1e-3)


# --- the cache ---------------------------------------------------------------------------------------


def test_cache_keys_on_teacher_and_content(tmp_path):
    path = tmp_path / "c.sqlite"
    v = np.arange(4, dtype=np.float32)
    with EmbeddingCache(path, {"kind": "a"}, 4) as c:
        c.put_many({"img1": v})
    with EmbeddingCache(path, {"kind": "a"}, 4) as c:
        assert np.array_equal(c.get("img1"), v) and c.get("img2") is None and (c.hits, c.misses) == (1, 1)
    with EmbeddingCache(path, {"kind": "b"}, 4) as c:  # another teacher never sees a's vectors
        assert c.get("img1") is None and len(c) == 0
    with pytest.raises(UserError, match="cached with 4-d vectors, it now gives 8-d"):
        EmbeddingCache(path, {"kind": "a"}, 8)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(UserError, match="is not an edgeface teacher-embedding cache"):
        EmbeddingCache(junk, {"kind": "a"}, 4)


def test_cache_keeps_committed_batches_when_killed_mid_write(tmp_path):
    path = tmp_path / "c.sqlite"
    code = (
        "import os, numpy as np\n"
        "from edgeface.distill.cache import EmbeddingCache\n"
        f"c = EmbeddingCache({str(path)!r}, {{'kind': 'a'}}, 4)\n"
        "c.put_many({'done': np.ones(4, np.float32)})\n"
        "c.conn.execute('BEGIN')\n"
        "c.conn.execute('INSERT INTO embeddings VALUES (?, ?, ?)', (c.teacher_id, 'half', b'0000' * 4))\n"
        "os._exit(3)  # killed before the second batch commits\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    with EmbeddingCache(path, {"kind": "a"}, 4) as c:
        assert c.keys() == {"done"}


# --- the dlib teacher, for real ------------------------------------------------------------------------


def test_dlib_teacher_embeddings_are_cached_and_tell_people_apart(media_dir, tmp_path, detector):
    from edgeface.runtime.detector import create_detector

    teacher = load_teacher("dlib")
    items = [ddata.ImageItem(media_dir / f"{n}.jpg") for n in ("obama", "obama2", "biden")]
    identity = ddata.cache_identity(teacher, detector)
    path = tmp_path / "cache.sqlite"

    def make():
        return create_detector("short", threads=1)

    with EmbeddingCache(path, identity, teacher.dim) as cache:
        first = ddata.collect(items, teacher, cache, make)
    assert (first.teacher_computed, first.cache_hits, len(first)) == (3, 0, 3)
    with EmbeddingCache(path, identity, teacher.dim) as cache:
        stored = cache.get_many([image_sha256(it.path) for it in items])
        second = ddata.collect(items, teacher, cache, make)
    assert (second.teacher_computed, second.cache_hits) == (0, 3)
    obama, obama2, biden = (stored[image_sha256(it.path)] for it in items)
    # dlib's own convention: Euclidean distance, same person below 0.6.
    assert np.linalg.norm(obama - obama2) < 0.6 < np.linalg.norm(obama - biden)
    assert np.array_equal(second.teacher, first.teacher)


# --- data --------------------------------------------------------------------------------------------


def test_scan_takes_flat_and_identity_folders_and_refuses_crops(tmp_path, media_dir):
    shutil.copy(media_dir / "obama.jpg", tmp_path / "a.jpg")
    (tmp_path / "Joe").mkdir()
    (tmp_path / "Ann").mkdir()
    shutil.copy(media_dir / "biden.jpg", tmp_path / "Joe" / "1.jpg")
    shutil.copy(media_dir / "obama2.jpg", tmp_path / "Ann" / "1.jpg")
    items = ddata.scan_images(tmp_path, exclude={"Ann"})
    assert [(it.path.name, it.identity) for it in items] == [("a.jpg", None), ("1.jpg", "Joe")]
    (tmp_path / "manifest.jsonl").write_text("{}\n")
    with pytest.raises(UserError, match="holds aligned crops from `edgeface data prepare`"):
        ddata.scan_images(tmp_path)


# --- the loss --------------------------------------------------------------------------------------------


def test_distill_loss_terms_match_a_numpy_computation():
    import math

    from edgeface.distill.losses import DistillLoss, TeacherCosine

    rng = np.random.default_rng(0)

    def unit(a):
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    n, dt, ds, c = 5, 6, 4, 3
    teacher, pred, emb = unit(rng.standard_normal((n, dt))), unit(rng.standard_normal((n, dt))), \
        unit(rng.standard_normal((n, ds)))
    logits = np.clip(rng.standard_normal((n, c)) * 0.5, -0.99, 0.99)
    labels = np.array([0, 2, 1, 0, 2])
    y_true = np.concatenate([teacher, labels[:, None]], axis=1).astype(np.float32)
    y_pred = np.concatenate([pred, emb, logits], axis=1).astype(np.float32)

    cos = 1 - np.sum(pred * teacher, axis=1)
    mse = np.mean((pred - teacher) ** 2, axis=1)
    diff = (emb @ emb.T - teacher @ teacher.T) ** 2
    np.fill_diagonal(diff, 0)
    structure = diff.sum(axis=1) / (n - 1)
    z = logits.copy()
    theta = np.arccos(z[np.arange(n), labels])
    z[np.arange(n), labels] = np.cos(theta + 0.5)  # ArcFace m2 = 0.5 (all angles here stay below pi - 0.5)
    z *= 64.0
    margin = -(z[np.arange(n), labels] - np.log(np.exp(z).sum(axis=1)))

    def per_sample(**kw):
        return np.asarray(DistillLoss(dt, ds, **kw).call(y_true, y_pred))

    assert np.allclose(per_sample(kind="cosine"), cos, atol=1e-5)
    assert np.allclose(per_sample(kind="mse"), mse, atol=1e-6)
    assert np.allclose(per_sample(kind="cosine", structure=0.5), cos + 0.5 * structure, atol=1e-5)
    assert np.all(np.arccos(logits[np.arange(n), labels]) < math.pi - 0.5)
    assert np.allclose(per_sample(kind="cosine", labels=0.1, scale=64.0, m2=0.5), cos + 0.1 * margin, rtol=1e-4,
                       atol=1e-3)
    metric = TeacherCosine(dt, ds)
    metric.update_state(y_true, y_pred)
    assert float(metric.result()) == pytest.approx(float(np.mean(1 - cos)), abs=1e-5)


# --- the distillation run ------------------------------------------------------------------------------


def test_distilling_on_att_raises_agreement_with_the_teacher_and_rank1(trained_model, att_dir, tmp_path):
    """MobileFaceNet student (64x64, 64-d: a projection head bridges the 128-d teacher) taught by the
    `trained_model` fixture on raw AT&T photos; 30 % of each person's faces held out."""
    import keras

    from edgeface.evaluate.protocols import rank1
    from edgeface.runtime.align import align_face
    from edgeface.runtime.images import read_image

    run = tmp_path / "run"
    args = ["distill", str(att_dir), "--teacher", f"keras:{trained_model}", "--out", str(run), "--cache",
            str(tmp_path / "cache.sqlite"), "--arch", "mobilefacenet", "--input-size", "64", "--embedding-dim", "64",
            "--epochs", "8", "--batch-size", "32", "--val-split", "0.3", "--structure", "0.5", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout)
    m = r["metrics"]
    assert r["data"]["faces"] >= 390 and r["data"]["teacher_computed"] == r["data"]["faces"]
    assert r["val_images"] >= 110 and r["teacher_dim"] == 128 and r["student_dim"] == 64
    # The untrained student is unrelated to the teacher (cosine ~0) and near chance at rank-1.
    assert abs(m["val_teacher_cosine_start"]) < 0.15 and m["val_rank1_start"] < 0.2
    assert m["val_teacher_cosine"] > m["val_teacher_cosine_start"] + 0.3
    # Rank-1 over these 120 held-out faces is noisy: two runs whose BatchNorm statistics differed by 2e-6 (the same
    # mean computed in another order) ended at 0.258 and 0.200 from 0.075, with the same teacher cosine (0.439).
    assert m["val_rank1"] > m["val_rank1_start"] + 0.1

    # The saved model is the plain embedding network (no projection, head or augmentation) and its rank-1 on the
    # held-out photos, recomputed here from the raw images, is the one reported.
    model = keras.saving.load_model(run / "model.keras", compile=False)
    assert model.output_shape == (None, 64)
    assert not any(layer.name in ("projection", "head") or layer.name.startswith("aug_") for layer in model.layers)
    held = set(json.loads((run / "split.json").read_text())["val"])
    from edgeface.runtime.detector import create_detector

    det = create_detector("short", threads=1)
    crops, labels, is_val = [], [], []
    for person in sorted(p for p in att_dir.iterdir() if p.is_dir()):
        for f in sorted(person.iterdir()):
            image = read_image(f)
            faces = det.detect(image)
            if faces:
                crops.append(align_face(image, max(faces, key=lambda d: d.area).keypoints, 64))
                labels.append(person.name)
                is_val.append(f"{person.name}/{f.name}" in held)
    emb = model.predict(np.stack(crops).astype(np.float32), verbose=0)
    labels, is_val = np.array(labels), np.array(is_val)
    ours = rank1(emb[~is_val], labels[~is_val], emb[is_val], labels[is_val])
    assert ours == pytest.approx(m["val_rank1"], abs=1.5 / is_val.sum())

    train_json = json.loads((run / "train.json").read_text())
    assert train_json["task"] == "distillation" and train_json["teacher"]["spec"] == f"keras:{trained_model}"
    assert train_json["loss"]["projection"] is True and train_json["epochs_run"] == 8
    assert "teacher_cosine" in (run / "log.csv").read_text().splitlines()[0]

    # tests/benchmarks/checkpoint_backbone.py (README's per-epoch curve) pulls the same network out of the training
    # checkpoint: every trainable weight equal to model.keras's; only BatchNorm's statistics may differ.
    import importlib.util

    spec = importlib.util.spec_from_file_location("checkpoint_backbone",
                                                  Path(__file__).parent / "benchmarks" / "checkpoint_backbone.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main([str(run / "checkpoints" / "last.keras"), "--out", str(tmp_path / "ep8.keras")]) == 0
    pulled = keras.saving.load_model(tmp_path / "ep8.keras", compile=False)
    assert pulled.input_shape == model.input_shape and pulled.output_shape == (None, 64)
    assert len(pulled.trainable_weights) == len(model.trainable_weights) > 50
    for w_pulled, w_saved in zip(pulled.trainable_weights, model.trainable_weights):
        np.testing.assert_array_equal(np.asarray(w_pulled), np.asarray(w_saved))


# --- bad input: one line, exit 2 -------------------------------------------------------------------------


@pytest.fixture
def bad(tmp_path, media_dir):
    tiny_onnx(tmp_path / "ok.onnx")
    tiny_onnx(tmp_path / "image.onnx", out="image")
    tiny_onnx(tmp_path / "u8.onnx", uint8=True)
    (tmp_path / "notes.onnx").write_text("these are my notes, not a model\n")
    (tmp_path / "notes.tflite").write_text("these are my notes, not a model\n")
    faceless = tmp_path / "faceless"
    faceless.mkdir()
    ramp = np.tile(np.linspace(0, 255, 160, dtype=np.uint8)[None, :, None], (120, 1, 3))
    for i, img in enumerate((np.full((120, 160, 3), 128, np.uint8), ramp, 255 - ramp)):
        cv2.imwrite(str(faceless / f"{i}.png"), img)
    flat = tmp_path / "flat"
    flat.mkdir()
    (tmp_path / "people.txt").write_text("Barack_Obama\nJoe_Biden\n")
    for n in ("obama", "biden"):
        shutil.copy(media_dir / f"{n}.jpg", flat / f"{n}.jpg")
    from edgeface.runtime.detector import find_blazeface_file

    return {"dir": str(tmp_path), "faceless": str(faceless), "flat": str(flat),
            "blazeface": str(find_blazeface_file("short")), "media": str(media_dir)}


@pytest.mark.parametrize("args, message", [
    (["{flat}", "--teacher", "dlb"], "unknown teacher 'dlb' (did you mean 'dlib'?)"),
    (["{flat}", "--teacher", "onnx:{dir}/notes.onnx"], "cannot load {dir}/notes.onnx as an ONNX model"),
    (["{flat}", "--teacher", "tflite:{dir}/notes.tflite"], "cannot load {dir}/notes.tflite as a TFLite model"),
    (["{flat}", "--teacher", "tflite:{blazeface}"],
     "{blazeface} is not a face-embedding model: its output shape is (1, 896, 16), expected (1, D)"),
    (["{flat}", "--teacher", "onnx:{dir}/image.onnx"],
     "{dir}/image.onnx is not an embedding model: its output 'embedding' has shape (1, 3, 24, 20)"),
    (["{faceless}", "--teacher", "onnx:{dir}/ok.onnx"],
     "no faces found in {faceless}: 3 image(s), 3 without a detectable face, 0 unreadable"),
    (["{flat}", "--teacher", "onnx:{dir}/ok.onnx", "--labels", "0.5"], "--labels needs identity folders"),
    (["{flat}", "--teacher", "onnx:{dir}/ok.onnx", "--exclude-people", "{dir}/people.txt"],
     "--exclude-people needs identity folders: {flat} has no <person>/ folders"),
    (["{flat}", "--teacher", "dlib", "--margin", "0.3"], "--margin set the margin head, which only --labels trains"),
    (["{flat}", "--teacher", "dlib", "--labels", "1", "--head", "cosface", "--scale", "nan"],
     "head scale must be a finite number > 0, got nan"),
    (["{flat}", "--teacher", "onnx:{dir}/ok.onnx", "--teacher-option", "colour=BGR"],
     "unknown teacher option 'colour' (did you mean 'color'?)"),
    (["{flat}", "--teacher", "onnx:{dir}/u8.onnx", "--teacher-option", "mean=127.5"],
     "{dir}/u8.onnx takes uint8 pixels (0..255) and normalises them itself"),
    (["{flat}", "--teacher", "dlib", "--teacher-option", "jitters=1.5"],
     "teacher option jitters must be a whole number"),
    (["{dir}/nope", "--teacher", "dlib"], "dataset folder not found: {dir}/nope"),
    (["{flat}", "--teacher", "dlib", "--loss", "cosin"], "unknown distillation loss 'cosin' (did you mean 'cosine'?)"),
])
def test_cli_bad_input_is_one_line_and_exit_2(bad, args, message):
    out = Path(bad["dir"]) / "run"
    result = runner.invoke(app, ["distill", *[a.format(**bad) for a in args], "--out", str(out),
                                 "--cache", f"{bad['dir']}/cache.sqlite", "--epochs", "1"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message.format(**bad) in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert not (out / "model.keras").exists()


@pytest.mark.slow
def test_resume_continues_the_run_and_reuses_the_teacher_cache(trained_model, att_dir, tmp_path):
    run, cache = tmp_path / "run", tmp_path / "cache.sqlite"
    args = ["distill", str(att_dir), "--teacher", f"keras:{trained_model}", "--out", str(run), "--cache", str(cache),
            "--arch", "seed-cnn", "--width", "0.5", "--input-size", "64", "--batch-size", "32", "--val-split", "0.3",
            "--json"]
    first = runner.invoke(app, [*args, "--epochs", "2"])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, [*args, "--epochs", "2"])
    assert again.exit_code == 2 and "already holds a training run: pass --resume" in again.stderr
    resumed = runner.invoke(app, [*args, "--epochs", "4", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    a, b = json.loads(first.stdout), json.loads(resumed.stdout)
    assert b["epochs_run"] == 4 and b["data"]["cache_hits"] == b["data"]["faces"] and b["data"]["teacher_computed"] == 0
    # The baseline is the one measured before the first session, not a re-measurement of the resumed model.
    assert b["metrics"]["val_teacher_cosine_start"] == a["metrics"]["val_teacher_cosine_start"]
    info = json.loads((run / "train.json").read_text())
    assert [h["epoch"] for h in info["history"]] == [1, 2, 3, 4]
    # The student is built at the asked width, in training and in the saved model.
    assert info["model"]["width"] == 0.5
    from edgeface.nn.loading import load_embedding_model

    assert load_embedding_model(run / "model.keras").get_layer("conv1").filters == 16
    changed = runner.invoke(app, [*args, "--epochs", "5", "--resume", "--loss", "mse"])
    assert changed.exit_code == 2 and "cannot resume" in changed.stderr and "loss was 'cosine'" in changed.stderr
    wider = runner.invoke(app, [*args, "--epochs", "5", "--resume", "--width", "1"])
    assert wider.exit_code == 2 and "its width was 0.5, now 1.0" in wider.stderr


def test_centred_targets_give_a_constant_student_nothing(media_dir, tmp_path):
    """Real dlib embeddings share a common direction; centring removes what a collapsed student could copy."""
    from edgeface.distill.distill import teacher_targets
    from edgeface.runtime.detector import create_detector
    from edgeface.runtime.images import read_image

    teacher = load_teacher("dlib")
    det = create_detector("short")
    vecs = []
    for name in ("obama.jpg", "obama2.jpg", "biden.jpg", "obama-480p.jpg", "two_people.jpg", "lin-manuel-miranda.png",
                 "alex-lacamoire.png"):
        image = read_image(media_dir / name)
        for d in det.detect(image):
            vecs.append(teacher.embed(image, d))
    vecs = np.stack(vecs)
    idx = np.arange(len(vecs))
    raw, raw_floor = teacher_targets(vecs, idx, center=False)
    centred, floor = teacher_targets(vecs, idx, center=True)
    assert raw_floor > 0.6  # one fixed vector already "matches" dlib this well: the collapse the centring prevents
    assert abs(floor) < 0.3 and floor < raw_floor - 0.4
    np.testing.assert_allclose(np.linalg.norm(centred, axis=1), 1.0, atol=1e-5)
    # who is who survives: Obama's two photos stay closer to each other than to Biden's
    o1, o2, b = centred[0], centred[1], centred[2]
    assert o1 @ o2 > o1 @ b


@pytest.mark.slow  # ~1-3 min: three distillations; train's mid-epoch resume (test_resume) runs by default
def test_distill_resumes_inside_an_epoch_with_the_weights_of_an_unbroken_run(trained_model, att_dir, tmp_path):
    """--checkpoint-every reaches distill too: stopped after step 3 (of 2 epochs of 2 steps), resumed, the final
    checkpoint holds bit for bit the arrays of a run never stopped (same process, same CPU threads)."""
    from test_resume import _checkpoint_arrays, _Stop, _stop_after

    from edgeface.distill.distill import DistillConfig, distill

    people = tmp_path / "people.txt"
    people.write_text("".join(f"s{i}\n" for i in range(7, 41)))  # 6 people, 60 photos

    def config(name, **kw):
        return DistillConfig(data=att_dir, out=tmp_path / name, teacher=f"keras:{trained_model}",
                             cache=tmp_path / "cache.sqlite", arch="seed-cnn", width=0.5, input_size=64,
                             batch_size=24, epochs=2, exclude_people=str(people), seed=3, **kw)

    whole = distill(config("whole"))
    with pytest.raises(_Stop):
        distill(config("cut", checkpoint_every=1), progress=_stop_after(3))
    state = json.loads((tmp_path / "cut" / "checkpoints" / "state.json").read_text())
    assert (state["epoch"], state["step"]) == (1, 1)
    resumed = distill(config("cut", checkpoint_every=1, resume=True))
    a, b = _checkpoint_arrays(whole.run_dir), _checkpoint_arrays(resumed.run_dir)
    assert a.keys() == b.keys() and not [k for k in a if not np.array_equal(a[k], b[k])]
