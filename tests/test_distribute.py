"""`--distribute mirrored` on several replicas, shown on CPU devices: 2 replicas train what 1 does.

Each configuration runs in a child process, since the devices must be split before the backend starts:
TensorFlow splits the CPU into 2 logical devices (tf.config.set_logical_device_configuration), JAX gets 2 host
devices from XLA_FLAGS=--xla_force_host_platform_device_count=2.  The child trains MobileFaceNet (width 0.5, 32x32)
with an ArcFace head on AT&T crops of 5 people (50 crops, batch 16: 3 steps), augmentation off, seed 0, twice:
``distribute="none"`` (one replica) and ``"mirrored"`` (two), and reports the per-step losses, the weights before
and after the steps and what each run recorded.

Tolerances (float32, measured on this 2-core AMD EPYC, seeds 0-2, then set with room):

* step 1, a forward pass over the same 16 crops: relative difference <= 1e-6 measured, asserted 1e-5.  Per-replica
  BatchNorm statistics (Keras' layer under tf.distribute) move it by 3.4e-3.
* step 2 and on depend on the previous updates, and this network's float32 gradients depend on rounding: its
  gradients explode towards the input at initialisation (stem kernel gradient norm 176 against a weight norm of
  2.3), so one ReLU input that rounds to the other side of 0 changes early-layer gradients by ~3 %: on a batch of
  16 AT&T crops a single replica's float32 gradient is itself 3-4 % off its float64 one, while in float64 the
  first update of 2 replicas matches that of 1 to 3e-14.  So later steps are compared loosely: step 2 within 5e-3
  (measured 1e-5 to 1.5e-3 over seeds 0-2 and 50 or 80 crops; a gradient twice too large, the classic of summing
  instead of averaging replica losses, moves it by 2.0e-2), and the change of the weights over the 3 steps within
  0.5 of its norm (measured 0.03-0.19 TensorFlow, 0.02-0.25 JAX; per-replica BatchNorm gives 1.56, a doubled
  gradient 1.06).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PEOPLE = 5  # 50 crops at batch 16: 3 steps (the last 2 crops dropped)
STEP1_RTOL = 1e-5
STEP2_RTOL = 5e-3
WEIGHT_TOLERANCE = 0.5

CHILD = r"""
import json, os, sys
from pathlib import Path
import numpy as np
args = json.loads(sys.argv[1])
if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from edgeface.train import loop, trainer
from edgeface.train.augment import AugmentConfig
snapshots = []
real_fit = loop.fit
def fit(model, *a, **k):
    # What the trainer hands the loop: the weights before and after the steps, and the BatchNorm class it built.
    before = [np.asarray(w) for w in model.trainable_weights]
    out = real_fit(model, *a, **k)
    bns = {type(la).__name__ for la in model.get_layer("embedding_net").layers if "BatchNormalization" in
           type(la).__name__}
    snapshots.append((before, [np.asarray(w) for w in model.trainable_weights], sorted(bns)))
    return out
loop.fit = fit
report = {}
for mode in ("none", "mirrored"):
    running = []
    def progress(p):
        if p.phase == "batch":
            running.append(p.logs["loss"])
    out = Path(args["out"]) / mode
    trainer.train(trainer.TrainConfig(
        data=Path(args["data"]), out=out, arch="mobilefacenet", width=0.5, input_size=32, head="arcface",
        optimizer="sgd", lr=0.01, epochs=1, batch_size=16, exclude_people=args["people"],
        augment=AugmentConfig.off(), patience=0, seed=0, distribute=mode), progress=progress)
    before, after, bns = snapshots[-1]
    np.savez(out / "update.npz", *[a - b for a, b in zip(after, before)])
    # Keras logs the epoch's running mean: the loss of step k is k * m_k - (k - 1) * m_(k-1).
    steps = [running[0]] + [(k + 1) * running[k] - k * running[k - 1] for k in range(1, len(running))]
    report[mode] = {"losses": steps, "batchnorm": bns,
                    "environment": json.loads((out / "train.json").read_text())["environment"]}
print("REPORT " + json.dumps(report))
"""


def _run(att_crops: Path, tmp_path: Path, env: dict) -> dict:
    people = tmp_path / "people.txt"
    people.write_text("".join(f"s{i}\n" for i in range(PEOPLE + 1, 41)))
    args = json.dumps({"data": str(att_crops), "out": str(tmp_path), "people": str(people)})
    proc = subprocess.run([sys.executable, "-c", CHILD, args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT "))
    return json.loads(line[len("REPORT "):])


def _update_difference(tmp_path: Path) -> float:
    """|update(2 replicas) - update(1 replica)| / |update(1 replica)| over all trainable weights."""
    one, two = (np.load(tmp_path / mode / "update.npz") for mode in ("none", "mirrored"))
    diff = sum(float(np.sum((one[k] - two[k]) ** 2)) for k in one.files)
    norm = sum(float(np.sum(one[k] ** 2)) for k in one.files)
    return (diff / norm) ** 0.5


def _check_invariance(report: dict, tmp_path: Path) -> None:
    one, two = report["none"], report["mirrored"]
    assert one["environment"]["replicas"] == 1 and two["environment"]["replicas"] == 2, report
    assert len(one["losses"]) == len(two["losses"]) == 3
    a, b = np.array(one["losses"]), np.array(two["losses"])
    assert np.isfinite(a).all() and np.isfinite(b).all()
    assert abs(b[0] - a[0]) <= STEP1_RTOL * abs(a[0]), (a, b)
    assert abs(b[1] - a[1]) <= STEP2_RTOL * abs(a[1]), (a, b)
    assert _update_difference(tmp_path) <= WEIGHT_TOLERANCE


def test_tensorflow_mirrored_two_cpu_replicas_train_as_one(att_crops, tmp_path):
    pytest.importorskip("tensorflow")
    report = _run(att_crops, tmp_path, {"KERAS_BACKEND": "tensorflow"})
    _check_invariance(report, tmp_path)
    # The replicas shared their BatchNorm statistics; a single replica and the saved model keep Keras' own layer.
    assert report["mirrored"]["batchnorm"] == ["SyncBatchNormalization"]
    assert report["none"]["batchnorm"] == ["BatchNormalization"]
    from edgeface.nn.loading import load_embedding_model

    saved = load_embedding_model(tmp_path / "mirrored" / "model.keras")
    assert {type(la).__name__ for la in saved.layers if "Normalization" in type(la).__name__} == {
        "BatchNormalization"}


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed (pip install jax)")
def test_jax_data_parallel_two_cpu_devices_train_as_one(att_crops, tmp_path):
    report = _run(att_crops, tmp_path, {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
                                        "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    _check_invariance(report, tmp_path)
    assert report["mirrored"]["environment"]["keras_backend"] == "jax"
    # One jitted step over the sharded global batch: Keras' own BatchNorm already sees all of it.
    assert report["mirrored"]["batchnorm"] == ["BatchNormalization"]


RANDOM_CHILD = r"""
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import cv2, keras
from edgeface.train.augment import AugmentConfig, augmentation_layers, per_replica_random
image = cv2.cvtColor(cv2.imread(sys.argv[1]), cv2.COLOR_BGR2RGB).astype(np.float32)
batch = np.repeat(image[None], 4, axis=0)  # one face 4 times: any difference between outputs is a random draw

def build(per_replica):
    keras.utils.set_random_seed(0)
    x = inp = keras.Input(image.shape)
    for layer in augmentation_layers(AugmentConfig(), seed=0):
        x = layer(x)
    y = keras.layers.Dropout(0.5, seed=9)(keras.layers.Flatten()(inp))
    model = keras.Model(inp, [x, y])
    changed = per_replica_random(model) if per_replica else 0
    return model, changed

def replica_slices(devices, per_replica):
    strategy = tf.distribute.MirroredStrategy(devices)
    with strategy.scope():
        model, changed = build(per_replica)
    n = strategy.num_replicas_in_sync
    values = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(batch[ctx.replica_id_in_sync_group * (4 // n):][:4 // n]))
    step = tf.function(lambda x: model(x, training=True))
    outs = []
    for _ in range(2):  # two steps: the generators move on
        result = strategy.run(step, args=(values,))
        outs.append([np.concatenate([np.asarray(t) for t in strategy.experimental_local_results(r)]) for r in result])
    return outs, changed

def plain(per_replica):
    model, changed = build(per_replica)
    return [[np.asarray(t) for t in model(batch, training=True)] for _ in range(2)], changed

report = {}
for flag in (False, True):
    two, changed = replica_slices(["/cpu:0", "/cpu:1"], flag)
    # per output (augmented image, Dropout mask) and step: max |replica 0's slice - replica 1's slice|
    report[f"two_replicas_{flag}"] = [[float(np.max(np.abs(o[:2] - o[2:]))) for o in step] for step in two]
    report[f"within_replica_{flag}"] = [float(np.max(np.abs(step[0][0] - step[0][1]))) for step in two]
    report[f"changed_{flag}"] = changed
    one, _ = replica_slices(["/cpu:0"], flag)
    alone, _ = plain(flag)
    report[f"one_replica_{flag}"] = [[np.asarray(o).tolist() == np.asarray(p).tolist() for o, p in zip(s1, s2)]
                                    for s1, s2 in zip(one, alone)]
    report[f"plain_{flag}"] = [[np.asarray(o).ravel()[:64].tolist() for o in s] for s in alone]
print("REPORT " + json.dumps(report))
"""


def test_random_layers_draw_per_replica_and_one_replica_is_unchanged(att_crops, tmp_path):
    """Two TensorFlow replicas, one face four times: the augmented images and Dropout masks of replica 0's slice and
    replica 1's differed nowhere before (every replica read the same generator state); now they differ.  One
    replica (MirroredStrategy on one device, or no strategy) draws exactly what it drew before."""
    pytest.importorskip("tensorflow")
    face = sorted((att_crops / "s1").iterdir())[0]
    proc = subprocess.run([sys.executable, "-c", RANDOM_CHILD, str(face)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT "))[len("REPORT "):])
    assert report["changed_True"] == 8  # 7 augmentation layers and the Dropout
    # before: the two replicas' slices identical, in both steps, for augmentation and Dropout alike
    assert report["two_replicas_False"] == [[0.0, 0.0], [0.0, 0.0]], report["two_replicas_False"]
    # now: they differ (pixels 0..255; a Dropout mask of 0.5 on a face differs by whole pixel values)
    assert all(d > 1.0 for step in report["two_replicas_True"] for d in step), report["two_replicas_True"]
    assert all(d > 1.0 for d in report["within_replica_True"] + report["within_replica_False"])
    # one replica: the same draws with and without the change, with and without a one-device strategy
    assert report["one_replica_False"] == report["one_replica_True"] == [[True, True], [True, True]]
    assert report["plain_False"] == report["plain_True"]


def test_a_single_device_run_trains_as_before_the_per_replica_seeds(att_crops, tmp_path, monkeypatch):
    """A short training run (seed-cnn with its Dropout, every augmentation on) with the per-replica generators and
    with Keras' own (as before the change) ends with the same weights, bit for bit."""
    from edgeface.nn.loading import load_embedding_model
    from edgeface.train import trainer
    from edgeface.train.augment import AugmentConfig

    people = tmp_path / "people.txt"
    people.write_text("".join(f"s{i}\n" for i in range(5, 41)))

    def run(name):
        cfg = trainer.TrainConfig(data=att_crops, out=tmp_path / name, arch="seed-cnn", head="arcface", epochs=1,
                                  batch_size=8, input_size=56, exclude_people=str(people), patience=0,
                                  augment=AugmentConfig())
        model = load_embedding_model(trainer.train(cfg).model_path)
        return [np.asarray(w) for w in model.get_weights()]

    now = run("now")
    monkeypatch.setattr(trainer, "per_replica_random", lambda model: 0)
    before = run("before")
    assert len(now) == len(before) and all(np.array_equal(a, b) for a, b in zip(now, before))


PARTIAL_FC_CHILD = r"""
import json, sys
from pathlib import Path
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
keras.config.set_max_steps_per_epoch(1)
from edgeface.train import loop, trainer
from edgeface.train.augment import AugmentConfig
args = json.loads(sys.argv[1])
report, weights = {}, {}
real_fit = loop.fit
def fit(model, *a, **k):
    before = np.asarray(model.get_layer("head").kernel)
    out = real_fit(model, *a, **k)
    weights["head"] = np.asarray(model.get_layer("head").kernel) - before
    return out
loop.fit = fit
for mode in ("none", "mirrored"):
    losses = []
    trainer.train(trainer.TrainConfig(
        data=Path(args["data"]), out=Path(args["out"]) / mode, arch="mobilefacenet", width=0.5, input_size=32,
        head="cosface", sample_rate=0.5, optimizer="sgd", lr=0.01, epochs=1, batch_size=16,
        exclude_people=args["people"], augment=AugmentConfig.off(), patience=0, seed=0, distribute=mode),
        progress=lambda p: losses.append(p.logs["loss"]) if p.phase == "batch" else None)
    update = weights["head"]
    report[mode] = {"loss": losses[0], "rows": np.flatnonzero(np.any(update != 0, axis=1)).tolist()}
    np.save(Path(args["out"]) / f"{mode}.npy", update)
print("REPORT " + json.dumps(report))
"""


@pytest.mark.slow  # ~70 s on 2 cores: the suite's 20-minute budget; the full-head replica test runs by default
def test_partial_fc_samples_the_same_classes_on_two_replicas(att_crops, tmp_path):
    """Partial FC (CosFace, R = 0.5, 24 people, batch 16: 12 classes a step) for one step on 1 and on 2 TensorFlow
    CPU replicas: each replica samples from the all-gathered labels with the same random numbers, so the same class
    rows move, by the same update.  Measured (seeds 0-2): step-1 loss to 1.1e-6, head update to 1.5e-5-3.2e-5
    (a different sample would differ by ~1); asserted 1e-5 and 1e-4."""
    pytest.importorskip("tensorflow")
    people = tmp_path / "people.txt"
    people.write_text("".join(f"s{i}\n" for i in range(25, 41)))
    args = json.dumps({"data": str(att_crops), "out": str(tmp_path), "people": str(people)})
    proc = subprocess.run([sys.executable, "-c", PARTIAL_FC_CHILD, args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT "))[len("REPORT "):])
    one, two = report["none"], report["mirrored"]
    assert abs(two["loss"] - one["loss"]) <= 1e-5 * abs(one["loss"]), report
    assert one["rows"] == two["rows"] and 12 <= len(one["rows"]) < 24, report
    a, b = np.load(tmp_path / "none.npy"), np.load(tmp_path / "mirrored.npy")
    assert np.linalg.norm(a - b) <= 1e-4 * np.linalg.norm(a)


def test_sync_batchnorm_is_plain_batchnorm_without_replicas():
    import keras

    from edgeface.train.batchnorm import SyncBatchNormalization

    x = np.random.default_rng(0).normal(3.0, 0.5, (8, 4, 4, 6)).astype(np.float32)
    plain, synced = keras.layers.BatchNormalization(momentum=0.9), SyncBatchNormalization(momentum=0.9)
    for layer in (plain, synced):
        layer.build(x.shape)
    np.testing.assert_array_equal(np.asarray(synced(x, training=True)), np.asarray(plain(x, training=True)))
    np.testing.assert_array_equal(np.asarray(synced.moving_variance), np.asarray(plain.moving_variance))
    # It serialises as itself, with BatchNormalization's config, so a training checkpoint loads again.
    again = keras.layers.deserialize(keras.layers.serialize(synced))
    assert type(again) is SyncBatchNormalization and again.momentum == 0.9


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed (pip install jax)")
def test_jax_refuses_a_tf_config_cluster_with_one_line(att_crops, tmp_path):
    code = ("from edgeface.errors import SettingError\n"
            "from edgeface.train.trainer import TrainConfig\n"
            f"cfg = TrainConfig(data={str(att_crops)!r}, out={str(tmp_path / 'run')!r}, distribute='multi-worker')\n"
            "try:\n    cfg.check()\nexcept SettingError as e:\n    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == ("distribute multi-worker (a TF_CONFIG cluster) needs the TensorFlow backend, "
                                   "KERAS_BACKEND is 'jax': unset TF_CONFIG to train on this machine's devices")
