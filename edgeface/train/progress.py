"""A rich progress display for training runs: one bar over the whole run with the running loss/accuracy and an
ETA, plus one persistent line per finished epoch.  No Keras here: it consumes
:class:`edgeface.train.loop.TrainProgress` events (anything with the same attributes)."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from edgeface.console import console

# Short names for the metrics shown on the bar and the epoch lines, in display order.
_SHOWN = (("loss", "loss"), ("accuracy", "acc"), ("val_loss", "val_loss"), ("val_accuracy", "val_acc"),
          ("teacher_cosine", "cos"), ("val_teacher_cosine", "val_cos"))  # the last two: edgeface distill


def format_logs(logs: dict) -> str:
    """``loss 1.234  acc 0.567 ...`` for the metrics present."""
    return "  ".join(f"{short} {logs[k]:.4g}" for k, short in _SHOWN if k in logs)


@contextlib.contextmanager
def training_progress(disable: bool = False) -> Iterator[Callable]:
    """Yield a ``progress(event)`` callback that drives a bar on stderr (nothing at all when ``disable``)."""
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[step]}"),
        TextColumn("{task.fields[metrics]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=console, disable=disable, transient=True,
    )
    task = None

    def update(event) -> None:
        nonlocal task
        if disable:
            return
        total = event.epochs * event.steps
        done = (event.epoch - 1) * event.steps + event.step
        desc = f"epoch {event.epoch}/{event.epochs}"
        if event.phase == "epoch":
            row = event.logs
            console.print(f"{desc}  {format_logs(row)}  {row.get('images_per_second', 0):.1f} img/s  "
                          f"{row.get('seconds', 0):.1f}s")
        if task is None:
            progress.start()
            # Start at the resumed position so the ETA only counts steps run in this session.
            task = progress.add_task(desc, total=total, completed=max(0, done - 1), step="", metrics="")
        progress.update(task, description=desc, completed=done, total=total,
                        step=f"{event.step}/{event.steps}", metrics=format_logs(event.logs))

    try:
        yield update
    finally:
        if task is not None:
            progress.stop()
