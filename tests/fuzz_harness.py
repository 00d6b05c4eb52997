"""Fuzzing every reader of user and board files: real seed files, mutations, targets and an isolated worker.

Shared by ``tests/test_fuzz.py`` (a short, derandomized run in the regular suite) and
``tests/benchmarks/fuzz_readers.py`` (the long run that prints executions and findings).

The contract fuzzed (the project guide's): a file that is not what the reader expects ends in the reader's
:class:`~edgeface.errors.UserError` (one line, exit code 2 under the CLI), never in another exception, a crash
of the process, a hang or an allocation sized by a hostile length field.  A reader that accepts a file must
return a sane value (each target below says what it checks).

Why Hypothesis rather than atheris (wheels checked with ``pip download`` against PyPI: atheris 3.0.0 and 3.1.0):

- The readers are Python over numpy, OpenCV and LiteRT.  Hypothesis is pure Python, already in the ``dev``
  extra, and its properties are ordinary pytest tests: the short run is part of ``pytest`` with no compiled
  harness and no libFuzzer main loop taking over the process.
- atheris' current wheels are for Linux x86_64 alone (cp311 in 3.0.0, cp312/cp313 in 3.1.0; macOS has an
  old 2.2.2 universal2 wheel up to cp311): none for Linux aarch64 (the boards this project targets, ARM CI
  runners) or Windows, where ``pip`` builds it from source, which needs a clang with libFuzzer (atheris'
  README).
- Hypothesis shrinks a failing input to a minimal one (fewest mutations, smallest offsets and values) and,
  with ``derandomize=True``, the same examples run on every CI machine (for one Hypothesis version); the minimal
  mutation program is what a regression test pins.  atheris reports the raw crashing input (minimising it is a
  separate libFuzzer run).
- What atheris does better: its search is coverage-guided and Hypothesis' is not.  The strategies here make
  up for part of that by mutating real, valid files (so every input gets past the magic numbers) and by
  aiming most mutations at the bytes that hold structure (headers, lengths, offsets, record names), not at
  weights or pixels.

Native crashes: OpenCV's decoders and LiteRT's interpreter are C++, and a corrupt ``.tflite`` file can crash
the process (SIGSEGV).  Every case therefore runs in a worker process (:class:`Runner`) that the parent
restarts after a crash; a signal, a hang past the time limit or a MemoryError under the worker's address-space
limit is reported as a finding like any unexpected exception.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("EDGEFACE_DATA", REPO.parent / "shared" / "data"))
DEFAULT_BUNDLE = REPO / "edgeface" / "models" / "default"
DETECTOR = DEFAULT_BUNDLE / "face_detection_short_range.tflite"
EMBEDDER = DEFAULT_BUNDLE / "dlib_int8.tflite"
LFW_PHOTO = DATA / "lfw" / "lfw-deepfunneled" / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg"
SELF_TEST_FACE = REPO / "edgeface" / "models" / "self_test_face.png"
# A reader may use this much memory beyond what the warmed-up worker already maps: the largest real file is
# the 22.5 MB dlib .dat, so a reader asking for gigabytes was talked into it by a length field.
MEMORY_HEADROOM = 2 << 30
PROJECT_DIRS = ("edgeface", "converters", "devices")

# --------------------------------------------------------------------------- mutations

# Values that break length and offset fields: zero, one, sign boundaries, all ones (masked to the width).
INTERESTING = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
               0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF)


@dataclass(frozen=True)
class Mutant:
    """A seed file with mutation ops applied in order; each op is a tuple (kind, offset, ...), offsets taken
    modulo the current length so every op stays valid while Hypothesis shrinks the others away.

    ``fields`` come first: (group, value) pairs writing a hostile value into a length or size field the seed's
    format declares (:func:`length_fields`: an image's width and height, a zip member's sizes and offsets),
    with the PNG chunk's CRC recomputed so the decoder believes it.
    """

    seed: str
    ops: tuple = ()
    fields: tuple = ()


@dataclass(frozen=True)
class NpzEdit:
    """A seed ``.npz`` repacked as a valid archive (right sizes and CRCs, as ``np.savez`` writes it) with its
    ``header`` member's JSON edited (a :class:`DocEdit` of syntax json) or replaced by raw bytes, and/or its
    ``embeddings`` replaced by an array of another shape, type or content; ``drop`` removes members."""

    seed: str
    header_edit: Optional[DocEdit] = None
    header_raw: Optional[bytes] = None
    embeddings: Optional[tuple] = None  # (shape, dtype name, fill value)
    drop: tuple = ()


@dataclass(frozen=True)
class DocEdit:
    """A seed document (JSON or TOML) parsed, one value at ``path_index`` (in depth-first order) replaced by
    ``value``, deleted, or given a new sibling key; written back in the same syntax."""

    seed: str
    syntax: str  # "json" or "toml"
    path_index: int
    op: str  # "replace", "delete", "add"
    value: Any = None
    key: str = "x"


Source = Union[bytes, Mutant, DocEdit, NpzEdit]


@dataclass(frozen=True)
class Case:
    """One input: files (relative name -> content) written into a fresh folder that the target reads."""

    files: tuple[tuple[str, Source], ...]


def length_fields(name: str, data: bytes) -> list[tuple[tuple[tuple[int, int, bool], ...], int]]:
    """Groups of length/size fields of a seed, each ((offset, width, big-endian), ...) set to one value together,
    with the offset of the PNG chunk whose CRC covers them (-1: none)."""
    suffix = Path(name).suffix
    groups: list = []
    try:
        if suffix == ".png":
            groups.append((((16, 4, True), (20, 4, True)), 8))  # IHDR width and height
            pos = 8
            while pos + 8 <= len(data):
                groups.append((((pos, 4, True),), -1))  # chunk length
                pos += 12 + struct.unpack(">I", data[pos:pos + 4])[0]
        elif suffix == ".jpg":
            pos = 2
            while pos + 4 <= len(data) and data[pos] == 0xFF and data[pos + 1] != 0xDA:
                marker, length = data[pos + 1], struct.unpack(">H", data[pos + 2:pos + 4])[0]
                groups.append((((pos + 2, 2, True),), -1))  # segment length
                if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                    groups.append((((pos + 5, 2, True), (pos + 7, 2, True)), -1))  # frame height and width
                pos += 2 + length
        elif suffix == ".gif":
            groups.append((((6, 2, False), (8, 2, False)), -1))  # logical screen
            at = data.find(b"\x2c", 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0))
            if at > 0:
                groups.append((((at + 5, 2, False), (at + 7, 2, False)), -1))  # first frame
        elif suffix == ".npz":
            for sig, fields in ((b"PK\x03\x04", ((18, 4), (22, 4), (26, 2), (28, 2))),
                                (b"PK\x01\x02", ((20, 4), (24, 4), (28, 2), (30, 2), (32, 2), (42, 4))),
                                (b"PK\x05\x06", ((8, 2), (10, 2), (12, 4), (16, 4)))):
                at = data.find(sig)
                while at >= 0:
                    groups += [(((at + off, width, False),), -1) for off, width in fields]
                    at = data.find(sig, at + 1)
    except (IndexError, struct.error):  # a seed this cannot map: no field ops
        pass
    return groups


_FIELDS: dict[tuple[str, int], list] = {}


def apply_fields(name: str, data: bytes, fields: Sequence[tuple[int, int]]) -> bytes:
    """``data`` with each (group, value) of ``fields`` written into :func:`length_fields`' group."""
    if not fields:
        return data
    key = (name, hash(data))
    if key not in _FIELDS:
        _FIELDS[key] = length_fields(name, data)
    groups = _FIELDS[key]
    if not groups:
        return data
    buf = bytearray(data)
    for group, value in fields:
        places, crc_at = groups[group % len(groups)]
        for offset, width, big in places:
            buf[offset:offset + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "big" if big else "little")
        if crc_at >= 0:
            import zlib

            (length,) = struct.unpack(">I", buf[crc_at:crc_at + 4])
            end = crc_at + 8 + length
            buf[end:end + 4] = struct.pack(">I", zlib.crc32(bytes(buf[crc_at + 4:end])) & 0xFFFFFFFF)
    return bytes(buf)


def apply_ops(data: bytes, ops: Sequence[tuple]) -> bytes:
    """The bytes of ``data`` after the mutation ops (see :func:`mutation_op`)."""
    buf = bytearray(data)
    for op in ops:
        kind = op[0]
        n = len(buf)
        if kind == "insert":
            pos = op[1] % (n + 1)
            buf[pos:pos] = op[2]
            continue
        if kind == "repeat":  # deep nesting, long runs: '[' * 50000
            pos = op[1] % (n + 1)
            buf[pos:pos] = bytes([op[2]]) * op[3]
            continue
        if n == 0:
            continue
        pos = op[1] % n
        if kind == "flip":
            buf[pos] ^= 1 << op[2]
        elif kind == "set":
            buf[pos] = op[2]
        elif kind == "int":
            _, _, width, value, big = op
            raw = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "big" if big else "little")
            buf[pos:pos + width] = raw[: n - pos]
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "delete":
            del buf[pos:pos + op[2]]
        elif kind == "copy":  # overwrite with a chunk of the same file
            chunk = bytes(buf[op[2] % n:op[2] % n + op[3]])
            buf[pos:pos + len(chunk)] = chunk[: n - pos]
        elif kind == "dup":  # splice: insert a chunk of the same file
            chunk = bytes(buf[op[2] % n:op[2] % n + op[3]])
            buf[pos:pos] = chunk
        else:
            raise ValueError(f"unknown mutation op {op!r}")
    return bytes(buf)


def mutation_op(hot: Sequence[int]):
    """A Hypothesis strategy for one mutation op; offsets come from ``hot`` (where the file keeps its
    structure) half of the time."""
    from hypothesis import strategies as st

    anywhere = st.integers(0, 2**31 - 1)
    pos = st.one_of(st.sampled_from(list(hot)), anywhere) if hot else anywhere
    return st.one_of(
        st.tuples(st.just("flip"), pos, st.integers(0, 7)),
        st.tuples(st.just("set"), pos, st.integers(0, 255)),
        st.tuples(st.just("int"), pos, st.sampled_from((1, 2, 4, 8)), st.sampled_from(INTERESTING), st.booleans()),
        st.tuples(st.just("truncate"), pos),
        st.tuples(st.just("insert"), pos, st.binary(min_size=1, max_size=16)),
        st.tuples(st.just("repeat"), pos, st.sampled_from(b'[{"\x00\xff 0'), st.sampled_from((2, 1000, 100_000))),
        st.tuples(st.just("delete"), pos, st.integers(1, 64)),
        st.tuples(st.just("copy"), pos, pos, st.integers(1, 64)),
        st.tuples(st.just("dup"), pos, pos, st.integers(1, 64)),
    )


# Values for length fields: INTERESTING's, plus image sizes just under and over the limits that matter
# (JPEG's 65500, OpenCV's 2**30 pixels, 32767 squared being 2**30 less a little).
FIELD_VALUES = INTERESTING + (0x4000, 0x7FFF7FFF, 65500, 40000)


def mutants(seeds: dict[str, bytes], hot: dict[str, list[int]], max_ops: int = 4):
    """Strategy: one of ``seeds`` with 1..``max_ops`` mutation ops, and for formats with length fields,
    0..2 hostile values in them."""
    from hypothesis import strategies as st

    def for_seed(name: str):
        ops = st.lists(mutation_op(hot.get(name, ())), min_size=0 if length_fields(name, seeds[name]) else 1,
                       max_size=max_ops)
        fields = (st.lists(st.tuples(st.integers(0, 255), st.sampled_from(FIELD_VALUES)), max_size=2)
                  if length_fields(name, seeds[name]) else st.just([]))
        return st.tuples(ops, fields).filter(lambda of: of[0] or of[1]).map(
            lambda of: Mutant(name, tuple(of[0]), tuple(of[1])))

    return st.sampled_from(sorted(seeds)).flatmap(for_seed)


def npz_edits(seeds: dict[str, bytes]):
    """Strategy: a seed gallery repacked with a retyped header, a raw header or other embeddings."""
    from hypothesis import strategies as st

    names = sorted(seeds)
    header_edit = st.builds(DocEdit, seed=st.sampled_from(names), syntax=st.just("json"),
                            path_index=st.integers(0, 10_000), op=st.sampled_from(("replace", "delete", "add")),
                            value=json_values(), key=st.text(max_size=10))
    raw = st.one_of(st.binary(max_size=64), st.sampled_from((b"[" * 5000, b'{"a":' * 3000, b"", b"null", b"[]")))
    emb = st.tuples(st.lists(st.integers(0, 5), max_size=3).map(tuple),
                    st.sampled_from(("float32", "float64", "float16", "int8", "bool", "<U3")),
                    st.sampled_from((0.0, 1.0, float("nan"), float("inf"))))
    return st.builds(NpzEdit, seed=st.sampled_from(names), header_edit=st.none() | header_edit,
                     header_raw=st.none() | raw, embeddings=st.none() | emb,
                     drop=st.sampled_from(((), ("header",), ("embeddings",))))


def json_values(max_leaves: int = 12):
    """Strategy: any JSON value, numbers at their limits included (NaN, inf, 64-bit and larger integers)."""
    from hypothesis import strategies as st

    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-(2**70), 2**70),
                        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                        max_leaves=max_leaves)


def toml_values(max_leaves: int = 10):
    """Strategy: any TOML value (JSON's, less null)."""
    from hypothesis import strategies as st

    scalars = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=True),
                        st.text(max_size=12))
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                        max_leaves=max_leaves)


def doc_edits(seeds: dict[str, bytes], syntax: str):
    """Strategy: a real document with one value of the wrong type, one key removed or one unknown key added."""
    from hypothesis import strategies as st

    values = json_values() if syntax == "json" else toml_values()
    return st.builds(DocEdit, seed=st.sampled_from(sorted(seeds)), syntax=st.just(syntax),
                     path_index=st.integers(0, 10_000), op=st.sampled_from(("replace", "replace", "delete", "add")),
                     value=values, key=st.text(max_size=10))


def random_documents(syntax: str):
    """Strategy: a whole random document (a JSON value, or a TOML table of random keys and tables)."""
    from hypothesis import strategies as st

    if syntax == "json":
        return json_values(20).map(lambda v: json.dumps(v).encode())
    return st.dictionaries(st.text(max_size=10), toml_values(), max_size=6).map(lambda d: toml_dumps(d).encode())


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, prefix + (i,))
    return out


def apply_edit(seed: bytes, edit: DocEdit) -> bytes:
    """The bytes of :class:`DocEdit` ``edit`` applied to ``seed``."""
    import tomllib

    doc = json.loads(seed) if edit.syntax == "json" else tomllib.loads(seed.decode())
    paths = _paths(doc)
    if paths:
        path = paths[edit.path_index % len(paths)]
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        if edit.op == "replace":
            parent[last] = edit.value
        elif edit.op == "delete":
            del parent[last]
        elif isinstance(parent, dict):
            parent[edit.key] = edit.value
        else:
            parent.append(edit.value)
    if edit.syntax == "json":
        return json.dumps(doc, indent=2).encode()
    return toml_dumps(doc).encode()


def _toml_key(key: str) -> str:
    return json.dumps(key)  # a JSON string is a valid TOML basic string (no surrogates: Hypothesis' text has none)


def _toml_inline(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(value), repr(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_inline(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_inline(v)}" for k, v in value.items() if v is not None) + "}"
    raise TypeError(f"no TOML for {type(value).__name__}")


def toml_dumps(doc: dict, table: tuple = ()) -> str:
    """TOML text of ``doc``: scalars and arrays as ``key = value``, nested dicts as ``[a.b]`` tables."""
    lines = []
    if table:
        lines.append("[" + ".".join(_toml_key(k) for k in table) + "]")
    for k, v in doc.items():
        if v is not None and not isinstance(v, dict):
            lines.append(f"{_toml_key(k)} = {_toml_inline(v)}")
    text = "\n".join(lines) + "\n"
    for k, v in doc.items():
        if isinstance(v, dict):
            text += toml_dumps(v, table + (k,))
    return text


# --------------------------------------------------------------------------- seeds: real, valid files


def dlib_dat_path() -> Optional[Path]:
    """dlib's face recognition ResNet from the ``face_recognition_models`` package (None if not installed)."""
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution("face_recognition_models")
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if str(f).endswith("dlib_face_recognition_resnet_model_v1.dat"):
            return Path(dist.locate_file(f))
    return None


def _default_gallery_bytes() -> bytes:
    """A gallery of three people made through the Gallery API for the shipped default model (unit embeddings
    from a fixed seed, fixed times, so the parent and the worker build the same bytes)."""
    import numpy as np

    from edgeface.runtime.bundle import Bundle
    from edgeface.runtime.gallery import Gallery, ModelId

    model = ModelId.from_bundle(Bundle.load(None))
    rng = np.random.default_rng(0)
    g = Gallery(model=model, created="2026-01-01T00:00:00+00:00", updated="2026-01-01T00:00:00+00:00")
    for name, n in (("lin-manuel-miranda", 2), ("alex-lacamoire", 1), ("Zoë O'Brien", 1)):
        emb = rng.normal(size=(n, model.embedding_dim)).astype(np.float32)
        g.add(name, emb / np.linalg.norm(emb, axis=1, keepdims=True), [f"{name}_{i}.png" for i in range(n)])
    for e in g.entries:
        e["added"] = "2026-01-01T00:00:00+00:00"
    g.updated = "2026-01-01T00:00:00+00:00"
    buf = io.BytesIO()
    # the plain .npz Gallery.save writes (to_bytes where the encryption work has added it)
    header = np.frombuffer(json.dumps(g.header()).encode("utf-8"), dtype=np.uint8)
    np.savez(buf, header=header, embeddings=np.ascontiguousarray(g.embeddings, np.float32))
    return buf.getvalue()


INVENTORY_SEED = b'''# boards.toml (devices/inventory.py's example)
[defaults]
user = "pi"
identity = "~/.ssh/id_ed25519"

[boards.door]
host = "192.168.1.21"
profile = "rpi5"
groups = ["entrance"]
threads = 4
source = 0

[boards.lab-coral]
host = "coral.local"
user = "mendel"
port = 22
profile = "coral-devboard"
groups = ["lab"]
remote_dir = "~/.edgeface"
python = "python3"
'''


# A throwaway key for the encrypted-gallery seed (fixed, so every run fuzzes the same bytes).
FUZZ_KEY_HEX = "00112233445566778899aabbccddeeff" * 2


def _fuzz_key():
    from edgeface.runtime.gallery_crypto import key_from_text

    return key_from_text(FUZZ_KEY_HEX, "the fuzz key")


def _sealed_gallery_bytes() -> bytes:
    """The default gallery seed sealed under the fuzz key (fixed nonce: the same bytes every run)."""
    from edgeface.runtime.bundle import Bundle
    from edgeface.runtime.gallery import ModelId
    from edgeface.runtime.gallery_crypto import seal

    model = ModelId.from_bundle(Bundle.load(None)).to_dict()
    return seal(_default_gallery_bytes(), _fuzz_key(), model, nonce=bytes(12))


def _events_seed() -> bytes:
    """events.jsonl as flash and rollback write it (remote.append_event: one sorted JSON object a line)."""
    lines = [
        {"time": "2026-01-01T10:00:00Z", "by": "ana@laptop", "event": "flash", "status": "ok",
         "release": "20260101T100000-abc123", "current": "20260101T100000-abc123", "previous": None, "step": None,
         "message": None, "edgeface_version": "0.1.0", "model": "dlib", "seconds": 41.5},
        {"time": "2026-01-02T10:00:00Z", "by": "ana@laptop", "event": "flash", "status": "failed",
         "release": "20260102T100000-def456", "current": "20260101T100000-abc123",
         "previous": "20260101T100000-abc123", "step": "health", "message": "self-test failed: faces",
         "edgeface_version": "0.1.0", "model": "dlib", "seconds": 12.0},
        {"time": "2026-01-03T10:00:00Z", "by": "ana@laptop", "event": "break-lock", "status": "ok",
         "message": "removed the lock of a flash by bo@desk since 2026-01-03T09:00:00Z"},
        {"time": "2026-01-03T10:05:00Z", "by": "ana@laptop", "event": "rollback", "status": "ok",
         "release": "20251231T100000-000aaa", "current": "20251231T100000-000aaa",
         "previous": "20260101T100000-abc123", "step": None, "message": None, "seconds": 3.2},
    ]
    return "".join(json.dumps(e, sort_keys=True) + "\n" for e in lines).encode()


RELEASE_SEED = json.dumps({
    "id": "20260101T100000-abc123", "created": "2026-01-01T10:00:00Z", "flashed_by": "ana@laptop",
    "edgeface_version": "0.1.0", "wheel": "edgeface-0.1.0-py3-none-any.whl", "offline": False, "model": "dlib",
    "formats": ["int8"], "manifest_sha256": "0" * 64, "gallery": True,
    "settings": {"format": "int8", "threads": 4, "source": 0}, "local_python": "3.11.7", "board_python": "3.11.2",
    "deps_key": "0123456789abcdef"}, indent=2).encode()


def _spec_seed() -> bytes:
    """model.toml as `edgeface import dlib` writes it: the default bundle's spec with a provenance table."""
    from edgeface.runtime.bundle import Bundle
    from edgeface.runtime.facemodel import spec_toml

    spec = Bundle.load(None).spec
    return spec_toml(spec, {"provenance": {"source": "dlib_face_recognition_resnet_model_v1.dat",
                                           "source_sha256": "55533b28" + "0" * 56, "imported_by": "edgeface 0.1.0"}
                            }).encode()


def _gif_seed() -> bytes:
    import cv2

    from edgeface.runtime.images import read_image

    small = cv2.resize(read_image(SELF_TEST_FACE), (48, 48), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".gif", cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
    return buf.tobytes() if ok else b""


def build_seeds(folder: Path) -> None:
    """Write every seed file under ``folder/<target>/`` (called once by the parent; the worker reads them)."""
    def put(target: str, name: str, data: bytes) -> None:
        (folder / target).mkdir(parents=True, exist_ok=True)
        (folder / target / name).write_bytes(data)

    put("image", "lfw.jpg", LFW_PHOTO.read_bytes())
    put("image", "face.png", SELF_TEST_FACE.read_bytes())
    gif = _gif_seed()
    if gif:
        put("image", "face.gif", gif)
    put("gallery", "gallery.npz", _default_gallery_bytes())
    put("sealed_gallery", "sealed.npz", _sealed_gallery_bytes())
    for bundle in ("default", "mobilefacenet"):
        src = REPO / "edgeface" / "models" / bundle / "manifest.json"
        if src.is_file():
            put("manifest", f"{bundle}.json", src.read_bytes())
    put("spec", "model.toml", _spec_seed())
    put("spec", "edgeface.toml", b'[face_model]\nname = "mine"\ninput_size = 112\ntemplate = "edgeface"\n'
        b'mean = 127.5\nstd = 128\nthreshold = 0.4\n')
    put("spec", "box.toml", b'input_size = "112x96"\nalignment = "box"\nbox_margin = 0.1\ncolor = "BGR"\n'
        b'layout = "NCHW"\nscale = [0.0078125, 0.0078125, 0.0078125]\noffset = -1\noutput = "embedding"\n'
        b'embedding_dim = 512\nmetric = "cosine"\n')
    put("tflite", "detector.tflite", DETECTOR.read_bytes())
    put("tflite", "dlib_int8.tflite", EMBEDDER.read_bytes())
    put("inventory", "boards.toml", INVENTORY_SEED)
    put("events", "events.jsonl", _events_seed())
    put("events", "release.json", RELEASE_SEED)
    dat = dlib_dat_path()
    if dat is not None:
        put("dlib_dat", "resnet.dat", dat.read_bytes())


def load_seeds(folder: Path) -> dict[str, dict[str, bytes]]:
    """target -> seed name -> bytes, as :func:`build_seeds` wrote them."""
    return {t.name: {f.name: f.read_bytes() for f in sorted(t.iterdir())} for t in sorted(folder.iterdir())
            if t.is_dir()}


# --------------------------------------------------------------------------- where structure lives


def hot_offsets(name: str, data: bytes) -> list[int]:
    """Offsets of ``data`` that hold structure (headers, lengths, offsets), for the mutations to aim at;
    empty: anywhere (small text files)."""
    suffix = Path(name).suffix
    span = range(len(data))
    if data[:8] == b"EFGALENC":  # an encrypted gallery: its clear header and the tag (the rest is ciphertext)
        header_end = 12 + int.from_bytes(data[8:12], "big")
        return list(span[:header_end]) + list(span[-16:])
    try:
        if suffix in (".jpg", ".gif"):
            return list(span[:2048]) + list(span[-16:])
        if suffix == ".png":
            return _png_hot(data)
        if suffix == ".npz":
            return _zip_hot(data)
        if suffix == ".tflite":
            return _outside(len(data), _tflite_payloads(data))
        if suffix == ".dat":
            return _outside(len(data), _dat_payloads(data))
    except Exception:  # a seed this code cannot map is still fuzzed, uniformly
        return []
    return []


def _png_hot(data: bytes) -> list[int]:
    hot, pos = list(range(33)), 8
    while pos + 8 <= len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        hot += range(pos, pos + 8)
        hot += range(pos + 8 + length, min(pos + 12 + length, len(data)))  # CRC
        pos += 12 + length
    return hot


def _zip_hot(data: bytes) -> list[int]:
    hot: list[int] = []
    for sig, size in ((b"PK\x03\x04", 30 + 40), (b"PK\x01\x02", 46 + 40), (b"PK\x05\x06", 22)):
        at = data.find(sig)
        while at >= 0:
            hot += range(at, min(at + size, len(data)))
            at = data.find(sig, at + 1)
    at = data.find(b"\x93NUMPY")
    while at >= 0:
        hot += range(at, min(at + 128, len(data)))
        at = data.find(b"\x93NUMPY", at + 1)
    return hot


def _outside(size: int, payloads: list[tuple[int, int]]) -> list[int]:
    hot, pos = [], 0
    for start, end in sorted(payloads):
        hot += range(pos, max(pos, start))
        pos = max(pos, end)
    hot += range(pos, size)
    return hot


def _tflite_payloads(data: bytes) -> list[tuple[int, int]]:
    """Byte ranges of the flatbuffer's weight buffers (the bulk of the file, and no structure)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(data, 0)
    out = []
    for i in range(model.BuffersLength()):
        buf = model.Buffers(i)
        n = buf.DataLength()
        if n > 64:
            start = buf._tab.Vector(buf._tab.Offset(4))
            out.append((start, start + n))
    return out


def _dat_payloads(data: bytes) -> list[tuple[int, int]]:
    """Byte ranges of the .dat's float tensors (found by running the reader with its float reads recorded)."""
    from edgeface.importers import dlib_dat

    ranges: list[tuple[int, int]] = []

    class Recording(dlib_dat._Reader):
        def floats(self, count):
            ranges.append((self.pos, self.pos + 4 * count))
            return super().floats(count)

    dlib_dat._parse(Recording(data), Path("seed.dat"))
    return ranges


# --------------------------------------------------------------------------- targets


class InsaneResult(AssertionError):
    """A reader accepted a file and returned something its callers cannot use."""


def _sane(condition: bool, what: str) -> None:
    if not condition:
        raise InsaneResult(what)


def read_image_target(folder: Path) -> None:
    """edgeface.runtime.images.read_image (what enroll, run's photo sources, prepare and calibration decode
    with): an RGB uint8 (H, W, 3) array."""
    import numpy as np

    from edgeface.runtime.images import read_image

    path = next(p for p in folder.iterdir() if p.name.startswith("photo"))
    image = read_image(path)
    _sane(isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
          and image.shape[0] > 0 and image.shape[1] > 0, f"read_image gave {type(image).__name__} "
          f"{getattr(image, 'shape', None)} {getattr(image, 'dtype', None)}")


def read_gallery_target(folder: Path) -> None:
    """Gallery.load (plain galleries) and what run builds from it: a Matcher, the people table."""
    import numpy as np

    from edgeface.runtime.gallery import Gallery
    from edgeface.runtime.matcher import Matcher

    for for_repair in (False, True):
        g = Gallery.load(folder / "gallery.npz", for_repair=for_repair)
        _sane(g.embeddings.dtype == np.float32 and g.embeddings.shape == (len(g.entries), g.model.embedding_dim),
              f"{g.embeddings.shape} embeddings for {len(g.entries)} entries")
        _sane(all(isinstance(n, str) for n in g.labels), "a name that is not text")
        g.people()
        if not for_repair and len(g):
            _sane(bool(np.isfinite(g.embeddings).all()), "non-finite embeddings accepted")
            Matcher.from_gallery(g, 0.5).match(g.embeddings[:1])


def read_sealed_gallery_target(folder: Path) -> None:
    """Gallery.load of an encrypted gallery with its key, without a key, and sealed_model (no key)."""
    from edgeface.errors import UserError
    from edgeface.runtime.gallery import Gallery, sealed_model

    path = folder / "gallery.npz"
    with contextlib.suppress(UserError):  # the keyless reader first; the keyed one below is exercised either way
        sealed_model(path)
    try:
        Gallery.load(path)
        keyless = True
    except UserError:
        keyless = False
    for for_repair in (False, True):
        g = Gallery.load(path, for_repair=for_repair, key=_fuzz_key())
        _sane(g.embeddings.shape == (len(g.entries), g.model.embedding_dim), "embeddings do not fit the entries")
        # opened with the key, the file was sealed: it must not also have opened without one
        _sane(not (keyless and g.encrypted), "an encrypted gallery opened without its key")


def read_manifest_target(folder: Path) -> None:
    """Bundle.load and what the runtime reads from a bundle right after: threshold, embedding size, the spec
    (FaceModelSpec.from_manifest), the preferred file, the model identity, the detector paths."""
    from edgeface.errors import UserError
    from edgeface.runtime.bundle import Bundle
    from edgeface.runtime.gallery import ModelId

    bundle = Bundle.load(folder)
    _sane(isinstance(bundle.threshold, float), "threshold")
    _sane(isinstance(bundle.embedding_dim, int), "embedding_dim")
    spec = bundle.spec
    _sane(spec.size is not None and len(spec.chip_template()) == 4, "spec without size or template")
    _sane(all(isinstance(f, str) for f in bundle.formats), "formats")
    try:
        bundle.entry()
        ModelId.from_bundle(bundle)
        bundle.model_path()
    except UserError:
        pass
    for kind in ("short", "full"):
        with contextlib.suppress(UserError):
            bundle.detector_path(kind)


def read_model_manifest_target(folder: Path) -> None:
    """spec_for_model_file: the spec of a bare model file from the manifest beside it (evaluate, distill)."""
    from edgeface.runtime.facemodel import FaceModelSpec, spec_for_model_file

    for name in ("dlib_int8.tflite", "mobilefacenet_int8.tflite"):
        spec, source = spec_for_model_file(folder / name)
        _sane(isinstance(spec, FaceModelSpec) and isinstance(source, str), "not a spec")


def read_spec_target(folder: Path) -> None:
    """read_spec_file (a model's MODEL.toml, --spec FILE) into FaceModelSpec.from_options."""
    import math

    from edgeface.runtime.facemodel import FaceModelSpec, read_spec_file, spec_toml

    spec = read_spec_file(folder / "model.toml")
    _sane(isinstance(spec, FaceModelSpec), "not a spec")
    _sane(all(math.isfinite(v) and v != 0 for v in spec.std) and all(math.isfinite(v) for v in spec.mean),
          f"mean {spec.mean} std {spec.std}")
    _sane(len(spec.template) in (4, 5), "template")
    if spec.size is not None:
        spec.chip_template()
    spec_toml(spec)
    FaceModelSpec.from_options(spec.to_options())


def read_tflite_graph_target(folder: Path) -> None:
    """converters.tflite_graph.read_graph and the Graph methods export, info and the Edge TPU check use."""
    from edgeface.runtime.tflite_graph import read_graph

    g = read_graph(folder / "model.tflite")
    g.op_counts()
    g.flex_ops()
    g.custom_ops()
    g.input_tensors()
    g.output_tensors()
    g.weight_quantization()
    for op in g.operators:
        g.op_tensors(op)


def read_interpreter_target(folder: Path) -> None:
    """The interpreter shim: TFLiteModel loads the file (LiteRT), then one inference on zeros, as the runtime
    does right after loading."""
    import numpy as np

    from edgeface.runtime.interpreter import TFLiteModel

    model = TFLiteModel(folder / "model.tflite", threads=1)
    _sane(len(model.inputs) >= 1 and len(model.outputs) >= 1, "a model with no inputs or outputs")
    if len(model.inputs) == 1 and 0 < int(np.prod(model.input.shape)) <= 1 << 22:
        model.run(np.zeros(model.input.shape, np.float32))


def read_inventory_target(folder: Path) -> None:
    """Inventory.load (boards.toml) and selecting each board and group."""
    from edgeface.devices.inventory import Inventory

    inv = Inventory.load(folder / "boards.toml")
    _sane(len(inv.boards) > 0, "an inventory with no boards")
    for b in inv.boards:
        _sane(isinstance(b.host, str) and b.host.strip() != "", f"board {b.name!r} with host {b.host!r}")
        _sane(isinstance(b.address, str), "address")
        inv.select(b.name)
    for group in inv.groups:
        inv.select(group)


def read_events_target(folder: Path) -> None:
    """A board's deployment folder read back: probe.state (events.jsonl, releases/*/release.json; on the
    board, its JSON sent over SSH), then what rollback and ``devices status`` do with it."""
    from edgeface.console import console
    from edgeface.devices import probe
    from edgeface.devices.manage import previous_in_history

    root = folder / "deploy"
    rel = root / "releases" / "20260101T100000-abc123"
    rel.mkdir(parents=True)
    shutil.move(str(folder / "release.json"), rel / "release.json")
    (rel / "HEALTHY").write_text("{}")
    (root / "current").symlink_to("releases/20260101T100000-abc123")
    shutil.move(str(folder / "events.jsonl"), root / "events.jsonl")
    state = json.loads(json.dumps(probe.state(str(root), 1000)))  # the board prints it, the laptop parses it
    _sane(all(isinstance(e, dict) for e in state["events"]), "an event that is not a JSON object")
    _sane(all(isinstance(r["info"], dict) for r in state["releases"]), "release info that is not a JSON object")
    before = previous_in_history(state["events"], state["current"])
    _sane(before is None or isinstance(before, str), f"previous release {before!r}")
    from edgeface.commands.devices import _print_status

    status = {"board": "door", "address": "pi@door", "identity": {"model": "Raspberry Pi 5", "machine": "aarch64",
              "python": "3.11.2", "free_bytes": 1e9}, "profile": "rpi5", "current": state["current"],
              "releases": state["releases"], "incomplete": state["incomplete"], "service": {"state": "active"},
              "events": state["events"], "remote_dir": state["remote_dir"]}
    saved = console.file
    console.file = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the tables go to stdout
            _print_status(status)
    finally:
        console.file = saved


def read_dlib_dat_target(folder: Path) -> None:
    """edgeface.importers.dlib_dat.read_dlib_resnet: anet_type's 108 layers, finite weights."""
    import numpy as np

    from edgeface.importers.dlib_dat import EMBEDDING_DIM, read_dlib_resnet

    net = read_dlib_resnet(folder / "model.dat")
    _sane(len(net.layers) == 108 and net.embedding_dim == EMBEDDING_DIM, f"{len(net.layers)} layers")
    _sane(all(np.isfinite(w).all() for layer in net.layers for w in layer.weights), "non-finite weights")


@dataclass(frozen=True)
class Target:
    """One reader: how a case becomes files, how it is read, and the strategies that make cases."""

    name: str
    read: Callable[[Path], None]
    seed_dir: str  # which seeds (build_seeds' folder) it mutates
    file_name: Callable[[str], str]  # seed name -> the file name the reader is given
    timeout: float = 20.0
    syntax: Optional[str] = None  # "json"/"toml": structured generation as well as byte mutations
    companions: tuple[tuple[str, str], ...] = ()  # (file name, seed name): other files written unchanged


def _photo_name(seed: str) -> str:
    return "photo" + Path(seed).suffix


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("image", read_image_target, "image", _photo_name),
    Target("gallery", read_gallery_target, "gallery", lambda s: "gallery.npz"),
    Target("sealed_gallery", read_sealed_gallery_target, "sealed_gallery", lambda s: "gallery.npz"),
    Target("manifest", read_manifest_target, "manifest", lambda s: "manifest.json", syntax="json"),
    Target("model_manifest", read_model_manifest_target, "manifest", lambda s: "manifest.json", syntax="json"),
    Target("spec", read_spec_target, "spec", lambda s: "model.toml", syntax="toml"),
    Target("tflite_graph", read_tflite_graph_target, "tflite", lambda s: "model.tflite"),
    Target("interpreter", read_interpreter_target, "tflite", lambda s: "model.tflite"),
    Target("inventory", read_inventory_target, "inventory", lambda s: "boards.toml", syntax="toml"),
    Target("events", read_events_target, "events", lambda s: s, syntax="json",
           companions=(("events.jsonl", "events.jsonl"), ("release.json", "release.json"))),
    Target("dlib_dat", read_dlib_dat_target, "dlib_dat", lambda s: "model.dat", timeout=60.0),
)}


def case_strategy(target: Target, seeds: dict[str, dict[str, bytes]], max_ops: int = 4):
    """Strategy of :class:`Case` for ``target``: mutated seeds, plus structured documents for text formats."""
    from hypothesis import strategies as st

    mine = seeds.get(target.seed_dir, {})
    if not mine:
        raise LookupError(f"no seed files for {target.name}")
    hot = {name: hot_offsets(name, data) for name, data in mine.items()}

    def as_case(source: Source, seed: str) -> Case:
        files = dict(target.companions)
        files = {fname: Mutant(sname) for fname, sname in files.items()}
        files[target.file_name(seed)] = source
        return Case(tuple(sorted(files.items())))

    mutated = mutants(mine, hot, max_ops).map(lambda m: as_case(m, m.seed))
    if target.name == "gallery":
        return st.one_of(mutated, npz_edits(mine).map(lambda e: as_case(e, e.seed)))
    if target.syntax is None:
        return mutated
    if target.name == "events":
        # events.jsonl: random lines; release.json: a release with wrong types
        lines = st.lists(json_values(), min_size=1, max_size=4).map(
            lambda vs: "".join(json.dumps(v) + "\n" for v in vs).encode())
        parseable = {k: v for k, v in mine.items() if k.endswith(".json")}
        return st.one_of(mutated, lines.map(lambda b: as_case(b, "events.jsonl")),
                         doc_edits(parseable, "json").map(lambda e: as_case(e, "release.json")))
    return st.one_of(mutated,
                     doc_edits(mine, target.syntax).map(lambda e: as_case(e, e.seed)),
                     random_documents(target.syntax).map(lambda b: as_case(b, sorted(mine)[0])))


def apply_npz_edit(seed: bytes, edit: NpzEdit) -> bytes:
    """The bytes of :class:`NpzEdit` ``edit`` applied to the ``.npz`` ``seed``."""
    import numpy as np

    with np.load(io.BytesIO(seed), allow_pickle=False) as npz:
        members = {k: npz[k] for k in npz.files}
    if edit.header_edit is not None:
        text = apply_edit(members["header"].tobytes(), edit.header_edit)
        members["header"] = np.frombuffer(text, np.uint8)
    if edit.header_raw is not None:
        members["header"] = np.frombuffer(edit.header_raw, np.uint8)
    if edit.embeddings is not None:
        shape, dtype, fill = edit.embeddings
        members["embeddings"] = np.full(shape, fill if dtype != "<U3" else "x", dtype=dtype) if dtype != "int8" \
            else np.full(shape, 1, np.int8)
    for name in edit.drop:
        members.pop(name, None)
    buf = io.BytesIO()
    np.savez(buf, **members)
    return buf.getvalue()


def resolve(source: Source, seeds: dict[str, bytes]) -> bytes:
    """The bytes a :data:`Source` stands for, given the target's seeds."""
    if isinstance(source, bytes):
        return source
    if isinstance(source, Mutant):
        return apply_ops(apply_fields(source.seed, seeds[source.seed], source.fields), source.ops)
    if isinstance(source, NpzEdit):
        return apply_npz_edit(seeds[source.seed], source)
    return apply_edit(seeds[source.seed], source)


def case_files(target: Target, case: Case, seeds: dict[str, dict[str, bytes]]) -> dict[str, bytes]:
    """File name -> bytes of ``case``."""
    mine = seeds[target.seed_dir]
    return {name: resolve(source, mine) for name, source in case.files}


# --------------------------------------------------------------------------- running a case


@dataclass(frozen=True)
class Result:
    """What reading one case did: ``ok``, ``user_error`` (the contract) or ``finding`` (anything else)."""

    outcome: str
    kind: str = ""  # finding: "exception", "signal", "timeout", "multi-line error", "insane result"
    type: str = ""  # exception class or signal name
    message: str = ""
    where: str = ""  # innermost frame in the project's code
    seconds: float = 0.0

    @property
    def signature(self) -> tuple[str, str, str]:
        """What tells two findings apart (same kind, type and place: the same bug)."""
        return (self.kind, self.type, self.where)

    def describe(self) -> str:
        """One line: kind, type, place and message."""
        at = f" at {self.where}" if self.where else ""
        return f"{self.kind}: {self.type}{at}: {self.message}"


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if any(f"{os.sep}{d}{os.sep}" in f.filename for d in PROJECT_DIRS)
            and "tests" + os.sep not in f.filename]
    frame = (ours or frames or [None])[-1]
    if frame is None:
        return ""
    rel = os.path.relpath(frame.filename, REPO) if frame.filename.startswith(str(REPO)) else frame.filename
    return f"{rel}:{frame.lineno} in {frame.name}"


def run_in_process(target: Target, files: dict[str, bytes], scratch: Path) -> Result:
    """Write ``files`` into a fresh folder under ``scratch`` and read it with ``target`` (in this process)."""
    from edgeface.errors import UserError

    folder = Path(tempfile.mkdtemp(dir=scratch))
    t0 = time.perf_counter()
    try:
        for name, data in files.items():
            (folder / name).write_bytes(data)
        try:
            target.read(folder)
        except UserError as exc:
            message = str(exc)
            if not message or "\n" in message or "\r" in message:
                return Result("finding", "multi-line error", type(exc).__name__, repr(message)[:300], _where(exc))
            return Result("user_error", "", type(exc).__name__, message[:300], "", time.perf_counter() - t0)
        except InsaneResult as exc:
            return Result("finding", "insane result", "InsaneResult", str(exc)[:300], _where(exc))
        except BaseException as exc:  # noqa: BLE001 - anything but the contract's error is the finding
            if isinstance(exc, KeyboardInterrupt):
                raise
            return Result("finding", "exception", f"{type(exc).__module__}.{type(exc).__qualname__}",
                          str(exc).splitlines()[0][:300] if str(exc) else "", _where(exc))
        return Result("ok", seconds=time.perf_counter() - t0)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _send(stream, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack(">Q", len(data)) + data)
    stream.flush()


def _recv(stream) -> Any:
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError("worker closed its pipe")
    (n,) = struct.unpack(">Q", head)
    data = stream.read(n)
    if len(data) < n:
        raise EOFError("worker closed its pipe")
    return pickle.loads(data)


def _scratch_root() -> Path:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


class Runner:
    """A worker process that reads cases; restarted after a crash or a hang (both reported as findings).

    Cases go to the worker as (target, mutation program) and it rebuilds the bytes from its own copy of the
    seeds, so a 22 MB .dat is not piped for every case.
    """

    def __init__(self, seed_dir: Path) -> None:
        self.seed_dir = Path(seed_dir)
        self.scratch = Path(tempfile.mkdtemp(prefix="edgeface-fuzz-", dir=_scratch_root()))
        self.proc: Optional[subprocess.Popen] = None
        self.restarts = 0

    def _start(self) -> None:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONDONTWRITEBYTECODE="1")
        log = os.environ.get("EDGEFACE_FUZZ_WORKER_LOG")  # the worker's stderr, for debugging the harness
        with open(log or os.devnull, "ab") as err:
            self.proc = subprocess.Popen([sys.executable, __file__, "--worker", str(self.seed_dir),
                                          str(self.scratch)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=err, env=env, cwd=str(REPO), start_new_session=True)
        ready = self._read(120.0)
        if ready != "ready":
            raise RuntimeError(f"the fuzz worker did not start: {ready!r}")

    def _read(self, timeout: float) -> Any:
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError
        return _recv(self.proc.stdout)

    def _kill(self) -> Optional[int]:
        if self.proc is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        code = self.proc.wait()
        self.proc = None
        self.restarts += 1
        return code

    def run(self, target: Target, case: Case) -> Result:
        """Read ``case`` with ``target`` in the worker."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            self._start()
        assert self.proc is not None and self.proc.stdin is not None
        t0 = time.perf_counter()
        try:
            _send(self.proc.stdin, (target.name, case))
            return self._read(target.timeout)
        except TimeoutError:
            self._kill()
            return Result("finding", "timeout", "hang", f"no answer within {target.timeout:g} s",
                          seconds=time.perf_counter() - t0)
        except (EOFError, BrokenPipeError, OSError):
            assert self.proc is not None
            code = self.proc.wait()
            self.proc = None
            self.restarts += 1
            name = signal.Signals(-code).name if code < 0 else f"exit {code}"
            return Result("finding", "signal", name, f"the worker died ({name}) reading the file",
                          seconds=time.perf_counter() - t0)

    def close(self) -> None:
        """Stop the worker and delete its scratch folder."""
        if self.proc is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # type: ignore[union-attr]
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._kill()
            self.proc = None
        shutil.rmtree(self.scratch, ignore_errors=True)


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _worker(seed_dir: Path, scratch: Path) -> None:
    """The worker's loop: read (target, case) from stdin, answer a :class:`Result` on stdout."""
    import resource

    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # a reader's print must not corrupt the protocol
    seeds = load_seeds(seed_dir)
    # Warm up everything a reader imports or starts once (interpreter, OpenCV), so the address-space limit
    # set next measures what reading one file asks for.
    for target in TARGETS.values():
        if target.seed_dir in seeds:
            first = sorted(seeds[target.seed_dir])[0]
            case = Case(tuple((n, Mutant(s)) for n, s in target.companions)
                        + ((target.file_name(first), Mutant(first)),))
            run_in_process(target, case_files(target, case, seeds), scratch)
    with contextlib.suppress(ValueError, OSError):
        vm = _vm_size()
        if vm:
            resource.setrlimit(resource.RLIMIT_AS, (vm + MEMORY_HEADROOM, resource.RLIM_INFINITY))
    _send(out, "ready")
    stdin = sys.stdin.buffer
    while True:
        try:
            name, case = _recv(stdin)
        except EOFError:
            return
        target = TARGETS[name]
        try:
            files = case_files(target, case, seeds)
        except Exception as exc:  # the harness' own mistake, not the reader's
            _send(out, Result("finding", "harness error", type(exc).__name__, str(exc)[:300]))
            continue
        _send(out, run_in_process(target, files, scratch))


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--worker":
    # Run as the module `fuzz_harness` (tests/ is sys.path[0] here), so the Case and Result classes the
    # parent pickles are the ones this loop uses.
    import fuzz_harness

    fuzz_harness._worker(Path(sys.argv[2]), Path(sys.argv[3]))
