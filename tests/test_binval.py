"""`edgeface train --val-bin lfw.bin --val-every N`: .bin verification sets scored while training, by the code of
`evaluate --bin`, on the folder path, the RecordIO streaming path and under JAX; bad sets and flags refused with one
line before any training."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from child_code import BLOCK_TENSORFLOW
from lfw_bins import write_lfw_bins
from typer.testing import CliRunner

from edgeface.cli import app
from edgeface.errors import SettingError

runner = CliRunner()


@pytest.fixture(scope="module")
def lfw_bin(lfw_dir, tmp_path_factory) -> Path:
    """300 LFW View 2 pairs (30 of each fold, half same, half different) as a .bin of prepared crops."""
    return write_lfw_bins(lfw_dir, tmp_path_factory.mktemp("lfw300"), per_fold=30)[2] / "lfw_png.bin"


@pytest.fixture(scope="module")
def people10(tmp_path_factory) -> str:
    """A people file leaving AT&T's s1..s10 in (100 crops: 6 steps of 16 per epoch)."""
    path = tmp_path_factory.mktemp("people") / "people.txt"
    path.write_text("".join(f"s{i}\n" for i in range(11, 41)))
    return str(path)


def _evaluate_bin(model: Path, bin_path: Path) -> dict:
    result = runner.invoke(app, ["evaluate", str(model), "--bin", str(bin_path), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["bins"][0]


def test_val_every_k_steps_logs_what_evaluate_bin_gives_for_those_weights(att_crops, lfw_bin, people10, tmp_path):
    import keras

    from edgeface.train.models import get_model

    run = tmp_path / "run"
    args = ["train", str(att_crops), "--out", str(run), "--exclude-people", people10, "--width", "0.25",
            "--epochs", "2", "--batch-size", "16", "--no-augment", "--val-bin", str(lfw_bin), "--val-every", "4"]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})  # no wrapped lines
    assert result.exit_code == 0, result.output
    info = json.loads((run / "train.json").read_text())
    records = info["bin_validation"]
    # 2 epochs of 6 steps: validated after optimizer steps 4, 8 and 12 (mid-epoch 1, mid-epoch 2, the last step)
    assert [(r["step"], r["epoch"], r["set"], r["pairs"]) for r in records] == [
        (4, 1, "lfw_png", 300), (8, 2, "lfw_png", 300), (12, 2, "lfw_png", 300)]
    assert info["config"]["val_every"] == 4 and info["config"]["val_bin"] == [str(lfw_bin)]
    with open(run / "val_bin.csv") as f:
        assert [int(row["step"]) for row in csv.DictReader(f)] == [4, 8, 12]
    last = records[-1]
    # Only a validation on an epoch's last step enters that epoch's row (and log.csv)
    first_row, second_row = info["history"]
    assert "bin:lfw_png" not in first_row
    assert (second_row["bin:lfw_png"], second_row["bin:lfw_png_std"]) == (last["accuracy"], last["accuracy_std"])
    assert "bin:lfw_png" in (run / "log.csv").read_text().splitlines()[0].split(",")
    # Validating is not training: each epoch's img/s leaves the validations' seconds out (6 steps of 16 images)
    for row in info["history"]:
        validating = sum(r["seconds"] for r in records if r["epoch"] == row["epoch"])
        assert 96 / row["images_per_second"] <= row["seconds"] - validating + 0.02
    # The progress lines and the final table
    for shown in ("step 4 (epoch 1/2, step 4/6)  lfw_png ", "step 12 (epoch 2/2, step 6/6)  lfw_png ",
                  f"{100 * last['accuracy']:.2f} ± {100 * last['accuracy_std']:.2f} % (threshold "
                  f"{last['threshold']:.3f})"):
        assert shown in result.output, shown
    assert "│ lfw_png.bin at step 12 " in result.stdout and "│ lfw_png.bin, saved model " in result.stdout

    # checkpoints/last.keras holds the weights of step 12 (saved at the end of epoch 2; nothing trains after the
    # step's validation).  model.keras does not: the precise-BN recalibration after training changed its
    # BatchNorm statistics, so step 12 is compared against the checkpoint's embedding network.
    ckpt = keras.saving.load_model(run / "checkpoints" / "last.keras")
    net = get_model("mobilefacenet", width=0.25)
    net.set_weights(ckpt.get_layer("embedding_net").get_weights())
    saved = keras.saving.load_model(run / "model.keras")
    assert not np.allclose(net.get_layer("stem_bn").moving_variance, saved.get_layer("stem_bn").moving_variance)
    with warnings.catch_warnings():  # Keras' own numpy-2 `__array__` DeprecationWarning while saving
        warnings.simplefilter("ignore", DeprecationWarning)
        net.save(tmp_path / "step12.keras")
    at_step = _evaluate_bin(tmp_path / "step12.keras", lfw_bin)
    assert last["accuracy"] == pytest.approx(at_step["accuracy_mean"], abs=1e-9)
    assert last["accuracy_std"] == pytest.approx(at_step["accuracy_std"], abs=1e-9)
    assert last["threshold"] == pytest.approx(np.mean(at_step["fold_thresholds"]), abs=1e-5)
    assert last["best_threshold"] == pytest.approx(at_step["best_threshold"], abs=1e-5)
    assert last["auc"] == pytest.approx(at_step["auc"], abs=1e-6)
    # ... and the final table's "saved model" figures are evaluate --bin of model.keras itself
    final = _evaluate_bin(run / "model.keras", lfw_bin)
    assert info["metrics"]["bin:lfw_png"] == pytest.approx(final["accuracy_mean"], abs=1e-9)
    assert info["metrics"]["bin:lfw_png_threshold"] == pytest.approx(np.mean(final["fold_thresholds"]), abs=1e-5)

    # --resume of the finished run with --json: no training, the same records on stdout
    again = runner.invoke(app, [*args, "--resume", "--json"])
    assert again.exit_code == 0, again.output
    out = json.loads(again.stdout)
    assert out["bin_validation"] == records and out["metrics"]["bin:lfw_png"] == info["metrics"]["bin:lfw_png"]


def _damaged(path: Path, lfw_bin: Path) -> str:
    path.write_bytes(lfw_bin.read_bytes()[: len(lfw_bin.read_bytes()) // 2])
    return str(path)


def _one_undecodable(path: Path, lfw_bin: Path) -> str:
    images, issame = pickle.loads(lfw_bin.read_bytes())
    images[7] = b"\xff\xd8 not a JPEG"
    path.write_bytes(pickle.dumps((images, issame), protocol=4))
    return str(path)


@pytest.mark.parametrize("extra, message", [
    (lambda t, b: ["--val-bin", _damaged(t / "lfw.bin", b)], "error: {tmp}/lfw.bin: not a .bin verification set"),
    (lambda t, b: ["--val-bin", _one_undecodable(t / "lfw.bin", b)],
     "error: {tmp}/lfw.bin: image 7 is not a decodable image"),
    (lambda t, b: ["--val-bin", str(t / "none.bin")], "error: verification set not found: {tmp}/none.bin"),
    (lambda t, b: ["--val-every", "5"], "error: --val-every sets how often --val-bin files are scored"),
    (lambda t, b: ["--val-bin", str(b), "--val-every", "0"], "error: --val-every must be at least 1"),
    (lambda t, b: ["--val-bin", str(b), "--val-bin", str(b)], "error: --val-bin {bin} and {bin} are both called"),
    (lambda t, b: ["--val-bin", str(b), "--monitor", "bin:lfw"],
     "error: --monitor bin:lfw names no --val-bin set (bin:NAME is a file's name without .bin; given: bin:lfw_png)"),
    (lambda t, b: ["--val-bin", str(b), "--val-every", "13"],
     "error: --val-every 13 is more than the run's 12 optimizer steps (2 epochs of 6)"),
    (lambda t, b: ["--val-bin", str(b), "--val-every", "4", "--monitor", "bin:lfw_png"],
     "error: --val-every 4 does not divide the 6 steps of an epoch"),
])
def test_bad_sets_and_flags_are_one_line_before_training(extra, message, att_crops, lfw_bin, people10, tmp_path):
    run = tmp_path / "run"
    args = ["train", str(att_crops), "--out", str(run), "--exclude-people", people10, "--arch", "seed-cnn",
            "--epochs", "2", "--batch-size", "16", *extra(tmp_path, lfw_bin)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(message.format(tmp=tmp_path, bin=lfw_bin)), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (run / "checkpoints").exists() and not (run / "model.keras").exists()


def test_a_bin_needs_a_network_at_its_input_size(att_crops, lfw_bin, tmp_path):
    from edgeface.train.trainer import TrainConfig

    cfg = TrainConfig(data=att_crops, out=tmp_path / "run", input_size=56, val_bin=(lfw_bin,))
    with pytest.raises(SettingError, match=r"^val_bin sets hold 112x112 aligned crops; this network takes 56x56"):
        cfg.check()


def test_streamed_pack_validates_each_epoch_and_monitor_picks_the_best(att_crops, lfw_bin, people10, tmp_path):
    from edgeface.data.pack import PackConfig, pack

    pack(PackConfig(src=att_crops, out=tmp_path / "pack", exclude_people=people10))
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(tmp_path / "pack"), "--out", str(run), "--arch", "seed-cnn",
                                 "--head", "softmax", "--epochs", "3", "--batch-size", "16", "--patience", "0",
                                 "--val-bin", str(lfw_bin), "--monitor", "bin:lfw_png", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    info = json.loads((run / "train.json").read_text())
    assert info["dataset"]["format"] == "recordio" and info["monitor"] == "bin:lfw_png"
    records = out["bin_validation"]
    assert [(r["step"], r["epoch"]) for r in records] == [(6, 1), (12, 2), (18, 3)]  # default: every epoch's end
    accuracies = [row["bin:lfw_png"] for row in info["history"]]
    assert accuracies == [r["accuracy"] for r in records]
    # the monitor's best epoch is the one with the best .bin accuracy (the first of equals), its weights kept
    assert info["best_epoch"] == 1 + int(np.argmax(accuracies))
    assert (run / "checkpoints" / "best.weights.h5").is_file()
    # seed-cnn has no BatchNorm: after the last step nothing changes the network, so the saved model scores what
    # the last validation did (its Dropout was off: inference mode)
    assert out["metrics"]["bin:lfw_png"] == records[-1]["accuracy"]


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed (pip install jax)")
def test_val_bin_under_the_jax_backend(att_crops, lfw_bin, people10, tmp_path):
    # TensorFlow is unimportable in the child, as on a JAX-only GPU box.  Mid-epoch the JAX trainer keeps the
    # weights outside the layers: a validation that did not sync them would fail or score stale weights.
    code = (
        BLOCK_TENSORFLOW +
        "from edgeface.train.augment import AugmentConfig\n"
        "from edgeface.train.trainer import TrainConfig, train\n"
        f"r = train(TrainConfig(data={str(att_crops)!r}, out={str(tmp_path / 'run')!r}, arch='seed-cnn',\n"
        f"    head='softmax', epochs=1, batch_size=16, exclude_people={people10!r}, augment=AugmentConfig.off(),\n"
        f"    val_bin=({str(lfw_bin)!r},), val_every=3))\n"
        "assert 'tensorflow' not in sys.modules\n"
        "print(json.dumps(r.to_dict()))\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    records = out["bin_validation"]
    assert [r["step"] for r in records] == [3, 6]
    assert out["metrics"]["bin:lfw_png"] == records[-1]["accuracy"]
    # the first validation saw other weights than the last (three optimizer steps apart)
    assert (records[0]["accuracy"], records[0]["best_threshold"]) != (records[1]["accuracy"],
                                                                        records[1]["best_threshold"])


def test_distill_takes_the_same_flags(media_dir, lfw_bin, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("obama.jpg", "obama2.jpg", "biden.jpg", "obama-480p.jpg", "lin-manuel-miranda.png",
                 "alex-lacamoire.png"):
        (photos / name).write_bytes((media_dir / name).read_bytes())
    run = tmp_path / "run"
    args = ["distill", str(photos), "--teacher", "dlib", "--out", str(run), "--cache", str(tmp_path / "cache.sqlite"),
            "--arch", "seed-cnn", "--epochs", "1", "--batch-size", "2", "--val-bin", str(lfw_bin)]
    broken = tmp_path / "broken.bin"
    broken.write_bytes(lfw_bin.read_bytes()[:1000])
    result = runner.invoke(app, [*args, "--val-bin", str(broken)])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {broken}: not a .bin verification set")
    assert not (tmp_path / "cache.sqlite").exists()  # refused before the teacher embedded anything

    result = runner.invoke(app, [*args, "--val-every", "1", "--monitor", "bin:lfw_png", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    steps = out["train_images"] // 2
    assert [r["step"] for r in out["bin_validation"]] == list(range(1, steps + 1))
    info = json.loads((run / "train.json").read_text())
    assert info["monitor"] == "bin:lfw_png" and info["bin_validation"] == out["bin_validation"]
    assert info["history"][0]["bin:lfw_png"] == out["bin_validation"][-1]["accuracy"]
    assert out["metrics"]["bin:lfw_png"] == out["bin_validation"][-1]["accuracy"]  # seed-cnn: no BatchNorm
