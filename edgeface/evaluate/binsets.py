"""InsightFace's ``.bin`` verification sets (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``), read safely.

A ``.bin`` is a pickle of ``(images, issame)``: ``images`` the 2N encoded 112x112 face crops of N pairs (pair i
is images 2i and 2i+1), ``issame`` N flags.  How the files were written (InsightFace's ``src/data/*2pack*.py``):
``lfw2pack.py`` appends each JPEG file's bytes (Python 2 ``str``: bytes once read with ``encoding="bytes"``),
``agedb2pack2.py`` and ``cfp2pack.py`` append what ``cv2.imencode`` returns -- a numpy uint8 array, pickled through
``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and ``numpy.dtype`` (PaddlePaddle's ``small_lfw.bin``
test file is built the same way, with Python 3's pickle); ``issame`` is a list of Python bools in all of them.

A pickle runs whatever its ``GLOBAL``/``REDUCE`` opcodes name, so a ``.bin`` from the internet is read with an
unpickler that knows a handful of names, each mapped to a stand-in of ours -- never to numpy's own function --
which only records a uint8 array's shape and bytes (and ``_codecs.encode(text, "latin1")``, Python 3's protocol-2
spelling of bytes); anything else the file asks for (any other module, class or
function, a persistent id, an object array) is refused with one line before it is touched.  The result must then
have the shape above, or that too is one line.
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from edgeface.errors import UserError
from edgeface.evaluate.pairs import Pair

FOLDS = 10  # the field's protocol: 10 consecutive blocks of pairs (InsightFace's KFold(10), no shuffling)


class _Refused(Exception):
    """Raised inside the unpickler for anything a verification set never holds."""


# --------------------------------------------------------------------------- stand-ins for numpy's pickle names


class _DType:
    """``numpy.dtype(name, align, copy)`` as a pickle builds it: only uint8 is accepted (encoded image bytes)."""

    UINT8 = {"u1", "|u1", "uint8"}

    def __init__(self, name: Any, align: Any = False, copy: Any = True) -> None:
        text = name.decode("ascii", "replace") if isinstance(name, (bytes, bytearray)) else name
        if not isinstance(text, str) or text not in self.UINT8:
            raise _Refused(f"a numpy array of dtype {text!r} (only uint8 arrays of encoded images are read)")
        self.checked = True  # set only here: a _DType made by NEWOBJ without __init__ is not a uint8 dtype

    def __setstate__(self, state: Any) -> None:
        # (version, byte order, subarray, names, fields, itemsize, alignment, flags): uint8 has no byte order
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("|", b"|", "<", b"<", "=", b"="):
            raise _Refused(f"a numpy dtype state {str(state)[:60]!r}")


class _Array:
    """A uint8 numpy array as a pickle builds it: only its bytes are kept (numpy never sees the file)."""

    def __init__(self) -> None:
        self.data: Optional[bytes] = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused(f"a numpy array state {str(state)[:60]!r}")
        shape, dtype, _fortran, data = state[-4:]
        if not getattr(dtype, "checked", False):
            raise _Refused("a numpy array without a uint8 dtype")
        self._set(data, shape)

    def _set(self, data: Any, shape: Any) -> None:
        if not isinstance(data, (bytes, bytearray)):
            raise _Refused(f"a numpy array holding {type(data).__name__} (object arrays are not read)")
        if not (isinstance(shape, tuple) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise _Refused(f"a numpy array of shape {str(shape)[:40]}")
        if int(np.prod(shape, dtype=np.int64)) != len(data):
            raise _Refused(f"a numpy array of shape {shape} holding {len(data)} bytes")
        self.data = bytes(data)


class _NdarrayName:
    """``numpy.ndarray``, the class argument of ``_reconstruct``: a marker, not a class (it cannot be built)."""


_NDARRAY = _NdarrayName()


def _reconstruct(cls: Any, shape: Any, typecode: Any) -> _Array:
    """``numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')``: an empty array its BUILD then fills."""
    if cls is not _NDARRAY:
        raise _Refused("_reconstruct of something other than numpy.ndarray")
    return _Array()


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any = "C") -> _Array:
    """``numpy.core.numeric._frombuffer`` (numpy's pickle protocol 5), with the buffer in the file."""
    if not getattr(dtype, "checked", False):
        raise _Refused("a numpy array without a uint8 dtype")
    out = _Array()
    out._set(buf, tuple(shape) if isinstance(shape, (tuple, list)) else shape)
    return out


def _latin1(text: Any, encoding: Any = "latin1") -> bytes:
    """``_codecs.encode(text, 'latin1')``: how Python 3's pickle protocol 2 writes bytes (and nothing else)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused(f"_codecs.encode with {str(encoding)[:20]!r}")
    return text.encode("latin1")


# The only names a verification set's pickle may ask for, and what each becomes.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy 2 writes numpy._core
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _DType,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _latin1,
}


class _BinUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused(f"a persistent object {str(pid)[:40]!r}")


# --------------------------------------------------------------------------- the set


@dataclass
class BinSet:
    """A verification set: ``images[2i]`` and ``images[2i+1]`` (encoded bytes) are pair i, ``issame[i]`` its truth."""

    path: Path
    images: list[bytes]
    issame: np.ndarray

    @property
    def n_pairs(self) -> int:
        return len(self.issame)

    def pairs(self, folds: int = FOLDS) -> list[Pair]:
        """The pairs with InsightFace's folds: ``folds`` consecutive blocks, the first ``n % folds`` one pair longer
        (scikit-learn's ``KFold(folds, shuffle=False)``, which InsightFace's verification code uses).  Image keys
        are the indices in ``images``."""
        fold_of = np.repeat(np.arange(1, folds + 1), _fold_sizes(self.n_pairs, folds))
        return [Pair(int(fold_of[i]), str(2 * i), str(2 * i + 1), bool(self.issame[i]), i + 1)
                for i in range(self.n_pairs)]


def _fold_sizes(n: int, folds: int) -> np.ndarray:
    sizes = np.full(folds, n // folds)
    sizes[: n % folds] += 1
    return sizes


def read_bin(path: str | os.PathLike) -> BinSet:
    """Read a ``.bin`` verification set with the restricted unpickler (see the module docstring).

    Anything but encoded images and same/different flags is a :class:`UserError` naming the file and what it
    held, raised before any of it is used.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"verification set not found: {path}")
    raw = path.read_bytes()
    what = ("a .bin verification set holds only encoded images and same/different flags (InsightFace's lfw.bin, "
            "cfp_fp.bin, agedb_30.bin)")
    try:
        # encoding="bytes": the Python 2 strings of InsightFace's older files are the JPEG bytes
        obj = _BinUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _Refused as exc:
        raise UserError(f"{path}: refused, the pickle asks for {exc}; {what}: nothing of it was run") from None
    except Exception as exc:  # a damaged or foreign file: every way a pickle can fail to load
        reason = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: not a .bin verification set ({reason}); {what}") from None
    return _check_shape(path, obj)


def _check_shape(path: Path, obj: Any) -> BinSet:
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2 and all(isinstance(o, (list, tuple)) for o in obj)):
        raise UserError(f"{path}: holds a {type(obj).__name__}, not the (images, issame) pair of lists of a .bin "
                        "verification set")
    raw_images, raw_same = obj
    images = []
    for i, item in enumerate(raw_images):
        data = item.data if isinstance(item, _Array) else item
        if not isinstance(data, (bytes, bytearray)) or not data:
            raise UserError(f"{path}: image {i} is {type(item).__name__ if not isinstance(item, _Array) else 'empty'},"
                            " not encoded image bytes")
        images.append(bytes(data))
    for i, flag in enumerate(raw_same):
        if not isinstance(flag, bool):
            raise UserError(f"{path}: same/different flag {i} is {type(flag).__name__} {str(flag)[:20]}, not a bool")
    if len(images) != 2 * len(raw_same):
        raise UserError(f"{path}: {len(images)} images for {len(raw_same)} pairs (a .bin holds two images per pair)")
    if not raw_same:
        raise UserError(f"{path}: holds no pairs")
    return BinSet(path, images, np.array(raw_same, bool))


def write_bin(path: str | os.PathLike, images: Sequence[bytes], issame: Sequence[bool]) -> None:
    """Write a ``.bin`` verification set (bytes and bools only, as ``lfw2pack.py`` does), atomically."""
    from edgeface.fileio import atomic_write_bytes

    if len(images) != 2 * len(issame):
        raise ValueError(f"{len(images)} images for {len(issame)} pairs: a .bin needs two images per pair")
    payload = ([bytes(b) for b in images], [bool(s) for s in issame])
    atomic_write_bytes(path, pickle.dumps(payload, protocol=4))


# --------------------------------------------------------------------------- as evaluation images


class BinImages:
    """The crops of a :class:`BinSet` behind the interface :func:`~edgeface.evaluate.verification.evaluate_pairs`
    reads (``crops``, ``no_face``, ``source``), so a ``.bin`` is scored by the very code LFW's pairs file is.

    The images are already aligned: a model must take them as they are (112x112 crops aligned by a template),
    which :meth:`check_spec` enforces.
    """

    def __init__(self, binset: BinSet) -> None:
        self.binset = binset
        self.no_face: set[str] = set()  # every image of a .bin is a face crop

    @property
    def source(self) -> str:
        return f"aligned crops of {self.binset.path.name}"

    def check_spec(self, spec, model: str = "the model") -> None:
        """A :class:`UserError` unless ``spec`` takes 112x112 template-aligned crops (what every ``.bin`` holds)."""
        size = tuple(spec.size) if spec.size else None
        if size != (112, 112) or spec.alignment != "template":
            shown = f"{size[0]}x{size[1]}" if size else "crops of another size"
            raise UserError(f"{self.binset.path.name} holds 112x112 face crops aligned by a template; {model} takes "
                            f"{shown} faces aligned by {spec.alignment}: a .bin cannot feed it, evaluate it with "
                            "--pairs on the photographs")

    def crops(self, keys: Sequence[str], progress: Optional[Callable[[int, int], None]] = None,
              spec=None) -> list[np.ndarray]:
        """RGB uint8 crops of image keys (indices into the set)."""
        import cv2

        out = []
        for n, key in enumerate(keys):
            data = np.frombuffer(self.binset.images[int(key)], np.uint8)
            image = cv2.imdecode(data, cv2.IMREAD_COLOR)
            if image is None:
                raise UserError(f"{self.binset.path}: image {key} is not a decodable image")
            if image.shape[:2] != (112, 112):
                raise UserError(f"{self.binset.path}: image {key} is {image.shape[1]}x{image.shape[0]}, not a 112x112 "
                                "aligned crop")
            out.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
            if progress:
                progress(n + 1, len(keys))
        return out
