"""Fuzzing every reader of user and board files (issue 22): a short, reproducible run, then one regression
test per crash the fuzzing found.

The contract: a file that is not what the reader expects ends in the reader's UserError (one line, exit code 2
under the CLI); a file it accepts gives a sane value.  Targets, seeds (real files: the shipped models and
manifest, a gallery made through the Gallery API, an LFW photo, dlib's .dat), strategies and the isolated
worker are in ``tests/fuzz_harness.py``, with why Hypothesis and not atheris.  Every property runs a fixed,
derandomized set of examples (the same on every machine) in a worker process, so a crash of native code
(LiteRT, OpenCV) fails one test instead of killing pytest.  The long run:
``python tests/benchmarks/fuzz_readers.py --target all --minutes 5``.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from types import SimpleNamespace

import fuzz_harness as fh
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings

from edgeface.errors import UserError

# Examples per target in the regular suite: the whole file in about a minute on 2 cores (per target from 100/s
# for the text readers down to 15/s for dlib's 22 MB .dat; the long run goes on from here).
EXAMPLES = {"image": 400, "gallery": 600, "sealed_gallery": 300, "manifest": 600, "model_manifest": 300, "spec": 600,
            "tflite_graph": 400,
            "interpreter": 400, "inventory": 500, "events": 300, "dlib_dat": 150}


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory, data_dir):
    """The seed files and a worker process reading cases (restarted after a crash)."""
    seed_dir = tmp_path_factory.mktemp("fuzz_seeds")
    fh.build_seeds(seed_dir)
    runner = fh.Runner(seed_dir)
    yield SimpleNamespace(seeds=fh.load_seeds(seed_dir), runner=runner)
    runner.close()


def _seed_case(target: fh.Target, seed: str) -> fh.Case:
    files = {name: fh.Mutant(s) for name, s in target.companions}
    files[target.file_name(seed)] = fh.Mutant(seed)
    return fh.Case(tuple(sorted(files.items())))


def test_every_target_reads_its_unchanged_seeds(fuzz):
    """The harness itself: each real seed file is read without error (a finding below is then the mutation's)."""
    assert set(EXAMPLES) == set(fh.TARGETS)
    for target in fh.TARGETS.values():
        for seed in fuzz.seeds.get(target.seed_dir, {}):
            result = fuzz.runner.run(target, _seed_case(target, seed))
            assert result.outcome == "ok", f"{target.name} {seed}: {result.describe()}"


@pytest.mark.parametrize("name", list(fh.TARGETS))
def test_reader_survives_fuzzing(name, fuzz):
    """EXAMPLES[name] derandomized cases: the reader returns a sane value or raises its UserError; anything else
    (another exception, a signal, a hang, an insane value, a message of several lines) fails, shrunk."""
    target = fh.TARGETS[name]
    if target.seed_dir not in fuzz.seeds:
        pytest.skip(f"no seed file for {name} (face_recognition_models not installed)")

    @settings(max_examples=EXAMPLES[name], deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=(Phase.generate, Phase.shrink))
    @given(fh.case_strategy(target, fuzz.seeds))
    def reader_returns_or_raises_user_error(case):
        result = fuzz.runner.run(target, case)
        assert result.outcome != "finding", f"{name}: {result.describe()}"

    reader_returns_or_raises_user_error()


# --------------------------------------------------------------------------- regressions: images


def _lfw_jpeg(data_dir: Path) -> bytes:
    return (data_dir / "lfw" / "lfw-deepfunneled" / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg").read_bytes()


def _with_size(kind: str, data: bytes, width: int, height: int) -> bytes:
    """A real image file whose header declares width x height (PNG: IHDR with its CRC recomputed)."""
    import zlib

    buf = bytearray(data)
    if kind == "jpg":
        sof = buf.find(b"\xff\xc0")
        struct.pack_into(">HH", buf, sof + 5, height, width)
    elif kind == "png":
        struct.pack_into(">II", buf, 16, width, height)
        struct.pack_into(">I", buf, 29, zlib.crc32(bytes(buf[12:29])) & 0xFFFFFFFF)
    elif kind == "gif":  # the logical screen
        struct.pack_into("<HH", buf, 6, width, height)
    elif kind == "bmp":
        struct.pack_into("<ii", buf, 18, width, height)
    elif kind == "tiff":  # ImageWidth/ImageLength entries of the first IFD, rewritten as LONGs
        (ifd,) = struct.unpack_from("<I", buf, 4)
        (count,) = struct.unpack_from("<H", buf, ifd)
        for i in range(count):
            entry = ifd + 2 + 12 * i
            tag = struct.unpack_from("<H", buf, entry)[0]
            if tag in (256, 257):
                struct.pack_into("<HHII", buf, entry, tag, 4, 1, width if tag == 256 else height)
    else:  # pgm
        return f"P5\n# a comment\n{width} {height}\n255\n".encode() + bytes(64)
    return bytes(buf)


def _encoded(ext: str) -> bytes:
    """A real photo (obama.jpg, downscaled) encoded by OpenCV as ``ext``."""
    import cv2

    image = cv2.resize(cv2.imread(str(fh.SELF_TEST_FACE)), (53, 37))
    ok, buf = cv2.imencode(ext, image[:, :, 0] if ext == ".pgm" else image)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("kind", ["jpg", "png", "gif", "bmp", "tiff", "pgm"])
def test_image_declaring_a_huge_size_is_refused_before_decoding(kind, data_dir, tmp_path):
    """A 7 kB JPEG or 2 kB GIF declaring 32767x32767 pixels decoded to 3.2 GB (6-7 GB resident, 17 s); a PNG
    declaring 40000x40000 raised cv2.error past OpenCV's own limit.  Refused from the header now, and so are BMP,
    TIFF and netpbm headers (WebP's 14-bit sizes stay under the limit by themselves)."""
    from edgeface.runtime.images import MAX_PIXELS, UnreadableImage, read_image

    seeds = {"jpg": lambda: _lfw_jpeg(data_dir), "png": fh.SELF_TEST_FACE.read_bytes, "gif": fh._gif_seed,
             "bmp": lambda: _encoded(".bmp"), "tiff": lambda: _encoded(".tiff"), "pgm": lambda: b""}
    seed = seeds[kind]()
    side = 32767 if kind in ("jpg", "gif") else 40000
    path = tmp_path / f"bomb.{kind}"
    path.write_bytes(_with_size(kind, seed, side, side))
    with pytest.raises(UnreadableImage, match=rf"bomb\.{kind}: its header declares {side}x{side} pixels, more "
                       rf"than the {MAX_PIXELS // 1_000_000} MP"):
        read_image(path)
    assert issubclass(UnreadableImage, UserError)  # one line under any command


def test_image_past_opencv_limit_in_an_unchecked_format_is_a_user_error(tmp_path):
    """OpenCV raises cv2.error (not None) for a header past its 2**30-pixel limit: UnreadableImage.  Sun raster,
    which OpenCV reads and this header check does not know, is left to OpenCV's own limit."""
    from edgeface.runtime.images import UnreadableImage, declared_size, read_image

    path = tmp_path / "huge.ras"
    path.write_bytes(struct.pack(">8I", 0x59A66A95, 40000, 40000, 8, 0, 1, 0, 0) + bytes(64))
    assert declared_size(path.read_bytes()) is None
    with pytest.raises(UnreadableImage, match=r"huge\.ras: not a readable image \(.*CV_IO_MAX_IMAGE_PIXELS"):
        read_image(path)


def test_damaged_gif_is_a_user_error(tmp_path):
    """Minimal input found: the GIF seed with bit 0 of byte 0 flipped raised UnreadableImage, which was not a
    UserError (a traceback wherever a caller did not catch it)."""
    from edgeface.runtime.images import read_image

    path = tmp_path / "photo.gif"
    path.write_bytes(fh.apply_ops(fh._gif_seed(), [("flip", 0, 0)]))
    with pytest.raises(UserError, match=r"photo\.gif: not a readable image"):
        read_image(path)


def test_declared_size_reads_real_photos(data_dir):
    """The header parser agrees with the decoder on real JPEGs and PNGs (it must never refuse a real photo)."""
    from edgeface.runtime.images import declared_size, read_image

    photos = [*sorted((data_dir / "lfw" / "lfw-deepfunneled").glob("A*/*.jpg"))[:20],
              *sorted((data_dir / "media").glob("*.jpg")), *sorted((data_dir / "media").glob("*.png"))]
    photos += sorted((data_dir / "att_faces").glob("s1/*.pgm"))
    for p in photos:
        h, w = read_image(p).shape[:2]
        assert declared_size(p.read_bytes()) == (w, h), p
    assert declared_size(fh._gif_seed()) == (48, 48)
    for ext in (".bmp", ".tiff", ".webp", ".ppm", ".pgm", ".png", ".jpg"):
        assert declared_size(_encoded(ext)) == (53, 37), ext
    import cv2

    lossless = cv2.imencode(".webp", cv2.imread(str(fh.SELF_TEST_FACE)), [cv2.IMWRITE_WEBP_QUALITY, 101])[1]
    h, w = cv2.imread(str(fh.SELF_TEST_FACE)).shape[:2]
    assert declared_size(lossless.tobytes()) == (w, h)


# --------------------------------------------------------------------------- regressions: galleries


def _gallery_bytes(**members) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **members)
    return buf.getvalue()


def _patch_central(data: bytes, offset: int, value: int, width: int) -> bytes:
    """``data`` (a zip) with a field of its first central-directory entry set."""
    buf = bytearray(data)
    at = buf.find(b"PK\x01\x02")
    buf[at + offset:at + offset + width] = value.to_bytes(width, "little")
    return bytes(buf)


@pytest.mark.parametrize("field, value, width, message", [
    (6, 75, 2, "zip file version 7.5"),  # version needed to extract: NotImplementedError
    (10, 99, 2, "compression method is not supported"),  # NotImplementedError
    (8, 1, 2, "encrypted, password required"),  # flag bit 0, an encrypted member: RuntimeError
])
def test_gallery_zip_features_numpy_cannot_read_are_gallery_errors(field, value, width, message, tmp_path):
    from edgeface.runtime.gallery import Gallery, GalleryError

    path = tmp_path / "gallery.npz"
    good = _gallery_bytes(header=np.frombuffer(b"{}", np.uint8), embeddings=np.zeros((0, 4), np.float32))
    path.write_bytes(_patch_central(good, field, value, width))
    with pytest.raises(GalleryError, match=rf"gallery\.npz is corrupt or truncated \(.*{message}"):
        Gallery.load(path)


def test_gallery_member_flagged_deflated_that_is_not_is_a_gallery_error(tmp_path):
    """Minimal input found: the first member's method flipped to deflate (one bit of the central directory)
    and its local extra-field length zeroed raised zlib.error ("invalid stored block lengths")."""
    from edgeface.runtime.gallery import Gallery, GalleryError

    good = _gallery_bytes(header=np.frombuffer(b"{}", np.uint8), embeddings=np.zeros((0, 4), np.float32))
    damaged = bytearray(_patch_central(good, 10, 8, 2))
    damaged[28:30] = bytes(2)  # the local header's extra-field length (np.savez writes a 20-byte zip64 field)
    path = tmp_path / "gallery.npz"
    path.write_bytes(bytes(damaged))
    with pytest.raises(GalleryError, match=r"corrupt or truncated \(Error -3 while decompressing data"):
        Gallery.load(path)


def test_gallery_member_names_are_quoted_on_one_line(tmp_path):
    """Minimal input found: a copied chunk gave a member a name with a newline, printed raw (two lines)."""
    from edgeface.runtime.gallery import Gallery, GalleryError

    path = tmp_path / "gallery.npz"
    path.write_bytes(_gallery_bytes(**{"head\ner": np.zeros(2, np.uint8)}))
    with pytest.raises(GalleryError) as err:
        Gallery.load(path)
    assert str(err.value).endswith("is not an edgeface gallery (members: 'head\\ner')")
    assert "\n" not in str(err.value)


def test_gallery_header_nested_too_deeply_is_a_gallery_error(tmp_path):
    """Minimal input found: a header of '[' * 5000 raised RecursionError from json.loads."""
    from edgeface.runtime.gallery import Gallery, GalleryError

    path = tmp_path / "gallery.npz"
    path.write_bytes(_gallery_bytes(header=np.frombuffer(b"[" * 5000, np.uint8),
                                    embeddings=np.zeros((0, 128), np.float32)))
    with pytest.raises(GalleryError, match="unreadable header: maximum recursion depth"):
        Gallery.load(path)


# --------------------------------------------------------------------------- regressions: manifests and specs


def _bundle(tmp_path: Path, text: str) -> Path:
    (tmp_path / "manifest.json").write_text(text)
    return tmp_path


def test_manifest_nested_too_deeply_is_a_user_error(tmp_path):
    """Minimal input found: '[' * 1000 inserted at byte 0 of the shipped manifest raised RecursionError."""
    from edgeface.runtime.bundle import Bundle
    from edgeface.runtime.facemodel import spec_for_model_file

    manifest = fh.DEFAULT_BUNDLE.joinpath("manifest.json").read_text()
    root = _bundle(tmp_path, "[" * 1000 + manifest)
    with pytest.raises(UserError, match=r"manifest\.json is not valid JSON \(nested too deeply\)"):
        Bundle.load(root)
    spec, source = spec_for_model_file(root / "dlib_int8.tflite")  # not listed by an unreadable manifest
    assert source == "edgeface default"


def test_manifest_embedding_dim_of_another_type_is_a_user_error(tmp_path):
    """Minimal input found: model.embedding_dim set to null raised TypeError in Bundle.embedding_dim."""
    from edgeface.runtime.bundle import Bundle

    manifest = json.loads(fh.DEFAULT_BUNDLE.joinpath("manifest.json").read_text())
    for value in (None, "128", True, 128.5):
        manifest["model"]["embedding_dim"] = value
        with pytest.raises(UserError, match=rf"model\.embedding_dim must be a whole number, found {value!r}"):
            Bundle.load(_bundle(tmp_path, json.dumps(manifest)))


def test_model_file_beside_a_manifest_whose_files_are_not_a_list_gets_the_default_spec(tmp_path):
    """Minimal input found: a manifest.json of {"files": true} beside a model file raised TypeError in
    spec_for_model_file (it looks for the file in the manifest's list)."""
    from edgeface.runtime.facemodel import DEFAULT_SPEC_SOURCE, spec_for_model_file

    (tmp_path / "manifest.json").write_text('{"files": true}')
    assert spec_for_model_file(tmp_path / "model.tflite")[1] == DEFAULT_SPEC_SOURCE


def test_spec_from_a_manifest_of_other_types_is_a_user_error():
    """spec_for_model_file hands FaceModelSpec.from_manifest manifests Bundle.load never checked."""
    from edgeface.runtime.facemodel import FaceModelSpec

    with pytest.raises(UserError, match="m.json: model, alignment and threshold must be JSON objects"):
        FaceModelSpec.from_manifest({"model": [1]}, "m.json")
    with pytest.raises(UserError, match="m.json: option input_size must be"):
        FaceModelSpec.from_manifest({"alignment": {"size": "big"}}, "m.json")


def test_manifest_number_too_large_for_a_float_is_a_user_error(tmp_path):
    """Minimal input found: 1000 '0's inserted into a number of the MobileFaceNet manifest (an integer of 1000
    digits) raised OverflowError converting it to float in FaceModelSpec.from_options."""
    from edgeface.runtime.bundle import Bundle

    manifest = json.loads(fh.DEFAULT_BUNDLE.joinpath("manifest.json").read_text())
    manifest["threshold"]["cosine"] = 10**1000
    bundle = Bundle.load(_bundle(tmp_path, json.dumps(manifest)))
    with pytest.raises(UserError, match=r"option threshold must be one number or 1, got \[1000000+ \.\.\.; re-export"):
        _ = bundle.spec


def test_spec_scale_whose_reciprocal_overflows_is_a_user_error(tmp_path):
    """Minimal input found: scale = 5e-324 in a spec file gave std = inf and mean = inf, accepted."""
    from edgeface.runtime.facemodel import read_spec_file

    path = tmp_path / "model.toml"
    path.write_text("input_size = 112\nscale = 5e-324\n")
    with pytest.raises(UserError, match="option scale 5e-324 with offset 0.0 gives no finite mean and std"):
        read_spec_file(path)


@pytest.mark.parametrize("reader", ["spec", "inventory"])
def test_toml_nested_too_deeply_is_a_user_error(reader, tmp_path):
    """Minimal input found (inventory): '[' * 1000 inserted into boards.toml raised RecursionError from
    tomllib, which sets no depth limit; read_toml (spec files, teacher configs) had the same hole."""
    from edgeface.devices.inventory import Inventory
    from edgeface.runtime.facemodel import read_spec_file

    path = tmp_path / "file.toml"
    path.write_text("a = " + "[" * 1000 + "]" * 1000 + "\n")
    with pytest.raises(UserError, match="arrays nested too deeply"):
        (read_spec_file if reader == "spec" else Inventory.load)(path)


@pytest.mark.parametrize("reader", ["spec", "inventory", "manifest"])
def test_integer_past_python_digit_limit_is_a_user_error(reader, tmp_path):
    """Minimal input found (inventory): 100000 '0's inserted into boards.toml; tomllib and json raise a plain
    ValueError (Python's 4300-digit limit for int()), not their DecodeError, which the readers caught alone."""
    from edgeface.devices.inventory import Inventory
    from edgeface.runtime.bundle import Bundle
    from edgeface.runtime.facemodel import read_spec_file

    digits = "1" * 5000
    if reader == "manifest":
        with pytest.raises(UserError, match=r"manifest\.json is not valid JSON \(Exceeds the limit \(4300 digits\)"):
            Bundle.load(_bundle(tmp_path, f'{{"schema_version": {digits}}}'))
        return
    path = tmp_path / "file.toml"
    path.write_text(f"a = {digits}\n")
    with pytest.raises(UserError, match=r"file\.toml is not (a )?valid TOML( file)?: Exceeds the limit \(4300 digit"):
        (read_spec_file if reader == "spec" else Inventory.load)(path)


def test_inventory_board_name_with_a_newline_stays_on_one_line(tmp_path):
    """Minimal input found: a [boards] table whose entry "\\r" is not a table printed the name raw (two lines)."""
    from edgeface.devices.inventory import Inventory

    path = tmp_path / "boards.toml"
    path.write_text('[boards]\n"a\\rb" = false\n')
    with pytest.raises(UserError) as err:
        Inventory.load(path)
    assert str(err.value).endswith("board 'a\\rb' must be a table: [boards.\"a\\rb\"] then host = False")
    assert "\r" not in str(err.value)


def test_inventory_board_with_an_empty_host_is_a_user_error(tmp_path):
    """Found: host = "" was accepted (parse_address refuses it for a TARGET on the command line)."""
    from edgeface.devices.inventory import Inventory

    path = tmp_path / "boards.toml"
    path.write_text('[boards.door]\nhost = ""\n')
    with pytest.raises(UserError, match=r"\[boards\.door\]: host '' is not a host name or address"):
        Inventory.load(path)


# --------------------------------------------------------------------------- regressions: board state


def _deployment(tmp_path: Path, events: bytes, release: bytes) -> Path:
    root = tmp_path / "deploy"
    rel = root / "releases" / "r1"
    rel.mkdir(parents=True)
    (rel / "release.json").write_bytes(release)
    (root / "current").symlink_to("releases/r1")
    (root / "events.jsonl").write_bytes(events)
    return root


@pytest.mark.parametrize("line", [b"null", b"[1, 2]", b'"flash"', b"[" * 1000])
def test_board_event_lines_that_are_not_objects_are_shown_as_unreadable(line, tmp_path):
    """Minimal inputs found: an events.jsonl line `null` (then AttributeError in rollback's history and the
    status table) and '[' * 1000 (RecursionError in the probe, on the board)."""
    from edgeface.devices import probe
    from edgeface.devices.manage import previous_in_history

    state = probe.state(str(_deployment(tmp_path, line + b"\n", b"{}")), 10)
    assert state["events"] == [{"event": "unreadable", "message": line.decode()[:200]}]
    assert previous_in_history(state["events"], "r1") is None


@pytest.mark.parametrize("release", [b"true", b"[1]", b"[" * 1000])
def test_release_info_that_is_not_an_object_is_empty(release, tmp_path):
    """Minimal input found: release.json of '[' * 1000 raised RecursionError in the probe; `true` reached
    the status table as info."""
    from edgeface.devices import probe

    state = probe.state(str(_deployment(tmp_path, b"", release)), 10)
    assert [r["info"] for r in state["releases"]] == [{}]


def test_status_table_survives_fields_of_other_types(tmp_path, capsys):
    """Minimal input found: release.json with settings = true (AttributeError in the status table); a
    message that is a number (TypeError)."""
    from edgeface.commands.devices import _print_status
    from edgeface.devices import probe
    from edgeface.devices.manage import previous_in_history

    events = b'{"event": "flash", "status": "ok", "current": "r1", "previous": 5, "message": 7}\n'
    state = probe.state(str(_deployment(tmp_path, events, b'{"settings": true}')), 10)
    assert previous_in_history(state["events"], "r1") is None  # a release id is text
    _print_status({"board": "door", "address": "pi@door", "identity": {}, "profile": "rpi5",
                   "current": state["current"], "releases": state["releases"], "incomplete": [],
                   "service": {"state": "active"}, "events": state["events"], "remote_dir": state["remote_dir"]})
    assert "7" in capsys.readouterr().out


# --------------------------------------------------------------------------- regressions: TFLite files


def _tflite_edit(path: Path, edit) -> bytes:
    """A shipped model rebuilt through the flatbuffer object API after ``edit(model, ops)`` changed it."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    ops = [(names[max(model.operatorCodes[op.opcodeIndex].builtinCode,
                      model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode)], op)
           for op in model.subgraphs[0].operators]
    edit(model, ops)
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _first(ops, name):
    return next(op for n, op in ops if n == name)


def _dequantize_larger(model, ops):
    """A depthwise filter's DEQUANTIZE output declared 16777240 channels for its 24 (one flipped bit did this to
    the detector): XNNPACK unpacks the float16 weights with that shape and reads past them."""
    depthwise = [op for name, op in ops if name == "DEPTHWISE_CONV_2D"][1]
    tensor = model.subgraphs[0].tensors[depthwise.inputs[1]]
    tensor.shape = np.array([*tensor.shape[:-1], 16777240], np.int32)


def _no_subgraph(model, ops):  # zeroed bytes 15 and 17 of the detector: the subgraphs field gone
    model.subgraphs = None


def _zero_point_without_scale(model, ops):  # an int value written over the dlib model's quantization
    q = model.subgraphs[0].tensors[_first(ops, "ADD").outputs[0]].quantization
    q.scale = np.array([], np.float32)


def _add_into_float(model, ops):  # a damaged tensor table: an int8 ADD's output read as float32, unquantized
    tensor = model.subgraphs[0].tensors[_first(ops, "ADD").outputs[0]]
    tensor.type, tensor.quantization = 0, None


def _operator_index_out_of_range(model, ops):  # one flipped bit of the detector did this
    op = _first(ops, "CONV_2D")
    op.inputs = np.array([9999, *op.inputs[1:]], np.int32)


def _tensor_name_not_utf8(model, ops):
    model.subgraphs[0].tensors[0].name = b"\xfe\xffinput"


# (edit, seed, what the interpreter did before, the message now)
TFLITE_CASES = {
    "dequantize_larger": (_dequantize_larger, fh.DETECTOR, "SIGSEGV", "into shape (1, 3, 3, 16777240)"),
    "no_subgraph": (_no_subgraph, fh.DETECTOR, "SIGSEGV", "it has no subgraph"),
    "zero_point_without_scale": (_zero_point_without_scale, fh.EMBEDDER, "SIGABRT",
                                 "has 0 quantization scales and 1 zero points"),
    "add_into_float": (_add_into_float, fh.EMBEDDER, "SIGABRT",
                       "ADD with an input of type INT8 and an output of type FLOAT32"),
    "operator_index_out_of_range": (_operator_index_out_of_range, fh.DETECTOR, "IndexError in read_graph",
                                    "uses tensor 9999 of"),
}


@pytest.mark.parametrize("case", list(TFLITE_CASES))
def test_damaged_tflite_is_refused_before_the_interpreter(case, fuzz):
    """Each damage crashed the process inside LiteRT (or the graph reader raised IndexError); the shim and
    the graph reader now refuse the file in one line.  Read in the fuzz worker: a regression must fail this
    test, not kill pytest."""
    edit, seed, before, message = TFLITE_CASES[case]
    data = _tflite_edit(seed, edit)
    for name in ("interpreter", "tflite_graph"):
        result = fuzz.runner.run(fh.TARGETS[name], fh.Case((("model.tflite", data),)))
        assert result.outcome == "user_error", f"{name} (was {before}): {result.describe()}"
        assert "TFLite model" in result.message and message in result.message, result.message


def test_tflite_tensor_name_not_utf8_is_read_with_replacement_characters(tmp_path):
    """Minimal input found: 11 bytes copied into a tensor name of the dlib model raised UnicodeDecodeError."""
    from edgeface.runtime.tflite_graph import read_graph

    path = tmp_path / "model.tflite"
    path.write_bytes(_tflite_edit(fh.DETECTOR, _tensor_name_not_utf8))
    assert read_graph(path).tensors[0].name == "\ufffd\ufffdinput"


def test_tflite_constant_without_data_fails_to_run_in_one_line(tmp_path):
    """Minimal input found: byte 116 of the detector set to 0 dropped a weight buffer's data; the file loads
    and invoke raised RuntimeError ("Input tensor 23 lacks data") out of TFLiteModel.run."""
    from edgeface.runtime.interpreter import TFLiteModel

    def drop_weights(model, ops):
        weights = model.subgraphs[0].tensors[_first(ops, "DEQUANTIZE").inputs[0]]
        model.buffers[weights.buffer].data = None

    path = tmp_path / "model.tflite"
    path.write_bytes(_tflite_edit(fh.DETECTOR, drop_weights))
    model = TFLiteModel(path, threads=1)
    with pytest.raises(UserError, match=r"model\.tflite failed to run: Input tensor \d+ lacks data"):
        model.run(np.zeros(model.input.shape, np.float32))


def test_structure_check_passes_every_shipped_model():
    from edgeface.runtime.tflite_graph import structure_problem

    shipped = sorted(Path(fh.REPO / "edgeface" / "models").rglob("*.tflite"))
    assert len(shipped) >= 4
    assert {p.name: structure_problem(p.read_bytes()) for p in shipped} == {p.name: None for p in shipped}

