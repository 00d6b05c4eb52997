"""An arm64 Python to run under qemu-aarch64-static, from Debian's own arm64 packages (no root changes).

apt runs with a private state/cache folder and ``APT::Architecture=arm64``, so the machine's dpkg and apt
configuration are untouched; the packages are unpacked with ``dpkg-deb -x`` into a sysroot that
``qemu-aarch64-static -L SYSROOT`` uses for the dynamic loader and libraries.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

QEMU = "qemu-aarch64-static"
# python3.11 and the shared libraries it and the runtime's wheels (numpy, OpenCV, LiteRT) load.
PACKAGES = (
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "libexpat1", "zlib1g", "libffi8",
    "libssl3", "libbz2-1.0", "liblzma5", "libstdc++6", "libgcc-s1", "libcrypt1", "libuuid1", "libncursesw6",
    "libtinfo6", "libreadline8", "libsqlite3-0", "libdb5.3", "libgdbm6", "libnsl2", "libtirpc3", "libgssapi-krb5-2",
    "libk5crypto3", "libkrb5-3", "libkrb5support0", "libcom-err2", "libkeyutils1", "libzstd1", "media-types",
)


def missing_tools() -> list[str]:
    return [t for t in (QEMU, "apt-get", "dpkg-deb") if shutil.which(t) is None]


def build_sysroot(work: Path) -> Path:
    """Download Debian arm64 packages with a private apt state and unpack them; the sysroot folder."""
    state, cache, debs, root = work / "apt-state", work / "apt-cache", work / "debs", work / "sysroot"
    for d in (state / "lists" / "partial", cache / "archives" / "partial", debs, root):
        d.mkdir(parents=True, exist_ok=True)
    opts = [f"-oDir::State={state}", f"-oDir::Cache={cache}", "-oDir::State::status=/dev/null",
            "-oAPT::Architecture=arm64", "-oAPT::Architectures::=arm64", "-oDebug::NoLocking=1",
            "-oAPT::Sandbox::User=root"]
    subprocess.run(["apt-get", *opts, "-qq", "update"], check=True, capture_output=True)
    subprocess.run(["apt-get", *opts, "-qq", "download", *PACKAGES], check=True, capture_output=True, cwd=debs)
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root


def python_cmd(sysroot: Path, cpu: str) -> tuple[list[str], dict]:
    """argv prefix and environment running the sysroot's python3.11 under qemu emulating ``cpu``."""
    return [QEMU, "-L", str(sysroot), str(sysroot / "usr" / "bin" / "python3.11")], {"QEMU_CPU": cpu}
