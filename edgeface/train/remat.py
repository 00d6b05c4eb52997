"""Recomputed activations ("gradient checkpointing"): less memory per training image, for more compute.

A training step keeps every intermediate activation of the forward pass for the backward one: MobileFaceNet at
112x112 keeps ~32 MB an image (measured: RSS grows 32 MB per image of batch), 2 GB at batch 64, most of a CPU
run's memory and what caps the batch on a GPU.  :class:`Recomputed` runs an embedding network as a chain of
segments cut where a single tensor joins them (block boundaries); a training step keeps only the tensors between
segments, and the backward pass runs each segment's forward again to get its activations back (Chen et al. 2016,
"Training deep nets with sublinear memory cost": about sqrt(layers) segments of equal activation size).  The
gradients are the same: only where the memory goes, and the time, change.

BatchNorm updates its moving statistics once per step, as without recomputation: the second forward pass runs
with momentum 1 (the statistics assign themselves).  A segment with a random layer (Dropout) keeps its
activations: run again it would draw another mask.  TensorFlow backend only (``tf.recompute_grad``), one device
(the trainer refuses several replicas); the saved network is the plain one (the segments share its layers and
weights).
"""

from __future__ import annotations

import math

import keras
import numpy as np

from edgeface.train.batchnorm import batchnorm_layers


def articulation_layers(model: keras.Model) -> list[str]:
    """Names of the layers, in order, whose output alone carries everything later layers need (a cut of the graph:
    every path from the input to the output goes through it).  The last layer is not listed."""
    layers = list(model.layers)  # a functional model's layers are in topological order, its inputs first
    order = {id(la): i for i, la in enumerate(layers)}
    # Keras has no public view of a functional graph's edges: each layer's inbound nodes name the tensors it read.
    last_use = [i for i in range(len(layers))]  # position of the last layer reading each layer's output
    for i, la in enumerate(layers):
        for node in la._inbound_nodes:
            for t in node.input_tensors:
                src = order.get(id(t._keras_history.operation))
                if src is not None:
                    last_use[src] = max(last_use[src], i)
    cuts, reach = [], -1  # reach: the last reader of any output made before layer i
    for i, la in enumerate(layers[:-1]):
        if reach <= i and not isinstance(la, keras.layers.InputLayer):
            cuts.append(la.name)
        reach = max(reach, last_use[i])
    return cuts


def segment_cuts(model: keras.Model, segments: int = 0) -> list[str]:
    """The layer names after which to cut ``model`` into about ``segments`` pieces of equal activation size (0:
    sqrt of the number of layers); each a cut of :func:`articulation_layers`."""
    candidates = articulation_layers(model)
    if not candidates:
        return []
    sizes = {la.name: int(np.prod(la.output.shape[1:])) for la in model.layers}
    names = [la.name for la in model.layers if not isinstance(la, keras.layers.InputLayer)]
    k = segments or max(2, round(math.sqrt(len(names))))
    total = sum(sizes[n] for n in names)
    cuts, acc, goal = [], 0, total / k
    chosen = set(candidates)
    for name in names:
        acc += sizes[name]
        if name in chosen and acc >= goal * (len(cuts) + 1) and len(cuts) < k - 1:
            cuts.append(name)
    return cuts


@keras.saving.register_keras_serializable(package="edgeface")
class Recomputed(keras.layers.Layer):
    """``model`` (a functional network of one input and one output) whose activations are recomputed in the
    backward pass of training, segment by segment; same outputs and gradients, and the same weights (shared)."""

    def __init__(self, model: keras.Model, segments: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.model = model
        self.segments = int(segments)
        cuts = segment_cuts(model, self.segments)
        bounds = [model.inputs[0]] + [model.get_layer(n).output for n in cuts] + [model.outputs[0]]
        self._pieces = [keras.Model(a, b, name=f"{model.name}_segment{i}")
                        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]

    @property
    def num_pieces(self) -> int:
        """How many segments the network runs as."""
        return len(self._pieces)

    def build(self, input_shape):
        self.built = True

    def compute_output_shape(self, input_shape):
        return self.model.compute_output_shape(input_shape)

    def call(self, x, training=None):
        if not training or keras.backend.backend() != "tensorflow":
            return self.model(x, training=training)
        for piece in self._pieces:
            # A random layer (Dropout) would draw another mask when run again: its piece keeps its activations.
            x = piece(x, training=True) if _draws_random(piece) else _recompute(piece)(x)
        return x

    def get_config(self):
        return {**super().get_config(), "model": keras.saving.serialize_keras_object(self.model),
                "segments": self.segments}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(config["model"])
        return cls(**config)


def _draws_random(piece: keras.Model) -> bool:
    # keras.random.SeedGenerator keeps its state in a variable of this name (Dropout, noise, augmentation layers)
    return any(v.path.endswith("seed_generator_state") for v in piece.variables)


def _recompute(piece: keras.Model):
    """``piece(x, training=True)`` whose backward pass runs the forward again instead of keeping its activations."""
    import tensorflow as tf

    bns = batchnorm_layers(piece)
    calls = [0]

    def forward(x):
        # tf.recompute_grad calls this once for the forward pass and once more when the gradient is built, in that
        # order, in every trace: the second call must not move the moving statistics again (momentum 1 assigns
        # them to themselves).
        calls[0] += 1
        if calls[0] % 2:
            return piece(x, training=True)
        saved = [bn.momentum for bn in bns]
        try:
            for bn in bns:
                bn.momentum = 1.0
            return piece(x, training=True)
        finally:
            for bn, m in zip(bns, saved):
                bn.momentum = m

    return tf.recompute_grad(forward)
