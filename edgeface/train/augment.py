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


def is_augmentation_layer(layer: keras.layers.Layer) -> bool:
    """True for Keras' random image preprocessing layers (used to check a saved model has none)."""
    cls = type(layer)
    return cls.__module__.startswith("keras.") and cls.__name__.startswith("Random")
