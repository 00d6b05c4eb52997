"""Exact mid-epoch resume (``--checkpoint-every N`` + ``--resume``): a run stopped inside an epoch and resumed ends
with the weights of the run that was never stopped, for a folder of crops and for a RecordIO pack.

Both runs are in this process, on the same CPU threads, from the same seed: TensorFlow's CPU kernels give the same
floats for the same inputs, so "the same batches, augmentation and Dropout masks" shows as bit-identical weights,
optimizer state and BatchNorm statistics (asserted exactly; any other batch, augmentation draw or skipped step
changes the weights at the 1e-3 level or more, see the control below).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from edgeface.errors import UserError


class _Stop(Exception):
    """Stands for a crash (power cut, pre-emption) after a given step."""


def keras_file_arrays(path) -> dict[str, np.ndarray]:
    """Every array of a ``.keras`` file, by h5 path, read from the archive's ``model.weights.h5``
    (``keras.saving.load_model`` cannot rebuild RandomShear)."""
    out = {}
    with zipfile.ZipFile(path) as z:
        with h5py.File(io.BytesIO(z.read("model.weights.h5")), "r") as f:
            f.visititems(lambda name, obj: out.__setitem__(name, np.asarray(obj)) if isinstance(obj, h5py.Dataset)
                         else None)
    return out


def _checkpoint_arrays(run_dir) -> dict[str, np.ndarray]:
    """Every array of ``checkpoints/last.keras`` (weights, BatchNorm statistics, optimizer state), by h5 path."""
    return keras_file_arrays(run_dir / "checkpoints" / "last.keras")


def _stop_after(step: int):
    """A progress callback that raises after global training step ``step`` (1-based)."""
    def progress(p):
        if p.phase == "batch" and (p.epoch - 1) * p.steps + p.step >= step:
            raise _Stop(step)
    return progress


def _run_three_ways(config, stop_at: int, every: int, expect_state: tuple[int, int]):
    """(uninterrupted, stopped at `stop_at` and resumed) checkpoints, and the resumed run's train.json."""
    from edgeface.train.trainer import train

    whole = train(config("whole", checkpoint_every=0))
    with pytest.raises(_Stop):
        train(config("cut", checkpoint_every=every), progress=_stop_after(stop_at))
    state = json.loads((whole.run_dir.parent / "cut" / "checkpoints" / "state.json").read_text())
    assert (state["epoch"], state["step"]) == expect_state  # epochs done, steps done in the next one
    assert state["rng"]  # the augmentation (and Dropout) seed generators' states
    resumed = train(config("cut", checkpoint_every=every, resume=True))
    return _checkpoint_arrays(whole.run_dir), _checkpoint_arrays(resumed.run_dir), resumed


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not different, different[:5]


def _folder_config(att_crops, tmp_path, people: int = 6, **head):
    from edgeface.train.augment import AugmentConfig
    from edgeface.train.trainer import TrainConfig

    leave_out = tmp_path / "people.txt"
    leave_out.write_text("".join(f"s{i}\n" for i in range(people + 1, 41)))  # 6 people, 60 crops: 7 steps of 8

    def config(name, **kw):
        # seed-cnn has Dropout; every augmentation kind on (the defaults)
        return TrainConfig(**{**dict(data=att_crops, out=tmp_path / name, arch="seed-cnn", head="arcface", epochs=2,
                                     batch_size=8, input_size=56, exclude_people=str(leave_out), patience=0, seed=3,
                                     augment=AugmentConfig()), **head, **kw})
    return config


@pytest.mark.parametrize("people,head", [(6, {}), (24, {"head": "cosface", "sample_rate": 0.5}),
                                         (6, {"distribute": "mirrored"})],
                         ids=["arcface", "partial-fc", "mirrored"])
def test_a_folder_run_stopped_mid_epoch_resumes_to_the_same_weights(att_crops, tmp_path, people, head):
    """partial-fc: 24 people, 21 steps an epoch, each sampling 12 classes: the class sampler resumes too.
    mirrored: MirroredStrategy (one replica here), whose input reads ahead and calls the sequence's epoch hooks in
    another order than a plain fit."""
    config = _folder_config(att_crops, tmp_path, people, **head)
    # checkpoints every 3 steps; stopped after step 5, it resumes at epoch 1, step 3; the resumed session trains the
    # rest of epoch 1 and then epoch 2
    whole, resumed, result = _run_three_ways(config, stop_at=5, every=3, expect_state=(0, 3))
    _assert_same(whole, resumed)
    info = json.loads(result.train_json.read_text())
    assert [r["epoch"] for r in info["history"]] == [1, 2] and info["history"][0]["resumed_at_step"] == 3
    assert info["epochs_this_session"] == 2


def test_without_the_random_states_the_resume_differs(att_crops, tmp_path):
    """Control: the same stop and resume with the seed generators' states dropped from the checkpoint (as before
    they were recorded) ends elsewhere: the augmentation drew other transforms."""
    from edgeface.train.trainer import train

    config = _folder_config(att_crops, tmp_path)
    whole = _checkpoint_arrays(train(config("whole", epochs=1)).run_dir)
    with pytest.raises(_Stop):
        train(config("cut", epochs=1, checkpoint_every=3), progress=_stop_after(4))
    state_file = tmp_path / "cut" / "checkpoints" / "state.json"
    state = json.loads(state_file.read_text())
    del state["rng"]
    state_file.write_text(json.dumps(state))
    resumed = _checkpoint_arrays(train(config("cut", epochs=1, checkpoint_every=3, resume=True)).run_dir)
    kernels = [k for k in whole if k.endswith("vars/0") and "optimizer" not in k]
    gap = max(float(np.max(np.abs(whole[k] - resumed[k]))) for k in kernels)
    assert gap > 1e-4, gap


def test_a_pack_run_stopped_mid_epoch_resumes_to_the_same_weights(att_crops, tmp_path):
    from edgeface.data.pack import PackConfig, pack
    from edgeface.train.augment import AugmentConfig
    from edgeface.train.trainer import TrainConfig

    people = tmp_path / "people.txt"
    people.write_text("".join(f"s{i}\n" for i in range(9, 41)))  # 8 people: 80 records, 5 steps of 16 an epoch
    pack(PackConfig(src=att_crops, out=tmp_path / "pack", exclude_people=str(people)))

    def config(name, **kw):
        return TrainConfig(**{**dict(data=tmp_path / "pack", out=tmp_path / name, arch="seed-cnn", head="softmax",
                                     epochs=3, batch_size=16, input_size=56, patience=0, seed=1,
                                     augment=AugmentConfig()), **kw})

    # checkpoints after global steps 4 (epoch 1, step 4) and 8 (epoch 2, step 3); stopped after step 9
    whole, resumed, result = _run_three_ways(config, stop_at=9, every=4, expect_state=(1, 3))
    _assert_same(whole, resumed)
    assert json.loads(result.train_json.read_text())["history"][1]["resumed_at_step"] == 3


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed (pip install jax)")
def test_the_folder_resume_is_exact_under_jax_too():
    """The arcface folder case above in a child process with KERAS_BACKEND=jax (~50 s on 2 cores)."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
                           "folder_run and arcface"], capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).resolve().parent.parent,
                          env={**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout[-3000:]


def test_checkpoint_every_must_be_a_step_count(att_crops, tmp_path):
    config = _folder_config(att_crops, tmp_path)
    with pytest.raises(UserError, match="--checkpoint-every must be a number of optimizer steps >= 0"):
        config("bad", checkpoint_every=-1).check()


def test_cli_refuses_a_negative_checkpoint_interval_with_one_line(att_crops, tmp_path):
    from typer.testing import CliRunner

    from edgeface.cli import app

    args = ["train", str(att_crops), "--out", str(tmp_path / "r"), "--checkpoint-every", "-1"]
    result = CliRunner().invoke(app, args)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "--checkpoint-every must be" in lines[0], result.output
