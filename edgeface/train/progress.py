"""A rich progress display for training runs: one bar over the whole run with the running loss/accuracy and an
ETA, plus one persistent line per finished epoch.  No Keras here: it consumes
:class:`edgeface.train.loop.TrainProgress` events (anything with the same attributes)."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Optional

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from edgeface.console import console

# Short names for the metrics shown on the bar and the epoch lines, in display order.
_SHOWN = (("loss", "loss"), ("accuracy", "acc"), ("val_loss", "val_loss"), ("val_accuracy", "val_acc"),
          ("teacher_cosine", "cos"), ("val_teacher_cosine", "val_cos"))  # the last two: edgeface distill


def format_logs(logs: dict) -> str:
    """``loss 1.234  acc 0.567 ...`` for the metrics present (and the .bin figures, see :func:`format_bins`)."""
    return "  ".join([*(f"{short} {logs[k]:.4g}" for k, short in _SHOWN if k in logs), format_bins(logs)]).strip()


def format_bins(logs: dict) -> str:
    """``lfw 71.50 ± 4.20 % (threshold 0.312)`` for each .bin set in the logs (``bin:NAME`` keys,
    :mod:`edgeface.train.binval`)."""
    parts = []
    for key, value in logs.items():
        # an accuracy key is the one with a threshold beside it (a set may itself be called x_std)
        if key.startswith("bin:") and f"{key}_threshold" in logs:
            parts.append(f"{key[4:]} {bin_figure(value, logs.get(key + '_std'), logs[key + '_threshold'])}")
    return "  ".join(parts)


def bin_figure(accuracy: float, std: Optional[float], threshold: float) -> str:
    """``71.50 ± 4.20 % (threshold 0.312)``: a .bin set's 10-fold accuracy, its spread and threshold."""
    spread = f" ± {100 * std:.2f}" if std is not None else ""
    return f"{100 * accuracy:.2f}{spread} % (threshold {threshold:.3f})"


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
        if event.phase == "validation":  # --val-bin: one line per validation, the bar carries on
            console.print(f"step {event.logs.get('step', 0):.0f} ({desc}, step {event.step}/{event.steps})  "
                          f"{format_bins(event.logs)}  {event.logs.get('seconds', 0):.1f}s")
            return
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
