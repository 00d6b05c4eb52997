"""Which streamed source a DATA path is, and opening it: RecordIO pack, TFRecord shards (or a folder, streamed).

``edgeface train`` and ``edgeface distill`` ask :func:`pack_format` whether DATA is a pack at all (a folder of
crops is not, unless asked to stream: :mod:`edgeface.data.folder_stream`), and :func:`open_pack` indexes it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

from edgeface.data.streamed import StreamedCrops
from edgeface.errors import UserError


def pack_format(path: str | os.PathLike) -> Optional[str]:
    """``recordio`` for a ``.rec`` file or a folder of them, ``tfrecord`` for TFRecord files, else None.

    A folder holding both is refused: which one to train on would be a guess.
    """
    from edgeface.data.records import record_shards
    from edgeface.data.tfrecords import tfrecord_shards

    rec, tfr = record_shards(path), tfrecord_shards(path)
    if rec and tfr:
        raise UserError(f"{path} holds both .rec files ({rec[0].name}) and TFRecord files ({tfr[0].name}): give "
                        "one of them, or a folder with one kind")
    return "recordio" if rec else "tfrecord" if tfr else None


def say(line: str) -> None:
    """One progress line on stderr (stdout stays clean for --json)."""
    from edgeface.console import console

    console.print(line, soft_wrap=True)  # one line, whatever the terminal's width


def open_pack(path: str | os.PathLike, notify: Optional[Callable[[str], None]] = say) -> StreamedCrops:
    """Index the pack at ``path`` (RecordIO or TFRecord); ``notify`` gets a line for each file scanned."""
    kind = pack_format(path)
    if kind == "recordio":
        from edgeface.data.records import open_records

        return open_records(path)
    if kind == "tfrecord":
        from edgeface.data.tfrecords import open_tfrecords

        return open_tfrecords(path, notify)
    raise UserError(f"{Path(path)} is not a RecordIO (.rec) or TFRecord pack")
