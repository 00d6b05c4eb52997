"""The runtime's wheels: edgeface built from this checkout, and its dependencies for a board's platform.

``pip wheel --no-deps`` builds edgeface itself; ``pip download --platform ... --python-version ...
--only-binary=:all:`` fetches numpy, OpenCV and LiteRT wheels for the board's architecture, glibc and
Python, so ``edgeface flash --offline`` can install on a board with no route to a package index.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Optional

from edgeface.devices.profiles import normalise_arch
from edgeface.errors import UserError


def find_checkout() -> Optional[Path]:
    """The source checkout edgeface runs from (the folder with pyproject.toml), if any."""
    import edgeface

    root = Path(edgeface.__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "devices").is_dir() else None


def build_runtime_wheel(dest: Path, checkout: Optional[Path] = None) -> Path:
    """Build the edgeface wheel from the checkout with ``pip wheel --no-deps``.

    The sources are copied to a clean folder first: building in the checkout would reuse its ``build/``
    folder, where setuptools keeps files that have since been deleted from the sources.
    """
    checkout = checkout or find_checkout()
    if checkout is None:
        raise UserError("cannot build the runtime wheel: edgeface is not running from a source checkout; "
                        "pass --wheel edgeface-X-py3-none-any.whl")
    src = dest / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist", ".*")
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "LICENSE", "setup.cfg", "MANIFEST.in"):
        if (checkout / name).is_file():
            shutil.copy2(checkout / name, src / name)
    for name in ("edgeface", "converters", "devices"):
        if (checkout / name).is_dir():
            shutil.copytree(checkout / name, src / name, ignore=ignore)
    out = dest / "wheel"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q", "-w", str(out)]
    try:  # offline laptops: build with the setuptools installed here rather than an isolated one from the index
        import setuptools  # noqa: F401

        cmd.append("--no-build-isolation")
    except ImportError:
        pass
    proc = subprocess.run(cmd + [str(src)], capture_output=True, text=True)
    wheels = sorted(out.glob("edgeface-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise UserError(f"building the edgeface wheel failed: {tail_lines(proc.stderr or proc.stdout)}")
    shutil.rmtree(src, ignore_errors=True)
    return wheels[0]


def tail_lines(text: str, n: int = 2) -> str:
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) if lines else "no output"


def platform_tags(arch: str, libc: list) -> list[str]:
    """pip ``--platform`` tags a board accepts: manylinux for its glibc and architecture, newest first."""
    arch = normalise_arch(arch)
    name, version = (list(libc) + ["", ""])[:2]
    if name != "glibc":
        raise UserError(f"--offline needs a glibc board (this one reports {name or 'no libc'!r}); "
                        "install from the package index instead (leave out --offline)")
    try:
        major, minor = (int(x) for x in version.split(".")[:2])
    except ValueError:
        raise UserError(f"cannot read the board's glibc version {version!r}") from None
    tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 16, -1)]
    return tags + [f"manylinux2014_{arch}", f"linux_{arch}"]


_download_locks: dict[str, threading.Lock] = {}


_download_locks_guard = threading.Lock()


def download_wheels(wheel: Path, requirements: tuple[str, ...], python_version: str, arch: str, libc: list,
                    wheelhouse: Path) -> list[Path]:
    """Wheels of edgeface's dependencies for the board's platform and Python, downloaded here (cached).

    The wheelhouse is tried on its own first (no network), so flashing many boards of one kind, or the
    same board again, downloads nothing.  The edgeface wheel itself is never taken from the cache (it
    changes with every edit while keeping its version number): the caller adds the one just built.
    """
    tags = platform_tags(arch, libc)
    py = ".".join(python_version.split(".")[:2])
    folder = Path(wheelhouse) / f"cp{py.replace('.', '')}-{normalise_arch(arch)}"
    folder.mkdir(parents=True, exist_ok=True)
    with _download_locks_guard:
        lock = _download_locks.setdefault(str(folder), threading.Lock())
    base = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q", "--only-binary=:all:",
            "--python-version", py, "--implementation", "cp"]
    for tag in tags:
        base += ["--platform", tag]
    reqs = [str(wheel)] + list(requirements)
    with lock, tempfile.TemporaryDirectory() as tmp:
        # Resolve from the cache alone into a scratch folder: exactly the files this release needs.
        from_cache = base + ["-d", tmp, "--no-index", "--find-links", str(folder)] + reqs
        proc = subprocess.run(from_cache, capture_output=True, text=True)
        if proc.returncode != 0:
            fetch = subprocess.run(base + ["-d", str(folder)] + reqs, capture_output=True, text=True)
            if fetch.returncode != 0:
                raise UserError(f"pip download for Python {py} on {arch} failed: {tail_lines(fetch.stderr)}")
            proc = subprocess.run(from_cache, capture_output=True, text=True)
            if proc.returncode != 0:
                raise UserError(f"the downloaded wheels for the board do not resolve: {tail_lines(proc.stderr)}")
        names = sorted(p.name for p in Path(tmp).glob("*.whl") if not p.name.startswith("edgeface-"))
        (folder / wheel.name).unlink(missing_ok=True)
    return [folder / n for n in names]
