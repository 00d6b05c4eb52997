"""The embedding network inside a training checkpoint, as a plain ``.keras`` file `edgeface evaluate` takes.

    python tests/benchmarks/checkpoint_backbone.py RUN/checkpoints/last.keras --out epoch.keras
    edgeface evaluate epoch.keras --pairs pairs.txt --images CROPS --fold 10

A run's ``checkpoints/last.keras`` holds the whole training model (backbone, projection, margin head, optimizer
state) and is overwritten every epoch; ``RUN/model.keras`` is written only at the end, with BatchNorm statistics
recomputed on training faces.  To follow accuracy during a long run (the default model's per-epoch fold-10
curve in README), copy ``last.keras`` after each epoch and extract its backbone with this script: the backbone's
weights, BatchNorm moving averages included, are copied by name onto a fresh network of the run's architecture
(read from ``checkpoints/state.json`` beside the checkpoint, or ``--arch``/``--width``/``--embedding-dim``/
``--input-size``).
The BatchNorm statistics stay the training-time averages, so figures can differ slightly from the final
``model.keras``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import zipfile
from pathlib import Path

import h5py

BACKBONE_GROUP = "layers/functional"  # where Keras 3 stores the nested embedding network of the training model


class BadCheckpoint(ValueError):
    """The file is not a training checkpoint this script can read."""


def run_fingerprint(checkpoint: Path) -> dict:
    """Architecture and embedding size of the run, from the state.json written beside its checkpoint."""
    state = checkpoint.parent / "state.json"
    if not state.is_file():
        return {}
    return json.loads(state.read_text()).get("fingerprint", {})


def extract_backbone(checkpoint: Path, out: Path, arch: str, embedding_dim: int, input_size: int = 112,
                     width: float = 1.0) -> int:
    """Write the checkpoint's backbone as a plain embedding model; returns the number of weight arrays copied."""
    from edgeface.train.loop import save_keras_atomic
    from edgeface.train.models import get_model

    model = get_model(arch, embedding_dim, input_size=input_size, width=width)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            with zipfile.ZipFile(checkpoint) as z:
                z.extract("model.weights.h5", tmp)
        except (zipfile.BadZipFile, KeyError):
            raise BadCheckpoint(f"{checkpoint} is not a Keras 3 .keras archive with weights") from None
        fresh = Path(tmp) / "fresh.weights.h5"
        model.save_weights(fresh)
        copied = 0
        with h5py.File(Path(tmp) / "model.weights.h5", "r") as src, h5py.File(fresh, "r+") as dst:
            if BACKBONE_GROUP not in src:
                raise BadCheckpoint(f"{checkpoint} has no {BACKBONE_GROUP} group: not an edgeface training checkpoint")

            def copy(name: str, obj) -> None:
                nonlocal copied
                if isinstance(obj, h5py.Dataset):
                    if name not in dst or dst[name].shape != obj.shape:
                        raise BadCheckpoint(f"{name} does not fit a {arch} with {embedding_dim}-d embeddings: pass "
                                            "the run's --arch, --width, --embedding-dim and --input-size")
                    dst[name][...] = obj[...]
                    copied += 1

            src[BACKBONE_GROUP].visititems(copy)
        model.load_weights(fresh)
    save_keras_atomic(model, out)
    return copied


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path, help="RUN/checkpoints/last.keras (or a copy of it)")
    ap.add_argument("--out", type=Path, required=True, help="the plain embedding model to write (.keras)")
    ap.add_argument("--arch", default=None, help="default: the run's, from state.json")
    ap.add_argument("--width", type=float, default=None, help="default: the run's, from state.json")
    ap.add_argument("--embedding-dim", type=int, default=None, help="default: the run's, from state.json")
    ap.add_argument("--input-size", type=int, default=None, help="default: the run's, from state.json")
    args = ap.parse_args(argv)
    if not args.checkpoint.is_file():
        print(f"error: {args.checkpoint} not found", file=sys.stderr)
        return 2
    if args.out.suffix != ".keras":
        print(f"error: --out must end in .keras, got {args.out}", file=sys.stderr)
        return 2
    fp = run_fingerprint(args.checkpoint)
    arch = args.arch or fp.get("arch", "mobilefacenet")
    dim = args.embedding_dim or int(fp.get("embedding_dim", 128))
    size = args.input_size or int(fp.get("input_size", 112))
    width = args.width or float(fp.get("width", 1.0))
    try:
        n = extract_backbone(args.checkpoint, args.out, arch, dim, size, width)
    except BadCheckpoint as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {arch} x{width:g}, {dim}-d, {n} weight arrays from {args.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
