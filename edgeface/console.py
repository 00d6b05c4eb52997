"""Terminal output: rich tables and progress bars on stderr, so stdout stays clean for --json."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

# markup=False: names, paths and messages printed here are user data ("Dr. [/b] Who", "photos [2024]/"), which
# Rich would otherwise parse as markup (and raise on an unmatched tag).  Calls that style text pass
# markup=True and escape() what they interpolate.
console = Console(stderr=True, markup=False)
stdout = Console(markup=False)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence], to_stdout: bool = True) -> None:
    """Print a table (on stdout by default: it is the command's result)."""
    table = Table(title=title)
    for c in columns:
        table.add_column(str(c))
    for r in rows:
        table.add_row(*[str(v) for v in r])
    (stdout if to_stdout else console).print(table)


@contextlib.contextmanager
def progress_bar(description: str, disable: bool = False) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr; yields ``advance(done, total)``.

    The bar appears at the first ``advance`` call, so input errors found before any
    work starts print their one line without a bar above it.
    """
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=console, disable=disable, transient=False,
    )
    task = None

    def advance(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            progress.start()
            task = progress.add_task(escape(description), total=total)  # the column renders it as markup
        progress.update(task, completed=done, total=total)

    try:
        yield advance
    finally:
        if task is not None:
            progress.stop()
