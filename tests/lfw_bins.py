"""A `.bin` verification set made from LFW View 2 pairs (tests/test_binsets.py, tests/test_binval.py).

    python tests/lfw_bins.py --per-fold 600 --out runs/lfw_bin     # all 6,000 pairs: runs/lfw_bin/lfw_png.bin

aligns the pairs' photos with `edgeface data prepare` (BlazeFace short range, edgeface's template; InsightFace's
lfw.bin is aligned to the ArcFace template) and writes them as InsightFace's 10 consecutive folds.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import cv2


def write_lfw_bins(lfw_dir: Path, base: Path, per_fold: int = 4) -> tuple[Path, Path, Path]:
    """``per_fold`` LFW pairs from each of pairs.txt's 10 folds (half same, half different) as a pairs file in
    LFW's format, their photos aligned by `edgeface data prepare`, and the same pairs as a .bin of those crops:
    ``lfw_png.bin`` (PNG bytes, lossless) and ``lfw_jpeg.bin`` (JPEG at quality 95, as InsightFace's files).
    Returns (pairs file, crops folder, base folder)."""
    from edgeface.data.prepare import PrepareConfig, prepare
    from edgeface.evaluate.binsets import write_bin
    from edgeface.evaluate.pairs import read_pairs

    half = per_fold // 2
    lines = (lfw_dir / "pairs.txt").read_text().splitlines()[1:]
    chosen = []
    for fold in range(10):
        chosen += lines[fold * 600: fold * 600 + half] + lines[fold * 600 + 300: fold * 600 + 300 + half]
    pairs_file = base / "pairs.txt"
    pairs_file.write_text(f"10\t{half}\n" + "\n".join(chosen) + "\n")
    pairs = read_pairs(pairs_file)
    raw = base / "raw"
    for key in {k for p in pairs for k in (p.a, p.b)}:
        (raw / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(lfw_dir / "lfw-deepfunneled" / f"{key}.jpg", raw / f"{key}.jpg")
    crops = base / "crops"
    # BlazeFace short range, named: it finds every face of these photos (README: 100 % of LFW)
    summary = prepare(PrepareConfig(src=raw, out=crops, detector="short", workers=2))
    assert summary.aligned == len(list(raw.glob("*/*.jpg")))
    png = [(crops / f"{k}.png").read_bytes() for p in pairs for k in (p.a, p.b)]
    write_bin(base / "lfw_png.bin", png, [p.same for p in pairs])
    jpeg = [cv2.imencode(".jpg", cv2.imread(str(crops / f"{k}.png")), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
            for p in pairs for k in (p.a, p.b)]
    write_bin(base / "lfw_jpeg.bin", jpeg, [p.same for p in pairs])
    return pairs_file, crops, base


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--per-fold N --out DIR [--lfw DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-fold", type=int, default=600, help="pairs from each of the 10 folds (600 = all)")
    parser.add_argument("--out", type=Path, required=True, help="folder for pairs.txt, crops/ and the .bin files")
    parser.add_argument("--lfw", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw",
                        help="LFW folder with pairs.txt and lfw-deepfunneled/")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    _, _, base = write_lfw_bins(args.lfw, args.out, args.per_fold)
    print(base / "lfw_png.bin", base / "lfw_jpeg.bin")
    return 0


if __name__ == "__main__":
    sys.exit(main())
