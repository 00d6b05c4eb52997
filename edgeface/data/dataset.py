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


def read_people_file(spec: str | os.PathLike) -> set[str]:
    """Names from a people file.

    ``spec`` is ``FILE`` or ``FILE:FOLD``.  FILE may be a plain list (one name per
    line, optionally followed by a tab and a count), LFW's ``people.txt`` (folds of
    ``name count`` lines) or LFW's ``pairs.txt``; with ``:FOLD`` (1-based) only the
    people of that fold are returned, so ``people.txt:10`` keeps View 2 fold 10 out.
    """
    text = str(spec)
    fold: Optional[int] = None
    if ":" in text and text.rsplit(":", 1)[1].isdigit():
        text, fold_s = text.rsplit(":", 1)
        fold = int(fold_s)
    path = Path(text)
    if not path.is_file():
        raise UserError(f"people file not found: {path}")
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    if not lines:
        raise UserError(f"people file is empty: {path}")
    folds: list[set[str]] = []
    head = lines[0]
    if len(head) == 1 and head[0].isdigit():  # LFW people.txt
        i = 1
        for _ in range(int(head[0])):
            count = int(lines[i][0])
            folds.append({ln[0] for ln in lines[i + 1 : i + 1 + count]})
            i += 1 + count
    elif len(head) == 2 and all(h.isdigit() for h in head):  # LFW pairs.txt
        n_folds, n = int(head[0]), int(head[1])
        rows = lines[1:]
        for k in range(n_folds):
            chunk = rows[k * 2 * n : (k + 1) * 2 * n]
            folds.append({r[0] for r in chunk} | {r[2] for r in chunk if len(r) == 4})
    else:
        if fold is not None:
            raise UserError(f"{path} is a plain list of names: it has no folds, drop ':{fold}'")
        return {ln[0] for ln in lines}
    if fold is None:
        return set().union(*folds)
    if not 1 <= fold <= len(folds):
        raise UserError(f"{path} has {len(folds)} folds; fold {fold} does not exist")
    return folds[fold - 1]


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


def load_crops(root: str | os.PathLike, exclude: Iterable[str] = (), size: Optional[int] = None,
               min_images: int = 1, workers: int = 4) -> CropSet:
    """Load an identity folder of aligned crops into memory (decoded once, reused every epoch).

    Identities with fewer than ``min_images`` images are dropped; images not of
    ``size`` x ``size`` are resized (crops from ``edgeface data prepare`` already are).
    """
    items = scan_identity_folder(root, exclude)
    counts: dict[str, int] = {}
    for person, _ in items:
        counts[person] = counts.get(person, 0) + 1
    items = [(p, f) for p, f in items if counts[p] >= min_images]
    if not items:
        raise UserError(f"no identity in {root} has at least {min_images} images")
    names = sorted({p for p, _ in items})
    index = {n: i for i, n in enumerate(names)}

    def load(path: Path) -> Optional[np.ndarray]:
        try:
            img = read_image(path)
        except UnreadableImage:
            return None
        if size and img.shape[:2] != (size, size):
            import cv2

            img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        return img

    with ThreadPoolExecutor(max_workers=workers) as pool:
        images = list(pool.map(load, [f for _, f in items]))
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
