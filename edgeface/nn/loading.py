"""Reading an edgeface ``.keras`` embedding model (trained, distilled or imported)."""

from __future__ import annotations

import keras

import edgeface.nn.layers  # noqa: F401  (registers the custom layers a saved model refers to)
from edgeface.errors import UserError


def load_embedding_model(path) -> keras.Model:
    """Load an edgeface ``.keras`` embedding model (its custom layers registered by :mod:`edgeface.nn.layers`)."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise UserError(f"model file not found: {p}")
    if p.suffix != ".keras":
        raise UserError(f"{p} is not a Keras model: expected a .keras file written by `edgeface train`")
    try:
        return keras.saving.load_model(p, compile=False)
    except Exception as exc:  # keras raises ValueError, OSError, zipfile errors...
        raise UserError(f"cannot load {p} as a Keras model: {str(exc).splitlines()[0][:200]}") from None
