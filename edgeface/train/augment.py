"""Training-time augmentation as Keras preprocessing layers, each one switchable.

The classic Keras augmentation set (rotation, width/height shift, shear, zoom,
horizontal flip) plus brightness and contrast.  They are backend-agnostic
layers (TensorFlow and JAX) that act only when called with ``training=True``
and they are placed in the *training* model only, in front of the embedding
network: the saved embedding model never contains them, so an exported TFLite
file has no trace of augmentation.

The layers work on RGB pixels in 0..255, the range the embedding models take.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
from keras import layers

from edgeface.errors import UserError

# Points moved outside the image take the nearest edge pixel, as Keras' ImageDataGenerator did;
# black borders would teach the network that a black wedge is a feature.
_FILL = "nearest"
_RANGE = (0, 255)


@dataclass
class AugmentConfig:
    """Augmentation strengths; 0 (or False) switches one off.

    rotation: max degrees either way; shift: max fraction of width/height;
    shear: max fraction of the image to shear over (either direction);
    zoom: max fraction in or out; flip: random left-right flip;
    brightness / contrast: max relative change.
    """

    rotation: float = 10.0
    shift: float = 0.08
    shear: float = 0.1
    zoom: float = 0.1
    flip: bool = True
    brightness: float = 0.2
    contrast: float = 0.2

    @classmethod
    def off(cls) -> AugmentConfig:
        """No augmentation at all."""
        return cls(rotation=0.0, shift=0.0, shear=0.0, zoom=0.0, flip=False, brightness=0.0, contrast=0.0)

    def check(self) -> None:
        """One clear line for an out-of-range strength."""
        for name, value, hi in (("rotation", self.rotation, 180.0), ("shift", self.shift, 1.0),
                                ("shear", self.shear, 1.0), ("zoom", self.zoom, 1.0),
                                ("brightness", self.brightness, 1.0), ("contrast", self.contrast, 1.0)):
            if not 0.0 <= float(value) <= hi:
                raise UserError(f"augmentation {name} must be between 0 and {hi:g}, got {value}")

    def enabled(self) -> list[str]:
        """Names of the augmentations that are on."""
        return [k for k, v in asdict(self).items() if v]


def augmentation_layers(cfg: AugmentConfig, seed: int | None = None) -> list[keras.layers.Layer]:
    """The preprocessing layers for ``cfg``, in the order they are applied (geometry first, then colour)."""
    cfg.check()

    def s(i: int):
        # Distinct seeds per layer; the same seed would correlate e.g. rotation with zoom.
        return None if seed is None else seed + i

    # float32 whatever the global policy: the image warps need no speed-up and TF has no bf16 kernel for some.
    kw = {"dtype": "float32"}
    out: list[keras.layers.Layer] = []
    if cfg.flip:
        out.append(layers.RandomFlip("horizontal", seed=s(1), name="aug_flip", **kw))
    if cfg.rotation:
        out.append(layers.RandomRotation(cfg.rotation / 360.0, fill_mode=_FILL, seed=s(2), name="aug_rotation", **kw))
    if cfg.shift:
        out.append(layers.RandomTranslation(cfg.shift, cfg.shift, fill_mode=_FILL, seed=s(3), name="aug_shift", **kw))
    if cfg.shear:
        out.append(layers.RandomShear(cfg.shear, cfg.shear, fill_mode=_FILL, seed=s(4), name="aug_shear", **kw))
    if cfg.zoom:
        out.append(layers.RandomZoom((-cfg.zoom, cfg.zoom), fill_mode=_FILL, seed=s(5), name="aug_zoom", **kw))
    if cfg.brightness:
        out.append(layers.RandomBrightness(cfg.brightness, value_range=_RANGE, seed=s(6), name="aug_brightness", **kw))
    if cfg.contrast:
        out.append(layers.RandomContrast(cfg.contrast, value_range=_RANGE, seed=s(7), name="aug_contrast", **kw))
    return out


def apply_augmentation(x, cfg: AugmentConfig, seed: int | None = None):
    """Chain the augmentation layers onto a symbolic image tensor (identity when all are off)."""
    for layer in augmentation_layers(cfg, seed):
        x = layer(x)
    return x


# Added to a seed's first word per replica (mod 2**31 - 2, as Keras' TensorFlow backend reduces seeds): far from
# the small offsets between the layers' own seeds (seed + 1 ... seed + 7), so no replica replays another layer.
_REPLICA_STRIDE = 0x9E3779B


class _PerReplicaSeedGenerator(keras.random.SeedGenerator):
    """A SeedGenerator whose draws differ per tf.distribute replica: the replica's index is folded into the seed.

    Set as the class of a layer's existing generator (:func:`per_replica_random`), so its state variable, and with
    it checkpoints and the draws of a single device, stay what they were."""

    def next(self, ordered=True):
        seed = super().next(ordered)
        if keras.backend.backend() != "tensorflow":
            return seed  # JAX's sharded step draws over the whole global batch already
        import tensorflow as tf

        ctx = tf.distribute.get_replica_context()  # None in a cross-replica context; the default one has 1 replica
        if ctx is None or ctx.num_replicas_in_sync == 1:
            return seed
        replica = tf.cast(ctx.replica_id_in_sync_group, seed.dtype)
        return seed + tf.stack([replica * _REPLICA_STRIDE, tf.zeros_like(replica)])


def per_replica_random(model: keras.Model) -> int:
    """Make the random layers of ``model`` (augmentation, Dropout; nested models included) draw per replica.

    Under tf.distribute every replica reads the same generator state, so each replica's slice of the batch got the
    first one's flips, rotations and Dropout masks.  With one replica (or JAX, or no strategy) nothing changes, draw
    for draw.  Only the generators Keras' layers keep as ``generator`` (image layers) or ``seed_generator``
    (Dropout, noise layers) are changed: a layer whose draws must agree across replicas (partial FC's class sampler)
    names its own otherwise.  Returns how many generators were changed."""
    changed = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            changed += per_replica_random(layer)
            continue
        for name in ("generator", "seed_generator"):
            gen = getattr(layer, name, None)
            if type(gen) is keras.random.SeedGenerator:
                # The class, not the object, is replaced: Keras built the generator in the layer's constructor and
                # tracks its state variable there.
                gen.__class__ = _PerReplicaSeedGenerator
                changed += 1
    return changed


def is_augmentation_layer(layer: keras.layers.Layer) -> bool:
    """True for Keras' random image preprocessing layers (used to check a saved model has none)."""
    cls = type(layer)
    return cls.__module__.startswith("keras.") and cls.__name__.startswith("Random")
