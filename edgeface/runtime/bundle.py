"""Model bundles: a folder of TFLite files described by ``manifest.json``.

The manifest is written by ``edgeface export`` (see ``edgeface.converters``) and
read here, on the board: it carries what the runtime must not guess (input
quantization, colour order, alignment template, match threshold) and a SHA-256
per file, checked before a file is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from edgeface.errors import UserError

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1
# Preference when the caller names no format: int8 is fastest on XNNPACK and on
# the Edge TPU path; fp32 is the reference.
# int8_mixed is the accuracy-budgeted int8 file (`export --auto-mixed`): written only when plain int8 lost too much.
FORMAT_PREFERENCE = ("int8_mixed", "int8", "fp32", "fp16", "dynamic")
# Never picked by default: `edgetpu` is the uint8 file made for the Edge TPU compiler, and `edgetpu_compiled` the
# compiler's output, which runs only with the Edge TPU delegate.
EDGETPU_FORMAT = "edgetpu_compiled"
EDGETPU_FORMATS = ("edgetpu", EDGETPU_FORMAT)
DEFAULT_THRESHOLD = 0.5


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def models_dir() -> Path:
    """Where the model bundles shipped inside the package live (one folder each, named)."""
    return Path(__file__).resolve().parent.parent / "models"


def default_bundle_dir() -> Path:
    """Where the default model bundle shipped inside the package lives."""
    return models_dir() / "default"


def packaged_models() -> list[str]:
    """Names of the bundles shipped inside the package (``--model NAME``)."""
    root = models_dir()
    return sorted(d.name for d in root.iterdir() if (d / MANIFEST_NAME).is_file()) if root.is_dir() else []


def resolve_model(path: Optional[str | os.PathLike]) -> Path:
    """A bundle folder (or its manifest.json), or the name of a bundle shipped in the package; None: the default.

    A path that exists wins over a packaged name, so a folder called ``default`` in the working directory is
    still that folder.
    """
    if path is None:
        return default_bundle_dir()
    p = Path(path)
    if not p.exists() and len(p.parts) == 1 and (models_dir() / p.name / MANIFEST_NAME).is_file():
        return models_dir() / p.name
    return p


def _malformed(path: Path, what: str) -> UserError:
    return UserError(f"{path} is malformed: {what}; re-run `edgeface export` (or restore the bundle's manifest)")


def check_manifest_shape(manifest: dict, path: Path) -> None:
    """A :class:`UserError` for a manifest whose parts are not what every reader of it indexes.

    A hand-edited or truncated-then-patched manifest otherwise fails later as a KeyError or
    AttributeError deep in ``info``, ``run`` or ``flash``.  File paths must stay inside the bundle.
    """
    for key in ("model", "threshold", "alignment", "provenance"):
        if key in manifest and not isinstance(manifest[key], dict):
            raise _malformed(path, f"'{key}' must be an object, found {type(manifest[key]).__name__}")
    dim = manifest.get("model", {}).get("embedding_dim", 0)
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise _malformed(path, f"model.embedding_dim must be a whole number, found {dim!r}")
    cosine = manifest.get("threshold", {}).get("cosine")
    if cosine is not None and (isinstance(cosine, bool) or not isinstance(cosine, (int, float))):
        raise _malformed(path, f"threshold.cosine must be a number, found {cosine!r}")
    for key, required in (("files", ("format", "path", "sha256")), ("detectors", ("kind", "path", "sha256"))):
        entries = manifest.get(key, [])
        if not isinstance(entries, list):
            raise _malformed(path, f"'{key}' must be a list, found {type(entries).__name__}")
        for n, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise _malformed(path, f"{key}[{n}] must be an object, found {type(entry).__name__}")
            for field_name in required:
                if not isinstance(entry.get(field_name), str):
                    raise _malformed(path, f"{key}[{n}] has no '{field_name}' string")
            rel = Path(entry["path"])
            if rel.is_absolute() or ".." in rel.parts:
                raise _malformed(path, f"{key}[{n}].path {entry['path']!r} points outside the bundle")


@dataclass
class Bundle:
    """A loaded manifest and the folder it describes."""

    root: Path
    manifest: dict

    @classmethod
    def load(cls, path: Optional[str | os.PathLike] = None) -> Bundle:
        """Load a bundle folder (or its manifest.json) or a shipped model by name; the default when ``path`` is
        None."""
        root = resolve_model(path)
        if root.is_file() and root.name == MANIFEST_NAME:
            root = root.parent
        manifest_path = root / MANIFEST_NAME
        if path is not None and not root.exists():
            names = ", ".join(packaged_models()) or "none"
            raise UserError(f"bundle not found: {root} (a folder written by `edgeface export`, or a shipped model: "
                            f"{names})")
        if not manifest_path.is_file():
            if path is None:
                raise UserError("no default model bundle is installed: pass --model BUNDLE_DIR "
                                "(from `edgeface export`)")
            raise UserError(f"{root} is not a model bundle: {MANIFEST_NAME} not found "
                            "(make one with `edgeface export`)")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:  # ValueError: JSONDecodeError, or an int of 4300+ digits
            raise UserError(f"{manifest_path} is not valid JSON ({exc}); re-run `edgeface export`") from None
        except RecursionError:  # '[[[[...' nested past Python's stack
            raise UserError(f"{manifest_path} is not valid JSON (nested too deeply); re-run `edgeface export`") \
                from None
        if not isinstance(manifest, dict):
            raise _malformed(manifest_path, f"a JSON object was expected, found a {type(manifest).__name__}")
        version = manifest.get("schema_version")
        if version != SCHEMA_VERSION:
            raise UserError(f"{manifest_path} has schema version {version!r}; this edgeface reads version "
                            f"{SCHEMA_VERSION}: re-export the bundle or upgrade edgeface")
        check_manifest_shape(manifest, manifest_path)
        return cls(root=root, manifest=manifest)

    @property
    def files(self) -> list[dict]:
        return list(self.manifest.get("files", []))

    @property
    def formats(self) -> list[str]:
        return [f["format"] for f in self.files]

    @property
    def threshold(self) -> float:
        return float(self.manifest.get("threshold", {}).get("cosine", DEFAULT_THRESHOLD))

    @property
    def embedding_dim(self) -> int:
        return int(self.manifest.get("model", {}).get("embedding_dim", 0))

    @property
    def spec(self):
        """The :class:`~edgeface.runtime.facemodel.FaceModelSpec` the manifest describes."""
        from edgeface.runtime.facemodel import FaceModelSpec

        return FaceModelSpec.from_manifest(self.manifest, str(self.root / MANIFEST_NAME))

    def entry(self, fmt: Optional[str] = None) -> dict:
        """The manifest entry of a format (the preferred available one when ``fmt`` is None)."""
        by_format = {f["format"]: f for f in self.files}
        if fmt is None:
            # A file that failed verification stays in the bundle for inspection but is never picked by default.
            usable = {k: f for k, f in by_format.items() if f.get("verified", True) is not False}
            for candidate in FORMAT_PREFERENCE:
                if candidate in usable:
                    return usable[candidate]
            if not by_format:
                raise UserError(f"bundle {self.root} lists no model files")
            return next(iter(by_format.values()))
        if fmt not in by_format:
            raise UserError(f"bundle {self.root} has no {fmt!r} model; it has: {', '.join(by_format) or 'none'}")
        return by_format[fmt]

    def model_path(self, fmt: Optional[str] = None, verify: bool = True) -> Path:
        """Path of a model file, after checking its SHA-256 against the manifest."""
        entry = self.entry(fmt)
        path = self.root / entry["path"]
        if verify:
            self.verify(path, entry)
        return path

    def model_sha256(self, fmt: Optional[str] = None) -> str:
        return str(self.entry(fmt)["sha256"])

    def verify(self, path: Path, entry: dict[str, Any]) -> None:
        """Refuse a file that is missing or whose checksum differs from the manifest."""
        if not path.is_file():
            raise UserError(f"bundle file missing: {path} (listed in {self.root / MANIFEST_NAME})")
        actual = sha256_file(path)
        if actual != entry.get("sha256"):
            raise UserError(f"checksum mismatch for {path}: the file differs from {MANIFEST_NAME} "
                            "(corrupted or modified); re-export or re-flash the bundle")

    def detector_path(self, kind: str = "short", verify: bool = True, fmt: str = "float") -> Optional[Path]:
        """The bundled BlazeFace file of ``kind`` in detector format ``fmt`` (float, int8, edgetpu,
        edgetpu_compiled), if the bundle carries one.  Entries without a format are float (bundles before int8
        detectors)."""
        for d in self.manifest.get("detectors", []):
            if d.get("kind") == kind and d.get("format", "float") == fmt:
                path = self.root / d["path"]
                if verify:
                    self.verify(path, d)
                return path
        return None
