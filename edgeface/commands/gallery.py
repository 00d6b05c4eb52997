"""``edgeface gallery``: list, remove and rename enrolled people; make keys, encrypt, decrypt and rekey galleries.

Gallery keys reach the runtime only through :func:`resolve_key`: ``--key-file FILE`` (or the
``EDGEFACE_GALLERY_KEY_FILE`` variable naming one), else the key itself in ``EDGEFACE_GALLERY_KEY``.  This module
is the one place that reads those; ``run`` and ``enroll`` use the same option and function.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from edgeface.commands.errors import user_errors
from edgeface.console import print_table
from edgeface.errors import UserError
from edgeface.runtime.gallery_crypto import KEY_ENV, KEY_FILE_ENV, GalleryKey  # stdlib only: --help stays light

DEFAULT_GALLERY = "gallery.npz"  # = edgeface.runtime.gallery.DEFAULT_GALLERY (not imported: --help stays light)
KEY_FILE_HELP = (f"Key of an encrypted gallery: a file of 64 hex digits readable by its owner only (`edgeface "
                 f"gallery keygen`); or set ${KEY_FILE_ENV} to its path, or ${KEY_ENV} to the key itself. A new "
                 "gallery is created encrypted when a key is given; an existing one keeps its form.")


def key_file_option(help: str = KEY_FILE_HELP) -> Optional[Path]:
    """The ``--key-file`` option every gallery-reading command takes (env ``EDGEFACE_GALLERY_KEY_FILE``)."""
    return typer.Option(None, "--key-file", envvar=KEY_FILE_ENV, help=help, show_envvar=False)


def resolve_key(key_file: Optional[Path], required_for: Optional[str] = None) -> Optional[GalleryKey]:
    """The gallery key from ``--key-file`` or ``$EDGEFACE_GALLERY_KEY``; None when neither is set, unless
    ``required_for`` names what needs one (then a missing key is one line)."""
    from edgeface.runtime.gallery_crypto import key_from_text, read_key_file

    if key_file is not None:
        return read_key_file(key_file)
    text = os.environ.get(KEY_ENV)
    if text:
        return key_from_text(text, f"${KEY_ENV}")
    if required_for:
        raise UserError(f"{required_for} needs a key: --key-file FILE (make one with `edgeface gallery keygen --out "
                        f"FILE`), ${KEY_FILE_ENV} or ${KEY_ENV}")
    return None


gallery_app = typer.Typer(help="List, remove and rename enrolled people; encrypt galleries.", no_args_is_help=True)


def _gallery_option(help: str = "Gallery file.") -> Path:
    return typer.Option(Path(DEFAULT_GALLERY), "--gallery", "-g", help=help)


@gallery_app.command("list")
@user_errors
def gallery_list(
    gallery: Path = _gallery_option(),
    key_file: Optional[Path] = key_file_option(),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """List enrolled people with their number of embeddings."""
    from edgeface.runtime.gallery import Gallery

    g = Gallery.load(gallery, for_repair=True, key=resolve_key(key_file))  # shows who a damaged row belongs to
    people = g.people()
    if as_json:
        typer.echo(json.dumps({"gallery": str(gallery), "model": g.model.to_dict(), "created": g.created,
                               "updated": g.updated, "encrypted": g.encrypted,
                               "key_id": g.key.key_id if g.key else None, "embeddings": len(g), "people": people},
                              indent=2))
        return
    form = f", encrypted (key {g.key.key_id})" if g.key else ""
    print_table(f"{gallery}: {len(people)} people, {len(g)} embeddings{form}",
                ["name", "embeddings", "first added", "last added"],
                [[p["name"], p["embeddings"], _when(p["first_added"]), _when(p["last_added"])] for p in people])
    typer.echo(f"model {g.model.short()}, {g.model.embedding_dim}-d embeddings", err=True)


def _when(iso: Optional[str]) -> str:
    """'2025-01-31T12:34:56+00:00' -> '2025-01-31 12:34' for tables (the JSON keeps the full time)."""
    return (iso or "")[:16].replace("T", " ")


@gallery_app.command("remove")
@user_errors
def gallery_remove(
    name: str = typer.Argument(..., help="The person to remove."),
    gallery: Path = _gallery_option(),
    key_file: Optional[Path] = key_file_option(),
) -> None:
    """Remove a person and all their embeddings (the gallery is rewritten whole: nothing of them stays in it)."""
    from edgeface.runtime.gallery import Gallery

    g = Gallery.load(gallery, for_repair=True, key=resolve_key(key_file))  # removing a damaged row repairs it
    n = g.remove(name)
    g.save(gallery)
    typer.echo(f"removed {name} ({n} embedding(s)); {gallery} holds {len(g.names())} people", err=True)


@gallery_app.command("rename")
@user_errors
def gallery_rename(
    old: str = typer.Argument(..., help="Current name."),
    new: str = typer.Argument(..., help="New name."),
    gallery: Path = _gallery_option(),
    key_file: Optional[Path] = key_file_option(),
) -> None:
    """Rename a person."""
    from edgeface.runtime.gallery import Gallery

    g = Gallery.load(gallery, key=resolve_key(key_file))
    n = g.rename(old, new)
    g.save(gallery)
    typer.echo(f"renamed {old} to {new} ({n} embedding(s))", err=True)


@gallery_app.command("keygen")
@user_errors
def gallery_keygen(
    out: Path = typer.Option(..., "--out", "-o", help="Key file to write (0600)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing key file (galleries sealed with the old "
                               "key can then only be opened with a copy of it)."),
) -> None:
    """Make a new random gallery key (256 bits) in a file only you can read."""
    from edgeface.fileio import atomic_write_bytes
    from edgeface.runtime.gallery_crypto import generate_key

    if out.is_dir():
        raise UserError(f"--out {out} is a folder: give the key file's name, e.g. {out / 'gallery.key'}")
    if out.exists() or out.is_symlink():
        if not force:
            raise UserError(f"{out} exists: a new key would lock out every gallery sealed with the old one; pick "
                            "another name, or --force to replace it")
        out.unlink()  # the replacement must be created 0600, not inherit the old file's mode
    key = generate_key()
    try:
        atomic_write_bytes(out, key.to_text().encode("ascii"), fsync=True, private=True)
    except OSError as exc:
        raise UserError(f"cannot write key file {out}: {exc.strerror or exc}") from None
    typer.echo(f"wrote key {key.key_id} to {out} (mode 0600); keep a copy apart from the galleries it opens: "
               "without it they cannot be read", err=True)


@gallery_app.command("encrypt")
@user_errors
def gallery_encrypt(
    gallery: Path = _gallery_option("Plain gallery to encrypt in place."),
    key_file: Optional[Path] = key_file_option("Key to seal it with (see `keygen`; or $EDGEFACE_GALLERY_KEY_FILE, "
                                               "$EDGEFACE_GALLERY_KEY)."),
) -> None:
    """Encrypt a gallery at rest (AES-256-GCM); run, enroll, gallery and flash then need its key."""
    from edgeface.runtime.gallery import Gallery, sealed_model

    key = resolve_key(key_file, required_for="encrypting a gallery")
    if sealed_model(gallery) is not None:
        raise UserError(f"{gallery} is already encrypted: `edgeface gallery rekey` changes its key")
    g = Gallery.load(gallery, for_repair=True)
    g.key = key
    g.save(gallery)
    typer.echo(f"encrypted {gallery} ({len(g.names())} people) with key {key.key_id}; the plain file's old blocks "
               "on disk are not scrubbed: delete any other plain copies", err=True)


@gallery_app.command("decrypt")
@user_errors
def gallery_decrypt(
    gallery: Path = _gallery_option("Encrypted gallery."),
    key_file: Optional[Path] = key_file_option("Its key."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the plain gallery here (0600) instead of "
                                       "replacing the encrypted one."),
) -> None:
    """Decrypt a gallery back to a plain one (in place, or to --out)."""
    from edgeface.runtime.gallery import Gallery, sealed_model

    key = resolve_key(key_file, required_for="decrypting a gallery")
    if sealed_model(gallery) is None:
        raise UserError(f"{gallery} is not encrypted")
    g = Gallery.load(gallery, for_repair=True, key=key)
    g.key = None
    dest = out or gallery
    if out is not None and out.exists() and out.resolve() != gallery.resolve():
        raise UserError(f"--out {out} exists: remove it or choose another name")
    g.save(dest)
    typer.echo(f"decrypted {gallery} into {dest} ({len(g.names())} people)", err=True)


@gallery_app.command("rekey")
@user_errors
def gallery_rekey(
    gallery: Path = _gallery_option("Encrypted gallery."),
    key_file: Optional[Path] = key_file_option("Its current key."),
    new_key_file: Path = typer.Option(..., "--new-key-file", help="The key to seal it with from now on."),
) -> None:
    """Seal an encrypted gallery under a new key (after a key was exposed, or to rotate keys)."""
    from edgeface.runtime.gallery import Gallery, sealed_model
    from edgeface.runtime.gallery_crypto import read_key_file

    old = resolve_key(key_file, required_for="rekeying a gallery")
    new = read_key_file(new_key_file)
    if sealed_model(gallery) is None:
        raise UserError(f"{gallery} is not encrypted: `edgeface gallery encrypt` seals it")
    g = Gallery.load(gallery, for_repair=True, key=old)
    if new.key_id == old.key_id:
        raise UserError(f"--new-key-file {new_key_file} holds the gallery's current key {old.key_id}")
    g.key = new
    g.save(gallery)
    typer.echo(f"rekeyed {gallery}: key {old.key_id} -> {new.key_id}", err=True)


def register(app: typer.Typer) -> None:
    app.add_typer(gallery_app, name="gallery", help="List, remove and rename enrolled people; encrypt galleries.")
