"""Putting a finished bundle in place: the export's temporary folder replaces the old bundle in one rename.

Files a user put into the old bundle (a gallery, notes: what its manifest does
not list) are carried over; a failed rename puts the previous bundle back.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from edgeface.errors import UserError
from edgeface.fileio import umask_mode
from edgeface.runtime.bundle import MANIFEST_NAME


def finish_bundle(work: Path, out: Path) -> list[str]:
    """Move the finished bundle into place; an older bundle at ``out`` is replaced only now.

    Files of the older bundle that its manifest does not list are carried over; their names are returned.

    ``out`` is resolved and ``work`` was made in its parent, so both renames stay on one filesystem.
    """
    # mkdtemp made the folder 0700: a bundle is meant for others too (a service user on the board, a
    # colleague), so it gets the mode a plain mkdir would have given it.
    os.chmod(work, umask_mode(0o777))
    kept = carry_over_unlisted(out, work)
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        try:
            os.replace(out, old)
        except OSError as exc:
            raise UserError(f"cannot replace the bundle at {out}: {exc.strerror}; it is unchanged") from None
    try:
        os.replace(work, out)
    except OSError as exc:
        restored = ""
        if old is not None:
            try:  # put the previous bundle back, so a failed export never leaves no bundle at all
                os.replace(old, out)
                restored = "; the previous bundle is back in place"
            except OSError:
                restored = f"; the previous bundle is at {old}"
        raise UserError(f"cannot move the new bundle into place at {out}: {exc.strerror}{restored}") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return kept


def carry_over_unlisted(out: Path, work: Path) -> list[str]:
    """Copy into the new bundle what a user put into the old one (files its manifest does not list: a
    gallery, notes); what the old manifest lists is the old export's and is replaced.  Returns their names."""
    if not (out / MANIFEST_NAME).is_file():
        return []
    try:
        manifest = json.loads((out / MANIFEST_NAME).read_text())
        listed = {Path(e["path"]).parts[0] for key in ("files", "detectors") for e in manifest.get(key, [])}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return []  # a manifest this export cannot read: nothing is known to be the user's, keep nothing
    kept = []
    for entry in sorted(out.iterdir()):
        if (entry.name in listed or entry.name == MANIFEST_NAME or entry.name.startswith(".")
                or (work / entry.name).exists()):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, work / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, work / entry.name, follow_symlinks=False)
        kept.append(entry.name)
    return kept
