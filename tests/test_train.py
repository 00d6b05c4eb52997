"""Training on real faces (AT&T crops): margin-head maths, augmentation, the saved model, resume, the mirrored
strategy, the JAX backend and the command line."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from child_code import BLOCK_TENSORFLOW
from typer.testing import CliRunner

from edgeface.cli import app
from edgeface.errors import UserError

# Held-out rank-1 of the `trained_model` fixture (30 people, chance 0.033).  Measured 0.933 (seeds 0 and 1, lr 0.01)
# on an AVX2 AMD EPYC; the bound leaves room for run-to-run and platform differences.
RANK1_BOUND = 0.75
UNSEEN = {f"s{i}" for i in range(31, 41)}

runner = CliRunner()


def _people_file(path: Path, keep: int) -> str:
    """A people file excluding every AT&T person but s1..s<keep>."""
    path.write_text("".join(f"s{i}\n" for i in range(keep + 1, 41)))
    return str(path)


# --------------------------------------------------------------------------- heads


def _numpy_margin_loss(cos, labels, s, m1, m2, m3):
    """Independent reference: angles by arccos, the documented fallback past theta_max, cross-entropy."""
    cos = np.clip(cos.astype(np.float64), -1 + 1e-6, 1 - 1e-6)
    theta = np.arccos(cos)
    theta_max = (math.pi - m2) / m1
    target = np.where(theta <= theta_max, np.cos(m1 * theta + m2) - m3, cos - math.cos(theta_max) - 1 - m3)
    rows = np.arange(len(labels))
    logits = s * cos
    logits[rows, labels] = s * target[rows, labels]
    top = logits.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float(np.mean(lse - logits[rows, labels]))


@pytest.mark.parametrize("s,m1,m2,m3", [(64, 1, 0.5, 0), (64, 1, 0, 0.35), (32, 1, 0.3, 0.2), (16, 1.5, 0.2, 0.1)])
def test_combined_margin_loss_matches_numpy(s, m1, m2, m3):
    from edgeface.train.heads import CombinedMarginLoss

    rng = np.random.default_rng(0)
    cos = rng.uniform(-1, 1, (32, 10)).astype(np.float32)
    cos[:4] = rng.uniform(-1, -0.9, (4, 10))  # angles past theta_max: the fallback branch
    labels = rng.integers(0, 10, 32)
    got = float(np.asarray(CombinedMarginLoss(s, m1, m2, m3)(labels, cos)))
    assert got == pytest.approx(_numpy_margin_loss(cos, labels, s, m1, m2, m3), rel=1e-4)


def test_margin_target_by_hand_and_monotonic():
    from keras import ops

    from edgeface.train.heads import margin_target

    # ArcFace at theta = 60 degrees: cos(pi/3 + 0.5); CosFace: cos(theta) - 0.35.
    assert float(margin_target(ops.convert_to_tensor([0.5]), 1.0, 0.5, 0.0)[0]) == pytest.approx(
        math.cos(math.pi / 3 + 0.5), abs=1e-5)
    assert float(margin_target(ops.convert_to_tensor([0.5]), 1.0, 0.0, 0.35)[0]) == pytest.approx(0.15, abs=1e-6)
    cos = np.cos(np.linspace(0, math.pi, 721)).astype(np.float32)
    for m in ((1.0, 0.5, 0.0), (1.0, 0.3, 0.2), (1.5, 0.2, 0.1)):
        t = np.asarray(margin_target(ops.convert_to_tensor(cos), *m))
        # Decreasing in theta everywhere: a worse angle never earns a larger target logit.
        assert np.all(np.diff(t) <= 1e-6), m
        assert np.all(t <= cos + 1e-6), m  # a margin only ever makes the target harder


def test_head_layers_match_numpy_logits():
    import keras

    from edgeface.train.heads import HEADS, build_head, head_logits_numpy

    feats = np.random.default_rng(1).normal(size=(6, 16)).astype(np.float32)
    for name in ("softmax", "arcface"):
        layer = build_head(HEADS[name], 5)
        out = np.asarray(layer(keras.ops.convert_to_tensor(feats)))
        ref = head_logits_numpy(HEADS[name], [np.asarray(w) for w in layer.get_weights()], feats)
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
        if HEADS[name].margin:
            assert np.all(np.abs(out) <= 1 + 1e-5)  # cosines


def test_unknown_head_and_bad_margins_are_user_errors():
    from edgeface.train.heads import get_head_spec, resolve_margins

    with pytest.raises(UserError, match=r"unknown head 'arcfce' \(did you mean 'arcface'\?\)"):
        get_head_spec("arcfce")
    with pytest.raises(UserError, match="margins need m1 >= 1"):
        resolve_margins(get_head_spec("cosface"), margin=-0.1)
    assert resolve_margins(get_head_spec("arcface"), scale=30, margin=0.4).m2 == 0.4
    # NaN passes every comparison, so each bound has to ask for a finite number first
    for kwargs in ({"scale": float("nan")}, {"scale": float("inf")}, {"margin": float("nan")},
                   {"margins": (1.0, float("inf"), 0.0)}, {"margins": (float("nan"), 0.0, 0.35)}):
        with pytest.raises(UserError, match="finite"):
            resolve_margins(get_head_spec("cosface"), **kwargs)
    with pytest.raises(UserError, match="--head softmax has no margin or scale: drop --margin"):
        resolve_margins(get_head_spec("softmax"), margin=0.3)


def test_a_loss_that_turns_nan_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    import keras

    from edgeface.train.loop import RunFiles, fit, new_state

    class Batches(keras.utils.PyDataset):
        """Four batches of regression data; once ``poisoned``, every batch holds a NaN."""

        def __init__(self):
            super().__init__()
            self.poisoned = False
            rng = np.random.default_rng(0)
            self.x = rng.normal(size=(4, 8, 3)).astype("float32")
            self.y = rng.normal(size=(4, 8, 1)).astype("float32")

        def __len__(self):
            return 4

        def __getitem__(self, i):
            x = self.x[i].copy()
            if self.poisoned:
                x[0, 0] = np.nan
            return x, self.y[i]

    data = Batches()

    def poison_after_epoch_1(event):
        if event.phase == "epoch" and event.epoch == 1:
            data.poisoned = True

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    run = RunFiles(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    state = new_state({"arch": "dense"}, "loss")
    with pytest.raises(UserError, match=r"training diverged: the loss became nan at epoch 2, batch 1; the checkpoint "
                                        r"of epoch 1 is kept"):
        fit(model, data, None, run, epochs=5, monitor="loss", patience=0, state=state, progress=poison_after_epoch_1)
    saved = json.loads(run.state.read_text())
    assert saved["epoch"] == 1 and len(saved["history"]) == 1
    last = keras.models.load_model(run.last)
    assert all(np.isfinite(w).all() for w in last.get_weights())


# --------------------------------------------------------------------------- data and augmentation


def test_stratified_split_holds_out_a_share_of_every_identity():
    from edgeface.train.data import stratified_split

    labels = np.repeat(np.arange(5), [10, 10, 3, 2, 1])
    tr, held = stratified_split(labels, 0.3, seed=0)
    assert sorted(np.concatenate([tr, held]).tolist()) == list(range(len(labels)))
    assert np.bincount(labels[held], minlength=5).tolist() == [3, 3, 1, 1, 0]  # the singleton stays in training
    assert np.array_equal(stratified_split(labels, 0.3, seed=0)[1], held)


def test_augmentation_acts_in_training_only_and_each_kind_switches(att_crops):
    import keras

    from edgeface.data.dataset import load_crops
    from edgeface.train.augment import AugmentConfig, augmentation_layers, is_augmentation_layer

    x = load_crops(att_crops, exclude={f"s{i}" for i in range(2, 41)}).images[:8].astype(np.float32)
    layers = augmentation_layers(AugmentConfig(), seed=3)
    assert [la.name for la in layers] == ["aug_flip", "aug_rotation", "aug_shift", "aug_shear", "aug_zoom",
                                          "aug_brightness", "aug_contrast"]
    for layer in layers:
        assert is_augmentation_layer(layer)
        trained = np.asarray(layer(x, training=True))
        assert not np.allclose(trained, x), layer.name
        assert trained.min() >= -1e-3 and trained.max() <= 255 + 1e-3, layer.name
        np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    assert augmentation_layers(AugmentConfig.off()) == []
    names = [la.name for la in augmentation_layers(AugmentConfig(rotation=0, flip=False))]
    assert "aug_rotation" not in names and "aug_flip" not in names and "aug_zoom" in names
    with pytest.raises(UserError, match="augmentation zoom must be between 0 and 1"):
        augmentation_layers(AugmentConfig(zoom=1.5))
    assert isinstance(keras.layers.Dense(1), keras.layers.Layer) and not is_augmentation_layer(keras.layers.Dense(1))


# --------------------------------------------------------------------------- the trained model (fixture)


def test_trained_model_identifies_held_out_faces(trained_model, att_crops):
    from edgeface.data.dataset import load_crops
    from edgeface.evaluate.protocols import rank1
    from edgeface.nn.loading import load_embedding_model
    from edgeface.train.augment import is_augmentation_layer
    from edgeface.train.data import dataset_hash

    run = trained_model.parent
    info = json.loads((run / "train.json").read_text())
    assert info["dataset"]["num_classes"] == 30
    assert (info["dataset"]["train_images"], info["dataset"]["val_images"]) == (210, 90)
    assert info["epochs_run"] == 8 and info["environment"]["keras_backend"]
    assert info["images_per_second"] > 0 and info["seconds"] > 0 and info["edgeface_version"]
    assert info["metrics"]["val_rank1"] >= RANK1_BOUND

    # Recompute from the saved file alone: same crops, the split the run wrote, rank-1 against the training images.
    crops = load_crops(att_crops, exclude=UNSEEN)
    assert dataset_hash(crops, att_crops) == info["dataset"]["sha256"]
    held = set(json.loads((run / "split.json").read_text())["val"])
    is_val = np.array([str(p.relative_to(att_crops)) in held for p in crops.paths])
    assert is_val.sum() == 90
    model = load_embedding_model(trained_model)
    assert not any(is_augmentation_layer(la) for la in model.layers)
    assert all(la.dtype_policy.name == "float32" for la in model.layers)
    emb = np.asarray(model.predict(crops.images.astype(np.float32), batch_size=64, verbose=0))
    assert emb.shape == (300, 128)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    r1 = rank1(emb[~is_val], crops.labels[~is_val], emb[is_val], crops.labels[is_val])
    assert r1 >= RANK1_BOUND
    assert r1 == pytest.approx(info["metrics"]["val_rank1"], abs=0.02)
    rows = (run / "log.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,") and len(rows) == 1 + 8


# --------------------------------------------------------------------------- resume, mirrored, JAX


def _tiny_config(att_crops, tmp_path, **kw):
    from edgeface.train.augment import AugmentConfig
    from edgeface.train.trainer import TrainConfig

    base = dict(data=att_crops, out=tmp_path / "run", arch="seed-cnn", head="softmax", epochs=1, batch_size=16,
                val_split=0.2, exclude_people=_people_file(tmp_path / "people.txt", keep=6), input_size=56,
                augment=AugmentConfig.off(), patience=0)
    base.update(kw)
    return TrainConfig(**base)


def test_resume_continues_from_the_checkpoint(att_crops, tmp_path):
    import keras

    from edgeface.nn.loading import load_embedding_model
    from edgeface.train.trainer import train

    first = train(_tiny_config(att_crops, tmp_path))
    assert first.epochs_run == 1
    trained_w = load_embedding_model(first.model_path).get_layer("conv1").get_weights()[0]

    with pytest.raises(UserError, match="already holds a training run: pass --resume"):
        train(_tiny_config(att_crops, tmp_path))
    with pytest.raises(UserError, match="cannot resume .*: its head was 'softmax', now 'arcface'"):
        train(_tiny_config(att_crops, tmp_path, head="arcface", resume=True))
    with pytest.raises(UserError, match="nothing to resume"):
        train(_tiny_config(att_crops, tmp_path, out=tmp_path / "empty", resume=True))

    # Resuming a finished run trains nothing and keeps the trained weights (not a fresh initialisation).
    same = train(_tiny_config(att_crops, tmp_path, resume=True))
    assert same.epochs_run == 1
    np.testing.assert_array_equal(load_embedding_model(same.model_path).get_layer("conv1").get_weights()[0],
                                  trained_w)

    more = train(_tiny_config(att_crops, tmp_path, resume=True, epochs=2))
    info = json.loads(more.train_json.read_text())
    assert (info["epochs_run"], info["epochs_this_session"]) == (2, 1)
    assert [r["epoch"] for r in info["history"]] == [1, 2]
    assert len((more.run_dir / "log.csv").read_text().splitlines()) == 3
    # The optimizer state came back too: its step counter spans both sessions.
    ckpt = keras.saving.load_model(more.run_dir / "checkpoints" / "last.keras")
    steps = 48 // 16  # 6 people x 10 crops, 20% held out, batch 16
    assert int(ckpt.optimizer.iterations) == 2 * steps


def test_width_scales_the_network_and_is_part_of_the_run(att_crops, tmp_path):
    from edgeface.nn.loading import load_embedding_model
    from edgeface.train.models import get_model
    from edgeface.train.trainer import train

    # MobileFaceNet at 1.5x width: ~2.1 M parameters against ~1 M, the embedding size unchanged.
    standard, wide = get_model("mobilefacenet").count_params(), get_model("mobilefacenet", width=1.5).count_params()
    assert 0.9e6 < standard < 1.2e6 and 1.9 < wide / standard < 2.4
    with pytest.raises(UserError, match="width must be between 0.25 and 4.0"):
        get_model("mobilefacenet", width=0.1)

    result = train(_tiny_config(att_crops, tmp_path, width=0.5))
    model = load_embedding_model(result.model_path)
    assert model.get_layer("conv1").filters == 16 and model.get_layer("fc512").units == 256
    assert model.output.shape[-1] == 128
    info = json.loads(result.train_json.read_text())
    assert info["model"]["width"] == 0.5 and info["config"]["width"] == 0.5
    # A checkpoint only resumes at its own width (weights of another width would not fit).
    with pytest.raises(UserError, match="cannot resume .*: its width was 0.5, now 1.0"):
        train(_tiny_config(att_crops, tmp_path, resume=True))


def test_checkpoints_from_before_width_existed_resume_as_width_1(tmp_path):
    from edgeface.train.loop import RunFiles, check_resume_state

    old = {"fingerprint": {"arch": "mobilefacenet", "embedding_dim": 128}}  # a state.json written before --width
    check_resume_state(old, {"arch": "mobilefacenet", "embedding_dim": 128, "width": 1.0}, RunFiles(tmp_path))
    with pytest.raises(UserError, match="its width was 1.0, now 1.5"):
        check_resume_state(old, {"arch": "mobilefacenet", "embedding_dim": 128, "width": 1.5}, RunFiles(tmp_path))


def test_batchnorm_recalibration_is_the_mean_of_the_batch_statistics(att_crops):
    import cv2
    import keras

    from edgeface.train.batchnorm import recalibrate_batchnorm

    paths = sorted(att_crops.rglob("*.png"))[:20]
    images = np.stack([cv2.resize(cv2.imread(str(p)), (24, 24)) for p in paths]).astype(np.float32)
    inp = keras.Input((24, 24, 3))
    conv = keras.layers.Conv2D(4, 3, name="conv")(inp)
    bn = keras.layers.BatchNormalization(name="bn")
    model = keras.Model(inp, keras.layers.ReLU()(bn(conv)))
    features = keras.Model(inp, conv).predict(images, verbose=0).astype(np.float64)
    # 20 images in batches of 8: 8 + 8 + a tail of 4 (kept: at least half a batch), in the seeded order.
    order = np.random.default_rng(3).permutation(20)
    batches = [features[np.sort(order[a:b])] for a, b in ((0, 8), (8, 16), (16, 20))]
    assert recalibrate_batchnorm(model, images, batch_size=8, seed=3) == 3
    np.testing.assert_allclose(np.asarray(bn.moving_mean), np.mean([f.mean((0, 1, 2)) for f in batches], 0),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(bn.moving_variance), np.mean([f.var((0, 1, 2)) for f in batches], 0),
                               rtol=1e-3, atol=1e-3)
    assert bn.momentum == 0.99  # the layer's own momentum is back for further training


def test_mirrored_strategy_with_one_cpu_device_and_bf16(att_crops, tmp_path):
    pytest.importorskip("tensorflow")
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the mirrored path needs the TensorFlow backend")
    from edgeface.nn.loading import load_embedding_model
    from edgeface.train.trainer import train

    result = train(_tiny_config(att_crops, tmp_path, distribute="mirrored", precision="mixed_bfloat16",
                                head="cosface"))
    info = json.loads(result.train_json.read_text())
    assert info["environment"]["distribute"] == "mirrored" and info["environment"]["replicas"] == 1
    assert info["environment"]["precision"] == "mixed_bfloat16" and result.epochs_run == 1
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    model = load_embedding_model(result.model_path)
    assert all(la.dtype_policy.name == "float32" for la in model.layers)  # saved in float32 for export
    emb = np.asarray(model(np.zeros((2, 56, 56, 3), np.float32)))
    assert emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed (pip install jax)")
def test_trains_under_the_jax_backend_without_tensorflow(att_crops, tmp_path):
    from edgeface.nn.loading import load_embedding_model

    # TensorFlow is made unimportable in the child: a JAX-only GPU box has none.  seed-cnn keeps XLA's CPU
    # compile short; MobileFaceNet's BatchNorm path (eager updates under JAX) is checked on a small copy.
    code = (
        BLOCK_TENSORFLOW +
        "import keras, numpy as np\n"
        "assert keras.backend.backend() == 'jax'\n"
        "from edgeface.train.batchnorm import recalibrate_batchnorm\n"
        "from edgeface.train.models import get_model\n"
        "from edgeface.train.trainer import TrainConfig, train\n"
        f"r = train(TrainConfig(data={str(att_crops)!r}, out={str(tmp_path / 'run')!r}, arch='seed-cnn',\n"
        "    head='arcface', epochs=1, batch_size=16, val_split=0.2, input_size=56,\n"
        f"    exclude_people={_people_file(tmp_path / 'people.txt', keep=4)!r}))\n"
        "m = get_model('mobilefacenet', input_size=32)\n"
        "assert recalibrate_batchnorm(m, np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)), 4) == 2\n"
        "var = np.asarray(m.get_layer('stem_bn').moving_variance)\n"
        "assert not np.allclose(var, 1.0), var\n"
        "assert 'tensorflow' not in sys.modules\n"
        "print(json.dumps(r.to_dict()))\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((tmp_path / "run" / "train.json").read_text())
    assert info["environment"]["keras_backend"] == "jax" and info["epochs_run"] == 1
    assert info["config"]["augment"]["rotation"] > 0  # the augmentation layers ran under JAX too
    # A model trained under JAX loads (and so converts) under this process's backend.
    model = load_embedding_model(tmp_path / "run" / "model.keras")
    emb = np.asarray(model(np.full((1, 56, 56, 3), 128.0, np.float32)))
    assert emb.shape == (1, 128) and abs(float(np.linalg.norm(emb)) - 1.0) < 1e-4


# --------------------------------------------------------------------------- command line


@pytest.fixture()
def one_person(att_crops, tmp_path) -> Path:
    root = tmp_path / "one"
    shutil.copytree(att_crops / "s1", root / "s1")
    return root


@pytest.mark.parametrize("args,message", [
    (["missing-dir"], "error: training data folder not found: missing-dir"),
    (["{crops}", "--arch", "mobilefacnet"], "error: unknown architecture 'mobilefacnet' (did you mean "
                                             "'mobilefacenet'?)"),
    (["{crops}", "--head", "cosfase"], "error: unknown head 'cosfase' (did you mean 'cosface'?)"),
    (["{crops}", "--optimizer", "sgdm"], "error: unknown optimizer 'sgdm' (did you mean 'sgd'?)"),
    (["{crops}", "--precision", "bf16"], "error: unknown precision 'bf16'"),
    (["{crops}", "--val-split", "0.2", "--val", "{crops}"], "error: give either --val DIR or --val-split F"),
    (["{crops}", "--margins", "1,0.5"], "error: --margins must be three numbers m1,m2,m3"),
    (["{crops}", "--head", "cosface", "--scale", "nan"], "error: head scale must be a finite number > 0, got nan"),
    (["{crops}", "--head", "arcface", "--margin", "inf"], "error: margins must be finite numbers"),
    (["{crops}", "--head", "softmax", "--margin", "0.3"], "error: --head softmax has no margin or scale"),
    (["{crops}", "--lr", "inf"], "error: learning rate must be a finite number > 0, got inf"),
    (["{crops}", "--width", "0"], "error: --width must be between 0.25 and 4.0"),
    (["{crops}", "--exclude-people", "nope.txt"], "error: people file not found: nope.txt"),
    (["{one}"], "error: {one} has 1 identity after exclusions"),
])
def test_cli_bad_input_exits_2_with_one_line(args, message, att_crops, one_person, tmp_path):
    fill = {"crops": str(att_crops), "one": str(one_person)}
    args = [a.format(**fill) for a in args]
    result = runner.invoke(app, ["train", *args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(message.format(**fill)), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "model.keras").exists()


def test_photos_are_refused_with_the_prepare_command(att_dir, lfw_dir, tmp_path):
    lfw = tmp_path / "lfw"
    for person in ("Aaron_Peirsol", "Abdullah"):
        shutil.copytree(lfw_dir / "lfw-deepfunneled" / person, lfw / person)
    # AT&T photos are 92x112; LFW's are square but 250x250 with the face in the middle third
    for root, shape in ((att_dir, "92x112"), (lfw, "250x250")):
        result = runner.invoke(app, ["train", str(root), "--out", str(tmp_path / "run")])
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith(f"error: {root} holds photos, not aligned face crops"), result.stderr
        assert f"is {shape}, training needs 112x112 crops" in result.stderr
        assert f"run `edgeface data prepare {root} --out CROPS`" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_cli_seed_flow_train_test_folders(att_crops, tmp_path):
    # The classic layout a user brings: train/<person>/ and test/<person>/ (7 and 3 crops of 10 people).
    for i in range(1, 11):
        files = sorted((att_crops / f"s{i}").glob("*.png"), key=lambda p: int(p.stem))
        for part, chosen in (("train", files[:7]), ("test", files[7:])):
            (tmp_path / part / f"s{i}").mkdir(parents=True)
            for f in chosen:
                shutil.copy(f, tmp_path / part / f"s{i}" / f.name)
    run = tmp_path / "run"
    args = ["train", str(tmp_path / "train"), "--val", str(tmp_path / "test"), "--arch", "seed-cnn",
            "--head", "softmax", "--epochs", "3", "--batch-size", "16", "--out", str(run)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "val accuracy (closed-set)" in result.stdout and "val rank-1 vs train gallery" in result.stdout
    info = json.loads((run / "train.json").read_text())
    assert info["dataset"]["val_source"] == str(tmp_path / "test")
    assert (info["dataset"]["train_images"], info["dataset"]["val_images"]) == (70, 30)
    acc = info["metrics"]["val_accuracy"]
    assert 0.0 <= acc <= 1.0 and f"{acc:.4f}" in result.stdout
    assert info["config"]["augment"]["flip"] is True  # augmentation on by default

    # --resume of a finished run with --json: no more training, the same numbers as JSON on stdout.
    again = runner.invoke(app, [*args, "--resume", "--json"])
    assert again.exit_code == 0, again.output
    out = json.loads(again.stdout)
    assert out["epochs_run"] == 3 and out["metrics"]["val_accuracy"] == pytest.approx(acc, abs=0.04)


def test_resolve_distribute_reads_tf_config():
    from edgeface.commands.train import resolve_distribute

    two = json.dumps({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}})
    assert resolve_distribute("mirrored", {}) == "mirrored"
    assert resolve_distribute("mirrored", {"TF_CONFIG": two}) == "multi-worker"
    assert resolve_distribute("none", {"TF_CONFIG": two}) == "none"
    with pytest.raises(UserError, match="TF_CONFIG is not valid JSON"):
        resolve_distribute("mirrored", {"TF_CONFIG": "{oops"})


def test_a_resumed_run_sees_the_batch_orders_of_an_uninterrupted_one():
    from edgeface.train.data import ArraySequence

    x, y = np.arange(40, dtype=np.float32).reshape(40, 1), np.arange(40)

    def orders(seq, epochs):
        out = []
        for _ in range(epochs):
            out.append(np.concatenate([seq[i][1] for i in range(len(seq))]).tolist())
            seq.on_epoch_end()
        return out

    whole = orders(ArraySequence(x, y, 8, shuffle=True, seed=3), 5)
    assert len({tuple(o) for o in whole}) == 5  # a new order every epoch
    resumed = orders(ArraySequence(x, y, 8, shuffle=True, seed=3, epoch=3), 2)
    assert resumed == whole[3:]
    assert orders(ArraySequence(x, y, 8, shuffle=True, seed=4), 1) != whole[:1]


def test_excluded_people_counts_the_folders_left_out(att_crops, tmp_path):
    from edgeface.train.trainer import TrainConfig, load_training_data

    people = tmp_path / "people.txt"
    # 36 AT&T people and 500 LFW names that are no folder here: the run records the 36 it left out
    lfw_names = "".join(f"Somebody_{i}\n" for i in range(500))
    people.write_text("".join(f"s{i}\n" for i in range(5, 41)) + lfw_names)
    d = load_training_data(TrainConfig(data=att_crops, out=tmp_path / "run", exclude_people=str(people)))
    assert d.excluded == 36 and d.train.class_names == ["s1", "s2", "s3", "s4"]
    # names matching nobody: the wrong file or fold, not a run with nobody left out
    people.write_text(lfw_names)
    result = runner.invoke(app, ["train", str(att_crops), "--out", str(tmp_path / "run"), "--exclude-people",
                                 str(people)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: --exclude-people: none of its 500 names is a person folder in ")
