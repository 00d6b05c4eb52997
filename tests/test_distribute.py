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
