"""A pack (RecordIO or TFRecord) as distillation data: teacher embeddings of its records, the crops left on disk.

A pack's records are crops already aligned (edgeface's template, which is ArcFace's: ``edgeface data prepare``'s
crops and InsightFace's packs alike), so there is nothing to detect: a teacher aligned the same way gets each crop
resized to its input size (:meth:`~edgeface.distill.teachers.Teacher.prepare_crop`); a teacher that aligns from
the photograph its own way (dlib, a ``box`` or other template) is refused with one line before anything runs.

Each record's embedding is cached under the SHA-256 of its stored image bytes (the photo path's cache is keyed
by the file's bytes the same way), with a teacher identity that says the input was a pack crop, so a second run
over the pack -- or over another pack holding the same records -- reads them back instead of running the teacher.
Only the embeddings stay in memory (N x D float32); the crops are read again, streamed, for training.
"""

from __future__ import annotations

import hashlib
import time
from typing import Callable, Optional

import numpy as np

from edgeface.data.streamed import StreamedCrops
from edgeface.distill.cache import EmbeddingCache
from edgeface.distill.data import DistillData
from edgeface.errors import UserError

CHUNK = 64  # records per step: one teacher batch, one cache transaction


def pack_identity(teacher, crops: StreamedCrops) -> dict:
    """What a cached vector of a pack record depends on: the teacher, and that its input was an aligned crop."""
    return {**teacher.identity(), "input_from": "aligned crop (edgeface/ArcFace template), resized"}


def collect_pack(crops: StreamedCrops, teacher, cache: Optional[EmbeddingCache],
                 progress: Optional[Callable[[int, int], None]] = None) -> DistillData:
    """The teacher's embedding of every record of ``crops`` (through ``cache``), labels from the pack.

    ``crops.images`` (decoded on demand) stands in for the in-memory crops of the photo path.
    """
    import cv2

    t0 = time.perf_counter()
    n = len(crops)
    targets = np.zeros((n, teacher.dim), np.float32)
    d = DistillData(crops.images, targets, crops.labels, list(crops.class_names), [], [], images=n)
    for start in range(0, n, CHUNK):
        pos = np.arange(start, min(n, start + CHUNK))
        data = crops.encoded(pos)
        keys = [hashlib.sha256(b).hexdigest() for b in data]
        stored = cache.get_many(keys) if cache is not None else {}
        d.cache_hits += sum(k in stored for k in keys)
        new = [(i, k, b) for i, (k, b) in enumerate(zip(keys, data)) if k not in stored]
        fresh: dict[str, np.ndarray] = {}
        if new:
            t1 = time.perf_counter()
            inputs = []
            for i, _, b in new:
                image = cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)
                if image is None:
                    raise UserError(f"{crops.where(int(pos[i]))}: the image is not decodable (a damaged record)")
                inputs.append(teacher.prepare_crop(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)))
            vectors = np.asarray(teacher.run(inputs), np.float32)
            finite = np.all(np.isfinite(vectors), axis=1)
            if not finite.all():
                where = crops.where(int(pos[new[int(np.argmin(finite))][0]]))
                raise UserError(f"the teacher gave a non-finite embedding (NaN or inf) for {where}: check its input "
                                "options (normalisation, colour order, input size)")
            fresh = {k: v for (_, k, _), v in zip(new, vectors)}
            if cache is not None:
                cache.put_many(fresh)
            d.teacher_seconds += time.perf_counter() - t1
            d.teacher_computed += len(new)
        for i, k in enumerate(keys):
            targets[pos[i]] = fresh[k] if k in fresh else stored[k]
        if progress:
            progress(int(pos[-1]) + 1, n)
    d.seconds = time.perf_counter() - t0
    return d
