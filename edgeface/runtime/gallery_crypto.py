"""Galleries encrypted at rest: AES-256-GCM from ``cryptography``, a 256-bit random key kept apart from the file.

A gallery holds face templates with names: biometric data.  Encrypted, the file on a board's SD card or in a
backup says nothing about who is enrolled without its key.  Nothing here is home-made: the cipher is the
``cryptography`` package's AES-GCM (authenticated: any change to the file, one bit anywhere, fails the tag), the
key and the 96-bit nonce come from ``os.urandom``, and a fresh nonce is drawn for every write.

Sealed file layout (version 1)::

    b"EFGALENC"                 8 bytes, tells a sealed gallery from a plain .npz (b"PK\\x03\\x04")
    header length               4 bytes, big-endian
    header                      UTF-8 JSON: format, version, cipher, key_id, nonce (hex), model (identity)
    ciphertext + 16-byte tag    AES-256-GCM of the plain gallery's .npz bytes

Everything before the ciphertext is the associated data, so the header is authenticated too.  The header keeps
the model's identity in the clear (checksums of the network, not of anyone's face) so ``flash`` can check that a
gallery belongs to the bundle without holding its key; ``key_id`` (the first 8 bytes of HMAC-SHA256 of a fixed
label under the key; it reveals nothing about the key) lets a wrong key be told apart from a damaged file.

Keys are 32 random bytes written as 64 hex digits, in a file only its owner may read (``edgeface gallery
keygen``, or ``openssl rand -hex 32 > key``) or in the environment variable :data:`KEY_ENV`; only the CLI layer
reads either and hands a :class:`GalleryKey` down.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edgeface.errors import UserError

MAGIC = b"EFGALENC"
SEALED_FORMAT = "edgeface-gallery-sealed"
SEALED_VERSION = 1
CIPHER = "AES-256-GCM"
KEY_BYTES = 32
NONCE_BYTES = 12  # GCM's standard nonce size; random per write (2^-32 collision odds only after ~2^32 writes)
KEY_ENV = "EDGEFACE_GALLERY_KEY"  # the key itself (64 hex digits); read by the CLI layer only
KEY_FILE_ENV = "EDGEFACE_GALLERY_KEY_FILE"  # a key file's path, for services that cannot pass flags easily
_MAX_HEADER = 64 * 1024  # the header is a few hundred bytes; a larger length field is damage, not a gallery
_KEY_ID_LABEL = b"edgeface gallery key id v1"


class GalleryKeyError(UserError):
    """A key that cannot be used: missing, malformed, readable by others, or not the gallery's."""


class SealedGalleryError(UserError):
    """An encrypted gallery that cannot be opened: damaged, altered, or of an unknown version."""


@dataclass(frozen=True)
class GalleryKey:
    """A 256-bit gallery key and where it came from (for messages; the key itself is never shown)."""

    secret: bytes
    source: str = "the key"

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise GalleryKeyError(f"{self.source} is {len(self.secret)} bytes; a gallery key is {KEY_BYTES} bytes")

    def __repr__(self) -> str:  # keeps the secret out of tracebacks, logs and debugger output
        return f"GalleryKey(id={self.key_id}, source={self.source!r})"

    @property
    def key_id(self) -> str:
        """16 hex digits naming this key; the same key always gives the same id."""
        return hmac.new(self.secret, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]

    def to_text(self) -> str:
        """The key as a key file holds it: 64 hex digits and a newline."""
        return self.secret.hex() + "\n"


def generate_key() -> GalleryKey:
    """A new random key (from the operating system's CSPRNG)."""
    return GalleryKey(os.urandom(KEY_BYTES), "a new key")


def key_from_text(text: str, source: str) -> GalleryKey:
    """A key from its 64 hex digits (surrounding whitespace ignored); ``source`` names where it came from."""
    digits = text.strip()
    if len(digits) != 2 * KEY_BYTES or any(c not in "0123456789abcdefABCDEF" for c in digits):
        # never echo what was read: it may be a key in another format, or a passphrase
        raise GalleryKeyError(f"{source} does not hold a gallery key (64 hex digits, as `edgeface gallery keygen` "
                              "or `openssl rand -hex 32` writes)")
    return GalleryKey(bytes.fromhex(digits), source)


def read_key_file(path: str | os.PathLike) -> GalleryKey:
    """The key in ``path``; refused when missing, not a small file, or readable by other accounts."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise GalleryKeyError(f"key file not found: {path} (make one with `edgeface gallery keygen --out "
                              f"{path}`)") from None
    except OSError as exc:
        raise GalleryKeyError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise GalleryKeyError(f"key file {path} is not a regular file")
    if st.st_mode & 0o077:
        # as ssh does for private keys: a key any account can read protects nothing
        raise GalleryKeyError(f"key file {path} can be read by other accounts (mode {stat.S_IMODE(st.st_mode):04o}):"
                              f" run `chmod 600 {path}`")
    if st.st_size > 4096:
        raise GalleryKeyError(f"key file {path} is {st.st_size} bytes: not a gallery key (64 hex digits)")
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not ASCII text"
        raise GalleryKeyError(f"cannot read key file {path}: {reason}") from None
    return key_from_text(text, f"key file {path}")


def is_sealed(data: bytes) -> bool:
    """True for the bytes of an encrypted gallery."""
    return data[:len(MAGIC)] == MAGIC


def seal(plain: bytes, key: GalleryKey, model: dict, nonce: Optional[bytes] = None) -> bytes:
    """The sealed file for a plain gallery's bytes; ``model`` is the gallery's model identity (kept in the clear).

    ``nonce`` only for reproducible test files under a throwaway key: a nonce used twice with one key breaks
    AES-GCM, so everything else leaves it to draw a fresh random one."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(NONCE_BYTES) if nonce is None else bytes(nonce)
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"an AES-GCM nonce here is {NONCE_BYTES} bytes")
    header = json.dumps({"format": SEALED_FORMAT, "version": SEALED_VERSION, "cipher": CIPHER,
                         "key_id": key.key_id, "nonce": nonce.hex(), "model": model}).encode("utf-8")
    aad = MAGIC + struct.pack(">I", len(header)) + header
    return aad + AESGCM(key.secret).encrypt(nonce, plain, aad)


def sealed_header(data: bytes, path: str | os.PathLike) -> tuple[dict, int]:
    """The clear header of a sealed gallery and where its ciphertext starts; damage is one line."""
    damaged = f"{path} is an encrypted gallery that is damaged or truncated"
    hint = "; it was left untouched: restore a backup"
    if len(data) < len(MAGIC) + 4:
        raise SealedGalleryError(f"{damaged} (no header){hint}")
    (length,) = struct.unpack(">I", data[len(MAGIC):len(MAGIC) + 4])
    start = len(MAGIC) + 4
    if length > _MAX_HEADER or start + length > len(data):
        raise SealedGalleryError(f"{damaged} (header length {length} past the end of the file){hint}")
    try:
        header = json.loads(data[start:start + length].decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise SealedGalleryError(f"{damaged} (unreadable header){hint}") from None
    if not isinstance(header, dict) or header.get("format") != SEALED_FORMAT:
        raise SealedGalleryError(f"{damaged} (not an edgeface sealed-gallery header){hint}")
    if header.get("version") != SEALED_VERSION or header.get("cipher") != CIPHER:
        raise SealedGalleryError(f"{path} is encrypted with format version {header.get('version')!r} "
                                 f"({header.get('cipher')!r}); this edgeface reads version {SEALED_VERSION} "
                                 f"({CIPHER}): upgrade edgeface")
    nonce = header.get("nonce")
    if not (isinstance(nonce, str) and len(nonce) == 2 * NONCE_BYTES and _is_hex(nonce)
            and isinstance(header.get("key_id"), str) and len(header["key_id"]) == 16 and _is_hex(header["key_id"])
            and isinstance(header.get("model"), dict)):
        raise SealedGalleryError(f"{damaged} (incomplete header){hint}")
    return header, start + length


def unseal(data: bytes, key: Optional[GalleryKey], path: str | os.PathLike) -> bytes:
    """The plain gallery bytes inside a sealed file; a missing or wrong key, or any alteration, is one line."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    header, start = sealed_header(data, path)
    if key is None:
        raise GalleryKeyError(f"{path} is encrypted (key {header['key_id']}): give its key with --key-file FILE, "
                              f"${KEY_FILE_ENV} or ${KEY_ENV}")
    if not hmac.compare_digest(header["key_id"], key.key_id):
        raise GalleryKeyError(f"{path} is encrypted with key {header['key_id']}, but {key.source} is key "
                              f"{key.key_id}: give the gallery's own key")
    if len(data) - start < 16:
        raise SealedGalleryError(f"{path} is an encrypted gallery that is truncated (no authentication tag); it was "
                                 "left untouched: restore a backup")
    try:
        return AESGCM(key.secret).decrypt(bytes.fromhex(header["nonce"]), data[start:], data[:start])
    except InvalidTag:
        raise SealedGalleryError(f"{path} failed its integrity check: the encrypted gallery was altered or damaged "
                                 "after it was written; it was left untouched: restore a backup") from None


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)
