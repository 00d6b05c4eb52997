"""What ``edgeface flash`` and ``rollback`` share: named steps, timed and reported as each ends, the session on one
board that the steps fill in, and the way every such session ends (unlock the board, log the event there, close
the connection).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

from edgeface.devices.inventory import Board
from edgeface.devices.remote import append_event, release_lock, switch_current
from edgeface.devices.service import restart_service
from edgeface.devices.ssh import SSHConnection
from edgeface.errors import UserError

# Every step's title, as the CLI prints it when the step ends, in the order a flash runs them (a rollback runs
# connect, check, health, switch and service).
STEP_TITLES = {
    "prepare": "prepare release",
    "connect": "connect",
    "check": "check board",
    "wheels": "download wheels",
    "space": "check free disk",
    "upload": "upload",
    "install": "install runtime",
    "health": "health check",
    "switch": "switch current",
    "service": "service",
    "prune": "prune old releases",
}


@dataclass
class StepResult:
    """One step as it ended."""

    step: str
    status: str  # running (reported when a step starts) | ok | failed | skipped
    seconds: float
    detail: str = ""

    @property
    def title(self) -> str:
        return STEP_TITLES.get(self.step, self.step)


@dataclass
class FlashResult:
    """The outcome of flashing (or rolling back) one board."""

    board: str
    address: str
    ok: bool = False
    release: Optional[str] = None  # the release now current (new one on success)
    previous: Optional[str] = None  # what was current before
    version: Optional[str] = None  # edgeface version of the release
    profile: Optional[str] = None
    seconds: float = 0.0
    failed_step: Optional[str] = None
    error: Optional[str] = None
    steps: list[StepResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 2)
        return d


class StepFailed(Exception):
    """A step failed; ``message`` is the one-line reason."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step
        self.message = message


StepCallback = Callable[[str, StepResult], None]  # (board name, step result)


class StepRunner:
    """Runs named steps, times them and reports each as it ends."""

    def __init__(self, result: FlashResult, on_step: Optional[StepCallback]) -> None:
        self.result = result
        self.on_step = on_step
        self.current: Optional[str] = None  # the step running now (what a Ctrl-C interrupted)

    def record(self, step: str, status: str, seconds: float, detail: str = "") -> None:
        """Add a finished step to the result and report it."""
        res = StepResult(step, status, round(seconds, 2), detail)
        self.result.steps.append(res)
        if self.on_step:
            self.on_step(self.result.board, res)

    def run(self, step: str, fn: Callable[[], str]) -> None:
        """Run ``fn`` as ``step``: its return value is the detail line; an error becomes :class:`StepFailed`."""
        if self.on_step:  # "running": lets a front end show what is in progress (an install takes minutes)
            self.on_step(self.result.board, StepResult(step, "running", 0.0))
        t0 = time.perf_counter()
        self.current = step
        try:
            detail = fn() or ""
        except StepFailed:
            raise
        except UserError as exc:
            self.record(step, "failed", time.perf_counter() - t0, str(exc))
            raise StepFailed(step, str(exc)) from None
        except OSError as exc:
            self.record(step, "failed", time.perf_counter() - t0, str(exc))
            raise StepFailed(step, f"{type(exc).__name__}: {exc}") from None
        except Exception as exc:  # a bug: record the step as failed (not left "running"), the caller reports it
            self.record(step, "failed", time.perf_counter() - t0, f"{type(exc).__name__}: {exc}")
            raise
        status = "skipped" if detail.startswith("skipped") else "ok"
        self.record(step, status, time.perf_counter() - t0, detail)


@dataclass
class BoardSession:
    """A flash or rollback on one board: its connection, and what the steps learned and hold there so far.

    Only the connection is given; the rest is filled in by the steps (``init=False``), and :meth:`end` reads it.
    """

    conn: SSHConnection
    root: Optional[str] = field(default=None, init=False)  # the deployment folder, once checked
    identity: dict = field(default_factory=dict, init=False)  # the board's answer to the identity probe
    locked: bool = field(default=False, init=False)  # this command holds the board's lock
    release_id: Optional[str] = field(default=None, init=False)  # the release made (flash) or returned to
    release_dir: Optional[str] = field(default=None, init=False)  # its folder on the board

    @property
    def board(self) -> Board:
        return self.conn.board

    def end(self, command: str, result: FlashResult, **extra: object) -> None:
        """Unlock the board, log the command in its events.jsonl (once its folder is known; ``extra``: more
        fields of the event), close the connection."""
        if self.locked:
            release_lock(self.conn, self.root)
        if self.root:
            append_event(self.conn, self.root, {
                "event": command, "status": "ok" if result.ok else "failed", "release": self.release_id,
                "current": result.release, "previous": result.previous, "step": result.failed_step,
                "message": result.error, **extra, "seconds": round(result.seconds, 2),
            })
        self.conn.close()


def connect_step(conn: SSHConnection) -> str:
    """Open the master connection (host key checked, key authentication)."""
    conn.open()
    return f"OpenSSH to {conn.board.address}"


def switch_back(conn: SSHConnection, root: str, previous: str, service: Optional[dict]) -> str:
    """Make ``previous`` current again and restart ``service`` (None: no service) on it, after a new release's
    service failed (flash) or the rolled-back-to release's did (rollback); the clause the error ends with."""
    switch_current(conn, root, previous)
    if service is None:
        return f"; back on release {previous}"
    again, _ = restart_service(conn, service)
    return f"; back on release {previous}" + ("" if again else " (its service did not start either)")
