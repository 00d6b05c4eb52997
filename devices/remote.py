"""The deployment folder on a board, and the remote operations on it (over an :class:`SSHConnection`).

Layout under ``--remote-dir`` (default ``~/.edgeface``)::

    releases/<id>/          one folder per release, never modified once healthy
        wheels/             the edgeface wheel built from this checkout (+ its dependencies with --offline)
        bundle/             manifest.json, the TFLite files, the detector
        gallery.npz         enrolled faces (when --gallery was given)
        edgeface.toml       the settings of this release ([run]: source, threads, backend, ...; [board]: profile)
        run.sh              what the service runs: `venv/bin/edgeface run --config edgeface.toml`
        release.json        id, versions, checksums, who flashed it
        SHA256SUMS          checked on the board after the upload
        venv/               the runtime, installed on the board
        HEALTHY             the self-test's JSON; written only when it passed
    current -> releases/<id>    switched atomically (ln -s to a temporary name, then mv -T)
    .incoming/<id>/         an upload in progress; renamed into releases/ once complete and verified
    events.jsonl            one JSON line per flash / rollback, with the step that failed
    service.json            which systemd unit runs `current`
    .lock/                  held by the flash or rollback working here (mkdir is atomic); `owner` says whose
"""

from __future__ import annotations

import datetime as _dt
import getpass
import json
import shlex
import socket
import tarfile
from pathlib import Path
from typing import Callable, Optional, Sequence

from edgeface.devices import probe as probe_mod
from edgeface.devices.ssh import CountingWriter, SSHConnection
from edgeface.errors import UserError

RELEASES = probe_mod.RELEASES
CURRENT = probe_mod.CURRENT
INCOMING = ".incoming"
EVENTS = probe_mod.EVENTS
HEALTHY = probe_mod.HEALTHY_MARK
SERVICE_INFO = "service.json"
CONFIG_NAME = "edgeface.toml"
RUN_SCRIPT = "run.sh"
GALLERY_NAME = "gallery.npz"
LOCK = ".lock"
# Characters the board's own tools cannot take in a path: pip writes the venv's scripts with the path inside a
# double-quoted sh line (so `$(...)` would run), reads "; " as an environment marker, and systemd splits
# ExecStart on whitespace unless quoted (edgeface quotes it) and expands '%'.
UNSAFE_PATH_CHARS = set('"$`\\;%\n\t')


def q(value: object) -> str:
    """Shell-quote one word for the remote shell."""
    return shlex.quote(str(value))


def human(n: float) -> str:
    """Bytes as ``12.3 MB``."""
    return f"{n / 1e6:.1f} MB"


def utc_now() -> str:
    """ISO 8601 time in UTC, to the second (event and release times)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def who_am_i() -> str:
    """``user@host`` of the machine flashing (recorded with each release and event)."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in some containers
        user = "?"
    return f"{user}@{socket.gethostname()}"


def new_release_id(content_id: str, existing: set[str], now: Optional[_dt.datetime] = None) -> str:
    """``YYYYMMDD-HHMMSS-<content>``: sorts by time, says what is inside, unique on the board."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    base = f"{now:%Y%m%d-%H%M%S}-{content_id[:8]}"
    rid, n = base, 1
    while rid in existing:
        n += 1
        rid = f"{base}-{n}"
    return rid


def remote_probe(conn: SSHConnection, python: str, *args: str, timeout: float = 60) -> dict:
    """Run :mod:`edgeface.devices.probe` with the board's Python; its JSON as a dict."""
    source = Path(probe_mod.__file__).read_text()
    result = conn.run([python, "-"] + list(args), input=source, timeout=timeout)
    if result.returncode == 127 or "not found" in result.stderr and not result.stdout.strip():
        raise UserError(f"no {python!r} on {conn.board.address}: install Python 3 there "
                        "(sudo apt-get install python3 python3-venv) or pass --python PATH")
    if not result.ok:
        raise UserError(f"probing {conn.board.address} with {python} failed: {result.tail()}")
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise UserError(f"probing {conn.board.address}: unexpected output {result.stdout[:120]!r}") from None


def check_remote_dir(path: str, address: str) -> None:
    """A :class:`UserError` for a deployment folder the board's pip, venv or systemd cannot use safely."""
    bad = sorted({c for c in path if c in UNSAFE_PATH_CHARS})
    if bad:
        shown = " ".join(repr(c) for c in bad)
        raise UserError(f"the folder on {address}, {path!r}, holds {shown}: pip and systemd cannot use such a path "
                        "(and the venv's scripts would run what follows a '$'); choose another --remote-dir")


def acquire_lock(conn: SSHConnection, root: str, what: str, break_lock: bool = False) -> str:
    """Take the board's deployment lock for one flash or rollback, or raise a :class:`UserError` naming who
    holds it.  Two flashes of one board at once would prune each other's releases and switch `current` under
    each other; ``mkdir`` succeeds for exactly one of them.  ``break_lock`` first removes a lock left by a
    command that no longer runs (killed, or its connection lost), logging whose it was in the board's events;
    it returns that holder ("" when the lock was free)."""
    lock = f"{root}/{LOCK}"
    owner = json.dumps({"what": what, "by": who_am_i(), "since": utc_now()})
    take = (f"mkdir -p {q(root)} && mkdir {q(lock)} 2>/dev/null && printf '%s\\n' {q(owner)} > "
            f"{q(lock + '/owner')}")
    if conn.run(take, timeout=30).ok:
        return ""
    holder = _lock_holder(conn, lock)
    if break_lock:
        if not conn.run(f"rm -rf {q(lock)}", timeout=30).ok:
            raise UserError(f"cannot remove {lock} on {conn.board.address} (held by {holder}): check the folder's "
                            "permissions there")
        append_event(conn, root, {"event": "break-lock", "status": "ok", "message": f"removed the lock of {holder}"})
        if conn.run(take, timeout=30).ok:
            return holder
        # another command took it in between: that one is running, so no advice to break it again
        raise UserError(f"{conn.board.address} is busy: {_lock_holder(conn, lock)} took {lock} just after the old "
                        "lock was removed; wait for it")
    raise UserError(f"{conn.board.address} is busy: {holder} holds {lock}; wait for it, or if it is no longer "
                    f"running (killed, or its connection lost), run again with --break-lock")


def _lock_holder(conn: SSHConnection, lock: str) -> str:
    """Who holds the lock, from its owner file: "a flash by user@host since TIME"."""
    held = conn.run(f"cat {q(lock + '/owner')}", timeout=30).stdout.strip()
    try:
        info = json.loads(held)
        return f"a {info['what']} by {info['by']} since {info['since']}"
    except (ValueError, TypeError, KeyError):
        return "an edgeface command whose owner file is missing"


def release_lock(conn: SSHConnection, root: str) -> None:
    """Give the lock back (best effort: a lost connection leaves it, and the next command names it)."""
    try:
        conn.run(f"rm -rf {q(root + '/' + LOCK)}", timeout=30)
    except UserError:
        pass


def append_event(conn: SSHConnection, root: str, event: dict) -> None:
    """One JSON line in the board's events.jsonl (best effort: an event never fails a command)."""
    event = {"time": utc_now(), "by": who_am_i(), **event}
    line = json.dumps(event, sort_keys=True)
    try:
        conn.run(f"mkdir -p {q(root)} && printf '%s\\n' {q(line)} >> {q(root + '/' + EVENTS)}", timeout=30)
    except UserError:
        pass


def upload(conn: SSHConnection, dest: str, members: list[tuple[Path, str]],
           progress: Optional[Callable[[int, int], None]]) -> int:
    """Stream ``members`` (local path, name in the release) as one tar over SSH into ``dest``."""
    total = sum(p.stat().st_size for p, _ in members)

    def anonymous(info: tarfile.TarInfo) -> tarfile.TarInfo:
        # The laptop's uid/gid mean nothing on the board (and root would restore them).
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        if info.name == GALLERY_NAME:
            info.mode = 0o600  # face templates: no other account on the board reads them, whatever the mode here
        return info

    cmd = f"rm -rf {q(dest)} && mkdir -p {q(dest)} && tar -xf - -C {q(dest)}"
    with conn.stream_to(cmd, timeout=600) as pipe:
        writer = CountingWriter(pipe, (lambda n: progress(n, total)) if progress else None)
        with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for path, name in members:
                tar.add(str(path), arcname=name, recursive=False, filter=anonymous)
        writer.flush()
    if progress:
        progress(total, total)
    return total


def install_key(conn: SSHConnection, path: str, text: str) -> None:
    """Write a secret to ``path`` on the board: its folder 0700, the file 0600, the text sent on stdin (never on a
    command line, which ``ps`` and logs show), written to a temp name and renamed (never half a key)."""
    folder = path.rsplit("/", 1)[0]
    tmp = f"{folder}/.incoming-{Path(path).name}"
    cmd = (f"umask 077 && mkdir -p {q(folder)} && chmod 700 {q(folder)} && cat > {q(tmp)} && chmod 600 {q(tmp)} "
           f"&& mv -f {q(tmp)} {q(path)}")
    conn.check(cmd, "writing the gallery key", input=text)


def check_board_key(conn: SSHConnection, path: str) -> None:
    """Refuse a --board-key-file the board does not have, or that other accounts on it can read."""
    result = conn.run(f"stat -c %a {q(path)}")
    if not result.ok:
        raise UserError(f"--board-key-file {path}: no such file on {conn.board.address}; put the gallery's key there "
                        "(mode 0600) or pass --key-file to send it")
    mode = result.stdout.strip()
    if not mode.isdigit() or int(mode, 8) & 0o077:
        raise UserError(f"--board-key-file {path} on {conn.board.address} has mode {mode}: other accounts can read "
                        f"it; run `chmod 600 {path}` there")


def switch_current(conn: SSHConnection, root: str, release_id: str) -> None:
    """Point ``current`` at ``releases/<release_id>`` atomically (a new link renamed over the old one)."""
    tmp = f"{root}/.{CURRENT}-{release_id}"
    conn.check(f"ln -sfn {q(RELEASES + '/' + release_id)} {q(tmp)} && mv -T {q(tmp)} {q(root + '/' + CURRENT)}",
               "switching the current release")


def health_check(conn: SSHConnection, release_dir: str, self_test_args: Sequence[str], timeout: float) -> dict:
    """Run ``edgeface run --self-test`` from a release on the board; the self-test's JSON (``ok`` says).

    ``self_test_args`` are the ``edgeface`` arguments (:func:`edgeface.devices.release.self_test_args` for a
    release being flashed, :func:`~edgeface.devices.release.run_args` with ``self_test=True`` for one rolled back
    to), run from the release folder.
    """
    cmd = f"cd {q(release_dir)} && ./venv/bin/edgeface " + " ".join(q(a) for a in self_test_args)
    result = conn.run(cmd, timeout=timeout)
    report = parse_json_output(result.stdout)
    if not isinstance(report, dict):
        report = {"ok": False, "error": result.tail() or f"the self-test exited {result.returncode} without a report"}
    if result.returncode != 0:
        report["ok"] = False
        report.setdefault("error", result.tail())
    return report


def parse_json_output(text: str) -> Optional[dict]:
    """The JSON object a command printed on stdout (indented or on one line, maybe after other lines)."""
    text = text.strip()
    starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n" and text[i + 1 : i + 2] == "{"]
    for start in starts:
        try:
            value = json.loads(text[start:])
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def failed_checks(report: dict) -> str:
    """Why a self-test report is not ok, in one line."""
    if report.get("error"):
        return str(report["error"])
    bad = [k for k, v in (report.get("checks") or {}).items() if not v]
    return "failed checks: " + ", ".join(bad) if bad else "the self-test did not pass"


def select_prunable(releases: list[dict], current: Optional[str], previous: Optional[str], keep: int) -> list[str]:
    """Releases to delete: healthy ones beyond the newest ``keep``, and failed leftovers.

    The current release and the one before it (the rollback target) are always kept.
    """
    keep = max(1, keep)
    protected = {r for r in (current, previous) if r}
    healthy = [r["id"] for r in releases if r.get("healthy")]
    kept = set(healthy[-keep:]) | protected
    return [r["id"] for r in releases if r["id"] not in kept]


def read_service_info(conn: SSHConnection, root: str) -> Optional[dict]:
    """service.json of a deployment (which unit runs `current`), None when no service was installed."""
    res = conn.run(f"cat {q(root + '/' + SERVICE_INFO)}", timeout=30)
    if not res.ok:
        return None
    try:
        return json.loads(res.stdout)
    except ValueError:
        return None
