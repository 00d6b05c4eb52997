"""Enrollment: photos of a person in, embeddings for the gallery out, with the policy that keeps a gallery clean.

:func:`enroll_photos` detects, aligns and embeds one face per photo (as recognition will: the same recognizer);
:func:`enroll_person` adds a person's photos to a gallery, dropping photos already enrolled
(:func:`drop_repeats`) and warning of photos that match somebody else (:func:`lookalike_warnings`);
:func:`expand_photos` and :func:`people_folder` turn files, folders and a folder of people into the work.
No Typer here: ``edgeface enroll`` is one caller, a service enrolling people is another.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

from edgeface.errors import SettingError, UserError
from edgeface.runtime.detector import largest_first
from edgeface.runtime.recognizer import Recognizer

# Two embeddings this close are the same photo (or the same frame) enrolled again, not another view of the face.
REPEAT_COSINE = 0.999


@dataclass
class EnrollRow:
    """What happened to one photo."""

    photo: str
    faces: int
    status: str  # "enrolled", "no face", "several faces", "unreadable" ("already enrolled": set by enroll)
    detail: str = ""

    def to_dict(self) -> dict:
        return {"photo": self.photo, "faces": self.faces, "status": self.status, "detail": self.detail}


def enroll_photos(recognizer: Recognizer, photos: Iterable[Path], pick: Optional[str] = None,
                  progress: Optional[Callable[[int, int], None]] = None, pick_name: str = "pick",
                  ) -> tuple[np.ndarray, list[str], list[EnrollRow]]:
    """Detect, align and embed one face per photo.

    A photo with no face, or with several faces when ``pick`` is not "largest", is
    reported and skipped.  Returns the embeddings (K, D), their source photos, and
    one report row per photo.  ``pick_name`` is what the caller calls the ``pick`` setting in the advice a group
    photo's row gets (``--pick`` for the CLI).
    """
    from edgeface.runtime.images import UnreadableImage, read_image

    photos = list(photos)
    embeddings, sources, rows = [], [], []
    for i, path in enumerate(photos):
        if progress:
            progress(i + 1, len(photos))
        try:
            image = read_image(path)
        except (UnreadableImage, OSError):
            rows.append(EnrollRow(str(path), 0, "unreadable", "not a readable image"))
            continue
        dets = largest_first(recognizer.detector.detect(image))
        if not dets:
            rows.append(EnrollRow(str(path), 0, "no face", "no face detected"))
            continue
        if len(dets) > 1 and pick != "largest":
            rows.append(EnrollRow(str(path), len(dets), "several faces",
                                  f"{len(dets)} faces: use a photo of this person alone, or {pick_name} largest"))
            continue
        crop = recognizer.align(image, dets[0].keypoints)
        embeddings.append(recognizer.embedder.embed(crop)[0])
        sources.append(str(path))
        detail = f"largest of {len(dets)} faces" if len(dets) > 1 else ""
        rows.append(EnrollRow(str(path), len(dets), "enrolled", detail))
    dim = recognizer.matcher.dim
    return (np.stack(embeddings) if embeddings else np.zeros((0, dim), np.float32)), sources, rows


def enroll_person(store, recognizer: Recognizer, threshold: float, name: str, photos: list[Path],
                  pick: Optional[str], replace: bool, progress, pick_name: str = "pick") -> tuple[dict, list]:
    """Embed ``photos`` and add them to ``store`` under ``name`` (not saved yet): the person's report (``embedded``:
    photos with one usable face, before repeats are dropped; ``enrolled``: embeddings added) and its photo rows."""
    embeddings, sources, rows = enroll_photos(recognizer, photos, pick=pick, progress=progress, pick_name=pick_name)
    embedded = len(embeddings)
    warnings = lookalike_warnings(store, name, embeddings, sources, threshold) if embedded else []
    if not replace:
        embeddings, sources, repeats = drop_repeats(store, name, embeddings, sources)
        warnings += repeats
        if repeats:  # one warning per photo dropped
            for row in rows:  # the row says what happened to the photo: it added nothing
                if row.status == "enrolled" and row.photo not in sources:
                    row.status, row.detail = "already enrolled", "the same face is in the gallery"
    # --replace with no usable photo keeps what the person has
    replaced = store.remove(name) if replace and embedded and name in store.names() else 0
    if len(embeddings):
        store.add(name, embeddings, sources)
    report = {"name": name, "embedded": embedded, "enrolled": len(embeddings), "replaced": replaced,
              "skipped": len(rows) - len(embeddings), "photos": [r.to_dict() for r in rows], "warnings": warnings}
    return report, rows


def drop_repeats(store, name: str, embeddings, sources) -> tuple:
    """``embeddings``/``sources`` less the photos ``name`` already has in ``store``, and a warning for each.

    Re-running an enroll command must not stack identical rows: they add nothing to matching and
    inflate the person's count.
    """
    mine = [i for i, label in enumerate(store.labels) if label == name]
    if not mine or not len(embeddings):
        return embeddings, sources, []
    best = (np.asarray(embeddings, np.float32) @ store.embeddings[mine].T).max(axis=1)
    keep = best < REPEAT_COSINE
    warnings = [f"{Path(src).name} is already enrolled for {name!r} (cosine {b:.4f}): skipped"
                for src, b, k in zip(sources, best, keep) if not k]
    return embeddings[keep], [s for s, k in zip(sources, keep) if k], warnings


def lookalike_warnings(store, name: str, embeddings, sources, threshold: float) -> list[str]:
    """Photos that already match somebody else: a mislabelled photo or two names for one person."""
    if not len(store):
        return []
    from edgeface.runtime.matcher import Matcher

    others = [i for i, label in enumerate(store.labels) if label != name]
    if not others:
        return []
    matcher = Matcher(store.embeddings[others], [store.labels[i] for i in others], threshold)
    return [f"{Path(src).name} matches {m.identity!r} (cosine {m.score:.2f}): check that it shows {name}"
            for src, m in zip(sources, matcher.match(embeddings)) if m.known]


# --- the photos to enroll ---------------------------------------------------------------------------


def images_in(folder: Path) -> list[Path]:
    """The image files below ``folder``, sorted, leaving out hidden files and folders (thumbnail caches, macOS
    ``._`` companions), which hold other people's faces or none."""
    from edgeface.runtime.images import is_image_file

    return sorted(f for f in folder.rglob("*") if f.is_file() and is_image_file(f)
                  and not any(part.startswith(".") for part in f.relative_to(folder).parts))


def expand_photos(paths: Iterable[Path]) -> list[Path]:
    """Files as they are and folders as the images below them (:func:`images_in`); a missing path or a folder
    without images is a :class:`UserError`."""
    photos: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = images_in(p)
            if not found:
                raise UserError(f"no images in folder {p}")
            photos.extend(found)
        elif p.is_file():
            photos.append(p)
        else:
            raise UserError(f"photo not found: {p}")
    return photos


def people_folder(root: Path) -> list[tuple[str, list[Path]]]:
    """(name, photos) for each person in a people folder: every subfolder is a person named after it (its images,
    at any depth), and an image lying directly in the folder is a person named after the file (face_recognition's
    known-people layout: ``Barack Obama.jpg``).  A folder that is none is a :class:`SettingError` of ``people``."""
    from edgeface.runtime.gallery import check_name
    from edgeface.runtime.images import is_image_file

    layout = "one subfolder of photos per person, or photos named after their person"
    if not root.is_dir():
        raise SettingError("people", f"{root}: not a folder ({layout})")
    try:
        entries = sorted(root.iterdir())
    except OSError as exc:
        raise SettingError("people", f"{root}: cannot read it ({exc.strerror})") from None
    people: dict[str, list[Path]] = {}
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            name = entry.name
            photos = images_in(entry)
        elif entry.is_file() and is_image_file(entry):
            name, photos = entry.stem, [entry]
        else:
            continue
        try:
            check_name(name)
        except UserError as exc:
            raise SettingError("people", f"{root}: {entry.name!r} cannot name a person: {exc}") from None
        people.setdefault(name, []).extend(photos)
    if not people:
        raise SettingError("people", f"{root}: no person in it ({layout})")
    return list(people.items())
