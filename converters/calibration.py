"""Face crops for int8 calibration and for verifying exported files.

``--calib DIR`` is an identity-folder dataset (``DIR/<person>/<image>``, or a flat
folder of images): either aligned crops (``edgeface data prepare`` output, or any
folder whose images are already the model's input size) or raw photos, which are
detected and aligned here exactly as the runtime does.  Images are picked round
robin over identities so a few people with many photos do not dominate the
quantization ranges, and the verification crops are held out from calibration.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from edgeface.errors import UserError
from edgeface.runtime.facemodel import FaceModelSpec

PREPARED_MANIFEST = "manifest.jsonl"  # written by `edgeface data prepare`


@dataclass
class FaceCrops:
    """Aligned RGB uint8 crops (N, S, S, 3) with the identity and source file of each."""

    images: np.ndarray
    identities: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: list[int]) -> FaceCrops:
        return FaceCrops(self.images[idx], [self.identities[i] for i in idx], [self.paths[i] for i in idx])


@dataclass
class CalibrationSet:
    """What export needs: calibration crops, held-out verification crops, and how they were obtained."""

    calib: FaceCrops
    verify: FaceCrops
    source: str  # "crops" or "detected"
    scanned: int  # images read
    no_face: int  # images without a detectable face
    overlap: bool  # True when the folder was too small to hold out verification crops
    excluded_people: int = 0  # identities of --calib-exclude-people found in the folder and left out

    def summary(self) -> dict:
        return {"calib_images": len(self.calib), "verify_images": len(self.verify), "source": self.source,
                "scanned": self.scanned, "no_face": self.no_face, "overlap": self.overlap,
                "excluded_people": self.excluded_people,
                "identities": len(set(self.calib.identities) | set(self.verify.identities))}


def list_images(root: Path) -> list[tuple[str, Path]]:
    """(identity, path) for ``root/<person>/<image>``, or ("", path) for a flat folder of images."""
    from edgeface.data.dataset import scan_identity_folder
    from edgeface.runtime.images import is_image_file

    if not root.is_dir():
        raise UserError(f"--calib folder not found: {root}")
    try:
        return scan_identity_folder(root)
    except UserError:
        flat = sorted(p for p in root.iterdir() if p.is_file() and is_image_file(p))
        if not flat:
            raise UserError(f"--calib folder {root} has no images: expected {root}/<person>/<image> "
                            "(raw photos or aligned crops)") from None
        return [("", p) for p in flat]


def spread_over_identities(items: list[tuple[str, Path]], seed: int = 0) -> list[tuple[str, Path]]:
    """All items reordered round robin over identities (each identity's images shuffled with ``seed``)."""
    rng = random.Random(seed)
    groups: dict[str, list[Path]] = {}
    for ident, path in items:
        groups.setdefault(ident, []).append(path)
    names = sorted(groups)
    rng.shuffle(names)
    for name in names:
        rng.shuffle(groups[name])
    out = []
    depth = max(len(v) for v in groups.values())
    for i in range(depth):
        for name in names:
            if i < len(groups[name]):
                out.append((name, groups[name][i]))
    return out


def looks_like_crops(root: Path, sample: list[Path], size: int) -> bool:
    """Prepared crops: a ``data prepare`` manifest, or every sampled image already size x size."""
    from edgeface.runtime.images import UnreadableImage, read_image

    if (root / PREPARED_MANIFEST).is_file():
        return True
    shapes = set()
    for p in sample[:8]:
        try:
            shapes.add(read_image(p).shape[:2])
        except (UnreadableImage, OSError):
            continue
    return shapes == {(size, size)}


def load_calibration(root: str | os.PathLike, calib_count: int = 200, verify_count: int = 100,
                     spec: Optional[FaceModelSpec] = None, detector: str = "short", seed: int = 0,
                     progress: Optional[Callable[[int, int], None]] = None,
                     exclude: Optional[set[str]] = None) -> CalibrationSet:
    """Pick ``calib_count`` + ``verify_count`` faces spread over identities, detect/align if needed.

    Faces are aligned as the model's ``spec`` says (None: edgeface's 112x112).  Prepared crops carry
    edgeface's alignment: a model aligned another way (an imported dlib model) needs raw photographs.
    ``exclude`` names identities never to pick, e.g. the test people of an evaluation fold, so
    that no face of the test set shapes the int8 ranges.
    """
    import cv2

    spec = spec or FaceModelSpec.edgeface()
    size = spec.size[0]

    from edgeface.runtime.images import UnreadableImage, read_image

    root = Path(root)
    if calib_count < 1:
        raise UserError(f"--calib-count must be at least 1 (got {calib_count})")
    if verify_count < 1:
        raise UserError(f"--verify-count must be at least 1 (got {verify_count})")
    listed = list_images(root)
    excluded = 0
    if exclude:
        present = {ident for ident, _ in listed}
        excluded = len(present & set(exclude))
        # The option promises that these people shape no int8 range.  If none of them is a folder here the
        # promise is empty: a flat folder has no identities to leave out, and names that match nothing
        # mean the wrong people file (or fold) more often than a folder that never held them.
        if present == {""}:
            raise UserError(f"--calib-exclude-people needs identity folders: {root} is a flat folder of images, "
                            "so nobody can be left out (use DIR/<person>/<image>, or drop the option)")
        if not excluded:
            raise UserError(f"--calib-exclude-people: none of its {len(exclude)} names is a person folder in "
                            f"{root}; check the people file and fold (or drop the option if none of them "
                            "can be there)")
        listed = [(ident, p) for ident, p in listed if ident not in exclude]
        if not listed:
            raise UserError(f"--calib-exclude-people leaves no images in {root}: every identity there is excluded")
    ordered = spread_over_identities(listed, seed)
    crops_given = looks_like_crops(root, [p for _, p in ordered], size)
    if (root / PREPARED_MANIFEST).is_file() and not spec.same_alignment(FaceModelSpec.edgeface()):
        raise UserError(f"--calib {root} holds crops of `edgeface data prepare` (edgeface's template); the model takes "
                        f"{size}x{size} faces aligned its own way: give photographs (DIR/<person>/<image>, e.g. "
                        "lfw-deepfunneled) so they are aligned for it")
    det = None
    if not crops_given:
        from edgeface.runtime.detector import create_detector

        det = create_detector(detector, threads=1)
    wanted = calib_count + verify_count
    images, identities, paths = [], [], []
    scanned = no_face = 0
    for ident, path in ordered:
        if len(images) >= wanted:
            break
        scanned += 1
        try:
            img = read_image(path)
        except (UnreadableImage, OSError):
            no_face += 1
            continue
        if det is None:
            crop = img if img.shape[:2] == (size, size) else cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        else:
            from edgeface.runtime.faces import detect_and_align

            faces = detect_and_align(img, det, spec)
            if not faces:
                no_face += 1
                continue
            crop = faces[0].crop
        images.append(crop)
        identities.append(ident)
        paths.append(path)
        if progress:
            progress(len(images), min(wanted, len(ordered)))
    if not images:
        raise UserError(f"no faces found in {scanned} images of --calib {root}: give photos with a visible face "
                        "or aligned crops from `edgeface data prepare`")
    crops = FaceCrops(np.stack(images), identities, paths)
    n = len(crops)
    # Round-robin order: the first calib_count are spread over identities, the rest too.
    if n >= 2:
        if n >= wanted:
            n_calib, n_verify = calib_count, verify_count
        else:  # a small folder: keep a third (at least one face) for verification
            n_verify = min(verify_count, max(1, n // 3))
            n_calib = min(calib_count, n - n_verify)
        calib = crops.subset(list(range(n_calib)))
        verify = crops.subset(list(range(n_calib, n_calib + n_verify)))
        overlap = False
    else:
        calib = verify = crops
        overlap = True
    return CalibrationSet(calib=calib, verify=verify, source="crops" if crops_given else "detected",
                          scanned=scanned, no_face=no_face, overlap=overlap,
                          excluded_people=excluded)
