"""The gallery file (edgeface.runtime.gallery) and the commands that read it: round trip without pickle, another
model's gallery, damage, atomic writes, names; ``edgeface gallery``; run and enroll refusing a gallery they must not
use.

``knn_gallery`` is knn_examples/train enrolled with the session fixture ``runtime_bundle`` (the shipped default
bundle, which the tests without a ``-m`` use too).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from run_cli import events_of, invoke

from edgeface.errors import UserError
from edgeface.runtime.gallery import Gallery, GalleryError, ModelId

# Every test in its own folder: `edgeface run` picks up ./gallery.npz when present.
pytestmark = [pytest.mark.board, pytest.mark.usefixtures("in_tmp_dir")]


def model_id(sha: str = "a" * 64, source: str | None = "s" * 64, dim: int = 4) -> ModelId:
    return ModelId(sha256=sha, embedding_dim=dim, source_sha256=source, name="test-model")


def test_gallery_round_trip_without_pickle(tmp_path):
    g = Gallery(model=model_id())
    rng = np.random.default_rng(0)
    g.add("ada", rng.normal(size=(2, 4)), ["a1.jpg", "a2.jpg"])
    g.add("grace", rng.normal(size=(1, 4)), ["g1.jpg"])
    path = tmp_path / "g.npz"
    g.save(path)
    # A plain numpy reader with pickle disabled can read it: JSON header + float32 matrix.
    with np.load(path, allow_pickle=False) as npz:
        header = json.loads(npz["header"].tobytes().decode())
        assert header["format"] == "edgeface-gallery" and header["version"] == 1
        assert header["model"]["sha256"] == "a" * 64
        assert npz["embeddings"].dtype == np.float32 and npz["embeddings"].shape == (3, 4)
    back = Gallery.load(path, model_id())
    assert back.labels == ["ada", "ada", "grace"]
    assert back.names() == {"ada": 2, "grace": 1}
    np.testing.assert_array_equal(back.embeddings, g.embeddings)
    assert [e["source"] for e in back.entries] == ["a1.jpg", "a2.jpg", "g1.jpg"]
    assert not list(tmp_path.glob(".*tmp"))


def test_gallery_from_another_model_is_refused(tmp_path):
    path = tmp_path / "g.npz"
    g = Gallery(model=model_id(sha="1" * 64, source="2" * 64))
    g.add("ada", np.ones((1, 4)), ["a.jpg"])
    g.save(path)
    with pytest.raises(GalleryError) as err:
        Gallery.load(path, model_id(sha="3" * 64, source="4" * 64))
    assert str(err.value) == (
        f"{path} was enrolled with model test-model (222222222222), dim 4, but the current model is "
        "test-model (444444444444), dim 4: embeddings of different models cannot be compared; pass the gallery's "
        "--model or re-enroll into a new gallery")
    # Another file of the same trained network (int8 vs fp32) is the same model.
    assert Gallery.load(path, model_id(sha="5" * 64, source="2" * 64)).names() == {"ada": 1}
    # Without provenance, the file checksum decides; the dimension always has to agree.
    with pytest.raises(GalleryError):
        Gallery.load(path, model_id(sha="2" * 64, source="2" * 64, dim=8))


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "garbage", "empty", "plain_npy", "pickled_object",
                                    "zip_bomb"])
def test_corrupt_gallery_gives_one_line_and_is_left_untouched(tmp_path, damage):
    path = tmp_path / "g.npz"
    g = Gallery(model=model_id())
    g.add("ada", np.random.default_rng(1).normal(size=(50, 4)), [f"{i}.jpg" for i in range(50)])
    g.save(path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip_byte":  # inside the embeddings member: the zip CRC catches it
        with zipfile.ZipFile(path) as z:
            info = z.getinfo("embeddings.npy")
        pos = info.header_offset + 30 + len(info.filename) + 200
        path.write_bytes(data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1:])
    elif damage == "garbage":
        path.write_bytes(b"this is not a gallery at all" * 10)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "plain_npy":
        np.save(tmp_path / "x.npy", np.zeros(3))
        path.write_bytes((tmp_path / "x.npy").read_bytes())
    elif damage == "pickled_object":  # an npz whose member needs pickle must not be unpickled
        np.savez(tmp_path / "p.npz", header=np.array([{"a": 1}], dtype=object), embeddings=np.zeros((1, 4)))
        path.write_bytes((tmp_path / "p.npz").read_bytes())
    elif damage == "zip_bomb":  # the real header, and 256 MiB of embeddings deflated to a quarter of a MiB
        with zipfile.ZipFile(path) as z:
            header = z.read("header.npy")
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("header.npy", header)
            np.save(tmp_path / "e.npy", np.zeros((1 << 19, 128), np.float32))
            z.write(tmp_path / "e.npy", "embeddings.npy")
        assert path.stat().st_size < 1 << 20
    before = path.read_bytes()
    with pytest.raises(GalleryError) as err:
        Gallery.load(path, model_id())
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert "corrupt" in message or "not an edgeface gallery" in message
    if damage == "zip_bomb":  # refused from the declared sizes, before anything is inflated
        assert "would expand to 256 MiB" in message
    assert path.read_bytes() == before


def test_gallery_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "g.npz"
    g = Gallery(model=model_id())
    g.add("ada", np.ones((1, 4)), ["a.jpg"])
    g.save(path)
    before = path.read_bytes()
    g.add("grace", np.ones((1, 4)), ["g.jpg"])

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(GalleryError, match=r"^cannot write gallery .*g\.npz: disk full; the file on disk \(if any\) "
                       "was not changed$"):  # a UserError: one line, no traceback
        g.save(path)
    assert path.read_bytes() == before  # the old gallery survives a failed write
    assert [p.name for p in tmp_path.iterdir()] == ["g.npz"]  # and no temp file is left behind


def test_gallery_names_remove_rename(tmp_path):
    g = Gallery(model=model_id())
    g.add("ada", np.ones((2, 4)), ["a1", "a2"])
    g.add("grace", np.ones((1, 4)), ["g1"])
    with pytest.raises(UserError, match="reserved"):
        g.add("Unknown", np.ones((1, 4)), ["x"])
    with pytest.raises(UserError, match=r"'grce' is not in the gallery \(did you mean 'grace'\?\)"):
        g.remove("grce")
    with pytest.raises(UserError, match="'grace' is already enrolled"):
        g.rename("ada", "grace")
    assert g.rename("ada", "ada lovelace") == 2
    assert g.remove("grace") == 1
    assert g.names() == {"ada lovelace": 2} and g.embeddings.shape == (2, 4)


def test_gallery_that_cannot_be_read_or_written_is_a_gallery_error(tmp_path, monkeypatch):
    g = Gallery(model=model_id())
    g.add("ann", np.eye(4, dtype=np.float32)[:1], ["a.jpg"])
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the gallery's folder should be")
    target = blocker / "g.npz"
    with pytest.raises(GalleryError, match=rf"^cannot write gallery {re.escape(str(target))}: File exists; the file"):
        g.save(target)
    assert blocker.read_text().startswith("a file where")

    path = tmp_path / "g.npz"
    g.save(path)
    import edgeface.runtime.gallery as gallery_module

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    import edgeface.fileio

    # root ignores chmod: deny here (the gallery reads through its own module, writes through fileio)
    for module in (gallery_module, edgeface.fileio):
        monkeypatch.setattr(module, "open", denied, raising=False)
    with pytest.raises(GalleryError, match=rf"^cannot read gallery {re.escape(str(path))}: Permission denied$"):
        Gallery.load(path)
    with pytest.raises(GalleryError, match=rf"^cannot write gallery {re.escape(str(path))}: Permission denied; "):
        g.save(path)
    monkeypatch.undo()
    assert Gallery.load(path).names() == {"ann": 1}  # the failed save left the file as it was
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


# --- the gallery through the commands ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def knn_gallery(runtime_bundle, media_dir, tmp_path_factory) -> Path:
    """knn_examples/train enrolled (one person per folder), with the CLI."""
    path = tmp_path_factory.mktemp("gallery") / "knn.npz"
    for person in sorted((media_dir / "knn_examples" / "train").iterdir()):
        result = invoke("enroll", person.name, person, "-g", path, "-m", runtime_bundle, "--pick", "largest")
        assert result.exit_code == 0, result.output
    return path


def test_an_enrolled_photo_is_recognised_as_its_person(knn_gallery, runtime_bundle, media_dir):
    """Enrollment and recognition share detection, alignment and embedding: a photo matches its own entry."""
    photo = media_dir / "knn_examples" / "train" / "biden" / "biden.jpg"
    result = invoke("run", "-s", photo, "-m", runtime_bundle, "-g", knn_gallery, "-q")
    assert result.exit_code == 0, result.output
    frames, summary = events_of(result.stdout)
    face = frames[0]["detections"][0]
    assert face["identity"] == "biden" and face["score"] > 0.99
    assert summary["identities"] == {"biden": 1} and summary["people"] == 5


def test_gallery_commands_list_remove_rename(knn_gallery, tmp_path):
    gallery = tmp_path / "g.npz"
    shutil.copy(knn_gallery, gallery)
    result = invoke("gallery", "list", "-g", gallery, "--json")
    assert result.exit_code == 0
    listed = json.loads(result.stdout)
    assert [p["name"] for p in listed["people"]] == ["alex_lacamoire", "biden", "kit_harington", "obama",
                                                      "rose_leslie"]
    assert listed["embeddings"] == 9 and len(listed["model"]["sha256"]) == 64
    assert invoke("gallery", "rename", "kit_harington", "Kit Harington", "-g", gallery).exit_code == 0
    assert invoke("gallery", "remove", "rose_leslie", "-g", gallery).exit_code == 0
    result = invoke("gallery", "remove", "obamma", "-g", gallery)
    assert result.exit_code == 2 and "did you mean 'obama'?" in result.stderr
    names = Gallery.load(gallery).names()
    assert names == {"alex_lacamoire": 1, "biden": 2, "Kit Harington": 2, "obama": 2}
    result = invoke("gallery", "list", "-g", gallery)
    assert result.exit_code == 0 and "Kit Harington" in result.stdout


def test_run_refuses_a_gallery_from_another_model(knn_gallery, runtime_bundle, media_dir, tmp_path):
    other = tmp_path / "other_bundle"
    shutil.copytree(runtime_bundle, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest.setdefault("provenance", {})["source_sha256"] = "f" * 64  # another trained network
    manifest["model"]["name"] = "other"
    (other / "manifest.json").write_text(json.dumps(manifest))
    before = knn_gallery.read_bytes()
    for args in (["run", "-s", media_dir / "obama2.jpg"], ["enroll", "x", media_dir / "obama2.jpg"]):
        result = invoke(*args, "-m", other, "-g", knn_gallery, "-q" if args[0] == "run" else "--json")
        assert result.exit_code == 2
        line = result.stderr.strip().splitlines()[-1]
        assert line.startswith(f"error: {knn_gallery} was enrolled with model ")
        assert line.endswith("but the current model is other (ffffffffffff), dim "
                             f"{manifest['model']['embedding_dim']}: embeddings of different models cannot be "
                             "compared; pass the gallery's --model or re-enroll into a new gallery")
    assert knn_gallery.read_bytes() == before


def test_corrupt_gallery_stops_run_and_enroll_and_is_not_overwritten(runtime_bundle, knn_gallery, media_dir,
                                                                       tmp_path):
    gallery = tmp_path / "g.npz"
    data = knn_gallery.read_bytes()
    gallery.write_bytes(data[: len(data) - 100])  # a copy cut short, as by a full disk or a pulled plug
    before = gallery.read_bytes()
    for args in (["run", "-s", media_dir / "obama2.jpg", "-q"], ["enroll", "obama", media_dir / "obama2.jpg"],
                 ["gallery", "remove", "obama"]):
        model = ["-m", runtime_bundle] if args[0] != "gallery" else []
        result = invoke(*args, *model, "-g", gallery)
        assert result.exit_code == 2, result.output
        assert result.stderr.strip().splitlines()[-1].startswith(f"error: {gallery} is corrupt or truncated (")
        assert "it was left untouched: restore a backup or delete it and re-enroll" in result.stderr
        assert gallery.read_bytes() == before


def test_names_are_text_not_markup_and_control_characters_are_refused(media_dir, tmp_path):
    gallery = tmp_path / "g.npz"
    for name in ("Dr. [/b] Who", "Ann [red]"):
        result = invoke("enroll", name, media_dir / "biden.jpg" if "Who" in name else media_dir / "obama.jpg",
                        "-g", gallery)
        assert result.exit_code == 0, result.output
        assert "Traceback" not in result.output and f"{name}: 1 embedding(s) added" in result.stderr
    listed = invoke("gallery", "list", "-g", gallery)
    assert listed.exit_code == 0 and "Dr. [/b] Who" in listed.stdout and "Ann [red]" in listed.stdout
    result = invoke("run", "-s", media_dir / "biden.jpg", "-g", gallery, "-q")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[0])["detections"][0]["identity"] == "Dr. [/b] Who"
    for name in ("a\nb", "tab\there"):
        result = invoke("enroll", name, media_dir / "obama.jpg", "-g", gallery)
        assert result.exit_code == 2 and "holds a control character" in result.stderr


def test_a_gallery_with_a_non_finite_row_is_refused_for_matching_but_can_be_repaired(media_dir, tmp_path):
    gallery = tmp_path / "g.npz"
    for name in ("obama", "biden"):
        assert invoke("enroll", name, media_dir / f"{name}.jpg", "-g", gallery).exit_code == 0
    g = Gallery.load(gallery)
    g.embeddings[g.labels.index("biden")] = np.nan  # written by a broken tool, checksum and all
    g.save(gallery)
    result = invoke("run", "-s", media_dir / "obama2.jpg", "-g", gallery, "-q")
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (f"error: {gallery} is corrupt: 1 embedding(s) of 'biden' are not finite numbers; "
                                     "remove those people (`edgeface gallery remove`) and re-enroll them, or restore "
                                     "a backup")
    assert invoke("gallery", "list", "-g", gallery).exit_code == 0
    assert invoke("gallery", "remove", "biden", "-g", gallery).exit_code == 0
    result = invoke("run", "-s", media_dir / "obama2.jpg", "-g", gallery, "-q")
    assert result.exit_code == 0 and json.loads(result.stdout.splitlines()[0])["detections"][0]["identity"] == "obama"
