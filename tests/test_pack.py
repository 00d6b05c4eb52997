"""`edgeface data pack`: AT&T crops written as an InsightFace RecordIO pack, read back record for record."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edgeface.cli import app
from edgeface.data.dataset import load_crops
from edgeface.data.pack import PackConfig, pack
from edgeface.data.recordio import RecordFile, pack_layout, read_property, unpack_payload
from edgeface.errors import UserError

runner = CliRunner()


@pytest.fixture(scope="module")
def people8(tmp_path_factory) -> str:
    """A people file naming 32 of the 40 AT&T people: packs of the other 8 keep the tests quick."""
    path = tmp_path_factory.mktemp("people") / "people.txt"
    path.write_text("".join(f"s{i}\n" for i in range(9, 41)))
    return str(path)


def _records(folder, name="train.rec"):
    """(labels, RGB images) of a pack's image records, in key order, the way InsightFace's loaders find them."""
    with RecordFile(folder / name) as r:
        layout = pack_layout(r)
        labels, images = [], []
        for key in layout.image_keys:
            header, data = unpack_payload(r.read(int(key)))
            labels.append(int(header.label))
            images.append(cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR),
                                       cv2.COLOR_BGR2RGB))
        return np.array(labels), np.stack(images), layout


def test_a_lossless_pack_holds_the_folders_crops_and_labels(att_crops, people8, tmp_path):
    out = tmp_path / "pack"
    summary = pack(PackConfig(src=att_crops, out=out, encoding="png", exclude_people=people8))
    crops = load_crops(att_crops, exclude={f"s{i}" for i in range(9, 41)})
    assert (summary.images, summary.identities, summary.kept_bytes, summary.encoded) == (80, 8, 80, 0)
    assert summary.excluded_people == 32 and summary.size == (112, 112)
    labels, images, layout = _records(out)
    np.testing.assert_array_equal(labels, crops.labels)  # same order, same numbering as `edgeface train DIR`
    np.testing.assert_array_equal(images, crops.images)  # PNG bytes kept: the very pixels
    assert layout.has_header and layout.identity_ranges.tolist() == [[1 + 10 * i, 11 + 10 * i] for i in range(8)]
    assert (out / "identities.txt").read_text().split() == crops.class_names
    assert read_property(out) == (8, 112, 112)
    # the header record 0 is the last record, as InsightFace's RecBuilder writes it
    assert (out / "train.idx").read_text().splitlines()[-1].startswith("0\t")


def test_a_jpeg_pack_is_the_insightface_default(att_crops, people8, tmp_path):
    out = tmp_path / "pack"
    summary = pack(PackConfig(src=att_crops, out=out, exclude_people=people8, quality=90))
    assert (summary.kept_bytes, summary.encoded) == (0, 80)  # PNG crops are encoded once as JPEG
    labels, images, _ = _records(out)
    crops = load_crops(att_crops, exclude={f"s{i}" for i in range(9, 41)})
    np.testing.assert_array_equal(labels, crops.labels)
    diff = np.abs(images.astype(int) - crops.images.astype(int))
    assert diff.mean() < 3.0  # JPEG at quality 90 of a 112x112 face
    assert summary.bytes < 0.5 * sum(p.stat().st_size for p in crops.paths)


def test_shards_split_whole_people_and_share_one_label_space(att_crops, people8, tmp_path):
    out = tmp_path / "pack"
    summary = pack(PackConfig(src=att_crops, out=out, encoding="png", shards=3, exclude_people=people8))
    assert summary.files[:6] == ["train_000.rec", "train_000.idx", "train_001.rec", "train_001.idx",
                                 "train_002.rec", "train_002.idx"]
    parts = [_records(out, f"train_{k:03d}.rec")[0] for k in range(3)]
    assert [sorted(set(p.tolist())) for p in parts] == [[0, 1], [2, 3, 4], [5, 6, 7]]  # about 80/3 images each
    assert read_property(out) == (8, 112, 112)


def test_photos_and_bad_outputs_are_refused(att_dir, att_crops, people8, tmp_path):
    with pytest.raises(UserError, match=r"holds photos, not aligned face crops \(s1/1.pgm is 92x112"):
        pack(PackConfig(src=att_dir, out=tmp_path / "p"))
    assert not list((tmp_path / "p").glob("*"))  # nothing half-written
    with pytest.raises(UserError, match="is inside"):
        pack(PackConfig(src=att_crops, out=att_crops / "pack"))
    pack(PackConfig(src=att_crops, out=tmp_path / "done", exclude_people=people8))
    with pytest.raises(UserError, match="already holds a pack"):
        pack(PackConfig(src=att_crops, out=tmp_path / "done"))
    with pytest.raises(UserError, match="more than the 8 identities"):
        pack(PackConfig(src=att_crops, out=tmp_path / "p", shards=9, exclude_people=people8))


def test_unreadable_crops_are_left_out_and_named(att_crops, tmp_path):
    src = tmp_path / "crops"
    for person in ("s1", "s2"):
        shutil.copytree(att_crops / person, src / person)
    (src / "s2" / "broken.png").write_bytes(b"not a png")
    summary = pack(PackConfig(src=src, out=tmp_path / "p", encoding="png"))
    assert (summary.images, summary.unreadable, summary.skipped_files) == (20, 1, ["s2/broken.png"])


@pytest.mark.parametrize("args, message", [
    (["--encoding", "jpg"], "error: unknown encoding 'jpg' (did you mean 'jpeg'?)"),
    (["--quality", "0"], "error: --quality must be 1 to 100"),
    (["--shards", "0"], "error: --shards must be at least 1"),
])
def test_cli_bad_options_are_one_line_and_exit_2(att_crops, tmp_path, args, message):
    result = runner.invoke(app, ["data", "pack", str(att_crops), "--out", str(tmp_path / "p"), *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1


def test_cli_json_summary(att_crops, people8, tmp_path):
    result = runner.invoke(app, ["data", "pack", str(att_crops), "--out", str(tmp_path / "p"), "--exclude-people",
                                 people8, "--json"])
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert (d["images"], d["identities"], d["size"]) == (80, 8, [112, 112])
    assert d["files"] == ["train.rec", "train.idx", "property", "identities.txt"]
