"""The gallery: enrolled face embeddings, one file, tied to the model that made them.

Format (``.npz``, version 1), chosen over SQLite because the runtime needs the
embeddings as one contiguous float32 matrix for vectorised matching, a gallery
is small enough to be rewritten whole on every change (so one temp file + one
``os.replace`` makes every write atomic, with no journal or WAL files beside it),
and the zip container's CRC-32 per member catches corruption when it is read.
Nothing in it needs pickle: it is read with ``allow_pickle=False``.

Members:

- ``header``: UTF-8 JSON as a uint8 array: ``format``, ``version``, the model's
  identity (``model.sha256`` of the TFLite file, ``model.source_sha256`` of the
  trained network it was exported from, name, embedding dimension), created/updated
  times, and one entry per embedding row (``name``, ``source``, ``added``).
- ``embeddings``: float32 (N, D), unit length.

A gallery can be encrypted at rest (:mod:`edgeface.runtime.gallery_crypto`: the whole ``.npz`` sealed with
AES-256-GCM under a key kept apart from it).  A loaded gallery remembers the key it was opened with and is
written back sealed under the same key; a plain one stays plain until ``edgeface gallery encrypt``.

Embeddings are only comparable when made by the same network, so a gallery made
with another model is refused.  The identity compared is the trained network's
checksum from the bundle's provenance when both sides have it (the fp32, int8 and
Edge TPU files of one network produce interchangeable embeddings), otherwise the
TFLite file's own SHA-256.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from edgeface.errors import UserError
from edgeface.fileio import atomic_write_bytes
from edgeface.runtime.gallery_crypto import GalleryKey, is_sealed, seal, sealed_header, unseal

FORMAT_NAME = "edgeface-gallery"
FORMAT_VERSION = 1
UNKNOWN = "unknown"  # the identity reported for faces matching nobody; not enrollable
DEFAULT_GALLERY = Path("gallery.npz")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ModelId:
    """What identifies the embedding model a gallery belongs to."""

    sha256: str
    embedding_dim: int
    source_sha256: Optional[str] = None
    name: str = ""

    @classmethod
    def from_bundle(cls, bundle, fmt: Optional[str] = None) -> ModelId:
        """The identity of the model file ``fmt`` of a :class:`edgeface.runtime.bundle.Bundle`."""
        provenance = bundle.manifest.get("provenance") or {}
        return cls(
            sha256=bundle.model_sha256(fmt),
            embedding_dim=bundle.embedding_dim,
            source_sha256=provenance.get("source_sha256") or None,
            name=str(bundle.manifest.get("model", {}).get("name", "")),
        )

    @classmethod
    def from_dict(cls, d: dict) -> ModelId:
        return cls(sha256=str(d["sha256"]), embedding_dim=int(d["embedding_dim"]),
                   source_sha256=d.get("source_sha256") or None, name=str(d.get("name", "")))

    def to_dict(self) -> dict:
        return {"sha256": self.sha256, "source_sha256": self.source_sha256, "name": self.name,
                "embedding_dim": self.embedding_dim}

    def same_network(self, other: ModelId) -> bool:
        """True when embeddings of the two models can be compared."""
        if self.embedding_dim != other.embedding_dim:
            return False
        if self.source_sha256 and other.source_sha256:
            return self.source_sha256 == other.source_sha256
        return self.sha256 == other.sha256

    def short(self) -> str:
        digest = self.source_sha256 or self.sha256
        return f"{self.name or 'model'} ({digest[:12]})"


class GalleryError(UserError):
    """A gallery file that cannot be used (corrupt, other model, unknown version)."""


@dataclass
class Gallery:
    """Enrolled embeddings with their names; load with :meth:`load`, write with :meth:`save`."""

    model: ModelId
    embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    entries: list[dict] = field(default_factory=list)  # one per row: name, source, added
    created: str = field(default_factory=_now)
    updated: str = field(default_factory=_now)
    key: Optional[GalleryKey] = field(default=None, repr=False)  # sealed under this key when saved; None: plain

    def __post_init__(self) -> None:
        if self.embeddings.size == 0:
            self.embeddings = np.zeros((0, self.model.embedding_dim), np.float32)

    # --- queries ---------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def labels(self) -> list[str]:
        """The name of every embedding row."""
        return [e["name"] for e in self.entries]

    def names(self) -> dict[str, int]:
        """Enrolled people and how many embeddings each has, in enrollment order."""
        counts: dict[str, int] = {}
        for e in self.entries:
            counts[e["name"]] = counts.get(e["name"], 0) + 1
        return counts

    def people(self) -> list[dict]:
        """One row per person: name, embeddings, first and last time added."""
        rows: dict[str, dict] = {}
        for e in self.entries:
            r = rows.setdefault(e["name"], {"name": e["name"], "embeddings": 0, "first_added": e.get("added"),
                                            "last_added": e.get("added")})
            r["embeddings"] += 1
            r["last_added"] = e.get("added")
        return list(rows.values())

    # --- changes (in memory; call save) -----------------------------------------

    def add(self, name: str, embeddings: np.ndarray, sources: Sequence[str]) -> None:
        """Append embeddings (N, D) of ``name``, one source description per row."""
        check_name(name)
        embeddings = np.asarray(embeddings, np.float32).reshape(-1, self.model.embedding_dim)
        if len(embeddings) != len(sources):
            raise ValueError("one source per embedding row is required")
        if not np.isfinite(embeddings).all():
            raise UserError(f"refusing to enroll {name!r}: the model produced non-finite embeddings")
        added = _now()
        self.embeddings = np.concatenate([self.embeddings, embeddings]).astype(np.float32)
        self.entries.extend({"name": name, "source": str(s), "added": added} for s in sources)
        self.updated = added

    def remove(self, name: str) -> int:
        """Remove every embedding of ``name``; returns how many were removed."""
        self._require(name)
        keep = np.array([e["name"] != name for e in self.entries], bool)
        removed = int((~keep).sum())
        self.embeddings = self.embeddings[keep]
        self.entries = [e for e, k in zip(self.entries, keep) if k]
        self.updated = _now()
        return removed

    def rename(self, old: str, new: str) -> int:
        """Rename a person; refuses to merge into an existing name. Returns the rows renamed."""
        self._require(old)
        check_name(new)
        if new != old and new in self.names():
            raise UserError(f"{new!r} is already enrolled: remove it first or choose another name")
        n = 0
        for e in self.entries:
            if e["name"] == old:
                e["name"] = new
                n += 1
        self.updated = _now()
        return n

    def _require(self, name: str) -> None:
        names = self.names()
        if name not in names:
            from edgeface.choices import did_you_mean

            hint = did_you_mean(name, names)
            listed = ", ".join(list(names)[:10]) or "nobody"
            raise UserError(f"{name!r} is not in the gallery{hint}; enrolled: {listed}")

    def check_model(self, model: ModelId, path: str | os.PathLike = "the gallery") -> None:
        """Refuse to match against embeddings made by another network."""
        if not self.model.same_network(model):
            raise GalleryError(
                f"{path} was enrolled with model {self.model.short()}, dim {self.model.embedding_dim}, but the "
                f"current model is {model.short()}, dim {model.embedding_dim}: embeddings of different models "
                "cannot be compared; pass the gallery's --model or re-enroll into a new gallery"
            )

    @property
    def encrypted(self) -> bool:
        """True when :meth:`save` writes the gallery encrypted."""
        return self.key is not None

    # --- file -------------------------------------------------------------------

    def header(self) -> dict:
        return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "model": self.model.to_dict(),
                "created": self.created, "updated": self.updated, "count": len(self.entries),
                "entries": self.entries}

    def to_bytes(self) -> bytes:
        """The plain ``.npz`` bytes of the gallery (what :meth:`save` writes, or seals when encrypted)."""
        header = np.frombuffer(json.dumps(self.header()).encode("utf-8"), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez(buf, header=header, embeddings=np.ascontiguousarray(self.embeddings, np.float32))
        return buf.getvalue()

    def save(self, path: str | os.PathLike) -> None:
        """Write the gallery atomically (a temp file in the same folder, then ``os.replace``), encrypted under
        :attr:`key` when it has one.  Rows removed before are gone from the new file: it is written whole."""
        path = Path(path)
        data = self.to_bytes()
        if self.key is not None:
            data = seal(data, self.key, self.model.to_dict())
        try:
            # fsync: a board may lose power right after; private: face templates are biometric data (0600)
            atomic_write_bytes(path, data, fsync=True, private=True)
        except OSError as exc:  # a read-only folder, a full disk: the user's to fix, not a crash
            raise GalleryError(f"cannot write gallery {path}: {_reason(exc)}; the file on disk (if any) "
                               "was not changed") from None

    @classmethod
    def load(cls, path: str | os.PathLike, model: Optional[ModelId] = None, for_repair: bool = False,
             key: Optional[GalleryKey] = None) -> Gallery:
        """Read a gallery; with ``model``, also refuse one made by another network.

        Any defect (truncated, not a gallery, bad checksum, unknown version, non-finite
        embeddings) raises :class:`GalleryError` with one line; the file itself is never
        touched.  ``for_repair`` (``gallery list`` and ``remove``) lets non-finite rows
        through, so the people they belong to can be seen and removed.  An encrypted gallery
        needs ``key`` (a missing or wrong key, or an altered file, is one line too); a plain
        one ignores it and stays plain when saved.
        """
        path = Path(path)
        if path.is_dir():
            raise GalleryError(f"--gallery {path} is a folder: give the gallery's file, e.g. {path / 'gallery.npz'}")
        if not path.is_file():
            raise GalleryError(f"gallery not found: {path} (create it with `edgeface enroll NAME PHOTO... "
                               f"--gallery {path}`)")
        data = _read_file(path)
        sealed = is_sealed(data)
        if sealed:
            data = unseal(data, key, path)
        header, emb = _read_members(data, path)
        if header.get("format") != FORMAT_NAME:
            raise GalleryError(f"{path} is not an edgeface gallery (no '{FORMAT_NAME}' header)")
        version = header.get("version")
        if version != FORMAT_VERSION:
            raise GalleryError(f"{path} is gallery format version {version!r}; this edgeface reads version "
                               f"{FORMAT_VERSION}: upgrade edgeface or re-enroll")
        try:
            gallery_model = ModelId.from_dict(header["model"])
            entries = list(header["entries"])
            names_ok = all(isinstance(e.get("name"), str) for e in entries)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise GalleryError(f"{path} is corrupt: its header is incomplete; restore a backup or re-enroll") from None
        if not names_ok or emb.ndim != 2 or emb.shape != (len(entries), gallery_model.embedding_dim) \
                or emb.dtype != np.float32:
            raise GalleryError(f"{path} is corrupt: {emb.shape} embeddings for {len(entries)} entries of dimension "
                               f"{gallery_model.embedding_dim}; restore a backup or re-enroll")
        finite = np.isfinite(emb).all(axis=1)
        if not finite.all() and not for_repair:
            # one NaN row wins every argmax: every face would come out unknown, with a NaN score
            bad = sorted({entries[i]["name"] for i in np.flatnonzero(~finite)})
            raise GalleryError(f"{path} is corrupt: {int((~finite).sum())} embedding(s) of {', '.join(map(repr, bad))} "
                               "are not finite numbers; remove those people (`edgeface gallery remove`) and re-enroll "
                               "them, or restore a backup")
        gallery = cls(model=gallery_model, embeddings=emb, entries=entries,
                      created=str(header.get("created", "")), updated=str(header.get("updated", "")),
                      key=key if sealed else None)
        if model is not None:
            gallery.check_model(model, path)
        return gallery

    @classmethod
    def open_or_create(cls, path: str | os.PathLike, model: ModelId, key: Optional[GalleryKey] = None) -> Gallery:
        """The gallery at ``path`` (checked against ``model``), or a new empty one if the file does not exist
        (encrypted under ``key`` when one is given)."""
        if Path(path).exists():
            return cls.load(path, model, key=key)
        return cls(model=model, key=key)


def sealed_model(path: str | os.PathLike) -> Optional[ModelId]:
    """The model identity in an encrypted gallery's clear header (no key needed); None for a plain gallery."""
    data = _read_file(Path(path))
    if not is_sealed(data):
        return None
    header, _ = sealed_header(data, path)
    try:
        return ModelId.from_dict(header["model"])
    except (KeyError, TypeError, ValueError):
        raise GalleryError(f"{path} is an encrypted gallery with an incomplete model identity; restore a "
                           "backup") from None


def _read_file(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:  # galleries are small (1,000 people at 128-d: 0.5 MB): read once, whole
            return f.read()
    except OSError as exc:
        raise GalleryError(f"cannot read gallery {path}: {_reason(exc)}") from None


# How much larger than the file its members may be once inflated.  edgeface writes galleries uncompressed
# (np.savez: the members are the file's size), and float embeddings barely compress anyway.
MAX_EXPANSION = 16


def _read_members(data: bytes, path: Path) -> tuple[dict, np.ndarray]:
    corrupt = f"{path} is corrupt or truncated"
    hint = "; it was left untouched: restore a backup or delete it and re-enroll"
    magic = data[:4]
    if magic != b"PK\x03\x04":  # every .npz is a zip archive
        what = "empty file" if not magic else "not an .npz archive"
        raise GalleryError(f"{corrupt} ({what}){hint}")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            declared = sum(info.file_size for info in archive.infolist())
        # A zip bomb: a small file whose deflated members expand to gigabytes, read whole by np.load.  zipfile
        # stops at each member's declared size, so the declared total bounds what loading can take.
        if declared > MAX_EXPANSION * len(data) + (1 << 20):
            raise GalleryError(f"{corrupt} (its members would expand to {declared / 2**20:,.0f} MiB from a "
                               f"{len(data) / 2**20:,.1f} MiB file: not a gallery edgeface wrote){hint}")
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            members = set(npz.files)
            if not {"header", "embeddings"} <= members:
                if members:  # names shown quoted: a damaged name may hold a newline
                    shown = ", ".join(repr(m[:40]) for m in sorted(members))
                    raise GalleryError(f"{path} is not an edgeface gallery (members: {shown})")
                raise GalleryError(f"{corrupt} (no members){hint}")
            raw = npz["header"]
            emb = npz["embeddings"]
    except GalleryError:
        raise
    except zipfile.BadZipFile as exc:
        raise GalleryError(f"{corrupt} ({exc}){hint}") from None
    except (ValueError, OSError, EOFError, zipfile.LargeZipFile, NotImplementedError, RuntimeError,
            zlib.error) as exc:
        # np.load raises ValueError/OSError for files that are not npz at all, and for
        # object arrays (which would need pickle); zipfile raises NotImplementedError for an
        # unknown compression method or zip version, RuntimeError for a member flagged encrypted,
        # and zlib.error for a member flagged deflated whose bytes are not.
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GalleryError(f"{corrupt} ({reason}){hint}") from None
    try:
        if raw.dtype != np.uint8:
            raise ValueError("header is not uint8 text")
        header = json.loads(raw.tobytes().decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: '[[[[...' nested too deeply
        raise GalleryError(f"{corrupt} (unreadable header: {exc}){hint}") from None
    return header, emb


def _reason(exc: OSError) -> str:
    """'Permission denied' rather than "[Errno 13] Permission denied: '/the/path'" (the path is already said)."""
    return exc.strerror or str(exc) or type(exc).__name__


def check_name(name: str) -> None:
    """Names are free text, except empty ones and the reserved 'unknown'."""
    if not name or not name.strip():
        raise UserError("a person's name cannot be empty")
    if name.strip().lower() == UNKNOWN:
        raise UserError(f"{name!r} is reserved for faces that match nobody: choose another name")
    if name != name.strip():
        raise UserError(f"{name!r} has leading or trailing spaces: remove them")
    if any(unicodedata.category(c).startswith("C") for c in name):
        # newlines, tabs and other control characters break every table, status line and log that shows names
        raise UserError(f"{name!r} holds a control character (a newline, tab, ...): use printable characters")
