"""The teacher-embedding cache: each face's teacher embedding is computed once and kept on disk.

One SQLite file holds the embeddings of any number of teachers, keyed by

* the teacher's identity: a SHA-256 over everything its output depends on (the
  kind, the model file's SHA-256, its input options, the face detector that
  gave the box and keypoints), so a changed model or option never reuses a
  stale vector, and
* the image's content: the SHA-256 of the file's bytes, so renaming or moving a
  photo keeps its entry and an edited photo gets a new one.

Each batch of new entries is one SQLite transaction: an interrupted run keeps
every batch it committed and nothing half-written (SQLite rolls an incomplete
transaction back).  Vectors are stored as raw little-endian float32 bytes, never
pickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Iterable, Mapping, Optional, Union

import numpy as np

from edgeface.errors import SettingError, UserError

SCHEMA_VERSION = 1
_SQL_CHUNK = 500  # keys per SELECT ... IN (...): below SQLite's variable limit everywhere
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS teachers (teacher_id TEXT PRIMARY KEY, identity TEXT NOT NULL, "
    "dim INTEGER NOT NULL, created TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS embeddings (teacher_id TEXT NOT NULL, image_sha256 TEXT NOT NULL, "
    "vector BLOB NOT NULL, PRIMARY KEY (teacher_id, image_sha256)) WITHOUT ROWID",
)


def teacher_key(identity: Mapping) -> str:
    """The cache key of a teacher: SHA-256 of its identity as canonical JSON."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def image_sha256(path: Union[str, os.PathLike]) -> str:
    """SHA-256 of an image file's bytes (the image half of the cache key)."""
    from edgeface.runtime.bundle import sha256_file

    return sha256_file(path)


class EmbeddingCache:
    """Teacher embeddings of one teacher in a SQLite file; ``hits``/``misses`` count lookups, ``added`` writes."""

    def __init__(self, path: Union[str, os.PathLike], identity: Mapping, dim: int) -> None:
        self.path = Path(path)
        self.identity = dict(identity)
        self.dim = int(dim)
        self.teacher_id = teacher_key(self.identity)
        self.hits = self.misses = self.added = 0
        if self.path.exists() and not self.path.is_file():
            raise SettingError("cache", f"{self.path} is a folder: give a file path, e.g. {self.path}/teachers.sqlite")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the cache folder {self.path.parent}: {exc.strerror}") from None
        try:
            self.conn = sqlite3.connect(str(self.path), timeout=60)
            # WAL: a reader never sees a half-committed batch and does not block the writer.
            self.conn.execute("PRAGMA journal_mode=WAL")
            with self.conn:
                for stmt in _SCHEMA:
                    self.conn.execute(stmt)
                self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            version = self.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{self.path} is not an edgeface teacher-embedding cache ({exc}): delete it or pass "
                            "another --cache") from None
        if version != str(SCHEMA_VERSION):
            raise UserError(f"{self.path} is a teacher cache of schema {version}, this edgeface writes "
                            f"{SCHEMA_VERSION}: delete it or pass another --cache")
        row = self.conn.execute("SELECT dim FROM teachers WHERE teacher_id = ?", (self.teacher_id,)).fetchone()
        if row is None:
            with self.conn:
                self.conn.execute("INSERT INTO teachers VALUES (?, ?, ?, ?)",
                                  (self.teacher_id, json.dumps(self.identity, sort_keys=True, default=str),
                                   self.dim, time.strftime("%Y-%m-%dT%H:%M:%S%z")))
        elif int(row[0]) != self.dim:
            raise UserError(f"{self.path}: this teacher was cached with {row[0]}-d vectors, it now gives "
                            f"{self.dim}-d: delete the cache or pass another --cache")

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    def __len__(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM embeddings WHERE teacher_id = ?",
                                     (self.teacher_id,)).fetchone()[0])

    def keys(self) -> set[str]:
        """Image hashes with a stored embedding of this teacher."""
        rows = self.conn.execute("SELECT image_sha256 FROM embeddings WHERE teacher_id = ?", (self.teacher_id,))
        return {r[0] for r in rows}

    def get_many(self, image_hashes: Iterable[str]) -> dict[str, np.ndarray]:
        """Stored (D,) float32 embeddings for the hashes that have one; counts hits and misses."""
        wanted = list(dict.fromkeys(image_hashes))
        found: dict[str, np.ndarray] = {}
        for i in range(0, len(wanted), _SQL_CHUNK):
            chunk = wanted[i:i + _SQL_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(f"SELECT image_sha256, vector FROM embeddings WHERE teacher_id = ? "
                                     f"AND image_sha256 IN ({marks})", (self.teacher_id, *chunk))
            for key, blob in rows:
                vec = np.frombuffer(blob, dtype="<f4")
                if vec.size == self.dim:  # a foreign or damaged row is a miss, never a wrong vector
                    found[key] = vec.astype(np.float32)
        self.hits += len(found)
        self.misses += len(wanted) - len(found)
        return found

    def get(self, image_hash: str) -> Optional[np.ndarray]:
        """One stored embedding, or None."""
        return self.get_many([image_hash]).get(image_hash)

    def put_many(self, embeddings: Mapping[str, np.ndarray]) -> None:
        """Store embeddings (image hash -> (D,) vector) in one transaction."""
        rows = []
        for key, vec in embeddings.items():
            v = np.asarray(vec, dtype="<f4").reshape(-1)
            if v.size != self.dim:
                raise ValueError(f"embedding of {key} has {v.size} values, the cache holds {self.dim}-d vectors")
            if not np.all(np.isfinite(v)):
                raise ValueError(f"embedding of {key} is not finite")
            rows.append((self.teacher_id, key, v.tobytes()))
        if not rows:
            return
        with self.conn:  # one transaction: all of these rows or none
            self.conn.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)", rows)
        self.added += len(rows)

    def stats(self) -> dict:
        """Lookups and writes so far, and the entries stored for this teacher."""
        return {"path": str(self.path), "teacher_id": self.teacher_id, "hits": self.hits, "misses": self.misses,
                "added": self.added, "entries": len(self)}
