"""Identity-folder datasets (``ROOT/<person>/<image>``), people lists and loading aligned crops."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from edgeface.errors import UserError
from edgeface.runtime.images import UnreadableImage, is_image_file, read_image

MANIFEST = "manifest.jsonl"  # written by `edgeface data prepare` beside its crops


def scan_identity_folder(root: str | os.PathLike, exclude: Iterable[str] = ()) -> list[tuple[str, Path]]:
    """All (identity, image path) pairs under ``root/<identity>/``, sorted; errors if none."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"dataset folder not found: {root}")
    excluded = set(exclude)
    items = []
    for person in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if person.name in excluded:
            continue
        for f in sorted(person.iterdir()):
            if f.is_file() and is_image_file(f):
                items.append((person.name, f))
    if not items:
        raise UserError(f"no images found in {root}: expected {root}/<person>/<image>.jpg|png|pgm|gif")
    return items


def count_excluded(root: str | os.PathLike, exclude: set[str], option: str = "--exclude-people") -> int:
    """How many person folders of ``root`` ``exclude`` names (0 when it is empty).

    Names that match no folder at all mean the wrong people file or fold far more often than a
    dataset that never held those people, and would leave the promised people in: a :class:`UserError`.
    """
    if not exclude:
        return 0
    root = Path(root)
    people = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")} if root.is_dir() else set()
    if not people:
        raise UserError(f"{option} needs identity folders: {root} has no <person>/ folders, so nobody can be left "
                        "out (drop the option)")
    found = len(people & exclude)
    if not found:
        raise UserError(f"{option}: none of its {len(exclude)} names is a person folder in {root}; check the people "
                        "file and fold (or drop the option if none of them can be there)")
    return found


def split_people_spec(spec: str | os.PathLike) -> tuple[Path, Optional[int]]:
    """``FILE`` or ``FILE:FOLD`` as (FILE, FOLD or None)."""
    text = str(spec)
    if ":" in text and text.rsplit(":", 1)[1].isdigit():
        text, fold = text.rsplit(":", 1)
        return Path(text), int(fold)
    return Path(text), None


def resolved_people_spec(spec: Optional[str]) -> Optional[str]:
    """``FILE[:FOLD]`` with FILE made absolute (for records read later from another folder)."""
    if not spec:
        return None
    path, fold = split_people_spec(spec)
    return f"{path.resolve()}{f':{fold}' if fold is not None else ''}"


def read_people_file(spec: str | os.PathLike) -> set[str]:
    """Names from a people file.

    ``spec`` is ``FILE`` or ``FILE:FOLD``.  FILE may be a plain list (one name per
    line, optionally followed by a tab and a count), LFW's View 2 ``people.txt``
    (folds of ``name count`` lines) or ``pairs.txt`` (folds of pairs), or LFW's View 1
    files (``peopleDevTrain.txt``/``peopleDevTest.txt``, ``pairsDevTrain.txt``/
    ``pairsDevTest.txt``: a count, then names or pairs, no folds).  With ``:FOLD``
    (1-based) only the people of that fold are returned, so ``people.txt:10`` keeps
    View 2 fold 10 out.  A file cut short or out of shape is a ``UserError`` naming the line.
    """
    path, fold = split_people_spec(spec)
    if not path.is_file():
        raise UserError(f"people file not found: {path}")
    try:
        raw = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read people file {path}: {exc}") from None
    # (line number, fields) so errors can point at the line a user has to look at
    lines = [(n, ln.split()) for n, ln in enumerate(raw.splitlines(), 1) if ln.strip()]
    if not lines:
        raise UserError(f"people file is empty: {path}")
    head = lines[0][1]
    lfw = len(head) in (1, 2) and all(h.isdigit() for h in head)
    folds = _lfw_folds(path, lines) if lfw else None
    if folds is None:  # a plain list, or a View 1 file: one set, no folds
        if fold is not None:
            raise UserError(f"{path} has no folds (a plain list or an LFW View 1 file): drop ':{fold}'")
        return _lfw_view1(path, lines) if lfw else {f[0] for _, f in lines}
    if fold is None:
        return set().union(*folds)
    if not 1 <= fold <= len(folds):
        raise UserError(f"{path} has {len(folds)} folds; fold {fold} does not exist")
    return folds[fold - 1]


def _bad_line(path: Path, line: int, what: str) -> UserError:
    return UserError(f"{path}:{line}: {what}; expected an LFW people/pairs file or one name per line")


def _pair_names(path: Path, line: int, fields: list[str]) -> set[str]:
    """Names in one LFW pairs row: ``name i j`` (same person) or ``name1 i name2 j``."""
    if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
        return {fields[0]}
    if len(fields) == 4 and fields[1].isdigit() and fields[3].isdigit():
        return {fields[0], fields[2]}
    raise _bad_line(path, line, f"{' '.join(fields)!r} is not a pairs row")


def _name_count_rows(path: Path, rows: list) -> set[str]:
    """The names of ``name count`` rows (people.txt, peopleDev*.txt); a row of another shape names its line."""
    for ln, f in rows:
        if len(f) != 2 or not f[1].isdigit():
            raise _bad_line(path, ln, f"{' '.join(f)!r} is not a 'name count' row")
    return {f[0] for _, f in rows}


def _take(path: Path, lines: list, start: int, count: int, what: str) -> list:
    rows = lines[start : start + count]
    if len(rows) < count:
        last = lines[-1][0]
        raise _bad_line(path, last, f"file ends after {len(rows)} of {count} {what}")
    return rows


def _lfw_folds(path: Path, lines: list) -> Optional[list[set[str]]]:
    """The folds of a View 2 ``people.txt`` or ``pairs.txt``; None for a View 1 file (no folds)."""
    head = lines[0][1]
    if len(head) == 2:  # pairs.txt: "folds pairs-per-class"
        n_folds, n = int(head[0]), int(head[1])
        folds = []
        for k in range(n_folds):
            chunk = _take(path, lines, 1 + k * 2 * n, 2 * n, f"pairs of fold {k + 1}")
            folds.append(set().union(*(_pair_names(path, ln, f) for ln, f in chunk)))
        return folds
    if len(lines) < 2:
        raise _bad_line(path, lines[0][0], "a count with nothing after it")
    if not (len(lines[1][1]) == 1 and lines[1][1][0].isdigit()):
        return None  # View 1: the count is followed by names or pairs, not by a fold size
    folds, i = [], 1
    for k in range(int(head[0])):
        if i >= len(lines):
            raise _bad_line(path, lines[-1][0], f"file ends before fold {k + 1} of {head[0]}")
        line, fields = lines[i]
        if not (len(fields) == 1 and fields[0].isdigit()):
            raise _bad_line(path, line, f"expected the size of fold {k + 1}, found {' '.join(fields)!r}")
        rows = _take(path, lines, i + 1, int(fields[0]), f"names of fold {k + 1}")
        folds.append(_name_count_rows(path, rows))
        i += 1 + len(rows)
    return folds


def _lfw_view1(path: Path, lines: list) -> set[str]:
    """Names in a View 1 file: ``peopleDev*.txt`` (count, then ``name count`` rows) or
    ``pairsDev*.txt`` (count, then that many same-person pairs and as many different-person pairs)."""
    count = int(lines[0][1][0])
    first = lines[1][1]
    if len(first) == 2:
        return _name_count_rows(path, _take(path, lines, 1, count, "names"))
    rows = _take(path, lines, 1, 2 * count, "pairs")
    return set().union(*(_pair_names(path, ln, f) for ln, f in rows))


def _check_crop_sizes(root: Path, paths: list[Path], shapes: list[Optional[tuple[int, int]]],
                      size: Optional[int]) -> None:
    """A :class:`UserError` naming the first image that is not a ``size`` x ``size`` (or square) crop."""
    want: Optional[tuple[int, int]] = (size, size) if size else None
    for path, shape in zip(paths, shapes):
        if shape is None:
            continue  # unreadable: skipped by the loader
        want = want or (shape if shape[0] == shape[1] else None)
        if shape != want:
            need = f"{want[1]}x{want[0]}" if want else "square"
            raise UserError(f"{root} holds photos, not aligned face crops ({path.relative_to(root)} is "
                            f"{shape[1]}x{shape[0]}, training needs {need} crops aligned as the runtime aligns "
                            f"camera faces): run `edgeface data prepare {root} --out CROPS` and train on CROPS")


@dataclass
class CropSet:
    """Aligned crops in memory: images (N, H, W, 3) RGB uint8, integer labels and their names."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    paths: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def select_people(root: str | os.PathLike, exclude: Iterable[str] = (),
                  min_images: int = 1) -> tuple[list[tuple[str, Path]], list[str], dict[str, int]]:
    """The (person, file) items of an identity folder kept for training, the people's sorted names and each name's
    label: people in ``exclude`` and those with fewer than ``min_images`` images left out."""
    items = scan_identity_folder(root, exclude)
    counts: dict[str, int] = {}
    for person, _ in items:
        counts[person] = counts.get(person, 0) + 1
    items = [(p, f) for p, f in items if counts[p] >= min_images]
    if not items:
        raise UserError(f"no identity in {root} has at least {min_images} images")
    names = sorted({p for p, _ in items})
    return items, names, {n: i for i, n in enumerate(names)}


def load_crops(root: str | os.PathLike, exclude: Iterable[str] = (), size: Optional[int] = None,
               min_images: int = 1, workers: int = 4, aligned_only: bool = False) -> CropSet:
    """Load an identity folder of aligned crops into memory (decoded once, reused every epoch).

    Identities with fewer than ``min_images`` images are dropped; images not of
    ``size`` x ``size`` are resized (crops from ``edgeface data prepare`` already are).
    ``aligned_only``: a folder without ``edgeface data prepare``'s manifest must hold
    ``size`` x ``size`` images (crops made elsewhere); photos of any other shape are a
    :class:`UserError`, since resizing a photo does not align the face in it.
    """
    items, names, index = select_people(root, exclude, min_images)

    def load(path: Path) -> tuple[Optional[np.ndarray], Optional[tuple[int, int]]]:
        try:
            img = read_image(path)
        except UnreadableImage:
            return None, None
        shape = (int(img.shape[0]), int(img.shape[1]))
        if size and shape != (size, size):
            import cv2

            img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        return img, shape

    with ThreadPoolExecutor(max_workers=workers) as pool:
        loaded = list(pool.map(load, [f for _, f in items]))
    images = [img for img, _ in loaded]
    if aligned_only and not (Path(root) / MANIFEST).is_file():
        _check_crop_sizes(Path(root), [f for _, f in items], [shape for _, shape in loaded], size)
    keep = [i for i, im in enumerate(images) if im is not None]
    if not keep:
        raise UserError(f"no readable images in {root}")
    shapes = {images[i].shape for i in keep}
    if len(shapes) > 1:
        raise UserError(f"crops in {root} have different sizes {sorted(shapes)}: "
                        "pass a size or run `edgeface data prepare`")
    return CropSet(
        images=np.stack([images[i] for i in keep]),
        labels=np.array([index[items[i][0]] for i in keep], dtype=np.int32),
        class_names=names,
        paths=[items[i][1] for i in keep],
    )
