"""``edgeface data prepare``: detect and align every face of an identity-folder dataset.

Work is spread over processes (one detector each); results stream into
``manifest.jsonl`` so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from edgeface.cpus import usable_cpus
from edgeface.data.dataset import MANIFEST, scan_identity_folder
from edgeface.errors import SettingError, UserError

SKIP_LOG = "skipped.log"
CROP_SUFFIX = ".png"  # lossless: training sees exactly what alignment produced
MIN_SIZE, MAX_SIZE = 32, 1024  # below 32 px the 5 landmarks fall within a few pixels of each other


@dataclass
class PrepareConfig:
    src: Path
    out: Path
    detector: str = "auto"  # = edgeface.runtime.detector.DEFAULT_DETECTOR (not imported here: it loads OpenCV)
    size: int = 112
    min_score: Optional[float] = None
    workers: int = 0  # 0: one per CPU core
    backend: Optional[str] = None


@dataclass
class PrepareSummary:
    images: int = 0
    aligned: int = 0
    no_face: int = 0
    unreadable: int = 0
    multiple_faces: int = 0
    already_done: int = 0
    seconds: float = 0.0
    out: str = ""
    skip_log: str = ""

    @property
    def images_per_second(self) -> float:
        processed = self.images - self.already_done
        return processed / self.seconds if self.seconds > 0 else 0.0

    @property
    def aligned_fraction(self) -> float:
        done = self.aligned + self.no_face + self.unreadable
        return self.aligned / done if done else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["images_per_second"] = round(self.images_per_second, 1)
        d["aligned_fraction"] = round(self.aligned_fraction, 5)
        d["seconds"] = round(self.seconds, 1)
        return d


# --- worker side ----------------------------------------------------------------

_worker_detector = None
_worker_cfg: Optional[PrepareConfig] = None


def _init_worker(cfg: PrepareConfig) -> None:
    global _worker_detector, _worker_cfg
    from edgeface.runtime.detector import create_detector

    _worker_cfg = cfg
    _worker_detector = create_detector(cfg.detector, score_threshold=cfg.min_score, threads=1, backend=cfg.backend)


def process_one(task: tuple[str, str, str]) -> dict:
    """Detect, align and write one image.  Returns a manifest record or a skip record."""
    from edgeface.runtime.facemodel import FaceModelSpec
    from edgeface.runtime.faces import detect_and_align
    from edgeface.runtime.images import UnreadableImage, read_image, write_image

    identity, src, crop_path = task
    try:
        image = read_image(src)
    except (UnreadableImage, OSError) as exc:
        return {"status": "unreadable", "source": src, "reason": str(exc)}
    faces = detect_and_align(image, _worker_detector, FaceModelSpec.edgeface(_worker_cfg.size))
    if not faces:
        return {"status": "no_face", "source": src}
    face = faces[0]
    Path(crop_path).parent.mkdir(parents=True, exist_ok=True)
    write_image(crop_path, face.crop)
    det = face.detection.to_dict()
    return {
        "status": "aligned",
        "source": src,
        "crop": crop_path,
        "identity": identity,
        "box": det["box"],
        "keypoints": det["keypoints"],
        "score": det["score"],
        "faces": len(faces),
        "image_size": [int(image.shape[1]), int(image.shape[0])],
    }


# --- driver side ------------------------------------------------------------------


def _done_sources(out: Path) -> set[str]:
    done: set[str] = set()
    manifest = out / MANIFEST
    if manifest.is_file():
        for line in manifest.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by an interrupted run
                continue
            if (out / rec.get("crop", "")).is_file():
                done.add(rec["source"])
    log = out / SKIP_LOG
    if log.is_file():
        for line in log.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                done.add(parts[1])
    return done


def validate_config(cfg: PrepareConfig) -> None:
    """Refuse settings that would write useless crops, and build one detector here.

    Building the detector in the driver matters: a pool worker whose initializer raises is
    replaced by a new one that raises again, so a bad ``--detector`` would hang the run for ever.
    """
    if not MIN_SIZE <= cfg.size <= MAX_SIZE:
        raise SettingError("size", f"{cfg.size} is out of range: crops must be {MIN_SIZE} to {MAX_SIZE} pixels "
                        "(112 matches the default models)")
    if cfg.min_score is not None and not 0.0 <= cfg.min_score <= 1.0:
        raise SettingError("min_score", f"{cfg.min_score} is out of range: detection scores lie between 0 and 1")
    if cfg.workers < 0:
        raise SettingError("workers", f"{cfg.workers} is negative: give a count, or 0 for one per CPU core")
    from edgeface.runtime.detector import create_detector

    create_detector(cfg.detector, score_threshold=cfg.min_score, threads=1, backend=cfg.backend)


def _end_cut_line(path: Path) -> None:
    """Finish a last line an interrupted run cut short, so the next record starts on its own line."""
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            cut = f.read(1) != b"\n"
        if cut:
            with open(path, "a") as f:
                f.write("\n")


def prepare(cfg: PrepareConfig, progress: Optional[Callable[[int, int], None]] = None) -> PrepareSummary:
    """Run data preparation; ``progress(done, total)`` is called as images finish."""
    src, out = Path(cfg.src), Path(cfg.out)
    validate_config(cfg)
    if not src.exists():
        raise UserError(f"source folder not found: {src}")
    items = scan_identity_folder(src)
    if out.resolve() == src.resolve():
        raise SettingError("out", "must differ from the source folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {out}: {exc.strerror}") from None
    if not os.access(out, os.W_OK):
        raise UserError(f"output folder is not writable: {out}")

    summary = PrepareSummary(images=len(items), out=str(out), skip_log=str(out / SKIP_LOG))
    done = _done_sources(out)
    tasks = []
    for identity, path in items:
        rel = path.relative_to(src)
        if str(rel) in done:
            summary.already_done += 1
            continue
        tasks.append((identity, str(path), str(out / rel.with_suffix(CROP_SUFFIX))))

    workers = cfg.workers or usable_cpus()
    start = time.perf_counter()
    _end_cut_line(out / MANIFEST)
    _end_cut_line(out / SKIP_LOG)
    with open(out / MANIFEST, "a") as manifest, open(out / SKIP_LOG, "a") as skip_log:
        for rec in _run_tasks(tasks, cfg, workers):
            rec["source"] = str(Path(rec["source"]).relative_to(src))
            if rec["status"] == "aligned":
                rec["crop"] = str(Path(rec["crop"]).relative_to(out))
                summary.aligned += 1
                summary.multiple_faces += rec["faces"] > 1
                del rec["status"]
                manifest.write(json.dumps(rec) + "\n")
            else:
                setattr(summary, rec["status"], getattr(summary, rec["status"]) + 1)
                skip_log.write(f"{rec['status']}\t{rec['source']}\t{rec.get('reason', '')}\n")
            if progress:
                progress(summary.aligned + summary.no_face + summary.unreadable, len(tasks))
    summary.seconds = time.perf_counter() - start
    return summary


def _run_tasks(tasks: list, cfg: PrepareConfig, workers: int) -> Iterator[dict]:
    if not tasks:
        return
    if workers <= 1 or len(tasks) < 8:
        _init_worker(cfg)
        for t in tasks:
            yield process_one(t)
        return
    # spawn: workers start clean (no inherited interpreter state), each builds its own detector.
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(cfg,)) as pool:
        yield from pool.imap_unordered(process_one, tasks, chunksize=16)
