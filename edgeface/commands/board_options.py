"""The options of every command that reaches a board over SSH (flash, rollback, status, benchmark --target,
devices detect), defined once.

The board-choosing options (``--inventory``, ``--remote-dir``, ``--python``, ``--break-lock``) are Typer options
used as parameter defaults, like :mod:`edgeface.commands.fit_options`.  The six SSH options always go together,
so :func:`ssh_flags` gives a command all six in place of one ``ssh: SSHFlags`` parameter, and the command gets
them back as one :class:`SSHFlags`.

Light on purpose: ``edgeface --help`` imports it (the SSH client code loads when a command builds its options).
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Optional

import typer

from edgeface.errors import UserError

if TYPE_CHECKING:
    from edgeface.devices.inventory import Board
    from edgeface.devices.ssh import SSHOptions

TARGET_HELP = "user@host[:port], or a board or group name from --inventory."
INVENTORY = typer.Option(None, "--inventory", "-I", help="Inventory TOML file listing boards (see README).",
                         exists=True, dir_okay=False)
REMOTE_DIR = typer.Option(None, "--remote-dir", help="Deployment folder on the board (default: ~/.edgeface).")
BREAK_LOCK = typer.Option(False, "--break-lock", help="First remove the board's lock left by a flash or rollback "
                          "that no longer runs (killed, or its connection lost); logged in the board's events.")
PYTHON = typer.Option(None, "--python", help="Python on the board that creates the runtime's venv "
                      "(default: python3).")
IDENTITY = typer.Option(None, "--identity", "-i", help="SSH private key (default: ssh's own choice).",
                        exists=True, dir_okay=False)
KNOWN_HOSTS = typer.Option(None, "--known-hosts", help="known_hosts file to check host keys against "
                           "(default: ~/.ssh/known_hosts).", dir_okay=False)
ACCEPT_NEW = typer.Option(False, "--accept-new-host-key", help="Record the host key of a board seen for the first "
                          "time (a changed key is still refused).")
SSH_CONFIG = typer.Option(None, "--ssh-config", help="ssh client config file (ssh -F).", exists=True, dir_okay=False)
SSH_OPTION = typer.Option(None, "--ssh-option", "-o", help="Extra ssh option Key=Value (repeatable).")
CONNECT_TIMEOUT = typer.Option(10, "--connect-timeout", min=1, help="Seconds to wait for the SSH connection.")

# The SSH options as (parameter, type, option), in the order --help lists them.
SSH_PARAMETERS = (
    ("identity", Optional[Path], IDENTITY),
    ("known_hosts", Optional[Path], KNOWN_HOSTS),
    ("accept_new_host_key", bool, ACCEPT_NEW),
    ("ssh_config", Optional[Path], SSH_CONFIG),
    ("ssh_option", Optional[List[str]], SSH_OPTION),
    ("connect_timeout", int, CONNECT_TIMEOUT),
)


@dataclass(frozen=True)
class SSHFlags:
    """The SSH options a command was given."""

    identity: Optional[Path] = None
    known_hosts: Optional[Path] = None
    accept_new_host_key: bool = False
    ssh_config: Optional[Path] = None
    ssh_option: Optional[List[str]] = None
    connect_timeout: int = 10

    def options(self) -> SSHOptions:
        """The client options of every connection the command opens (``--ssh-option`` checked)."""
        from edgeface.devices.ssh import SSHOptions

        extra = tuple(self.ssh_option or ())
        for opt in extra:
            if "=" not in opt:
                raise UserError(f"--ssh-option {opt!r}: expected Key=Value, like ServerAliveInterval=10")
        return SSHOptions(known_hosts=self.known_hosts, accept_new_host_key=self.accept_new_host_key,
                          connect_timeout=self.connect_timeout, config_file=self.ssh_config, extra_options=extra)

    def boards(self, target: Optional[str], inventory: Optional[Path], all_boards: bool, remote_dir: Optional[str],
               python: Optional[str]) -> list[Board]:
        """The boards ``target`` (or ``--all``) names, with ``--identity``, ``--remote-dir`` and ``--python``."""
        from edgeface.devices.inventory import resolve_targets

        return resolve_targets(target, inventory, all_boards, identity=self.identity, remote_dir=remote_dir,
                               python=python)


def ssh_flags(command: Callable) -> Callable:
    """Give ``command`` the SSH options: its ``ssh`` parameter becomes the six of :data:`SSH_PARAMETERS` (where it
    stands, so --help lists them there), and the command is called with them as one :class:`SSHFlags`."""
    signature = inspect.signature(command)  # annotations as written (Typer resolves them; eval_str needs 3.10)
    parameters = []
    for param in signature.parameters.values():
        if param.name == "ssh":
            parameters += [inspect.Parameter(name, param.kind, default=option, annotation=kind)
                           for name, kind, option in SSH_PARAMETERS]
        else:
            parameters.append(param)

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        ssh = SSHFlags(**{name: kwargs.pop(name) for name, _, _ in SSH_PARAMETERS})
        return command(*args, ssh=ssh, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=parameters)  # what Typer reads
    return wrapper
