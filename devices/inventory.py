"""Board inventory: a TOML file naming boards, how to reach them, their profile and groups.

    # boards.toml
    [defaults]                 # optional, applies to every board below
    user = "pi"
    identity = "~/.ssh/id_ed25519"

    [boards.door]
    host = "192.168.1.21"
    profile = "rpi5"
    groups = ["entrance"]

    [boards.lab-coral]
    host = "coral.local"
    user = "mendel"
    port = 22
    profile = "coral-devboard"
    groups = ["lab"]
    remote_dir = "~/.edgeface"

A TARGET on the command line is a board name, a group name (several boards), or ``user@host[:port]``.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from edgeface.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.9/3.10 boards and laptops
    try:
        import tomli as tomllib
    except ImportError:  # pragma: no cover - depends on the interpreter
        tomllib = None

BOARD_KEYS = ("host", "user", "port", "profile", "groups", "identity", "remote_dir", "python", "source", "threads")
TOP_KEYS = ("defaults", "boards")
DEFAULT_REMOTE_DIR = "~/.edgeface"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Board:
    """One board: where it is and what it is."""

    name: str
    host: str
    user: Optional[str] = None
    port: Optional[int] = None
    profile: Optional[str] = None  # None: detected on the board
    groups: tuple[str, ...] = ()
    identity: Optional[Path] = None
    remote_dir: str = DEFAULT_REMOTE_DIR
    python: str = "python3"
    source: Optional[str] = None  # overrides the profile's camera source
    threads: Optional[int] = None  # overrides the profile's thread count

    @property
    def address(self) -> str:
        """``user@host:port`` as far as known (what the user would type)."""
        text = f"{self.user}@{self.host}" if self.user else self.host
        return f"{text}:{self.port}" if self.port else text


def _unknown_key(key: str, allowed: tuple[str, ...], where: str) -> UserError:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return UserError(f"unknown key {key!r} in {where}: {hint}allowed keys are {', '.join(allowed)}")


def parse_address(text: str, name: Optional[str] = None) -> Board:
    """``user@host[:port]`` (or ``host``, ``[v6addr]:port``) -> a :class:`Board` with no profile."""
    user = None
    rest = text.strip()
    if "@" in rest:
        user, rest = rest.rsplit("@", 1)
        if not user:
            raise UserError(f"bad target {text!r}: empty user name before '@' (use user@host[:port])")
    port: Optional[int] = None
    if rest.startswith("["):  # [::1]:2222
        host, _, tail = rest[1:].partition("]")
        if tail.startswith(":"):
            port = _parse_port(tail[1:], text)
    elif rest.count(":") == 1:
        host, port_text = rest.split(":")
        port = _parse_port(port_text, text)
    else:
        host = rest
    if not host or any(c.isspace() for c in host) or host.startswith("-"):
        raise UserError(f"bad target {text!r}: expected user@host[:port] or a board name from --inventory")
    return Board(name=name or text, host=host, user=user, port=port)


def _parse_port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UserError(f"bad port in target {whole!r}: {text!r} is not a number from 1 to 65535")
    return int(text)


def _whole(value: Any) -> bool:
    """A TOML integer (bool is an int in Python: `port = true` would pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _board_from_table(name: str, table: dict[str, Any], defaults: dict[str, Any], path: Path) -> Board:
    where = f"{path} [boards.{name}]"
    if not _NAME.match(name):
        raise UserError(f"bad board name {name!r} in {path}: use letters, digits, '-', '_' and '.'")
    for key in table:
        if key not in BOARD_KEYS:
            raise _unknown_key(key, BOARD_KEYS, where)
    merged = {**defaults, **table}
    if "host" not in merged:
        raise UserError(f"{where} has no host: add host = \"192.168.1.20\" (or a name from ~/.ssh/config)")
    port = merged.get("port")
    if port is not None and (not _whole(port) or not 0 < port < 65536):
        raise UserError(f"{where}: port must be a number from 1 to 65535, not {port!r}")
    groups = merged.get("groups", [])
    if isinstance(groups, str):
        groups = [groups]
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise UserError(f"{where}: groups must be a list of names, like groups = [\"lab\"]")
    threads = merged.get("threads")
    if threads is not None and (not _whole(threads) or threads < 1):
        raise UserError(f"{where}: threads must be a positive number, not {threads!r}")
    profile = merged.get("profile")
    if profile is not None:
        from edgeface.devices.profiles import get_profile

        get_profile(str(profile))  # unknown names fail here, with a suggestion
    for key in ("host", "user", "identity", "remote_dir", "python"):
        if key in merged and not isinstance(merged[key], str):
            raise UserError(f"{where}: {key} must be text in quotes, not {merged[key]!r}")
    if not merged["host"] or any(c.isspace() for c in merged["host"]):  # as parse_address refuses on the CLI
        raise UserError(f"{where}: host {merged['host']!r} is not a host name or address")
    source = merged.get("source")
    if source is not None and not (isinstance(source, str) or _whole(source)):
        raise UserError(f"{where}: source must be a camera index or text in quotes, not {source!r}")
    identity = merged.get("identity")
    return Board(
        name=name,
        host=str(merged["host"]),
        user=merged.get("user"),
        port=port,
        profile=profile,
        groups=tuple(groups),
        identity=Path(os.path.expanduser(identity)) if identity else None,
        remote_dir=str(merged.get("remote_dir", DEFAULT_REMOTE_DIR)),
        python=str(merged.get("python", "python3")),
        source=merged.get("source"),
        threads=threads,
    )


@dataclass
class Inventory:
    """The boards of an inventory file, in file order."""

    path: Path
    boards: list[Board] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Inventory:
        """Read and check an inventory file (unknown keys fail with a suggestion)."""
        path = Path(path)
        if tomllib is None:
            raise UserError("reading an inventory needs TOML support: `pip install tomli` (Python < 3.11)")
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"inventory file not found: {path}") from None
        except (ValueError, UnicodeDecodeError) as exc:  # ValueError: TOMLDecodeError, or an int of 4300+ digits
            raise UserError(f"{path} is not valid TOML: {exc}") from None
        except RecursionError:  # '[[[[...' nested past Python's stack: tomllib sets no depth limit of its own
            raise UserError(f"{path} is not valid TOML: arrays nested too deeply") from None
        for key in data:
            if key not in TOP_KEYS:
                raise _unknown_key(key, TOP_KEYS, str(path))
        defaults = data.get("defaults", {})
        if not isinstance(defaults, dict):
            raise UserError(f"{path}: defaults must be a table ([defaults] with key = value lines), "
                            f"not {defaults!r}")
        for key in defaults:
            if key not in BOARD_KEYS or key == "host":
                raise _unknown_key(key, tuple(k for k in BOARD_KEYS if k != "host"), f"{path} [defaults]")
        boards_table = data.get("boards", {})
        if not isinstance(boards_table, dict):
            raise UserError(f"{path}: boards must be tables, one per board ([boards.NAME] with host = ...), "
                            f"not {boards_table!r}")
        for name, table in boards_table.items():
            if not isinstance(table, dict):
                key = name if _NAME.match(name) else json.dumps(name)  # a name with a newline stays on one line
                raise UserError(f"{path}: board {name!r} must be a table: [boards.{key}] then host = {table!r}")
        if not boards_table:
            raise UserError(f"{path} lists no boards: add a [boards.NAME] table with a host")
        boards = [_board_from_table(name, table, defaults, path) for name, table in boards_table.items()]
        return cls(path=path, boards=boards)

    @property
    def groups(self) -> list[str]:
        seen: list[str] = []
        for board in self.boards:
            seen.extend(g for g in board.groups if g not in seen)
        return seen

    def select(self, name: str) -> list[Board]:
        """Boards named ``name``, or in group ``name``; unknown names fail with a suggestion."""
        by_name = [b for b in self.boards if b.name == name]
        if by_name:
            return by_name
        in_group = [b for b in self.boards if name in b.groups]
        if in_group:
            return in_group
        names = [b.name for b in self.boards] + self.groups
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UserError(f"no board or group {name!r} in {self.path}: {hint}it has {', '.join(names)}")


def resolve_targets(target: Optional[str], inventory: Optional[Path], all_boards: bool = False,
                    identity: Optional[Path] = None, remote_dir: Optional[str] = None,
                    python: Optional[str] = None) -> list[Board]:
    """The boards a command acts on: from an inventory (name, group, --all) or one ``user@host[:port]``.

    Command-line ``identity``/``remote_dir``/``python`` override what the inventory says.
    """
    if all_boards:
        if inventory is None:
            raise UserError("--all needs --inventory FILE (the boards to act on)")
        if target:
            raise UserError(f"give either a TARGET ({target!r}) or --all, not both")
        boards = Inventory.load(inventory).boards
    elif not target:
        raise UserError("no target: give user@host[:port], a board or group name with --inventory, or --all")
    elif inventory is not None and ("@" not in target):
        boards = Inventory.load(inventory).select(target)
    else:
        boards = [parse_address(target)]
    overrides: dict[str, Any] = {}
    if identity is not None:
        overrides["identity"] = identity
    if remote_dir is not None:
        overrides["remote_dir"] = remote_dir
    if python is not None:
        overrides["python"] = python
    return [replace(b, **overrides) for b in boards]
