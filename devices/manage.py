"""``edgeface rollback`` and ``edgeface status``: move `current` back, and report what a board runs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

from edgeface.devices.inventory import Board
from edgeface.devices.profiles import detect_profile
from edgeface.devices.release import run_args
from edgeface.devices.remote import (
    RELEASES,
    acquire_lock,
    failed_checks,
    health_check,
    read_service_info,
    remote_probe,
    switch_current,
)
from edgeface.devices.service import restart_service, service_state
from edgeface.devices.ssh import SSHConnection, SSHOptions
from edgeface.devices.steps import (
    BoardSession,
    FlashResult,
    StepCallback,
    StepFailed,
    StepRunner,
    connect_step,
    switch_back,
)
from edgeface.errors import UserError

# Events read to find what ran before the current release (one line per flash or rollback).
HISTORY_EVENTS = 1000


def previous_in_history(events: list[dict], current: Optional[str]) -> Optional[str]:
    """The release that was current before ``current`` became current, from the board's event log: the
    ``previous`` of the last successful flash or rollback that made it current.  Release ids sort by the
    flashing machine's clock, which says nothing about what ran before after a rollback."""
    for event in reversed(events):
        if event.get("status") == "ok" and event.get("current") == current and current is not None:
            previous = event.get("previous")
            return previous if isinstance(previous, str) else None  # a damaged line names no release
    return None


@dataclass
class Rollback(BoardSession):
    """One board's rollback so far (filled in as its steps run)."""

    # release.json's settings of the release returned to: plain JSON, maybe written by an older edgeface
    settings: dict = field(default_factory=dict, init=False)


def rollback_board(board: Board, options: SSHOptions, to: Optional[str] = None, check: bool = True,
                   health_timeout: float = 300.0, on_step: Optional[StepCallback] = None,
                   break_lock: bool = False) -> FlashResult:
    """Make the previous healthy release (or ``to``) current again, and restart the service on it
    (``break_lock``: first remove a board lock left by a flash or rollback that no longer runs)."""
    result = FlashResult(board=board.name, address=board.address)
    steps = StepRunner(result, on_step)
    t0 = time.perf_counter()
    session = Rollback(SSHConnection(board, options))
    conn = session.conn
    try:
        steps.run("connect", lambda: connect_step(conn))

        def pick() -> str:
            ident = remote_probe(conn, board.python, "identity", board.remote_dir)
            root = ident["remote_dir"]
            if not remote_probe(conn, board.python, "state", root, "0")["releases"]:
                # before anything is written there (no lock, no event log in a folder that was never a deployment)
                raise UserError(f"nothing to roll back on {board.address}: no release under {root}")
            session.identity, session.root = ident, root
            broken = acquire_lock(conn, root, "rollback", break_lock=break_lock)
            session.locked = True
            state = remote_probe(conn, board.python, "state", root, str(HISTORY_EVENTS))  # now under the lock
            current = state.get("current")
            result.previous = current
            ids = [r["id"] for r in state["releases"]]
            healthy = [r["id"] for r in state["releases"] if r["healthy"]]
            if not ids:
                raise UserError(f"nothing to roll back on {board.address}: no release under {session.root}")
            if to:
                if to not in ids:
                    raise UserError(f"no release {to!r} on {board.address}: it has {', '.join(ids)}")
                if to not in healthy:
                    raise UserError(f"release {to} on {board.address} never passed its health check; "
                                    "refusing to make it current")
                target = to
            else:
                before = previous_in_history(state["events"], current)
                older = [r for r in healthy if current is None or r < current]
                if before in healthy and before != current:
                    target = before
                elif older:  # no history (events.jsonl lost): the newest older healthy release
                    target = older[-1]
                else:
                    raise UserError(f"no release older than {current} on {board.address} to roll back to "
                                    f"(releases: {', '.join(ids)})")
            if target == current:
                raise UserError(f"release {target} is already current on {board.address}")
            session.release_id = target
            session.release_dir = f"{session.root}/{RELEASES}/{target}"
            info = next(r for r in state["releases"] if r["id"] == target)["info"]
            settings = info.get("settings") or {}
            if not isinstance(settings, dict):  # a damaged release.json: its run settings cannot be trusted
                raise UserError(f"release {target} on {board.address} has a damaged release.json (settings is a "
                                f"{type(settings).__name__}); roll back to another release with --to")
            session.settings = settings
            result.version = info.get("edgeface_version")
            broke = f"; removed the lock of {broken}" if broken else ""
            return f"{current or 'none'} -> {target}{broke}"

        steps.run("check", pick)
        if check:
            def health() -> str:
                args = run_args(session.settings, self_test=True)
                report = health_check(conn, session.release_dir, args, health_timeout)
                if not report.get("ok"):
                    raise UserError(f"release {session.release_id} fails its self-test now: {failed_checks(report)}")
                return "self-test passed"

            steps.run("health", health)
        else:
            steps.record("health", "skipped", 0.0, "skipped: --no-check")

        def switch() -> str:
            switch_current(conn, session.root, session.release_id)
            return f"current -> {RELEASES}/{session.release_id}"

        steps.run("switch", switch)
        result.release = session.release_id

        def service() -> str:
            info = read_service_info(conn, session.root)
            if info is None:
                return "skipped: no service was installed by edgeface flash"
            if not session.identity.get("systemd"):
                return "skipped: systemd is not running on this board"
            ok, state = restart_service(conn, info)
            if not ok:
                # Leave the board as it was rather than on a release whose service will not start.
                back = ""
                if result.previous:
                    back = switch_back(conn, session.root, result.previous, info)
                    result.release = result.previous
                raise UserError(f"the {info['name']} service did not stay up after the rollback ({state}){back}")
            return f"{info['name']} restarted: {state}"

        steps.run("service", service)
        result.ok = True
    except StepFailed as exc:
        result.failed_step, result.error = exc.step, exc.message
        if result.release is None:
            result.release = result.previous
    finally:
        result.seconds = time.perf_counter() - t0
        session.end("rollback", result)
    return result


def board_status(board: Board, options: SSHOptions, events: int = 10) -> dict:
    """Identity, releases, `current`, service state and the last events of one board."""
    with SSHConnection(board, options) as conn:
        ident = remote_probe(conn, board.python, "identity", board.remote_dir)
        state = remote_probe(conn, board.python, "state", ident["remote_dir"], str(events))
        info = read_service_info(conn, ident["remote_dir"])
        if info is None:
            service = {"state": "not installed", "detail": "no service installed by edgeface flash"}
        elif not ident.get("systemd"):
            service = {"state": "unknown", "detail": "systemd is not running", **info}
        else:
            service = {"state": service_state(conn, info), **info}
    try:
        profile = board.profile or detect_profile(ident.get("model") if ident.get("model_from_device_tree") else None,
                                                  ident.get("machine", ""), ident.get("usb_ids", [])).profile.name
    except UserError as exc:  # an architecture without a profile: say so, the rest of the status stands
        profile = f"none ({exc})"
    return {"board": board.name, "address": board.address, "identity": ident, "profile": profile,
            "current": state.get("current"), "releases": state["releases"], "incomplete": state["incomplete"],
            "service": service, "events": state["events"], "remote_dir": state["remote_dir"]}
