"""Shared fixtures: real faces from ../shared/data (override with EDGEFACE_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("EDGEFACE_DATA", REPO.parent / "shared" / "data"))


def pytest_configure(config):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"face data not found at {DATA}: set EDGEFACE_DATA to the shared data folder")
    return DATA


@pytest.fixture(scope="session")
def att_dir(data_dir) -> Path:
    return data_dir / "att_faces"


@pytest.fixture(scope="session")
def lfw_dir(data_dir) -> Path:
    return data_dir / "lfw"


@pytest.fixture(scope="session")
def media_dir(data_dir) -> Path:
    return data_dir / "media"


@pytest.fixture
def in_tmp_dir(tmp_path, monkeypatch):
    """Run the test in its own folder (`edgeface run` picks up ./gallery.npz when present): the runtime's test files
    ask for it in their ``pytestmark``."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def short_videos(media_dir, tmp_path_factory):
    """A 40-frame MJPEG AVI of the clip, and a copy cut in half (its header still announces 40 frames)."""
    import cv2

    out = tmp_path_factory.mktemp("videos")
    cap = cv2.VideoCapture(str(media_dir / "short_hamilton_clip.mp4"))
    full = out / "clip40.avi"
    writer = cv2.VideoWriter(str(full), cv2.VideoWriter_fourcc(*"MJPG"), 30, (640, 360))
    for _ in range(40):
        writer.write(cap.read()[1])
    writer.release()
    cut = out / "clip40_cut.avi"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    return full, cut


@pytest.fixture(scope="module")
def face_jpeg(media_dir) -> bytes:
    """A face photo as one JPEG, the frame tests/mjpeg_server.py's camera sends."""
    import cv2

    image = cv2.imread(str(media_dir / "obama2.jpg"))
    image = cv2.resize(image, (313, 600))
    return cv2.imencode(".jpg", image)[1].tobytes()


@pytest.fixture(scope="session")
def att_crops(att_dir, tmp_path_factory) -> Path:
    """AT&T faces aligned once per test session by `edgeface data prepare` (all 40 people)."""
    from edgeface.data.prepare import PrepareConfig, prepare

    out = tmp_path_factory.mktemp("att_crops")
    summary = prepare(PrepareConfig(src=att_dir, out=out, workers=2))
    assert summary.aligned >= 390
    return out


@pytest.fixture(scope="session")
def runtime_bundle() -> Path:
    """The bundle the runtime's tests run: the shipped default model (dlib's ResNet, int8, with both BlazeFace
    files).  A runtime-only install (`pip install edgeface`, no TensorFlow: what .ci/run also tests) has no way
    to train or export one, so these tests use what every install ships."""
    from edgeface.runtime.bundle import default_bundle_dir

    return default_bundle_dir()


@pytest.fixture(scope="session")
def exported_bundle(trained_model, att_crops, tmp_path_factory) -> Path:
    """`trained_model` exported by `edgeface export` to fp32 + int8 (calibrated and verified on AT&T crops),
    with the BlazeFace detector files: the bundle folder (manifest.json + files)."""
    from edgeface.converters.export import export_bundle
    from edgeface.converters.export_config import ExportConfig

    out = tmp_path_factory.mktemp("exported") / "bundle"
    result = export_bundle(ExportConfig(model=trained_model, out=out, formats="fp32,int8", calib=att_crops,
                                        calib_count=100, verify_count=40, compile_edgetpu=False))
    assert [r.status for r in result.formats] == ["ok", "ok"], [r.to_dict() for r in result.formats]
    return out


@pytest.fixture(scope="session")
def trained_model(att_crops, tmp_path_factory) -> Path:
    """RUN/model.keras of a MobileFaceNet trained through `edgeface.train` (ArcFace, SGD at lr 0.01, 8 epochs, batch
    32, default augmentation) on AT&T people s1..s30 with 3 of each person's 10 crops held out (listed in
    RUN/split.json); s31..s40 were never seen.  RUN/train.json holds its metrics (held-out rank-1 0.933 on an AVX2
    AMD EPYC, chance 0.033).

    lr 0.01, not SGD's default 0.05: 48 steps at 0.05 are chaotic enough that the CPU's float kernels decide the
    model.  On an AVX-512 Xeon it exported to int8 at mean cosine ~0.985; on an AVX2-only EPYC the same seed gave
    early depthwise layers with outlier channels (stem_dw_bn max 70 against a per-channel median of 5.5, so a
    quarter of its channels fall under one int8 step) and int8 at mean cosine 0.94, min 0.77: a correctly flagged
    failed_verification, but not the well-behaved model these tests need.  At 0.01 the EPYC gives mean 0.993,
    min 0.976 (seed 0)."""
    from edgeface.train.trainer import TrainConfig, train

    base = tmp_path_factory.mktemp("trained_model")
    unseen = base / "unseen_people.txt"
    unseen.write_text("".join(f"s{i}\n" for i in range(31, 41)))
    run = base / "run"
    train(TrainConfig(data=att_crops, out=run, arch="mobilefacenet", head="arcface", epochs=8, batch_size=32,
                      lr=0.01, val_split=0.3, exclude_people=str(unseen), seed=0))
    return run / "model.keras"
