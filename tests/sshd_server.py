"""A real OpenSSH server on 127.0.0.1 for the flash tests: generated keys, a free port, stopped at the end.

The "board" is this machine; the tests point ``--remote-dir`` at a temporary folder.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgeface-test", "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)


class SSHServer:
    """``sshd -D`` with its own host key, authorized key, config and pid file under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.host_key = root / "ssh_host_ed25519_key"
        self.user_key = root / "id_ed25519"
        self.known_hosts = root / "known_hosts"
        keygen(self.host_key)
        keygen(self.user_key)
        (root / "authorized_keys").write_text((root / "id_ed25519.pub").read_text())
        self.port = free_port()
        self.config = root / "sshd_config"
        self.log = root / "sshd.log"
        self.proc: subprocess.Popen | None = None
        self.config.write_text(
            f"Port {self.port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {self.host_key}\n"
            f"AuthorizedKeysFile {root / 'authorized_keys'}\n"
            f"PidFile {root / 'sshd.pid'}\n"
            "UsePAM no\n"
            "StrictModes no\n"  # the tmp folders are not root-only
            "PermitRootLogin yes\n"  # CI runs as root
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\n"
            "UseDNS no\n"
            "MaxSessions 50\n"
            "MaxStartups 50\n"
            "LogLevel VERBOSE\n"
        )

    @property
    def user(self) -> str:
        import getpass

        return getpass.getuser()

    @property
    def target(self) -> str:
        return f"{self.user}@127.0.0.1:{self.port}"

    def host_key_line(self) -> str:
        """The known_hosts line of this server's key."""
        pub = (self.root / "ssh_host_ed25519_key.pub").read_text().split()
        return f"[127.0.0.1]:{self.port} {pub[0]} {pub[1]}\n"

    def trust(self) -> Path:
        """Write a known_hosts holding this server's key."""
        self.known_hosts.write_text(self.host_key_line())
        return self.known_hosts

    def start(self) -> None:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation folder (Debian's sshd needs it)
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited ({self.proc.returncode}): {self.log.read_text()[-500:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not listen on {self.port}: {self.log.read_text()[-500:]}")

    def session_pids(self) -> list[int]:
        """Every process sshd started for connections (all descendants of the listener)."""
        if self.proc is None:
            return []
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
        found, todo = [], list(children.get(self.proc.pid, []))
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def drop_connections(self) -> int:
        """Kill the processes serving connections (privileged monitor and session child alike): the client
        sees the link drop as when a board loses power or network.  Returns how many were killed."""
        pids = self.session_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    def stop(self) -> None:
        if self.proc is not None:
            self.drop_connections()
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
