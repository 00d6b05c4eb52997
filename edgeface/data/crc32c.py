"""CRC-32C (Castagnoli), the checksum TFRecord frames carry, in numpy: no TensorFlow, no C extension.

A byte-at-a-time loop in Python runs at about 5 MB/s, too slow to check every record a training run reads.  CRC
is linear over GF(2), which lets numpy do the work in bulk:

* with the register starting at 0 ("raw" CRC), leading zero bytes change nothing, so messages of different
  lengths are padded at the front to one length, a multiple of 64, and processed together (and a zero block is
  put in front of an odd number of blocks before they are paired);
* the raw CRC of a 64-byte block is the XOR of one table lookup per byte (``_BYTE[d][x]``: the CRC of byte ``x``
  followed by ``d`` zero bytes), all blocks at once;
* adjacent blocks are combined pairwise, level by level: ``crc(A B) = shift_len(B)(crc(A)) ^ crc(B)``, where
  shifting a CRC by ``s`` zero bytes is again four table lookups (``_SHIFT[level]``);
* the standard start value 0xFFFFFFFF is the same as XOR-ing it into the first four message bytes (a property of
  the reflected CRC), and the result is inverted at the end.

Checked against the standard check value (``crc32c(b"123456789") == 0xE3069283``) and against TensorFlow's
TFRecord reader and writer in the tests.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

_POLY = 0x82F63B78  # Castagnoli, reflected
_BLOCK = 64
_LEVELS = 40  # blocks of 64 * 2**40 bytes: far beyond any record


def _byte_table() -> np.ndarray:
    """The classic 256-entry table of the reflected algorithm."""
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(_POLY), table >> 1).astype(np.uint32)
    return table


_T0 = _byte_table()


def _zero_byte(crc: np.ndarray) -> np.ndarray:
    """The register after one more zero byte."""
    return _T0[crc & 0xFF] ^ (crc >> 8)


def _tables() -> tuple[np.ndarray, np.ndarray]:
    # _BYTE[d][x]: raw CRC of byte x then d zero bytes (d = 0..63), indexed by position-from-block-end.
    byte = np.empty((_BLOCK, 256), np.uint32)
    byte[0] = _T0
    for d in range(1, _BLOCK):
        byte[d] = _zero_byte(byte[d - 1])
    # _SHIFT[l][i][x]: the register (x << 8i) shifted by 64 * 2**l zero bytes.
    shift = np.empty((_LEVELS, 4, 256), np.uint32)
    values = (np.arange(256, dtype=np.uint32)[None, :] << (8 * np.arange(4, dtype=np.uint32))[:, None])
    s = values.copy()
    for _ in range(_BLOCK):
        s = _zero_byte(s)
    shift[0] = s
    for level in range(1, _LEVELS):  # shifting by 2n zero bytes is shifting by n twice
        shift[level] = _apply_shift(shift[level - 1], shift[level - 1])
    return byte, shift


def _apply_shift(table: np.ndarray, crc: np.ndarray) -> np.ndarray:
    """``crc`` (any shape) shifted by the zero bytes ``table`` (a (4, 256) shift table) stands for."""
    return (table[0][crc & 0xFF] ^ table[1][(crc >> 8) & 0xFF] ^ table[2][(crc >> 16) & 0xFF]
            ^ table[3][crc >> 24])


_BYTE, _SHIFT = _tables()
_POS = np.arange(_BLOCK - 1, -1, -1)  # position of each block byte, counted from the block's end


def crc32c_many(messages: Sequence[bytes]) -> np.ndarray:
    """The CRC-32C of each message, as a uint32 array (one vectorised pass over all of them)."""
    n = len(messages)
    out = np.zeros(n, np.uint32)
    if n == 0:
        return out
    lengths = np.array([len(m) for m in messages], np.int64)
    longest = max(int(lengths.max()), 4)
    blocks = -(-longest // _BLOCK)
    width = blocks * _BLOCK
    buf = np.zeros((n, width), np.uint8)
    for i, m in enumerate(messages):
        if len(m):
            buf[i, width - len(m):] = np.frombuffer(m, np.uint8)
    # the start value 0xFFFFFFFF, as XOR on the first four message bytes (shorter messages: see _short)
    rows = np.flatnonzero(lengths >= 4)
    starts = width - lengths[rows]
    for k in range(4):
        buf[rows, starts + k] ^= 0xFF
    crc = np.bitwise_xor.reduce(_BYTE[_POS, buf.reshape(n, blocks, _BLOCK)], axis=2)  # (n, blocks)
    level = 0
    while crc.shape[1] > 1:
        if crc.shape[1] % 2:  # an odd count: a zero block in front changes nothing (leading zeros)
            crc = np.concatenate([np.zeros((n, 1), np.uint32), crc], axis=1)
        crc = _apply_shift(_SHIFT[level], crc[:, 0::2]) ^ crc[:, 1::2]
        level += 1
    out = crc[:, 0] ^ np.uint32(0xFFFFFFFF)
    for i in np.flatnonzero(lengths < 4):
        out[i] = _short(messages[i])
    return out


def _short(data: bytes) -> int:
    """Byte at a time, for messages of 0-3 bytes."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = int(_T0[(crc ^ b) & 0xFF]) ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def crc32c(data: bytes) -> int:
    """The CRC-32C of ``data``."""
    return int(crc32c_many([data])[0])


def masked(crc: np.ndarray | int) -> np.ndarray | int:
    """TFRecord's masked CRC: rotated right by 15 bits plus 0xa282ead8 (so a CRC of CRCs is not trivially 0)."""
    c = np.atleast_1d(np.asarray(crc, np.uint32))  # arrays wrap silently; numpy scalars warn on overflow
    m = (((c >> np.uint32(15)) | (c << np.uint32(17))) + np.uint32(0xA282EAD8)).astype(np.uint32)
    return int(m[0]) if np.ndim(crc) == 0 else m


def masked_crc32c_many(messages: Sequence[bytes]) -> np.ndarray:
    """The masked CRC-32C of each message (uint32 array)."""
    return masked(crc32c_many(messages))
