"""Evaluation: protocols against hand computations, pairs on real LFW faces, Keras vs TFLite, the CLI."""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeface.cli import app
from edgeface.errors import UserError
from edgeface.evaluate import protocols
from edgeface.evaluate.pairs import PairImages, centre_crop, read_pairs
from edgeface.evaluate.verification import (
    THRESHOLD_OTHER_FOLDS,
    THRESHOLD_TEST_FOLD,
    evaluate_identification,
    evaluate_pairs,
)

runner = CliRunner()


# --- protocols: pure numpy, checked against hand computations -------------------------------------


def test_best_threshold_picks_the_lowest_of_equally_good_midpoints():
    # Accept if score >= t.  Cuts: t=0.55 -> 5/6 correct (impostors 0.5, 0.4 rejected, 0.7 accepted),
    # t=0.75 -> 5/6 too (genuine 0.6 rejected); the lower one wins.  Accept-all or none: 3/6.
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    same = [True, True, False, True, False, False]
    threshold, accuracy = protocols.best_threshold(scores, same)
    assert threshold == pytest.approx(0.55)
    assert accuracy == pytest.approx(5 / 6)
    assert protocols.accuracy_at(scores, same, threshold) == pytest.approx(5 / 6)


def test_best_threshold_keeps_tied_scores_on_one_side():
    # Every score equal: the only cuts are "accept all" (2/4) and "accept none" (2/4).
    threshold, accuracy = protocols.best_threshold([0.3, 0.3, 0.3, 0.3], [True, False, True, False])
    assert accuracy == pytest.approx(0.5)
    assert threshold == pytest.approx(0.3)


def test_kfold_chooses_each_threshold_on_the_other_folds():
    # Three folds of four pairs.  Worked by hand (accept if score >= t):
    #  fold 1 tested, folds 2+3 train: separable between 0.40 and 0.47 -> t = 0.435 (8/8);
    #      fold 1 at 0.435: 0.9 T ok, 0.7 T ok, 0.6 F wrong, 0.2 F ok -> 0.75
    #  fold 2 tested, folds 1+3 train: 7/8 at t = 0.41 and at t = 0.625, lowest wins -> 0.41;
    #      fold 2 at 0.41: 0.8 T, 0.5 T, 0.4 F, 0.1 F all right -> 1.0
    #  fold 3 tested, folds 1+2 train: 7/8 at t = 0.45 and 0.65 -> 0.45;
    #      fold 3 at 0.45: 0.65 T, 0.47 T, 0.35 F, 0.3 F all right -> 1.0
    scores = [0.9, 0.7, 0.6, 0.2, 0.8, 0.5, 0.4, 0.1, 0.65, 0.47, 0.35, 0.3]
    same = [True, True, False, False] * 3
    folds = [1] * 4 + [2] * 4 + [3] * 4
    kf = protocols.kfold_verification(scores, same, folds)
    assert kf["folds"] == [1, 2, 3]
    assert kf["thresholds"] == pytest.approx([0.435, 0.41, 0.45])
    assert kf["accuracies"] == pytest.approx([0.75, 1.0, 1.0])
    assert kf["mean"] == pytest.approx(2.75 / 3)
    assert kf["std"] == pytest.approx(np.sqrt(((0.75 - 2.75 / 3) ** 2 + 2 * (1 - 2.75 / 3) ** 2) / 3))


def test_kfold_needs_two_folds():
    with pytest.raises(ValueError, match="at least two folds"):
        protocols.kfold_verification([0.1, 0.9], [False, True], [1, 1])


def test_kfold_tar_at_far_sets_each_threshold_on_the_other_folds():
    # fold 1 impostors sit high, fold 2's low: a threshold learnt on one fold misjudges the other
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.95, 0.5, 0.4, 0.85, 0.3, 0.2])
    same = np.array([1, 1, 0, 0, 0, 1, 1, 0, 0, 0], bool)
    folds = np.array([1, 1, 1, 1, 1, 2, 2, 2, 2, 2])
    r = protocols.kfold_tar_at_far(scores, same, folds, far=0.0)
    # fold 1: no impostor of fold 2 may pass -> threshold just above 0.85: TAR 1/2, FAR 1/3 (0.95 passes)
    # fold 2: no impostor of fold 1 may pass -> threshold just above 0.95: TAR 0, FAR 0
    assert r["thresholds"] == [pytest.approx(0.85), pytest.approx(0.95)]
    assert r["tars"] == [0.5, 0.0] and r["fars"] == [pytest.approx(1 / 3), 0.0]
    assert r["tar_mean"] == 0.25 and r["tar_std"] == 0.25 and r["far_mean"] == pytest.approx(1 / 6)


def test_roc_curve_by_hand_with_a_tie():
    # 0.8 is shared by a genuine and an impostor pair: they enter the accepted set together.
    far, tar, thr = protocols.roc_curve([0.9, 0.8, 0.8, 0.3], [True, False, True, False])
    assert thr.tolist() == [np.inf, 0.9, 0.8, 0.3]
    assert tar.tolist() == [0.0, 0.5, 1.0, 1.0]
    assert far.tolist() == [0.0, 0.0, 0.5, 1.0]


def test_auc_equals_the_rank_statistic():
    rng = np.random.default_rng(7)
    genuine = np.round(rng.normal(0.5, 0.2, 300), 1)  # rounding makes many ties
    impostor = np.round(rng.normal(0.2, 0.2, 500), 1)
    scores = np.r_[genuine, impostor]
    same = np.r_[np.ones(300, bool), np.zeros(500, bool)]
    # Direct Mann-Whitney: P(genuine > impostor) + P(tie) / 2 over every genuine x impostor combination.
    diff = genuine[:, None] - impostor[None, :]
    direct = np.mean(diff > 0) + 0.5 * np.mean(diff == 0)
    assert protocols.auc(scores, same) == pytest.approx(direct, abs=1e-12)


def test_threshold_and_tar_at_far_by_hand():
    impostor = np.arange(100) / 100.0  # 0.00 .. 0.99
    genuine = np.array([0.995, 0.985, 0.975, 0.965, 0.5])
    scores = np.r_[genuine, impostor]
    same = np.r_[np.ones(5, bool), np.zeros(100, bool)]
    # FAR 2 %: two of 100 impostors (0.99, 0.98) may pass -> threshold just above 0.97;
    # genuine 0.995, 0.985, 0.975 pass -> TAR 3/5.
    t = protocols.threshold_at_far(scores, same, 0.02)
    assert 0.97 < t <= np.nextafter(0.97, 1)
    assert np.mean(impostor >= t) == pytest.approx(0.02)
    tar, t2 = protocols.tar_at_far(scores, same, 0.02)
    assert (tar, t2) == (pytest.approx(0.6), t)
    # 2.5 % still allows only two impostors; FAR 0 allows none; FAR 1 accepts everything.
    assert protocols.threshold_at_far(scores, same, 0.025) == t
    assert protocols.tar_at_far(scores, same, 0.0)[0] == pytest.approx(0.2)
    assert protocols.tar_at_far(scores, same, 1.0) == (1.0, pytest.approx(0.0))
    # 1e-3 of 3000 impostors is 3 (not 2.9999): a float-rounding trap.
    imp = np.linspace(0, 1, 3000)
    t3 = protocols.threshold_at_far(np.r_[imp, 1.5], np.r_[np.zeros(3000, bool), True], 1e-3)
    assert np.sum(imp >= t3) == 3


def test_rank1_by_hand():
    gallery = np.eye(3, dtype=np.float32)
    probe = np.array([[0.9, 0.1, 0], [0, 0.2, 0.8], [0.6, 0.5, 0]], np.float32)
    assert protocols.rank1(gallery, [0, 1, 2], probe, [0, 2, 1]) == pytest.approx(2 / 3)


# --- pairs files ------------------------------------------------------------------------------------


def test_read_lfw_view2_pairs(lfw_dir):
    pairs = read_pairs(lfw_dir / "pairs.txt")
    assert len(pairs) == 6000
    assert sorted({p.fold for p in pairs}) == list(range(1, 11))
    for k in range(1, 11):
        fold = [p for p in pairs if p.fold == k]
        assert len(fold) == 600 and sum(p.same for p in fold) == 300
    first = pairs[0]
    assert (first.a, first.b, first.same, first.fold) == ("Abel_Pacheco/Abel_Pacheco_0001",
                                                           "Abel_Pacheco/Abel_Pacheco_0004", True, 1)
    assert not pairs[300].same and pairs[300].a.split("/")[0] != pairs[300].b.split("/")[0]


def test_read_lfw_view1_pairs(lfw_dir):
    pairs = read_pairs(lfw_dir / "pairsDevTest.txt")
    assert len(pairs) == 1000 and {p.fold for p in pairs} == {1}
    assert sum(p.same for p in pairs) == 500


@pytest.mark.parametrize("text, message", [
    ("2\t1\nA\t1\t2\nA\t1\tB\t1\nC\t1\t2\nC\t1\tD\t1\tx\n", r"bad\.txt:5: expected 'name i j'"),
    ("2\t1\nA\t1\t2\nA\t1\tB\t1\n", r"bad\.txt:1: header '2 1' promises 4 pairs .* has 2"),
    ("1\nA\tone\t2\nA\t1\tB\t1\n", r"bad\.txt:2: expected"),
    ("\n\n", r"pairs file is empty"),
])
def test_malformed_pairs_file_names_the_line(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        read_pairs(path)


# --- real faces ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lfw_raw(lfw_dir) -> Path:
    return lfw_dir / "lfw-deepfunneled"


@pytest.fixture(scope="module")
def tiny_pairs(lfw_dir, tmp_path_factory) -> Path:
    """Two folds of 8 matched + 8 mismatched pairs taken from LFW's own pairs.txt, in its format."""
    lines = (lfw_dir / "pairs.txt").read_text().splitlines()[1:]
    chosen = []
    for fold in range(2):
        base = fold * 600
        chosen += lines[base : base + 8] + lines[base + 300 : base + 308]
    path = tmp_path_factory.mktemp("pairs") / "tiny_pairs.txt"
    path.write_text("2\t8\n" + "\n".join(chosen) + "\n")
    return path


def _real_crops(lfw_raw: Path, n: int) -> np.ndarray:
    from edgeface.runtime.detector import create_detector
    from edgeface.runtime.faces import detect_and_align
    from edgeface.runtime.images import read_image

    detector = create_detector("short")
    crops = []
    for person in sorted(p for p in lfw_raw.iterdir() if p.name.startswith("B"))[:n]:
        faces = detect_and_align(read_image(next(iter(sorted(person.iterdir())))), detector)
        crops.append(faces[0].crop)
    return np.stack(crops)


@pytest.fixture(scope="module")
def models(lfw_raw, tmp_path_factory) -> dict[str, Path]:
    """A small MobileFaceNet saved as .keras and converted to float32 .tflite.

    Untrained, but its BatchNorm statistics come from real LFW crops (one training-mode
    pass with momentum 0), so the network is well conditioned and both formats must
    agree to float precision.  Identities of these crops (names starting with B) are
    not in the tiny pairs file.
    """
    import keras
    import tensorflow as tf

    from edgeface.train.models import get_model

    keras.utils.set_random_seed(0)
    model = get_model("mobilefacenet", embedding_dim=64, width=0.25)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    model(_real_crops(lfw_raw, 48).astype(np.float32), training=True)
    out = tmp_path_factory.mktemp("models")
    with warnings.catch_warnings():  # Keras' own numpy-2 `__array__` DeprecationWarning while saving weights
        warnings.simplefilter("ignore", DeprecationWarning)
        model.save(out / "tiny.keras")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints a long artifact listing
        (out / "tiny.tflite").write_bytes(converter.convert())
    return {"keras": out / "tiny.keras", "tflite": out / "tiny.tflite"}


@pytest.fixture(scope="module")
def tflite_embedder(models):
    from edgeface.evaluate.embedders import make_embedder

    return make_embedder(models["tflite"])


def _hand_kfold(pairs_file: Path, lfw_raw: Path, embedder) -> list[float]:
    """The LFW protocol written out plainly: align each pair, embed, cosine, then per fold try every
    cut of the other folds' scores (mid-points between neighbours, lowest best wins)."""
    from edgeface.runtime.detector import create_detector
    from edgeface.runtime.faces import detect_and_align
    from edgeface.runtime.images import read_image

    detector = create_detector("short")
    rows = [ln.split() for ln in pairs_file.read_text().splitlines()[1:]]
    n_folds, per_fold = 2, 16
    records = []
    for i, r in enumerate(rows):
        if len(r) == 3:
            files = (f"{r[0]}/{r[0]}_{int(r[1]):04d}.jpg", f"{r[0]}/{r[0]}_{int(r[2]):04d}.jpg")
        else:
            files = (f"{r[0]}/{r[0]}_{int(r[1]):04d}.jpg", f"{r[2]}/{r[2]}_{int(r[3]):04d}.jpg")
        crops = [detect_and_align(read_image(lfw_raw / f), detector)[0].crop for f in files]
        a, b = embedder.embed(np.stack(crops))
        records.append((i // per_fold + 1, float(np.dot(a, b)), len(r) == 3))

    accuracies = []
    for k in range(1, n_folds + 1):
        train = [(s, y) for f, s, y in records if f != k]
        values = sorted({s for s, _ in train})
        cuts = [values[0]] + [(lo + hi) / 2 for lo, hi in zip(values, values[1:])] + [values[-1] + 1]
        best_t, best_correct = None, -1
        for t in cuts:
            correct = sum((s >= t) == y for s, y in train)
            if correct > best_correct:
                best_t, best_correct = t, correct
        test = [(s, y) for f, s, y in records if f == k]
        accuracies.append(sum((s >= best_t) == y for s, y in test) / len(test))
    return accuracies


def test_evaluate_pairs_matches_a_hand_computation(tiny_pairs, lfw_raw, tflite_embedder):
    result = evaluate_pairs(tflite_embedder, read_pairs(tiny_pairs), PairImages(lfw_raw))
    hand = _hand_kfold(tiny_pairs, lfw_raw, tflite_embedder)
    assert result.fold_accuracies == pytest.approx(hand)
    assert result.accuracy_mean == pytest.approx(np.mean(hand))
    assert result.accuracy_std == pytest.approx(np.std(hand))
    assert result.threshold_source == THRESHOLD_OTHER_FOLDS
    assert result.n_pairs == 32 and result.n_genuine == 16 and result.no_face == 0
    assert result.auc == pytest.approx(protocols.auc(result.scores, result.same))
    d = result.to_dict()
    assert "scores" not in d and json.loads(json.dumps(d))["n_pairs"] == 32


def test_one_fold_uses_the_threshold_of_the_other_folds(tiny_pairs, lfw_raw, tflite_embedder):
    pairs, images = read_pairs(tiny_pairs), PairImages(lfw_raw)
    full = evaluate_pairs(tflite_embedder, pairs, images)
    only2 = evaluate_pairs(tflite_embedder, pairs, images, folds=2)
    assert only2.folds == [2] and only2.n_pairs == 16
    assert only2.fold_accuracies == [full.fold_accuracies[1]]
    assert only2.fold_thresholds == [full.fold_thresholds[1]]
    assert only2.accuracy_std is None and full.accuracy_std is not None  # no spread over one fold
    # the cross-validated TAR of fold 2 uses fold 1's threshold at FAR, measured on fold 2's pairs
    kt = protocols.kfold_tar_at_far(full.scores, full.same, full.pair_folds, full.far)
    assert only2.tar_at_far_cv == kt["tars"][1] and only2.far_cv == kt["fars"][1]
    assert full.tar_at_far_cv == pytest.approx(np.mean(kt["tars"]))
    with pytest.raises(UserError, match="folds 1-2; fold 3 does not exist"):
        evaluate_pairs(tflite_embedder, pairs, images, folds=3)


def test_a_single_fold_file_is_labelled_optimistic(tiny_pairs, lfw_raw, tflite_embedder, tmp_path):
    lines = tiny_pairs.read_text().splitlines()[1:17]  # fold 1 of the tiny file: 8 matched, 8 mismatched
    one = tmp_path / "one_fold.txt"
    one.write_text("8\n" + "\n".join(lines) + "\n")
    result = evaluate_pairs(tflite_embedder, read_pairs(one), PairImages(lfw_raw))
    assert result.threshold_source == THRESHOLD_TEST_FOLD
    best_t, best_acc = protocols.best_threshold(result.scores, result.same)
    assert result.accuracy_mean == pytest.approx(best_acc) and result.fold_thresholds == [best_t]


def test_an_embedder_giving_nan_is_refused_not_scored(tiny_pairs, lfw_raw, tflite_embedder):
    class Diverged:
        """What a model trained into NaN weights gives: NaN for some faces."""

        name = "diverged.tflite"

        def embed(self, crops):
            emb = tflite_embedder.embed(crops)
            emb[1::3] = np.nan
            return emb

    with pytest.raises(UserError, match=r"diverged\.tflite gives NaN or infinite embeddings \(\d+ of \d+ faces"):
        evaluate_pairs(Diverged(), read_pairs(tiny_pairs), PairImages(lfw_raw))


def test_each_image_is_decoded_once(tiny_pairs, lfw_raw, tflite_embedder, monkeypatch):
    import edgeface.runtime.images as images_mod

    calls = []
    real = images_mod.read_image
    monkeypatch.setattr(images_mod, "read_image", lambda p: calls.append(p) or real(p))
    pairs = read_pairs(tiny_pairs)
    keys = {k for p in pairs for k in (p.a, p.b)}
    assert len(keys) < 2 * len(pairs)  # LFW reuses images across pairs
    images = PairImages(lfw_raw)
    evaluate_pairs(tflite_embedder, pairs, images)
    assert len(calls) == len(keys)
    evaluate_pairs(tflite_embedder, pairs, images, folds=1)  # cached: no image read again
    assert len(calls) == len(keys)


def test_keras_and_its_tflite_conversion_give_the_same_accuracy(models, tiny_pairs, lfw_raw):
    from edgeface.evaluate.embedders import make_embedder

    pairs, images = read_pairs(tiny_pairs), PairImages(lfw_raw)
    keras_emb, tflite_emb = make_embedder(models["keras"]), make_embedder(models["tflite"])
    assert (keras_emb.kind, tflite_emb.kind) == ("keras", "tflite")
    r_keras = evaluate_pairs(keras_emb, pairs, images)
    r_tflite = evaluate_pairs(tflite_emb, pairs, images)
    np.testing.assert_allclose(r_keras.scores, r_tflite.scores, atol=1e-4)
    assert r_keras.fold_accuracies == r_tflite.fold_accuracies
    assert r_keras.auc == pytest.approx(r_tflite.auc, abs=1e-3)
    crops = np.stack(images.crops([pairs[0].a, pairs[0].b]))
    for emb in (keras_emb, tflite_emb):
        out = emb.embed(crops)
        assert out.dtype == np.float32 and out.shape == (2, 64)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_prepared_crops_give_the_same_faces_as_raw_images(lfw_raw, tiny_pairs, tmp_path):
    from edgeface.data.prepare import PrepareConfig, prepare

    pairs = read_pairs(tiny_pairs)[:4]
    people = sorted({k.split("/")[0] for p in pairs for k in (p.a, p.b)})
    src = tmp_path / "src"
    src.mkdir()
    for name in people:
        os.symlink(lfw_raw / name, src / name)
    prepare(PrepareConfig(src=src, out=tmp_path / "crops", workers=1))
    keys = [k for p in pairs for k in (p.a, p.b)]
    prepared, raw = PairImages(tmp_path / "crops"), PairImages(lfw_raw)
    assert prepared.prepared and not raw.prepared
    for a, b in zip(prepared.crops(keys), raw.crops(keys)):
        assert a.shape == (112, 112, 3) and np.array_equal(a, b)


def test_no_face_falls_back_to_a_centre_crop_and_is_counted(lfw_raw, tflite_embedder, tmp_path):
    from edgeface.runtime.images import read_image, write_image

    root = tmp_path / "raw"
    for name in ("Aaron_Peirsol", "Nobody"):
        (root / name).mkdir(parents=True)
    blank = np.full((250, 250, 3), 128, np.uint8)
    write_image(root / "Nobody" / "Nobody_0001.jpg", blank)
    for i in (1, 2):
        src = lfw_raw / "Aaron_Peirsol" / f"Aaron_Peirsol_000{i}.jpg"
        (root / "Aaron_Peirsol" / src.name).write_bytes(src.read_bytes())
    (tmp_path / "p.txt").write_text("1\nAaron_Peirsol\t1\t2\nAaron_Peirsol\t1\tNobody\t1\n")
    images = PairImages(root)
    result = evaluate_pairs(tflite_embedder, read_pairs(tmp_path / "p.txt"), images)
    assert result.n_pairs == 2 and result.no_face == 1 and result.no_face_images == ["Nobody/Nobody_0001"]
    expected = centre_crop(read_image(root / "Nobody" / "Nobody_0001.jpg"))
    assert np.array_equal(images.crops(["Nobody/Nobody_0001"])[0], expected)


def test_prepared_folder_without_a_crop(tmp_path, lfw_raw):
    from edgeface.runtime.images import read_image, write_image

    root = tmp_path / "crops"
    (root / "A").mkdir(parents=True)
    face = centre_crop(read_image(lfw_raw / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"))
    write_image(root / "A" / "A_0001.png", face)
    (root / "manifest.jsonl").write_text(json.dumps({"source": "A/A_0001.jpg", "crop": "A/A_0001.png"}) + "\n")
    (root / "skipped.log").write_text("no_face\tA/A_0002.jpg\t\n")
    images = PairImages(root)
    crop, missing = images.crops(["A/A_0001", "A/A_0002"])
    assert crop.shape == (112, 112, 3) and missing is None and images.no_face == {"A/A_0002"}
    with pytest.raises(UserError, match="image 'A/A_0003' not found"):
        images.crops(["A/A_0003"])


# --- identification -------------------------------------------------------------------------------------


def test_rank1_identification_matches_a_hand_computation(att_dir, tflite_embedder, tmp_path):
    from edgeface.runtime.detector import create_detector
    from edgeface.runtime.faces import detect_and_align
    from edgeface.runtime.images import read_image

    gallery, probe = tmp_path / "gallery", tmp_path / "probe"
    for person in [f"s{i}" for i in range(1, 7)]:
        for folder, shots in ((gallery, (1, 2, 3)), (probe, (4, 5))):
            (folder / person).mkdir(parents=True)
            for n in shots:
                os.symlink(att_dir / person / f"{n}.pgm", folder / person / f"{n}.pgm")
    (probe / "s7").mkdir()
    os.symlink(att_dir / "s7" / "4.pgm", probe / "s7" / "4.pgm")  # not enrolled: left out of a closed set
    os.symlink(att_dir / "s1" / "1.pgm", probe / "s1" / "1.pgm")  # a gallery photo: would match itself at 1.0

    result = evaluate_identification(tflite_embedder, gallery, probe)

    detector = create_detector()  # the default, as evaluate_identification uses

    def embed(path):
        image = read_image(path)
        faces = detect_and_align(image, detector)
        return tflite_embedder.embed((faces[0].crop if faces else centre_crop(image))[None])[0]

    g = [(p.parent.name, embed(p)) for p in sorted(gallery.glob("*/*.pgm"))]
    correct = 0
    probes = sorted(p for p in probe.glob("*/*.pgm") if p.parent.name != "s7" and p.resolve().name != "1.pgm")
    for p in probes:
        e = embed(p)
        correct += max(g, key=lambda item: float(np.dot(item[1], e)))[0] == p.parent.name
    assert result["rank1"] == pytest.approx(correct / len(probes))
    assert (result["n_probe"], result["n_gallery"], result["gallery_identities"]) == (12, 18, 6)
    assert result["probe_unknown_excluded"] == 1 and result["probe_in_gallery_excluded"] == 1
    with pytest.raises(UserError, match="every probe image in .* is also in the gallery"):
        evaluate_identification(tflite_embedder, gallery, gallery)


# --- command line ---------------------------------------------------------------------------------------


def test_cli_json_and_roc(models, tiny_pairs, lfw_raw, tmp_path, tflite_embedder):
    roc = tmp_path / "roc.png"
    args = ["evaluate", str(models["tflite"]), "--pairs", str(tiny_pairs), "--images", str(lfw_raw),
            "--roc", str(roc), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # JSON only on stdout
    expected = evaluate_pairs(tflite_embedder, read_pairs(tiny_pairs), PairImages(lfw_raw))
    assert report["verification"]["accuracy_mean"] == pytest.approx(expected.accuracy_mean)
    assert report["verification"]["tar_at_far"] == pytest.approx(expected.tar_at_far)
    data = roc.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert not list(tmp_path.glob(".*.tmp"))


def test_flip_test_averages_each_face_with_its_mirror(lfw_raw):
    from edgeface.evaluate.embedders import FlipEmbedder, make_embedder
    from edgeface.runtime.bundle import models_dir

    model = models_dir() / "mobilefacenet" / "mobilefacenet_int8.tflite"  # a shipped model: a real face embedding
    plain, flipped = make_embedder(model), make_embedder(model, flip=True)
    assert isinstance(flipped, FlipEmbedder) and flipped.name == "mobilefacenet_int8.tflite (flip test)"
    crops = _real_crops(lfw_raw, 4)
    mirror = crops[:, :, ::-1]
    both = plain.embed(crops) + plain.embed(mirror)
    np.testing.assert_allclose(flipped.embed(crops), both / np.linalg.norm(both, axis=1, keepdims=True), atol=1e-6)
    # A face and its mirror image get one embedding (left/right flip, not up/down), unit length.
    np.testing.assert_allclose(flipped.embed(mirror), flipped.embed(crops), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(flipped.embed(crops), axis=1), 1.0, atol=1e-5)
    # ... which the plain model does not give: the mirror image is a different input to it.
    assert np.min(np.sum(plain.embed(crops) * plain.embed(mirror), axis=1)) < 0.999


def test_cli_flip_test(models, tiny_pairs, lfw_raw, tflite_embedder):
    from edgeface.evaluate.embedders import FlipEmbedder

    args = ["evaluate", str(models["tflite"]), "--pairs", str(tiny_pairs), "--images", str(lfw_raw), "--flip",
            "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    expected = evaluate_pairs(FlipEmbedder(tflite_embedder), read_pairs(tiny_pairs), PairImages(lfw_raw))
    assert report["flip_test"] is True and report["verification"]["model"] == "tiny.tflite (flip test)"
    assert report["verification"]["fold_accuracies"] == pytest.approx(expected.fold_accuracies)
    assert report["verification"]["auc"] == pytest.approx(expected.auc)


def test_cli_table_and_rank1(models, tiny_pairs, lfw_raw, att_dir, tmp_path):
    result = runner.invoke(app, ["evaluate", str(models["tflite"]), "--pairs", str(tiny_pairs),
                                 "--images", str(lfw_raw), "--fold", "1"])
    assert result.exit_code == 0, result.output
    assert "AUC" in result.stdout and "fold 1, 16 pairs" in result.stdout
    assert "threshold for accuracy: best on the other folds" in result.stderr
    gallery, probe = tmp_path / "g", tmp_path / "p"
    for person in ("s1", "s2"):
        for folder, n in ((gallery, 1), (probe, 2)):
            (folder / person).mkdir(parents=True)
            os.symlink(att_dir / person / f"{n}.pgm", folder / person / f"{n}.pgm")
    result = runner.invoke(app, ["evaluate", str(models["tflite"]), "--pairs", str(tiny_pairs),
                                 "--images", str(lfw_raw)])
    assert result.exit_code == 0 and "±" in result.stdout and "per fold" in result.stdout
    result = runner.invoke(app, ["evaluate", str(models["tflite"]), "--gallery", str(gallery), "--probe", str(probe),
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["identification"]["n_probe"] == 2


@pytest.fixture()
def bad_inputs(tmp_path, tiny_pairs, lfw_raw):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"not a flatbuffer")
    (tmp_path / "m.onnx").write_bytes(b"x")
    (tmp_path / "m.keras").write_bytes(b"not a zip")
    (tmp_path / "bad_pairs.txt").write_text("1\nA\t1\t2\nA\t1\n")
    return {"dir": str(tmp_path), "model": str(model), "pairs": str(tiny_pairs), "lfw": str(lfw_raw)}


@pytest.mark.parametrize("args, message", [
    (["{dir}/missing.tflite", "--pairs", "{pairs}", "--images", "{lfw}"], "model file not found"),
    (["{dir}/m.onnx", "--pairs", "{pairs}", "--images", "{lfw}"], "expected a .keras or .tflite file"),
    (["{model}"], "nothing to evaluate"),
    (["{model}", "--pairs", "{dir}/nope.txt", "--images", "{lfw}"], "pairs file not found"),
    (["{model}", "--pairs", "{pairs}"], "--pairs needs --images"),
    (["{model}", "--pairs", "{pairs}", "--images", "{dir}/nope"], "images folder not found"),
    (["{model}", "--pairs", "{dir}/bad_pairs.txt", "--images", "{lfw}"], "bad_pairs.txt:3: expected"),
    (["{model}", "--pairs", "{pairs}", "--images", "{lfw}", "--fold", "11"], "fold 11 does not exist"),
    (["{model}", "--pairs", "{pairs}", "--images", "{lfw}", "--roc", "{dir}/roc.jpg"], "give a .png file"),
    (["{model}", "--pairs", "{pairs}", "--images", "{lfw}", "--far", "2"], "--far must be between 0 and 1"),
    (["{model}", "--gallery", "{dir}"], "needs both --gallery DIR and --probe DIR"),
    (["{model}", "--gallery", "{dir}", "--probe", "{dir}/nope"], "--probe folder not found"),
    (["{model}", "--pairs", "{pairs}", "--images", "{lfw}", "--detector", "tiny"], "unknown detector 'tiny'"),
    (["{model}", "--pairs", "{pairs}", "--images", "{lfw}"], "cannot load"),
    (["{dir}/m.keras", "--pairs", "{pairs}", "--images", "{lfw}"], "cannot load"),
])
def test_cli_bad_input_is_one_line_and_exit_2(bad_inputs, args, message):
    result = runner.invoke(app, ["evaluate", *[a.format(**bad_inputs) for a in args]])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.output
