"""Partial FC (``--sample-rate``): the sampled margin head, its loss, its row-sparse optimizer, training and resume."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_train import _numpy_margin_loss  # the independent numpy reference of the full head's loss
from typer.testing import CliRunner

from edgeface.cli import app
from edgeface.errors import UserError

MARGINS = [(64, 1, 0.5, 0), (64, 1, 0, 0.35), (32, 1, 0.3, 0.2), (16, 1.5, 0.2, 0.1)]  # arcface, cosface, combined


def _unit(a, axis):
    a = np.asarray(a, np.float64)
    return a / np.linalg.norm(a, axis=axis, keepdims=True)


def _head(num_classes, rate, batch, kernel_rows, seed=0):
    from edgeface.train.partial_fc import PartialMarginHead

    head = PartialMarginHead(num_classes, rate, batch_size=batch, seed=seed, name="head")
    head.build([(None, kernel_rows.shape[1]), (None,)])
    head.kernel.assign(kernel_rows)
    return head


def _sample_of_last_call(head, labels, state_before):
    """The classes a training call sampled: the sampler's state is set back and the same draw made again."""
    head.sampler.state.assign(state_before)
    return np.asarray(head.sample(labels))


@pytest.mark.parametrize("s,m1,m2,m3", MARGINS)
def test_rate_one_is_the_full_head(s, m1, m2, m3):
    from edgeface.train.heads import CombinedMarginLoss, CosineHead
    from edgeface.train.partial_fc import PartialMarginLoss

    rng = np.random.default_rng(1)
    feats = rng.normal(size=(32, 16)).astype(np.float32)
    labels = rng.integers(0, 10, 32).astype(np.int32)
    kernel = rng.normal(size=(16, 10)).astype(np.float32)
    full = CosineHead(10)
    full.build((None, 16))
    full.kernel.assign(kernel)
    expected = float(np.mean(np.asarray(CombinedMarginLoss(s, m1, m2, m3).call(labels, full(feats)))))
    head = _head(10, 1.0, 32, kernel.T)
    assert head.num_sampled == 10
    for training in (True, False):
        got = float(np.mean(np.asarray(PartialMarginLoss(s, m1, m2, m3).call(labels, head([feats, labels],
                                                                                        training=training)))))
        # float32 dot products in another order: a few ulps of a loss of ~10-60
        assert got == pytest.approx(expected, rel=2e-6), (training, got, expected)


@pytest.mark.parametrize("s,m1,m2,m3", MARGINS)
def test_sampled_loss_is_the_full_computation_on_the_sampled_columns(s, m1, m2, m3):
    from edgeface.train.partial_fc import PartialMarginLoss

    rng = np.random.default_rng(2)
    classes, batch, dim = 1000, 32, 16
    feats = rng.normal(size=(batch, dim)).astype(np.float32)
    labels = np.concatenate([rng.integers(0, classes, batch - 4), [7, 7, 999, 0]]).astype(np.int32)  # repeats, ends
    kernel = rng.normal(size=(classes, dim)).astype(np.float32)
    head = _head(classes, 0.1, batch, kernel)
    assert head.num_sampled == 100
    state = np.asarray(head.sampler.state).copy()
    out = np.asarray(head([feats, labels], training=True))
    index = _sample_of_last_call(head, labels, state)
    assert out.shape == (batch, 101) and len(set(index.tolist())) == 100 and set(labels.tolist()) <= set(index.tolist())
    assert np.all(np.diff(index) > 0)
    # numpy, from the weights: cosines of every class, restricted to the sampled columns, labels renumbered in them
    cos = (_unit(feats, 1) @ _unit(kernel, 1).T)[:, index]
    position = np.searchsorted(index, labels)
    expected = _numpy_margin_loss(cos, position, s, m1, m2, m3)
    got = float(np.mean(np.asarray(PartialMarginLoss(s, m1, m2, m3).call(labels, out))))
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-4)
    # the next step draws other negatives
    again = np.asarray(head.sample(labels))
    assert set(labels.tolist()) <= set(again.tolist()) and not np.array_equal(again, index)


def _features_model(classes, batch, dim, optimizer_name, rate=0.1):
    """features -> partial head, compiled with the trainer's row-sparse optimizer (lr 0.1, momentum 0.9, wd 5e-4)."""
    import keras

    from edgeface.train.partial_fc import PartialMarginHead, PartialMarginLoss, accuracy_metric
    from edgeface.train.row_sparse import RowSparseAdam, RowSparseSGD

    f = keras.Input((dim,), name="features")
    y = keras.Input((), dtype="int32", name="label")
    head = PartialMarginHead(classes, rate, batch_size=batch, seed=5, name="head")
    model = keras.Model([f, y], head([f, y]))
    opt = (RowSparseSGD(0.1, momentum=0.9, weight_decay=5e-4, row_sparse=("head/kernel",))
           if optimizer_name == "sgd" else RowSparseAdam(0.01, weight_decay=5e-4, row_sparse=("head/kernel",)))
    model.compile(optimizer=opt, loss=PartialMarginLoss(64, 1, 0.5, 0), metrics=[accuracy_metric()],
                  jit_compile=False)
    return model, head


def _check_only_sampled_rows_change(optimizer_name: str) -> dict:
    classes, batch, dim = 500, 16, 8
    model, head = _features_model(classes, batch, dim, optimizer_name)
    rng = np.random.default_rng(3)
    samples = []
    for step in range(3):
        x = rng.normal(size=(batch, dim)).astype(np.float32)
        y = rng.integers(0, classes, batch).astype(np.int32)
        before = np.asarray(head.kernel).copy()
        state = np.asarray(head.sampler.state).copy()
        model.train_on_batch((x, y), y)
        after = np.asarray(head.kernel)
        changed = np.flatnonzero(np.any(after != before, axis=1))
        drawn_after = np.asarray(head.sampler.state).copy()
        index = _sample_of_last_call(head, y, state)
        head.sampler.state.assign(drawn_after)
        # The rows of the sampled classes moved, no other did: momentum of earlier steps' rows is not applied, weight
        # decay does not touch them (step 2 and 3 would move step 1's rows under Keras' own SGD).
        assert changed.tolist() == index.tolist(), (optimizer_name, step, len(changed), len(index))
        samples.append(index)
    slots = [np.asarray(v) for v in model.optimizer.variables if tuple(v.shape) == (classes, dim)]
    seen = np.unique(np.concatenate(samples))
    for slot in slots:  # the optimizer state of never-sampled rows is still zero
        assert np.all(slot[np.setdiff1d(np.arange(classes), seen)] == 0)
        assert np.any(slot[seen] != 0)
    return {"slots": len(slots)}


@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_a_step_updates_only_the_sampled_rows(optimizer_name):
    assert _check_only_sampled_rows_change(optimizer_name)["slots"] == (1 if optimizer_name == "sgd" else 2)


def test_tensorflow_gradient_of_the_head_is_row_sparse():
    import tensorflow as tf

    model, head = _features_model(200, 8, 4, "sgd")
    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    y = np.arange(8, dtype=np.int32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model.loss(y, model([x, y], training=True)))
    (grad,) = tape.gradient(loss, [head.kernel.value])
    # the rows of the sampled classes and of the batch's own classes, not a (C, D) dense matrix
    assert isinstance(grad, tf.IndexedSlices) and grad.values.shape[0] == head.num_sampled + 8


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed (pip install jax)")
def test_jax_updates_only_the_sampled_rows_too():
    code = ("import sys; sys.path.insert(0, 'tests'); import test_partial_fc as t\n"
            "import keras; assert keras.backend.backend() == 'jax'\n"
            "for name in ('sgd', 'adam'):\n    t._check_only_sampled_rows_change(name)\nprint('OK')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"},
                          cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]


# --------------------------------------------------------------------------- training


def _config(att_crops, tmp_path, **kw):
    from edgeface.train.trainer import TrainConfig

    base = dict(data=att_crops, out=tmp_path / "run", arch="seed-cnn", head="cosface", sample_rate=0.5,
                val_split=0.3, epochs=10, batch_size=16, input_size=56, patience=0, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def test_a_sampled_head_learns_the_att_faces(att_crops, tmp_path):
    """CosFace with half the classes sampled, 40 AT&T people, 280 training crops, 10 epochs of 17 steps.

    Each step samples 20 of the 40 classes: the batch's (up to 16) and random others.  Measured (seed 0, seed-cnn,
    56 px): loss 48.1 -> 30.7, val rank-1 0.29 (seed 1: 0.44; the full head, --sample-rate 1, arcface: 0.46);
    chance is 1/40.  Asserted: rank-1 >= 0.15, 18 of 120 probes where chance expects 3 (binomial tail of chance
    reaching 18: < 1e-6), and the last epoch's loss below 0.8 of the first's.
    """
    from edgeface.nn.loading import load_embedding_model
    from edgeface.train.trainer import train

    result = train(_config(att_crops, tmp_path))
    info = json.loads(result.train_json.read_text())
    losses = [row["loss"] for row in info["history"]]
    assert losses[-1] < 0.8 * losses[0], losses
    assert result.metrics["val_rank1"] >= 0.15, result.metrics
    assert info["head"]["sample_rate"] == 0.5 and info["config"]["sample_rate"] == 0.5
    # The saved network is the plain embedding model: one image input, no head, no label input.
    saved = load_embedding_model(result.model_path)
    assert len(saved.inputs) == 1 and not any("head" in layer.name for layer in saved.layers)


def test_a_sampled_run_resumes(att_crops, tmp_path):
    import keras

    from edgeface.train.augment import AugmentConfig
    from edgeface.train.trainer import train

    people = tmp_path / "people.txt"
    # 24 people, 168 training crops, batch 8: 21 steps an epoch, each sampling 12 of the 24 classes
    people.write_text("".join(f"s{i}\n" for i in range(25, 41)))
    # augmentation off: keras.saving.load_model cannot read back RandomShear's config (a Keras bug), the test reads
    # the checkpoint so
    kw = dict(exclude_people=str(people), epochs=1, batch_size=8, augment=AugmentConfig.off())
    first = train(_config(att_crops, tmp_path, **kw))
    ckpt = keras.saving.load_model(first.run_dir / "checkpoints" / "last.keras")
    kernel_1 = np.asarray(ckpt.get_layer("head").kernel)
    state_1 = json.loads((first.run_dir / "checkpoints" / "state.json").read_text())["rng"]
    assert [0, 21] in state_1  # the class sampler (seed 0) drew once a step
    with pytest.raises(UserError, match="cannot resume .*: its sampled_head was True, now False"):
        train(_config(att_crops, tmp_path, **{**kw, "sample_rate": 1.0, "resume": True}))
    more = train(_config(att_crops, tmp_path, **{**kw, "epochs": 2, "resume": True}))
    info = json.loads(more.train_json.read_text())
    assert (info["epochs_run"], info["epochs_this_session"]) == (2, 1)
    ckpt = keras.saving.load_model(more.run_dir / "checkpoints" / "last.keras")
    assert int(ckpt.optimizer.iterations) == 2 * 21
    assert type(ckpt.optimizer).__name__ == "RowSparseSGD"
    # the class sampler went on from its saved state, and the head trained on from the checkpoint's weights
    assert json.loads((more.run_dir / "checkpoints" / "state.json").read_text())["rng"][-1] == [0, 2 * 21]
    kernel_2 = np.asarray(ckpt.get_layer("head").kernel)
    assert 0 < np.linalg.norm(kernel_2 - kernel_1) < 0.5 * np.linalg.norm(kernel_1)


@pytest.mark.parametrize("args,message", [
    (["--sample-rate", "0"], "--sample-rate must be in (0, 1]"),
    (["--sample-rate", "1.5"], "--sample-rate must be in (0, 1]"),
    (["--sample-rate", "nan"], "--sample-rate must be in (0, 1]"),
    (["--sample-rate", "0.5", "--head", "softmax"], "--head softmax has none"),
])
def test_bad_sample_rates_exit_2_with_one_line(args, message, att_crops, tmp_path):
    result = CliRunner().invoke(app, ["train", str(att_crops), "--out", str(tmp_path / "r"), *args])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
