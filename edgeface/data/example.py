"""``tf.train.Example`` written and read in the protobuf wire format directly (no TensorFlow, no protobuf package).

The messages involved (tensorflow/core/example/example.proto, feature.proto)::

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }      // entries: { string key = 1; Feature value = 2; }
    Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }
    FloatList { repeated float value = 1 [packed = true]; }
    Int64List { repeated int64 value = 1 [packed = true]; }

The wire format: each field is a varint key ``(field number << 3) | wire type`` then, for type 2 (length-delimited:
messages, bytes, packed lists), a varint length and the bytes; type 0 is a varint, 5 a 4-byte and 1 an 8-byte
value.  The reader accepts what any conforming writer emits (packed or unpacked int64 lists, fields in any
order, unknown fields skipped) and refuses the rest with :class:`ExampleError`.

The face-dataset field names are the ones TensorFlow's own image datasets and the TFRecord face packs use
(``image/encoded``, ``image/class/label``, ``image/format``, ``image/height``, ``image/width``).
"""

from __future__ import annotations

import struct
from typing import Mapping, Union

IMAGE_KEY = "image/encoded"
LABEL_KEY = "image/class/label"
FORMAT_KEY = "image/format"
HEIGHT_KEY = "image/height"
WIDTH_KEY = "image/width"

Value = Union[bytes, int, float, list]


class ExampleError(ValueError):
    """The bytes are not a ``tf.train.Example`` (or not one with the fields asked for)."""


# --------------------------------------------------------------------------- writing


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64: two's complement, 10 bytes, as protobuf writes it
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _feature(value: Value) -> bytes:
    values = value if isinstance(value, list) else [value]
    if all(isinstance(v, (bytes, bytearray)) for v in values):
        return _field(1, b"".join(_field(1, bytes(v)) for v in values))
    if all(isinstance(v, int) for v in values):
        return _field(3, _field(1, b"".join(_varint(v) for v in values)))
    if all(isinstance(v, (int, float)) for v in values):
        return _field(2, _field(1, struct.pack(f"<{len(values)}f", *values)))
    raise TypeError(f"a Feature holds bytes, ints or floats, not {value!r:.60}")


def encode_example(features: Mapping[str, Value]) -> bytes:
    """A serialized ``tf.train.Example`` of ``features`` (name -> bytes, int, float, or a list of one kind)."""
    entries = b"".join(_field(1, _field(1, k.encode()) + _field(2, _feature(v))) for k, v in features.items())
    return _field(1, entries)


def face_example(image: bytes, label: int, fmt: str, height: int, width: int) -> bytes:
    """The Example of one face crop: encoded image, class label, and the format and size TensorFlow's readers use."""
    return encode_example({IMAGE_KEY: image, FORMAT_KEY: fmt.encode(), HEIGHT_KEY: int(height),
                           WIDTH_KEY: int(width), LABEL_KEY: int(label)})


# --------------------------------------------------------------------------- reading


def _read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise ExampleError("a varint runs past its message")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes, pos: int, end: int):
    """(field number, wire type, value or (start, end) of a length-delimited payload) of one message."""
    while pos < end:
        key, pos = _read_varint(data, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos, end)
            yield number, wire, value
        elif wire == 2:
            length, pos = _read_varint(data, pos, end)
            if pos + length > end:
                raise ExampleError("a field runs past its message")
            yield number, wire, (pos, pos + length)
            pos += length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if pos + size > end:
                raise ExampleError("a field runs past its message")
            yield number, wire, data[pos:pos + size]
            pos += size
        else:
            raise ExampleError(f"wire type {wire} is not one a tf.train.Example uses")


def _int64s(data: bytes, start: int, end: int) -> list[int]:
    out: list[int] = []
    for number, wire, value in _fields(data, start, end):
        if number != 1:
            continue
        if wire == 0:
            out.append(value)
        elif wire == 2:  # packed
            pos, stop = value
            while pos < stop:
                v, pos = _read_varint(data, pos, stop)
                out.append(v)
        else:
            raise ExampleError("an Int64List value of the wrong wire type")
    return [v - (1 << 64) if v >= 1 << 63 else v for v in out]


def _bytes_values(data: bytes, start: int, end: int) -> list[bytes]:
    out = []
    for number, wire, value in _fields(data, start, end):
        if number == 1:
            if wire != 2:
                raise ExampleError("a BytesList value of the wrong wire type")
            out.append(data[value[0]:value[1]])
    return out


def decode_features(data: bytes, wanted: tuple[str, ...] = ()) -> dict[str, tuple[str, object]]:
    """The features of a serialized Example: name -> (kind, values), kind ``bytes``, ``int64`` or ``float``.

    With ``wanted`` only those names are decoded (the others are skipped, not parsed).  Malformed bytes raise
    :class:`ExampleError`.
    """
    out: dict[str, tuple[str, object]] = {}
    want = {k.encode() for k in wanted}
    seen_features = False
    for number, wire, value in _fields(data, 0, len(data)):
        if number != 1:
            continue
        if wire != 2:
            raise ExampleError("its field 1 is not a Features message")
        seen_features = True
        for n2, w2, entry in _fields(data, *value):
            if n2 != 1 or w2 != 2:
                continue
            key, feat = None, None
            for n3, w3, v3 in _fields(data, *entry):
                if n3 == 1 and w3 == 2:
                    key = data[v3[0]:v3[1]]
                elif n3 == 2 and w3 == 2:
                    feat = v3
            if key is None or (want and key not in want):
                continue
            name = key.decode("utf-8", "replace")
            kind, values = "empty", []
            if feat is not None:
                for n4, w4, v4 in _fields(data, *feat):
                    if w4 != 2:
                        raise ExampleError(f"feature {name!r} is not a list")
                    if n4 == 1:
                        kind, values = "bytes", _bytes_values(data, *v4)
                    elif n4 == 2:
                        kind, values = "float", _floats(data, *v4)
                    elif n4 == 3:
                        kind, values = "int64", _int64s(data, *v4)
            out[name] = (kind, values)
    if not seen_features and data:
        raise ExampleError("it holds no Features message")
    return out


def _floats(data: bytes, start: int, end: int) -> list[float]:
    out: list[float] = []
    for number, wire, value in _fields(data, start, end):
        if number != 1:
            continue
        if wire == 5:
            out.append(struct.unpack("<f", value)[0])
        elif wire == 2:
            raw = data[value[0]:value[1]]
            if len(raw) % 4:
                raise ExampleError("a packed FloatList is not a whole number of floats")
            out += list(struct.unpack(f"<{len(raw) // 4}f", raw))
        else:
            raise ExampleError("a FloatList value of the wrong wire type")
    return out


def face_fields(data: bytes, image_key: str = IMAGE_KEY, label_key: str = LABEL_KEY) -> tuple[bytes, int]:
    """(encoded image, label) of a face Example; :class:`ExampleError` saying which field is missing or wrong."""
    feats = decode_features(data, (image_key, label_key))
    image, label = feats.get(image_key), feats.get(label_key)
    if image is None or image[0] != "bytes" or len(image[1]) != 1:
        raise ExampleError(f"it has no single bytes feature {image_key!r}")
    if label is None or label[0] != "int64" or len(label[1]) != 1:
        raise ExampleError(f"it has no single int64 feature {label_key!r}")
    return image[1][0], int(label[1][0])
