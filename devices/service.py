"""The systemd unit that keeps ``edgeface run`` going on a board (system-wide or ``systemctl --user``)."""

from __future__ import annotations

import json
import os
import time
from typing import Optional

from edgeface.devices.remote import CURRENT, RUN_SCRIPT, SERVICE_INFO, q, read_service_info
from edgeface.devices.ssh import SSHConnection
from edgeface.errors import UserError

SERVICE_MODES = ("system", "user", "none")
SERVICE_SETTLE_S = 3.0


def unit_file(mode: str, root: str, user: str, release_id: str) -> str:
    """The systemd unit running ``current/run.sh``."""
    service_user = f"User={user}\n" if mode == "system" and user and user != "root" else ""
    wanted = "multi-user.target" if mode == "system" else "default.target"
    return (
        "[Unit]\n"
        "Description=edgeface face recognition (written by edgeface flash)\n"
        "After=network-online.target\nWants=network-online.target\n\n"
        "[Service]\nType=simple\n"
        f"{service_user}"
        f"WorkingDirectory={root.replace('%', '%%')}/{CURRENT}\n"
        f"ExecStart={_unit_path(f'{root}/{CURRENT}/{RUN_SCRIPT}')}\n"
        "Environment=PYTHONUNBUFFERED=1\n"
        "Restart=on-failure\nRestartSec=5\n\n"
        f"[Install]\nWantedBy={wanted}\n"
        f"# release at install time: {release_id}\n"
    )


def _unit_path(path: str) -> str:
    """A path as ExecStart takes it: double-quoted (systemd splits its command line on spaces), '%' doubled
    (a specifier otherwise; WorkingDirectory= takes the rest of its line, so only that is needed there);
    the characters systemd cannot take are refused before (check_remote_dir)."""
    return '"' + path.replace("%", "%%") + '"'


def systemctl(mode: str, uid: int) -> str:
    if mode == "user":
        return "systemctl --user"
    return "systemctl" if uid == 0 else "sudo -n systemctl"


def service_state(conn: SSHConnection, info: dict) -> str:
    """``active`` / ``failed`` / ... of the unit described by service.json."""
    cmd = f"{systemctl(info['mode'], int(info.get('uid', 1)))} is-active {q(info['name'])}"
    return conn.run(cmd, timeout=30).stdout.strip() or "unknown"


def _unit_writer(mode: str, uid: int, path: str) -> str:
    """The shell command writing its stdin to the unit file ``path`` (sudo for a system unit, unless root)."""
    if mode == "system":
        return f"tee {q(path)} >/dev/null" if uid == 0 else f"sudo -n tee {q(path)} >/dev/null"
    return f"mkdir -p {q(os.path.dirname(path))} && cat > {q(path)}"


def _record_command(root: str, info: dict) -> str:
    """The shell command writing ``info`` to the deployment's service.json (what status and rollback read)."""
    return f"printf '%s\\n' {q(json.dumps(info))} > {q(root + '/' + SERVICE_INFO)}"


def install_unit(conn: SSHConnection, mode: str, name: str, root: str, ident: dict, release_id: str,
                 before: Optional[dict] = None) -> dict:
    """Write and enable the unit running ``root/current/run.sh``; record it in service.json; its description.

    ``before`` is :func:`snapshot_service`'s view of the board: when a step fails half-way (the unit written but
    systemctl refusing to enable it, a full disk while recording), the board gets that service back before the
    error is raised, instead of keeping a new unit that nothing records (a first flash's would be left behind,
    an earlier flash's overwritten)."""
    uid = int(ident.get("uid", 1))
    if mode == "system":
        path = f"/etc/systemd/system/{name}.service"
    else:
        path = f"{ident['home']}/.config/systemd/user/{name}.service"
    info = {"mode": mode, "name": name, "unit": path, "uid": uid}
    writer = _unit_writer(mode, uid, path)
    unit = unit_file(mode, root, ident.get("user") or "", release_id)
    try:
        res = conn.run(writer, input=unit, timeout=60)
        if not res.ok:
            hint = " (the user needs passwordless sudo for a system service; or use --service user)" \
                if "sudo" in res.stderr else ""
            raise UserError(f"writing {path} failed: {res.tail()}{hint}")
        sc = systemctl(mode, uid)
        conn.check(f"{sc} daemon-reload && {sc} enable {q(name)}", "enabling the service")
        if mode == "user":  # keep the user's services running without a login session
            conn.run(f"loginctl enable-linger {q(ident.get('user') or '')}", timeout=30)
        conn.check(_record_command(root, info), "recording the service")
    except UserError as exc:
        try:
            restore_service(conn, root, info, before)
        except (UserError, OSError) as undo:  # the connection is gone: say so, keep the first error
            raise UserError(f"{exc}; putting the previous service back failed too: {undo}") from None
        raise UserError(f"{exc}; the board's service was left as it was before this flash") from None
    return info


def restart_service(conn: SSHConnection, info: dict) -> tuple[bool, str]:
    """Restart the unit and check it is still up a moment later; (ok, state or journal tail)."""
    sc = systemctl(info["mode"], int(info.get("uid", 1)))
    res = conn.run(f"{sc} restart {q(info['name'])}", timeout=120)
    if not res.ok:
        return False, res.tail()
    time.sleep(SERVICE_SETTLE_S)
    state = service_state(conn, info)
    if state == "active":
        return True, state
    journal = "journalctl --user" if info["mode"] == "user" else ("journalctl" if int(info.get("uid", 1)) == 0
                                                                   else "sudo -n journalctl")
    log = conn.run(f"{journal} -u {q(info['name'])} -n 5 --no-pager -o cat", timeout=30)
    return False, f"{state}: {log.tail(2)}"


def snapshot_service(conn: SSHConnection, root: str) -> Optional[dict]:
    """The service a flash is about to replace: ``{"info": service.json, "unit": its unit file's text}``,
    or None when none was installed (a first flash, or releases run by hand or with ``--service none``)."""
    info = read_service_info(conn, root)
    if info is None:
        return None
    unit = conn.run(f"cat {q(info['unit'])}", timeout=30)
    return {"info": info, "unit": unit.stdout if unit.ok and unit.stdout.strip() else None}


def remove_unit(conn: SSHConnection, info: dict) -> None:
    """Stop, disable and delete a unit: left enabled with Restart=on-failure it would restart forever."""
    uid = int(info.get("uid", 1))
    sc = systemctl(info["mode"], uid)
    rm = "rm -f" if info["mode"] == "user" or uid == 0 else "sudo -n rm -f"
    # Each part runs even if one before it fails (a unit that is already stopped, say): `;`, not `&&`.
    conn.run(f"{sc} disable --now {q(info['name'])}; {rm} {q(info['unit'])}; {sc} daemon-reload", timeout=120)


def restore_service(conn: SSHConnection, root: str, installed: dict, before: Optional[dict]) -> Optional[dict]:
    """Undo :func:`install_unit` after the new release's service failed: the board gets back the service
    it had, ``before`` (from :func:`snapshot_service`): none at all, or the old unit and service.json.

    Returns the service to restart on the previous release (None: there was none to restart).
    """
    if before is None:
        remove_unit(conn, installed)
        conn.run(f"rm -f {q(root + '/' + SERVICE_INFO)}", timeout=30)
        return None
    old = before["info"]
    uid = int(old.get("uid", 1))
    if old.get("unit") != installed.get("unit"):  # another name or mode: the old unit file was not touched
        remove_unit(conn, installed)
    elif before.get("unit") is not None:
        conn.run(_unit_writer(old["mode"], uid, old["unit"]), input=before["unit"], timeout=60)
        sc = systemctl(old["mode"], uid)
        conn.run(f"{sc} daemon-reload", timeout=60)
    conn.run(_record_command(root, old), timeout=30)
    return old
