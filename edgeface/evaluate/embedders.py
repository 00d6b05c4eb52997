"""One interface over every model format evaluation accepts: aligned crops in, unit embeddings out.

A ``.keras`` file runs through Keras (TensorFlow imported only when such a model is
loaded); a ``.tflite`` file through the runtime's interpreter wrapper, exactly as
on the board.  Both return float32 (N, D) L2-normalised embeddings, so the
evaluation code cannot tell them apart and a float model and its int8 export are
compared on equal terms.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Protocol

import numpy as np

from edgeface.errors import UserError

KERAS_BATCH = 64


class FaceEmbedder(Protocol):
    """What evaluation needs from a model."""

    name: str
    kind: str

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """Aligned RGB uint8 crops (N, 112, 112, 3) -> (N, D) float32, L2-normalised."""
        ...


def _as_batch(crops) -> np.ndarray:
    crops = np.asarray(crops)
    if crops.ndim == 3:
        crops = crops[None]
    if crops.ndim != 4 or crops.shape[-1] != 3:
        raise ValueError(f"expected RGB crops (N, H, W, 3), got shape {crops.shape}")
    return crops


class KerasEmbedder:
    """A ``.keras`` embedding model written by ``edgeface train`` (batched predict)."""

    kind = "keras"

    def __init__(self, path: str | os.PathLike, threads: Optional[int] = None, batch_size: int = KERAS_BATCH) -> None:
        self.path = Path(path)
        self.name = self.path.name
        if threads:
            _set_tf_threads(threads)
        from edgeface.train.models import load_embedding_model

        self.model = load_embedding_model(self.path)
        shape = tuple(self.model.input_shape)
        if len(shape) != 4 or shape[-1] != 3:
            raise UserError(f"{self.path} is not a face-embedding model: input shape {shape}, expected (N, H, W, 3)")
        self.dim = int(self.model.output_shape[-1])
        self.batch_size = batch_size

    def embed(self, crops) -> np.ndarray:
        from edgeface.runtime.interpreter import l2_normalize

        crops = _as_batch(crops)
        out = self.model.predict(crops.astype(np.float32), batch_size=self.batch_size, verbose=0)
        # The model ends in L2 normalisation already; normalising again is a no-op that
        # also guards models saved without that layer.
        return l2_normalize(np.asarray(out, np.float32).reshape(len(crops), -1))


class TFLiteEmbedder:
    """A ``.tflite`` embedding model through :class:`edgeface.runtime.interpreter.Embedder`."""

    kind = "tflite"

    def __init__(self, path: str | os.PathLike, threads: Optional[int] = None, backend: Optional[str] = None) -> None:
        from edgeface.runtime.interpreter import Embedder

        self.path = Path(path)
        self.name = self.path.name
        self.embedder = Embedder(self.path, threads=threads, backend=backend)
        self.dim = self.embedder.dim

    def embed(self, crops) -> np.ndarray:
        return self.embedder.embed(_as_batch(crops))


class FlipEmbedder:
    """The flip test of face verification: each crop's embedding is the mean of it and its mirror image's.

    A face and its mirror are the same person, so averaging the two cancels part of the model's left/right
    noise (InsightFace's verification reports it as "flip").  It costs two model runs per face.
    """

    def __init__(self, inner: FaceEmbedder) -> None:
        self.inner = inner
        self.name = f"{inner.name} (flip test)"
        self.kind = inner.kind
        self.dim = getattr(inner, "dim", None)

    def embed(self, crops) -> np.ndarray:
        crops = _as_batch(crops)
        return flip_average(self.inner.embed(crops), self.inner.embed(crops[:, :, ::-1]))


def flip_average(embeddings: np.ndarray, mirrored: np.ndarray) -> np.ndarray:
    """Unit-length mean of the embeddings of crops and of their mirror images (both (N, D))."""
    from edgeface.runtime.interpreter import l2_normalize

    return l2_normalize(np.asarray(embeddings, np.float32) + np.asarray(mirrored, np.float32))


def _set_tf_threads(threads: int) -> None:
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(min(2, int(threads)))
    except RuntimeError:  # TensorFlow already initialised in this process: keep its setting
        pass


# Model formats evaluation accepts: suffix -> factory.  The CLI's error message reads this table.
EMBEDDERS: dict[str, Callable[..., FaceEmbedder]] = {
    ".keras": lambda path, threads, backend: KerasEmbedder(path, threads=threads),
    ".tflite": lambda path, threads, backend: TFLiteEmbedder(path, threads=threads, backend=backend),
}


def check_model_path(model_path: str | os.PathLike) -> Path:
    """The model path if it exists and has a supported suffix, else :class:`UserError` (cheap: loads nothing)."""
    path = Path(model_path)
    if path.suffix.lower() not in EMBEDDERS:
        raise UserError(f"{path} is not a model edgeface can evaluate: expected a "
                        f"{' or '.join(EMBEDDERS)} file (from `edgeface train` or `edgeface export`)")
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    return path


def make_embedder(model_path: str | os.PathLike, threads: Optional[int] = None,
                  backend: Optional[str] = None, flip: bool = False) -> FaceEmbedder:
    """An embedder for a ``.keras`` or ``.tflite`` file; ``backend`` picks the TFLite interpreter, ``flip``
    averages each face with its mirror image (:class:`FlipEmbedder`)."""
    path = check_model_path(model_path)
    embedder = EMBEDDERS[path.suffix.lower()](path, threads, backend)
    return FlipEmbedder(embedder) if flip else embedder
