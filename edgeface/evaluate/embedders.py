"""Face models for evaluation: every format it accepts, behind the one face-model interface.

A ``.keras`` file runs through Keras (TensorFlow imported only when such a model is
loaded); a ``.tflite`` file through the runtime's :class:`~edgeface.runtime.interpreter.Embedder`,
exactly as on the board.  Both are :class:`~edgeface.runtime.facemodel.FaceModel` s: they carry
the model's :class:`~edgeface.runtime.facemodel.FaceModelSpec` (from the bundle's manifest, a
``MODEL.toml`` beside the file, or ``--spec``) and return float32 (N, D) L2-normalised embeddings,
so the evaluation code cannot tell them apart, a float model and its int8 export are compared on
equal terms, and each is fed faces aligned its own way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from edgeface.errors import UserError
from edgeface.runtime.facemodel import FaceModel, FaceModelSpec, spec_for_model_file

KERAS_BATCH = 64

def _as_batch(crops) -> np.ndarray:
    crops = np.asarray(crops)
    if crops.ndim == 3:
        crops = crops[None]
    if crops.ndim != 4 or crops.shape[-1] != 3:
        raise ValueError(f"expected RGB crops (N, H, W, 3), got shape {crops.shape}")
    return crops


class KerasEmbedder:
    """A ``.keras`` embedding model written by ``edgeface train``, ``distill`` or ``import`` (batched predict)."""

    kind = "keras"

    def __init__(self, path: str | os.PathLike, threads: Optional[int] = None, batch_size: int = KERAS_BATCH,
                 spec: Optional[FaceModelSpec] = None) -> None:
        self.path = Path(path)
        self.name = self.path.name
        if threads:
            _set_tf_threads(threads)
        from edgeface.nn.loading import load_embedding_model

        self.model = load_embedding_model(self.path)
        shape = tuple(self.model.input_shape)
        if len(shape) != 4 or shape[-1] != 3:
            raise UserError(f"{self.path} is not a face-embedding model: input shape {shape}, expected (N, H, W, 3)")
        base = spec if spec is not None else spec_for_model_file(self.path)[0]
        spec, _ = base.for_model_input(shape, str(self.path))
        self.dim = int(self.model.output_shape[-1])
        if spec.embedding_dim and spec.embedding_dim != self.dim:
            raise UserError(f"{self.path} gives {self.dim}-d embeddings but its spec says {spec.embedding_dim}")
        import dataclasses

        self.spec = dataclasses.replace(spec, embedding_dim=self.dim)
        self.batch_size = batch_size

    def embed(self, crops) -> np.ndarray:
        from edgeface.runtime.interpreter import l2_normalize

        crops = _as_batch(crops)
        self.spec.check_crops(crops, self.name)
        x = crops.astype(np.float32) if self.spec.raw_pixels else self.spec.to_input(crops)
        out = self.model.predict(x, batch_size=self.batch_size, verbose=0)
        # The model ends in L2 normalisation already; normalising again is a no-op that
        # also guards models saved without that layer.
        return l2_normalize(np.asarray(out, np.float32).reshape(len(crops), -1))


def tflite_embedder(path: str | os.PathLike, threads: Optional[int] = None, backend: Optional[str] = None,
                    spec: Optional[FaceModelSpec] = None):
    """A ``.tflite`` embedding model through the runtime's :class:`~edgeface.runtime.interpreter.Embedder`."""
    from edgeface.runtime.interpreter import Embedder

    return Embedder(path, threads=threads, backend=backend,
                    spec=spec if spec is not None else spec_for_model_file(path)[0])


class FlipEmbedder:
    """The flip test of face verification: each crop's embedding is the mean of it and its mirror image's.

    A face and its mirror are the same person, so averaging the two cancels part of the model's left/right
    noise (InsightFace's verification reports it as "flip").  It costs two model runs per face.
    """

    def __init__(self, inner: FaceModel) -> None:
        self.inner = inner
        self.name = f"{inner.name} (flip test)"
        self.kind = inner.kind
        self.dim = getattr(inner, "dim", None)
        self.spec = inner.spec

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
EMBEDDERS: dict[str, Callable[..., FaceModel]] = {
    ".keras": lambda path, threads, backend, spec: KerasEmbedder(path, threads=threads, spec=spec),
    ".tflite": lambda path, threads, backend, spec: tflite_embedder(path, threads=threads, backend=backend, spec=spec),
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
                  backend: Optional[str] = None, flip: bool = False,
                  spec_file: Optional[str | os.PathLike] = None, spec: Optional[FaceModelSpec] = None) -> FaceModel:
    """A face model for a ``.keras`` or ``.tflite`` file; ``backend`` picks the TFLite interpreter, ``flip``
    averages each face with its mirror image (:class:`FlipEmbedder`); ``spec`` (or a ``spec_file``) overrides
    the model's own spec (:func:`~edgeface.runtime.facemodel.spec_for_model_file`)."""
    path = check_model_path(model_path)
    if spec is None:
        spec = spec_for_model_file(path, spec_file)[0]
    embedder = EMBEDDERS[path.suffix.lower()](path, threads, backend, spec)
    return FlipEmbedder(embedder) if flip else embedder
