"""What a board is and what is deployed on it, as JSON; runs on the board's own Python.

This file is sent as a script to ``python3 -`` over SSH (before edgeface is installed there), so it
imports nothing outside the standard library and stays compatible with old board Pythons (3.6+: no
walrus, no ``from __future__ import annotations`` needed).  The same functions describe the local
machine for ``edgeface benchmark`` and ``edgeface devices detect``.

    python3 - identity [REMOTE_DIR]      board identity, free disk under REMOTE_DIR
    python3 - state REMOTE_DIR [EVENTS]  releases, `current`, last EVENTS events of a deployment
"""

import glob
import json
import os
import platform
import shutil
import socket
import subprocess
import sys

RELEASES = "releases"
CURRENT = "current"
EVENTS = "events.jsonl"
RELEASE_INFO = "release.json"
HEALTHY_MARK = "HEALTHY"


def _read(path, default=None):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return default


def cpu_model():
    """The CPU's model name from /proc/cpuinfo (ARM parts named from their part number), else platform's."""
    text = _read("/proc/cpuinfo", "") or ""
    fields = {}
    for line in text.splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            fields.setdefault(key.strip(), value.strip())
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        if fields.get(key):
            return fields[key]
    # ARM cores list only implementer/part numbers; name the common Cortex parts.
    parts = {"0xd03": "Cortex-A53", "0xd08": "Cortex-A72", "0xd0b": "Cortex-A76", "0xd05": "Cortex-A55",
             "0xd04": "Cortex-A35", "0xd07": "Cortex-A57", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75"}
    part = fields.get("CPU part")
    if part:
        return "ARM " + parts.get(part, "part " + part)
    return platform.processor() or platform.machine()


def _vcgencmd(*args):
    exe = shutil.which("vcgencmd")
    if not exe:
        return None
    try:
        out = subprocess.run([exe] + list(args), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    text = out.stdout.decode("utf-8", "replace").strip()
    return text.split("=", 1)[-1] if out.returncode == 0 and text else None


def _temperature_c():
    text = _vcgencmd("measure_temp")  # "temp=48.3'C"
    if text:
        try:
            return float(text.rstrip("'C"))
        except ValueError:
            pass
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*/temp")):
        value = _read(zone)
        if value and value.lstrip("-").isdigit():
            return int(value) / 1000.0
    return None


def _usb_ids():
    ids = set()
    for dev in glob.glob("/sys/bus/usb/devices/*"):
        vendor, product = _read(os.path.join(dev, "idVendor")), _read(os.path.join(dev, "idProduct"))
        if vendor and product:
            ids.add(vendor.lower() + ":" + product.lower())
    return sorted(ids)


def _free_bytes(path):
    path = os.path.abspath(path)
    while not os.path.exists(path):  # the deployment folder may not exist yet
        path = os.path.dirname(path)
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _has_module(name):
    try:
        __import__(name)
        return True
    except Exception:
        return False


def identity(remote_dir=None):
    """The board: model, CPU, cores, governor, temperature, Python, libc, free disk, systemd."""
    model = _read("/proc/device-tree/model") or _read("/sys/firmware/devicetree/base/model")
    if not model:
        vendor, product = _read("/sys/class/dmi/id/sys_vendor"), _read("/sys/class/dmi/id/product_name")
        model = " ".join(x for x in (vendor, product) if x) or None
        has_device_tree = False
    else:
        has_device_tree = True
    governors = sorted({_read(p) for p in glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor")}
                       - {None})
    mem_kb = None
    for line in (_read("/proc/meminfo", "") or "").splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    info = {
        "hostname": socket.gethostname(),
        "model": model,
        "model_from_device_tree": has_device_tree,
        "machine": platform.machine(),
        "kernel": platform.release(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "governor": ",".join(governors) if governors else None,
        "temperature_c": _temperature_c(),
        "throttled": _vcgencmd("get_throttled"),  # "0x0" when never throttled
        "mem_total_mb": round(mem_kb / 1024) if mem_kb else None,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "libc": list(platform.libc_ver()),
        "venv": _has_module("venv") and _has_module("ensurepip"),
        "systemd": os.path.isdir("/run/systemd/system"),
        "user": os.environ.get("USER") or os.environ.get("LOGNAME"),
        "uid": os.getuid(),
        "home": os.path.expanduser("~"),
        "usb_ids": _usb_ids(),
    }
    if remote_dir:
        path = os.path.abspath(os.path.expanduser(remote_dir))
        info["remote_dir"] = path
        info["free_bytes"] = _free_bytes(path)
    return info


def _load_json(path):
    """A JSON object from a file, or None when missing, unreadable or not an object (every caller indexes it)."""
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError, RecursionError):  # RecursionError: '[[[[...' nested past Python's stack
        return None
    return value if isinstance(value, dict) else None


def state(remote_dir, events=10):
    """A deployment folder: its releases (oldest first), which is current, the last events."""
    root = os.path.abspath(os.path.expanduser(remote_dir))
    rel_root = os.path.join(root, RELEASES)
    current = None
    link = os.path.join(root, CURRENT)
    if os.path.islink(link):
        current = os.path.basename(os.readlink(link).rstrip("/"))
    releases = []
    for rid in sorted(os.listdir(rel_root)) if os.path.isdir(rel_root) else []:
        path = os.path.join(rel_root, rid)
        if not os.path.isdir(path) or rid.startswith("."):
            continue
        info = _load_json(os.path.join(path, RELEASE_INFO)) or {}
        releases.append({"id": rid, "healthy": os.path.exists(os.path.join(path, HEALTHY_MARK)),
                         "current": rid == current, "info": info})
    tail = []
    lines = (_read(os.path.join(root, EVENTS), "") or "").splitlines()
    for line in lines[-int(events):] if int(events) > 0 else []:
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):
            event = None
        # a line that is not a JSON object (damaged, or written by hand) is shown as it is, never indexed
        tail.append(event if isinstance(event, dict) else {"event": "unreadable", "message": line[:200]})
    incoming = os.path.join(root, ".incoming")
    return {
        "remote_dir": root,
        "exists": os.path.isdir(root),
        "current": current,
        "releases": releases,
        "incomplete": sorted(os.listdir(incoming)) if os.path.isdir(incoming) else [],
        "events": tail,
    }


def main(argv):
    mode = argv[1] if len(argv) > 1 else "identity"
    if mode == "identity":
        out = identity(argv[2] if len(argv) > 2 else None)
    elif mode == "state":
        out = state(argv[2], int(argv[3]) if len(argv) > 3 else 10)
    else:
        sys.stderr.write("usage: probe.py identity [DIR] | state DIR [EVENTS]\n")
        return 2
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
