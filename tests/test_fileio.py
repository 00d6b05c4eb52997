"""edgeface.fileio: atomic writes keep the old file on failure, leave no temp file, and give the umask's mode."""

from __future__ import annotations

import os
import stat

import pytest

from edgeface.fileio import atomic_output, atomic_write_bytes, atomic_write_text, umask_mode

pytestmark = pytest.mark.board


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_written_files_get_the_umask_mode_not_mkstemps_0600(tmp_path, umask_027):
    path = tmp_path / "sub" / "state.json"  # the folder is created
    atomic_write_text(path, "{}\n")
    assert path.read_text() == "{}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 == umask_mode(0o666)
    assert umask_mode(0o777) == 0o750
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "gallery.npz"
    atomic_write_bytes(path, b"old", fsync=True)

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["gallery.npz"]


def test_atomic_output_keeps_the_suffix_and_discards_the_file_when_the_writer_raises(tmp_path):
    path = tmp_path / "roc.png"
    with atomic_output(path, suffix=".png") as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".png" and tmp.name.startswith(".roc.png.")
        tmp.write_bytes(b"png")
    assert path.read_bytes() == b"png"
    with pytest.raises(RuntimeError, match="plot failed"), atomic_output(path, suffix=".png") as tmp:
        tmp.write_bytes(b"half a png")
        raise RuntimeError("plot failed")
    assert path.read_bytes() == b"png"
    assert [p.name for p in tmp_path.iterdir()] == ["roc.png"]


def test_rewriting_a_file_keeps_its_mode_and_its_symlink(tmp_path, umask_027):
    private = tmp_path / "gallery.npz"
    atomic_write_bytes(private, b"v1")
    private.chmod(0o600)  # biometric templates: the owner made it private
    atomic_write_bytes(private, b"v2", fsync=True)
    assert private.read_bytes() == b"v2" and stat.S_IMODE(private.stat().st_mode) == 0o600

    (tmp_path / "shared").mkdir()
    target = tmp_path / "shared" / "real.npz"
    atomic_write_bytes(target, b"v1")
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    atomic_write_bytes(link, b"v2")
    assert link.is_symlink() and target.read_bytes() == b"v2"
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == ["real.npz"]  # no temp file left


def test_private_files_are_created_0600_and_never_widened_or_narrowed(tmp_path):
    old = os.umask(0o022)  # a stock Raspberry Pi OS umask: plain files come out world-readable
    try:
        gallery = tmp_path / "gallery.npz"
        atomic_write_bytes(gallery, b"v1", private=True)
        assert stat.S_IMODE(gallery.stat().st_mode) == 0o600
        atomic_write_bytes(gallery, b"v2", private=True)
        assert stat.S_IMODE(gallery.stat().st_mode) == 0o600 and gallery.read_bytes() == b"v2"
        shared = tmp_path / "shared.npz"  # a gallery its owner opened up on purpose keeps that mode
        atomic_write_bytes(shared, b"v1")
        assert stat.S_IMODE(shared.stat().st_mode) == 0o644
        atomic_write_bytes(shared, b"v2", private=True)
        assert stat.S_IMODE(shared.stat().st_mode) == 0o644
    finally:
        os.umask(old)
