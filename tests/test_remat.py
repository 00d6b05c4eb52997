"""Recomputed activations (``train --remat``): the same gradients, BatchNorm statistics and trained weights as a run
that keeps its activations; only memory and time differ (figures: tests/benchmarks/remat_bench.py)."""

from __future__ import annotations

import numpy as np
import pytest
from test_resume import keras_file_arrays

from edgeface.errors import UserError


def _faces(att_crops, n: int, size: int) -> np.ndarray:
    import cv2

    paths = sorted(att_crops.rglob("*.png"))[:n]
    return np.stack([cv2.resize(cv2.imread(str(p)), (size, size), interpolation=cv2.INTER_AREA)
                     for p in paths]).astype(np.float32)


def test_cuts_are_where_one_tensor_carries_everything():
    from edgeface.train.models import get_model
    from edgeface.train.remat import articulation_layers, segment_cuts

    net = get_model("mobilefacenet", input_size=32)
    cuts = articulation_layers(net)
    # a residual block's inside is no cut (its input is still needed by the add); its add is one
    assert "block0_1_add" in cuts and "block0_2_expand_relu" not in cuts and "block0_0_expand_relu" in cuts
    chosen = segment_cuts(net)
    assert set(chosen) <= set(cuts) and 6 <= len(chosen) <= 14  # about sqrt(149 layers) segments
    assert [n for n in cuts if n in chosen] == chosen  # in network order


@pytest.mark.parametrize("arch", ["mobilefacenet", "seed-cnn"])
def test_recomputed_gradients_and_batchnorm_updates_are_the_kept_ones(att_crops, arch):
    import keras
    import tensorflow as tf

    from edgeface.train.models import get_model
    from edgeface.train.remat import Recomputed

    keras.utils.set_random_seed(1)
    net = get_model(arch, input_size=48)
    wrapped = Recomputed(net)
    images = _faces(att_crops, 16, 48)
    start = [v.numpy().copy() for v in net.variables]
    start_stats = [v.numpy().copy() for v in net.non_trainable_variables]
    weights = np.random.default_rng(0).normal(size=(128,)).astype(np.float32)

    def step(model):
        for v, w in zip(net.variables, start):  # Dropout's generator state too: the same masks
            v.assign(w)

        @tf.function
        def run(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(model(x, training=True) * weights)
            return loss, tape.gradient(loss, net.trainable_variables)

        loss, grads = run(images)
        return float(loss), [g.numpy() for g in grads], [v.numpy() for v in net.non_trainable_variables]

    loss, grads, stats = step(net)
    loss_r, grads_r, stats_r = step(wrapped)
    assert wrapped.num_pieces >= (8 if arch == "mobilefacenet" else 2)
    assert len(wrapped.trainable_variables) == len(net.trainable_variables)  # shared, not copied
    assert loss_r == loss
    for g, gr in zip(grads, grads_r):
        np.testing.assert_allclose(gr, g, rtol=1e-5, atol=1e-6 * float(np.abs(g).max()))
    for s, sr in zip(stats, stats_r):  # moving statistics moved once, not twice
        np.testing.assert_array_equal(sr, s)
    assert any(not np.array_equal(s, w) for s, w in zip(stats, start_stats))  # and they did move


def test_a_run_with_remat_trains_the_weights_of_one_without(att_crops, tmp_path):
    from edgeface.train.augment import AugmentConfig
    from edgeface.train.trainer import TrainConfig, train

    people = tmp_path / "people.txt"
    people.write_text("".join(f"s{i}\n" for i in range(5, 41)))  # 4 people, 40 crops

    def config(name, **kw):
        return TrainConfig(**{**dict(data=att_crops, out=tmp_path / name, arch="mobilefacenet", head="arcface",
                                     epochs=1, batch_size=8, input_size=32, exclude_people=str(people), patience=0,
                                     seed=5, augment=AugmentConfig()), **kw})

    kept = train(config("kept"))
    recomputed = train(config("recomputed", remat=True))
    a, b = keras_file_arrays(kept.model_path), keras_file_arrays(recomputed.model_path)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-5, err_msg=k)
    assert recomputed.metrics["loss"] == pytest.approx(kept.metrics["loss"], rel=1e-4)
    # its checkpoint nests the network differently: resuming it without --remat is refused with one line
    with pytest.raises(UserError, match="its remat was True, now False"):
        train(config("recomputed", resume=True, epochs=2))
    # with it, the checkpoint (weights and optimizer state under the wrapper) loads and training goes on
    assert train(config("recomputed", resume=True, epochs=2, remat=True)).epochs_run == 2


def test_the_distillation_model_recomputes_with_the_same_outputs_and_gradients(att_crops):
    import keras
    import tensorflow as tf

    from edgeface.distill.distill import DistillConfig, build_distill_model
    from edgeface.train.augment import AugmentConfig
    from edgeface.train.models import get_model

    images = _faces(att_crops, 8, 48)
    targets = np.random.default_rng(1).normal(size=(8, 128 + 64 + 5)).astype(np.float32)
    results = []
    for remat in (False, True):
        keras.utils.set_random_seed(4)
        backbone = get_model("mobilefacenet", embedding_dim=64, input_size=48)
        cfg = DistillConfig(data=att_crops, out=att_crops, teacher="dlib", embedding_dim=64, input_size=48,
                            labels=0.1, augment=AugmentConfig.off(), remat=remat)
        model = build_distill_model(backbone, 128, 5, cfg)
        assert any(type(la).__name__ == "Recomputed" for la in model.layers) == remat

        @tf.function
        def step(x, model=model):
            with tf.GradientTape() as tape:
                out = model(x, training=True)
                loss = tf.reduce_sum(out * targets)
            return out, tape.gradient(loss, model.trainable_variables)

        out, grads = step(images)
        results.append((out.numpy(), [g.numpy() for g in grads]))
    (out, grads), (out_r, grads_r) = results
    np.testing.assert_allclose(out_r, out, rtol=1e-5, atol=1e-6)
    assert len(grads_r) == len(grads)
    # Summed in another order, the features' three consumers give float noise; it shows on the gradients that are
    # 0 in exact arithmetic (a BatchNorm beta whose shift the next BatchNorm removes), so the scale is the largest.
    scale = max(float(np.abs(g).max()) for g in grads)
    for g, gr in zip(grads, grads_r):
        np.testing.assert_allclose(gr, g, rtol=1e-4, atol=1e-6 * scale)


def test_remat_outside_tensorflow_is_refused_with_one_line(att_crops, tmp_path, monkeypatch):
    import keras

    from edgeface.train.trainer import TrainConfig

    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    cfg = TrainConfig(data=att_crops, out=tmp_path / "run", remat=True)
    with pytest.raises(UserError, match=r"^remat needs the TensorFlow backend \(tf.recompute_grad\), KERAS_BACKEND "
                                        "is 'jax': train without --remat"):
        cfg.check()


def test_remat_over_several_replicas_is_refused_with_one_line(att_crops, tmp_path):
    import subprocess
    import sys

    people = tmp_path / "people.txt"
    people.write_text("".join(f"s{i}\n" for i in range(5, 41)))
    code = (
        "import tensorflow as tf\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
        "from edgeface.errors import UserError\n"
        "from edgeface.train.trainer import TrainConfig, train\n"
        "try:\n"
        f"    train(TrainConfig(data={str(att_crops)!r}, out={str(tmp_path / 'run')!r}, arch='seed-cnn',\n"
        f"        input_size=32, exclude_people={str(people)!r}, distribute='mirrored', remat=True))\n"
        "except UserError as exc:\n"
        "    print('REFUSED', exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "REFUSED remat runs on one device; --distribute mirrored has 2 replicas: drop --remat" in proc.stdout, \
        proc.stdout + proc.stderr[-2000:]
    assert not (tmp_path / "run").exists()
