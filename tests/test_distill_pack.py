"""`edgeface distill PACK`: a teacher aligned like the pack's crops embeds each record (the embedding of the very
crop the folder holds), the embeddings are cached by record content so a second run computes none, training
streams from the pack; what cannot work (dlib, a box-aligned teacher, --val-split) is one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeface.cli import app
from edgeface.data.dataset import load_crops
from edgeface.data.pack import PackConfig, pack

runner = CliRunner()
EXCLUDE = [f"s{i}" for i in range(9, 41)]


@pytest.fixture(scope="module")
def packs(att_crops, tmp_path_factory):
    """The 8 people's crops as a TFRecord and a RecordIO pack, and a small teacher trained on them."""
    from edgeface.train.augment import AugmentConfig
    from edgeface.train.trainer import TrainConfig, train

    base = tmp_path_factory.mktemp("dpacks")
    people = base / "people.txt"
    people.write_text("".join(f"{p}\n" for p in EXCLUDE))
    pack(PackConfig(src=att_crops, out=base / "tfr", encoding="png", format="tfrecord", exclude_people=str(people)))
    pack(PackConfig(src=att_crops, out=base / "rec", exclude_people=str(people)))
    result = train(TrainConfig(data=base / "tfr", out=base / "teacher", arch="seed-cnn", head="softmax", epochs=1,
                               batch_size=16, augment=AugmentConfig.off(), patience=0))
    return base, result.model_path


def _distill(data, teacher, out, cache, *extra):
    return runner.invoke(app, ["distill", str(data), "--teacher", teacher, "--out", str(out), "--cache", str(cache),
                               "--arch", "seed-cnn", "--embedding-dim", "32", "--epochs", "1", "--batch-size", "16",
                               "--no-augment", "--json", *extra])


def test_distilling_from_a_pack_embeds_records_caches_them_and_streams(packs, att_crops, tmp_path):
    from edgeface.evaluate.embedders import KerasEmbedder

    base, teacher = packs
    cache = tmp_path / "cache.sqlite"
    first = _distill(base / "tfr", f"keras:{teacher}", tmp_path / "run", cache)
    assert first.exit_code == 0, first.output
    r = json.loads(first.stdout)
    assert r["data"]["faces"] == 80 and r["data"]["teacher_computed"] == 80 and r["data"]["cache_hits"] == 0
    assert r["train_images"] == 80 and r["teacher_dim"] == 128 and np.isfinite(r["metrics"]["loss"])
    info = json.loads((tmp_path / "run" / "train.json").read_text())
    assert info["dataset"]["format"] == "tfrecord" and info["task"] == "distillation"

    # the cached vector of a record is the teacher's embedding of that very crop in the folder
    from edgeface.data.sources import open_pack
    from edgeface.distill.cache import EmbeddingCache
    from edgeface.distill.packs import pack_identity
    from edgeface.distill.teachers import load_teacher

    t = load_teacher(f"keras:{teacher}")
    records = open_pack(base / "tfr")
    import hashlib

    keys = [hashlib.sha256(b).hexdigest() for b in records.encoded([0, 41, 79])]
    with EmbeddingCache(cache, pack_identity(t, records), t.dim) as c:
        stored = c.get_many(keys)
    crops = load_crops(att_crops, exclude=set(EXCLUDE))
    direct = KerasEmbedder(teacher).embed(crops.images[[0, 41, 79]])
    np.testing.assert_allclose(np.stack([stored[k] for k in keys]), direct, rtol=1e-4, atol=1e-5)

    # a second run (and another pack format of the same PNG records) reads them all back
    again = _distill(base / "tfr", f"keras:{teacher}", tmp_path / "run2", cache)
    assert again.exit_code == 0, again.output
    d = json.loads(again.stdout)["data"]
    assert d["teacher_computed"] == 0 and d["cache_hits"] == 80
    rec = _distill(base / "rec", f"keras:{teacher}", tmp_path / "run3", cache, "--teacher-only")
    assert rec.exit_code == 0, rec.output
    d = json.loads(rec.stdout)["data"]  # JPEG records: other bytes, other keys, so computed
    assert d["faces"] == 80 and d["teacher_computed"] == 80


def test_what_a_pack_cannot_do_is_one_line(packs, tmp_path):
    base, teacher = packs
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    for data, spec, extra, message in (
        (base / "rec", "dlib", [], "holds aligned crops; the dlib teacher aligns faces its own way"),
        (base / "tfr", f"keras:{teacher}", ["--val-split", "0.2"], "--val-split needs a folder of photographs; "),
        (base / "tfr", f"keras:{teacher}", ["--exclude-people", str(tmp_path / "x.txt")],
         "--exclude-people needs a folder of photographs; "),
    ):
        result = _distill(data, spec, tmp_path / "r", tmp_path / "c.sqlite", *extra)
        if "dlib" in spec and "needs dlib" in result.stderr:
            pytest.skip("dlib is not installed")
        assert result.exit_code == 2 and result.stderr.startswith("error: "), result.output
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_teacher_aligned_another_way_is_refused(packs):
    from edgeface.distill.teachers import load_teacher
    from edgeface.errors import UserError
    from edgeface.runtime.facemodel import FaceModelSpec

    base, teacher = packs
    t = load_teacher(f"keras:{teacher}")
    t.check_crops(str(base / "tfr"))  # edgeface's template: fine
    t.spec = FaceModelSpec.edgeface(alignment="box")
    with pytest.raises(UserError, match="takes 112x112 faces aligned another way \\(box\\)"):
        t.check_crops(str(base / "tfr"))
    t.spec = FaceModelSpec.edgeface(size=96)  # the same template at another size: resized crops
    t.check_crops(str(base / "tfr"))
    assert t.prepare_crop(np.zeros((112, 112, 3), np.uint8)).shape == (96, 96, 3)
