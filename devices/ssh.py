"""SSH to boards through the system OpenSSH client.

Why the ``ssh`` program and not asyncssh/paramiko:

* no extra dependency, and nothing to compile on the laptop;
* it is the client the user already trusts and has configured: ``~/.ssh/config`` (host aliases,
  ProxyJump through a bastion, per-host keys), ``known_hosts``, ssh-agent and hardware keys all work
  as they do for ``ssh pi@board``;
* host keys are checked by OpenSSH itself: ``StrictHostKeyChecking=yes`` refuses unknown and changed
  keys, and only ``--accept-new-host-key`` relaxes it to ``accept-new`` (records a new key, still
  refuses a *changed* one);
* one ControlMaster connection carries every step of a flash, so the dozens of small commands cost
  one TCP + key exchange, not one each.

``BatchMode=yes`` means ssh never prompts (no password or passphrase prompt hanging a parallel flash);
a failure comes back as ssh's exit status 255 and its stderr, which :func:`explain_ssh_error` turns
into one line that says what to do.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Iterator, Optional, Sequence, Union

from edgeface.devices.inventory import Board
from edgeface.errors import UserError

SSH_FAILURE = 255  # ssh's own exit status for connection/authentication errors
INSTALL_HINT = "install the OpenSSH client: `sudo apt-get install openssh-client` (macOS and Windows 10+ ship it)"


@dataclass(frozen=True)
class SSHOptions:
    """How to connect: host-key policy and client options shared by every board of a command."""

    known_hosts: Optional[Path] = None  # default: OpenSSH's own (~/.ssh/known_hosts)
    accept_new_host_key: bool = False
    connect_timeout: int = 10
    config_file: Optional[Path] = None  # ssh -F
    extra_options: tuple[str, ...] = ()  # more `-o Key=Value`
    ssh_binary: str = "ssh"


class SSHError(UserError):
    """A connection or authentication failure, already explained in one line."""


def explain_ssh_error(board: Board, stderr: str, options: SSHOptions) -> str:
    """Turn ssh's stderr (exit status 255) into one line: what went wrong and what to do."""
    text = stderr.strip()
    where = board.address
    port = board.port or 22
    known = str(options.known_hosts) if options.known_hosts else "~/.ssh/known_hosts"
    host_spec = f"[{board.host}]:{port}" if port != 22 else board.host
    low = text.lower()
    if "remote host identification has changed" in low or "host key for" in low and "has changed" in low:
        return (f"the host key of {where} has CHANGED since it was recorded in {known}: refusing to connect. "
                f"If the board was reinstalled, remove the old key with `ssh-keygen -R '{host_spec}'"
                + (f" -f {known}" if options.known_hosts else "") + "` and connect again; otherwise someone may "
                "be intercepting the connection")
    if "host key verification failed" in low or "no " in low and "host key is known" in low:
        return (f"the host key of {where} is not in {known}: check it and connect once with `ssh "
                f"{'-p ' + str(port) + ' ' if port != 22 else ''}{board.user + '@' if board.user else ''}"
                f"{board.host}`, or pass --accept-new-host-key to record it")
    if "permission denied" in low:
        user = board.user or "(your ssh user)"
        return (f"login to {where} refused for user {user} ({_last_line(text)}): check the user name and that "
                "your public key is in the board's ~/.ssh/authorized_keys (ssh-copy-id), or pass --identity")
    if "connection refused" in low:
        return f"cannot connect to {board.host} port {port}: connection refused (is sshd running there, port right?)"
    if "could not resolve hostname" in low or "name or service not known" in low:
        return f"unknown host {board.host!r}: check the name (or use the board's IP address)"
    if "timed out" in low:
        return (f"cannot connect to {board.host} port {port}: timed out after {options.connect_timeout} s "
                "(is the board on and on this network?)")
    if "no route to host" in low or "network is unreachable" in low:
        return f"cannot reach {board.host}: no route to host (is the board on this network?)"
    if "connection closed" in low or "connection reset" in low or "broken pipe" in low:
        return f"the connection to {where} was lost ({_last_line(text)})"
    return f"ssh to {where} failed: {_last_line(text) or 'no message from ssh'}"


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not ln.startswith("Warning: Perm")]
    return lines[-1] if lines else ""


def remote_command(argv: Union[str, Sequence[str]]) -> str:
    """A command line for the remote shell: a list is quoted word by word, a string is used as is."""
    if isinstance(argv, str):
        return argv
    return " ".join(shlex.quote(str(a)) for a in argv)


@dataclass
class Result:
    """What a remote command returned."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, n: int = 3) -> str:
        """The last lines of stderr (else stdout), joined: the reason a command failed."""
        text = self.stderr.strip() or self.stdout.strip()
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return " | ".join(lines[-n:])


@dataclass
class SSHConnection:
    """A master connection to one board; every command and upload rides on it.

    Use as a context manager: entering opens (and authenticates) the master connection, leaving
    closes it.  Commands started after the master died open a direct connection instead, so a
    flash can still clean up after a dropped link when the board is reachable again.
    """

    board: Board
    options: SSHOptions = field(default_factory=SSHOptions)
    _control_dir: Optional[str] = None
    _master: bool = False

    # --- command lines -----------------------------------------------------

    def base_args(self, master: bool = False) -> list[str]:
        """The ssh argv up to (and including) the destination."""
        exe = shutil.which(self.options.ssh_binary)
        if exe is None:
            raise UserError(f"`{self.options.ssh_binary}` not found: {INSTALL_HINT}")
        args = [exe, "-T"]
        if self.options.config_file:
            args += ["-F", str(self.options.config_file)]
        opts = {
            "BatchMode": "yes",
            "StrictHostKeyChecking": "accept-new" if self.options.accept_new_host_key else "yes",
            "ConnectTimeout": str(self.options.connect_timeout),
            "ServerAliveInterval": "5",
            "ServerAliveCountMax": "3",
            "LogLevel": "ERROR",
        }
        if self.options.known_hosts:
            opts["UserKnownHostsFile"] = str(self.options.known_hosts)
        if self.board.identity:
            args += ["-i", str(self.board.identity)]
            opts["IdentitiesOnly"] = "yes"
        if self.board.port:
            args += ["-p", str(self.board.port)]
        if self.board.user:
            args += ["-l", self.board.user]
        if self._control_dir:
            opts["ControlPath"] = os.path.join(self._control_dir, "m")
            opts["ControlMaster"] = "yes" if master else "no"
            if master:
                # Safety net: the master goes away by itself if we die without closing it.
                opts["ControlPersist"] = "600"
        for key, value in opts.items():
            args += ["-o", f"{key}={value}"]
        for extra in self.options.extra_options:
            args += ["-o", extra]
        return args + ["--", self.board.host]

    # --- life cycle ----------------------------------------------------------

    def open(self) -> None:
        """Open and authenticate the master connection; raise :class:`SSHError` with one clear line."""
        # Short folder: the socket path must fit in sun_path (108 bytes).
        self._control_dir = tempfile.mkdtemp(prefix="efssh-", dir="/tmp" if os.path.isdir("/tmp") else None)
        args = self.base_args(master=True)
        args[-2:-2] = ["-N", "-f"]  # no command; go to the background once authenticated
        # stderr to a file: the backgrounded master must not hold a pipe we wait on.
        with tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                      timeout=self.options.connect_timeout + 20)
                code = proc.returncode
            except subprocess.TimeoutExpired:
                code = SSH_FAILURE
                err.write(b"\nConnection timed out")
            err.seek(0)
            message = err.read().decode("utf-8", "replace")
        if code != 0:
            self._cleanup_dir()
            raise SSHError(explain_ssh_error(self.board, message, self.options))
        self._master = True

    def close(self) -> None:
        """Stop the master connection and remove its socket folder."""
        if self._master and self._control_dir:
            args = self.base_args()
            args[-2:-2] = ["-O", "exit"]
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               timeout=10)
        self._master = False
        self._cleanup_dir()

    def _cleanup_dir(self) -> None:
        if self._control_dir:
            shutil.rmtree(self._control_dir, ignore_errors=True)
            self._control_dir = None

    def __enter__(self) -> SSHConnection:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- commands ------------------------------------------------------------

    def run(self, argv: Union[str, Sequence[str]], input: Optional[Union[bytes, str]] = None,
            timeout: Optional[float] = 120) -> Result:
        """Run a command on the board (a list is shell-quoted; a string goes to the remote shell as is).

        A connection failure (ssh exit status 255 with an ssh message) raises :class:`SSHError`; the
        command's own failures come back in :class:`Result`.
        """
        args = self.base_args() + [remote_command(argv)]
        data = input.encode() if isinstance(input, str) else input
        try:
            proc = subprocess.run(args, input=data, stdin=None if data is not None else subprocess.DEVNULL,
                                  capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SSHError(f"`{remote_command(argv)[:80]}` on {self.board.address} took longer than {timeout:.0f} s"
                           ) from None
        result = Result(proc.returncode, proc.stdout.decode("utf-8", "replace"),
                        proc.stderr.decode("utf-8", "replace"))
        if result.returncode == SSH_FAILURE and _looks_like_ssh_error(result.stderr):
            raise SSHError(explain_ssh_error(self.board, result.stderr, self.options))
        return result

    def check(self, argv: Union[str, Sequence[str]], what: str, **kwargs) -> Result:
        """Like :meth:`run` but a non-zero exit raises a one-line :class:`UserError` naming ``what``."""
        result = self.run(argv, **kwargs)
        if not result.ok:
            raise UserError(f"{what} failed on {self.board.address} (exit {result.returncode}): {result.tail()}")
        return result

    @contextlib.contextmanager
    def stream_to(self, argv: Union[str, Sequence[str]], timeout: Optional[float] = None) -> Iterator[IO[bytes]]:
        """Run a command that reads stdin; yields the pipe to write to.

        On exit the pipe is closed and the command waited for; a broken pipe or a non-zero exit raises
        a one-line error (a dropped connection explained as such).
        """
        args = self.base_args() + [remote_command(argv)]
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
            broken: Optional[BaseException] = None
            try:
                yield proc.stdin  # type: ignore[misc]
            except (BrokenPipeError, ConnectionResetError) as exc:
                broken = exc
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            finally:
                with contextlib.suppress(BrokenPipeError, OSError):
                    proc.stdin.close()  # type: ignore[union-attr]
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise SSHError(f"upload to {self.board.address} stalled for {timeout:.0f} s") from None
            err.seek(0)
            message = err.read().decode("utf-8", "replace")
        if code == SSH_FAILURE or (broken is not None and code != 0):
            raise SSHError(explain_ssh_error(self.board, message or "connection closed", self.options))
        if code != 0:
            raise UserError(f"`{remote_command(argv)[:60]}` failed on {self.board.address} (exit {code}): "
                            f"{_last_line(message)}")


def _looks_like_ssh_error(stderr: str) -> bool:
    # A remote command may itself exit 255; ssh's own failures carry one of these phrases.
    low = stderr.lower()
    return any(p in low for p in (
        "ssh:", "host key", "permission denied", "connection closed", "connection reset", "connection refused",
        "broken pipe", "timed out", "could not resolve", "no route", "mux_client", "control socket", "kex_",
    )) or not stderr.strip()


class CountingWriter:
    """A write-only file object that counts bytes and reports progress (wraps a pipe)."""

    def __init__(self, raw: IO[bytes], on_progress: Optional[Callable[[int], None]] = None) -> None:
        self.raw = raw
        self.written = 0
        self.on_progress = on_progress
        self._last_report = 0.0

    def write(self, data: bytes) -> int:
        self.raw.write(data)
        self.written += len(data)
        now = time.monotonic()
        if self.on_progress is not None and (now - self._last_report > 0.05):
            self._last_report = now
            self.on_progress(self.written)
        return len(data)

    def flush(self) -> None:
        self.raw.flush()
