"""Encrypted galleries: keys, sealing, the gallery commands, and refusals that never rewrite the file.

Real faces throughout: the galleries are enrolled from the sample photos with the shipped default model.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeface.cli import app
from edgeface.runtime.gallery import Gallery, sealed_model
from edgeface.runtime.gallery_crypto import (
    MAGIC,
    GalleryKey,
    GalleryKeyError,
    SealedGalleryError,
    key_from_text,
    read_key_file,
    seal,
    sealed_header,
    unseal,
)

pytestmark = pytest.mark.board

runner = CliRunner()


def invoke(*args, env: dict | None = None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> tuple[Path, Path]:
    """Two key files made by `edgeface gallery keygen`."""
    folder = tmp_path_factory.mktemp("keys")
    paths = folder / "k1.key", folder / "k2.key"
    for p in paths:
        r = invoke("gallery", "keygen", "--out", p)
        assert r.exit_code == 0, r.output
    return paths


@pytest.fixture(scope="module")
def sealed(keys, media_dir, tmp_path_factory) -> Path:
    """An encrypted gallery enrolled from real photos (Obama twice, Biden once) with the default model."""
    path = tmp_path_factory.mktemp("sealed") / "people.npz"
    r = invoke("enroll", "barack", media_dir / "obama.jpg", media_dir / "obama2.jpg", "-g", path,
               "--key-file", keys[0])
    assert r.exit_code == 0, r.output
    r = invoke("enroll", "joe", media_dir / "biden.jpg", "-g", path, "--key-file", keys[0])
    assert r.exit_code == 0, r.output
    return path


def copy_of(path: Path, tmp_path: Path) -> Path:
    dest = tmp_path / path.name
    dest.write_bytes(path.read_bytes())
    os.chmod(dest, 0o600)
    return dest


def test_keygen_writes_a_private_key_and_never_overwrites_by_accident(tmp_path):
    out = tmp_path / "gallery.key"
    r = invoke("gallery", "keygen", "--out", out)
    assert r.exit_code == 0, r.output
    assert mode_of(out) == 0o600
    key = read_key_file(out)
    assert len(key.secret) == 32 and key.key_id in r.output and key.secret.hex() not in r.output
    before = out.read_bytes()
    assert "exists" in one_line_error(invoke("gallery", "keygen", "--out", out))
    assert out.read_bytes() == before
    os.chmod(out, 0o644)  # --force replaces it with a new private file, not one inheriting the open mode
    assert invoke("gallery", "keygen", "--out", out, "--force").exit_code == 0
    assert mode_of(out) == 0o600 and out.read_bytes() != before


def test_key_files_that_protect_nothing_or_hold_no_key_are_refused(tmp_path):
    open_key = tmp_path / "open.key"
    open_key.write_text(os.urandom(32).hex())
    os.chmod(open_key, 0o644)
    with pytest.raises(GalleryKeyError, match=r"can be read by other accounts \(mode 0644\): run `chmod 600"):
        read_key_file(open_key)
    secretish = "correct horse battery staple"
    bad = tmp_path / "bad.key"
    bad.write_text(secretish)
    os.chmod(bad, 0o600)
    with pytest.raises(GalleryKeyError, match="does not hold a gallery key") as err:
        read_key_file(bad)
    assert secretish not in str(err.value)  # what was read is never echoed: it may be a secret
    with pytest.raises(GalleryKeyError, match="key file not found"):
        read_key_file(tmp_path / "missing.key")
    key = key_from_text("ab" * 32, "test")
    assert "ab" * 8 not in repr(key)  # tracebacks and logs never show the secret


def test_encrypted_round_trip_with_real_faces(sealed, keys, media_dir, tmp_path):
    data = sealed.read_bytes()
    assert data.startswith(MAGIC) and mode_of(sealed) == 0o600
    for secret in (b"barack", b"joe", b"obama.jpg", b"biden"):  # no name or photo path in the clear
        assert secret not in data
    key = read_key_file(keys[0])
    g = Gallery.load(sealed, key=key)
    assert g.names() == {"barack": 2, "joe": 1} and g.encrypted and g.key.key_id == key.key_id
    assert np.allclose(np.linalg.norm(g.embeddings, axis=1), 1.0, atol=1e-3)
    assert sealed_model(sealed) == g.model  # the model identity is readable without the key (for flash)

    # run recognises the enrolled person through the encrypted gallery, by --key-file or $EDGEFACE_GALLERY_KEY
    for extra, env in ((["--key-file", keys[0]], None), ([], {"EDGEFACE_GALLERY_KEY": key.secret.hex()}),
                       ([], {"EDGEFACE_GALLERY_KEY_FILE": str(keys[0])})):
        r = invoke("run", "-s", media_dir / "obama.jpg", "-g", sealed, "-q", *extra, env=env)
        assert r.exit_code == 0, r.output
        frame = next(json.loads(line) for line in r.output.splitlines() if line.startswith('{"frame"'))
        assert [d["identity"] for d in frame["detections"]] == ["barack"]

    # decrypt -> the same people and embeddings, plain; encrypt it again under the other key
    plain = tmp_path / "plain.npz"
    assert invoke("gallery", "decrypt", "-g", sealed, "--key-file", keys[0], "--out", plain).exit_code == 0
    assert plain.read_bytes()[:4] == b"PK\x03\x04" and mode_of(plain) == 0o600
    p = Gallery.load(plain)
    assert not p.encrypted and p.names() == g.names() and np.array_equal(p.embeddings, g.embeddings)
    assert invoke("gallery", "encrypt", "-g", plain, "--key-file", keys[1]).exit_code == 0
    assert Gallery.load(plain, key=read_key_file(keys[1])).names() == g.names()
    assert "already encrypted" in one_line_error(invoke("gallery", "encrypt", "-g", plain, "--key-file", keys[1]))


def test_rekey_locks_out_the_old_key(sealed, keys, tmp_path):
    path = copy_of(sealed, tmp_path)
    r = invoke("gallery", "rekey", "-g", path, "--key-file", keys[0], "--new-key-file", keys[1])
    assert r.exit_code == 0, r.output
    k1, k2 = read_key_file(keys[0]), read_key_file(keys[1])
    assert Gallery.load(path, key=k2).names() == {"barack": 2, "joe": 1}
    with pytest.raises(GalleryKeyError, match=f"encrypted with key {k2.key_id}, but key file .* is key {k1.key_id}"):
        Gallery.load(path, key=k1)


def test_every_write_draws_a_new_nonce(sealed, keys, tmp_path):
    key = read_key_file(keys[0])
    g = Gallery.load(sealed, key=key)
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    g.save(a)
    g.save(b)
    ha, _ = sealed_header(a.read_bytes(), a)
    hb, _ = sealed_header(b.read_bytes(), b)
    assert ha["nonce"] != hb["nonce"] and a.read_bytes() != b.read_bytes()


def _flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


@pytest.mark.parametrize("damage", ["no key", "wrong key", "truncated", "header bit", "ciphertext bit", "tag bit",
                                    "length field", "cut in header"])
def test_refusals_are_one_line_and_never_rewrite_the_file(sealed, keys, tmp_path, damage):
    path = copy_of(sealed, tmp_path)
    data = path.read_bytes()
    _, start = sealed_header(data, path)
    key_args = ["--key-file", keys[0]]
    if damage == "no key":
        key_args = []
    elif damage == "wrong key":
        key_args = ["--key-file", keys[1]]
    elif damage == "truncated":
        path.write_bytes(data[:-100])
    elif damage == "header bit":  # inside the clear JSON: the nonce's last hex digit (still valid hex)
        i = data.index(b'"nonce": "') + len('"nonce": "') + 23
        path.write_bytes(data[:i] + (b"0" if data[i:i + 1] != b"0" else b"1") + data[i + 1:])
    elif damage == "ciphertext bit":
        path.write_bytes(_flip(data, start + (len(data) - start) // 2))
    elif damage == "tag bit":
        path.write_bytes(_flip(data, len(data) - 1))
    elif damage == "length field":
        path.write_bytes(data[:8] + (2**31).to_bytes(4, "big") + data[12:])
    elif damage == "cut in header":
        path.write_bytes(data[:40])
    before, mtime = path.read_bytes(), path.stat().st_mtime_ns
    for args in (["gallery", "remove", "joe"], ["gallery", "rename", "joe", "joseph"], ["gallery", "list"],
                 ["gallery", "rekey", "--new-key-file", keys[1]]):
        line = one_line_error(invoke(*args, "-g", path, *key_args))
        expected = {"no key": ("is encrypted (key", "rekeying a gallery needs a key"),
                    "wrong key": ("give the gallery's own key",)}.get(
            damage, ("integrity check",) if "bit" in damage or damage == "truncated" else ("damaged or truncated",))
        assert any(e in line for e in expected), line
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime


def test_remove_leaves_no_trace_of_the_person(sealed, keys, tmp_path):
    key = read_key_file(keys[0])
    path = copy_of(sealed, tmp_path)
    joe = Gallery.load(path, key=key)
    joe_rows = joe.embeddings[[n == "joe" for n in joe.labels]]
    assert joe_rows[0].tobytes() in unseal(path.read_bytes(), key, path)  # the check below can see him
    assert invoke("gallery", "remove", "joe", "-g", path, "--key-file", keys[0]).exit_code == 0
    after = Gallery.load(path, key=key)
    assert after.names() == {"barack": 2} and after.encrypted
    plain = unseal(path.read_bytes(), key, path)  # the whole new file, decrypted
    assert b"joe" not in plain and b"biden" not in plain
    for row in joe_rows:  # not his embedding, nor any run of 4 of its values (single values of an int8 model's
        # output recur across people by chance, 4 in a row do not)
        raw = row.tobytes()
        assert raw not in plain
        assert not any(raw[i:i + 16] in plain for i in range(0, len(raw) - 15, 4))


def test_plain_gallery_stays_plain_and_new_one_is_sealed_when_a_key_is_given(keys, media_dir, tmp_path):
    plain = tmp_path / "plain.npz"
    assert invoke("enroll", "barack", media_dir / "obama.jpg", "-g", plain).exit_code == 0
    r = invoke("enroll", "joe", media_dir / "biden.jpg", "-g", plain, "--key-file", keys[0])
    assert r.exit_code == 0, r.output
    assert plain.read_bytes()[:4] == b"PK\x03\x04"  # an existing gallery keeps its form; `encrypt` converts it
    assert Gallery.load(plain).names() == {"barack": 1, "joe": 1}
    assert "is not encrypted" in one_line_error(invoke("gallery", "decrypt", "-g", plain, "--key-file", keys[0]))


def test_seal_and_unseal_agree_with_aes_gcm_and_bind_the_header():
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = GalleryKey(bytes(range(32)), "test")
    blob = seal(b"plain gallery bytes", key, {"sha256": "x", "embedding_dim": 3})
    header, start = sealed_header(blob, "g")
    # an independent AES-GCM decrypt with the header as associated data gives the plaintext back
    assert AESGCM(key.secret).decrypt(bytes.fromhex(header["nonce"]), blob[start:], blob[:start]) == \
        b"plain gallery bytes"
    assert unseal(blob, key, "g") == b"plain gallery bytes"
    # the model identity in the clear header is authenticated: changing it breaks the tag
    forged = blob.replace(b'"embedding_dim": 3', b'"embedding_dim": 4')
    with pytest.raises(SealedGalleryError, match="integrity check"):
        unseal(forged, key, "g")
