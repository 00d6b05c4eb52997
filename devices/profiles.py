"""Board profiles: one row per kind of board edgeface targets, and detection of the kind from the board itself.

A profile is what ``edgeface flash`` and ``edgeface benchmark`` need to know about a board without asking
the user: its CPU architecture, the Python its OS ships, the interpreter backend and delegate to use, the
camera source ``edgeface run`` should open, the thread count, and a reference latency table to compare a
benchmark against.  :data:`PROFILES` is the single table; the CLI choices, ``edgeface devices list`` and
the detection all read it.

Reference latencies are only ever figures measured on the real board (none are recorded yet: no board
was at hand); a user's own measurements can be compared with ``edgeface benchmark --reference FILE.csv``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable, Optional

from edgeface.errors import UserError
from edgeface.runtime.bundle import EDGETPU_FORMAT

# USB ids of the Coral USB Accelerator: before its firmware is loaded (Global Unichip) and after (Google).
CORAL_USB_IDS = ("1a6e:089a", "18d1:9302")
# Machine names `uname -m` reports, normalised to the two architectures edgeface has wheels for.
ARCH_ALIASES = {"aarch64": "aarch64", "arm64": "aarch64", "armv8l": "aarch64", "x86_64": "x86_64", "amd64": "x86_64"}
# The oldest Python the edgeface runtime installs on (pyproject's requires-python).
MIN_PYTHON = (3, 9)


@dataclass(frozen=True)
class ReferenceLatency:
    """One measured median latency of a model file on a board."""

    model: str  # manifest model name, or a file name
    format: str  # fp32, int8, edgetpu_compiled, ...
    threads: int
    p50_ms: float
    source: str  # how and when it was measured


@dataclass(frozen=True)
class BoardProfile:
    """Everything edgeface assumes about one kind of board."""

    name: str
    title: str
    arch: str  # normalised `uname -m`: aarch64 or x86_64
    python: Optional[str]  # the Python the board's usual OS ships ("3.11"), None when it varies
    os: str
    backend: str  # interpreter backend (edgeface.runtime.interpreter.BACKENDS)
    delegate: Optional[str]  # None (CPU, XNNPACK) or "edgetpu"
    model_format: str  # the bundle format to run by default
    source: str  # default camera source for `edgeface run`
    threads: Optional[int]  # interpreter threads; None: every core
    system_site_packages: bool = False  # the venv sees apt packages (picamera2 exists only as an apt package)
    extra_requirements: tuple[str, ...] = ()  # pip requirements on top of the edgeface wheel
    model_patterns: tuple[str, ...] = ()  # substrings of /proc/device-tree/model that identify the board
    needs_usb: tuple[str, ...] = ()  # USB vendor:product ids that must be present (any of them)
    reference: tuple[ReferenceLatency, ...] = ()
    notes: str = ""

    def reference_ms(self, model: str, fmt: str, threads: int) -> Optional[float]:
        """The reference median latency for (model, format, threads), if one was measured."""
        for ref in self.reference:
            if ref.model == model and ref.format == fmt and ref.threads == threads:
                return ref.p50_ms
        return None

    def to_dict(self) -> dict:
        return {
            "name": self.name, "title": self.title, "arch": self.arch, "python": self.python, "os": self.os,
            "backend": self.backend, "delegate": self.delegate, "model_format": self.model_format,
            "source": self.source, "threads": self.threads, "system_site_packages": self.system_site_packages,
            "extra_requirements": list(self.extra_requirements), "model_patterns": list(self.model_patterns),
            "needs_usb": list(self.needs_usb),
            "reference": [ref.__dict__ for ref in self.reference], "notes": self.notes,
        }


_PI_NOTE = ("Raspberry Pi OS (64-bit) Bookworm; the venv uses --system-site-packages because picamera2 "
            "is only packaged for apt (sudo apt-get install python3-picamera2).")
# tflite-runtime is the interpreter pycoral documents for libedgetpu; its last release (2.14) needs numpy<2.
_CORAL_REQUIREMENTS = ("tflite-runtime>=2.5", "numpy<2")

PROFILES: tuple[BoardProfile, ...] = (
    BoardProfile(
        name="rpi5", title="Raspberry Pi 5", arch="aarch64", python="3.11", os="Raspberry Pi OS Bookworm (64-bit)",
        backend="ai_edge_litert", delegate=None, model_format="int8", source="picamera2", threads=4,
        system_site_packages=True, model_patterns=("Raspberry Pi 5",), notes=_PI_NOTE,
    ),
    BoardProfile(
        name="rpi4", title="Raspberry Pi 4 / 400 / CM4", arch="aarch64", python="3.11",
        os="Raspberry Pi OS Bookworm (64-bit)", backend="ai_edge_litert", delegate=None, model_format="int8",
        source="picamera2", threads=4, system_site_packages=True,
        model_patterns=("Raspberry Pi 4", "Raspberry Pi 400", "Raspberry Pi Compute Module 4"), notes=_PI_NOTE,
    ),
    BoardProfile(
        name="rpi-zero-2w", title="Raspberry Pi Zero 2 W", arch="aarch64", python="3.11",
        os="Raspberry Pi OS Bookworm (64-bit; the 32-bit armv7l OS has no ai-edge-litert wheels)",
        backend="ai_edge_litert", delegate=None, model_format="int8", source="picamera2", threads=4,
        system_site_packages=True, model_patterns=("Raspberry Pi Zero 2",),
        notes=_PI_NOTE + " 512 MB of RAM: keep one model loaded and the short-range detector.",
    ),
    BoardProfile(
        name="coral-devboard", title="Coral Dev Board (i.MX 8M + Edge TPU)", arch="aarch64", python="3.7",
        os="Mendel Linux 5.3 (Debian 10)", backend="tflite_runtime", delegate="edgetpu",
        model_format=EDGETPU_FORMAT, source="/dev/video0", threads=4,
        extra_requirements=_CORAL_REQUIREMENTS, model_patterns=("Phanbeh", "Coral Dev Board"),
        notes="Mendel's Python 3.7 is older than edgeface needs (3.9+): install a newer Python and pass --python. "
              "libedgetpu1-std comes preinstalled on Mendel.",
    ),
    BoardProfile(
        name="coral-usb-pi", title="Coral USB Accelerator on a Raspberry Pi 4/5", arch="aarch64", python="3.11",
        os="Raspberry Pi OS Bookworm (64-bit)", backend="tflite_runtime", delegate="edgetpu",
        model_format=EDGETPU_FORMAT, source="picamera2", threads=4, system_site_packages=True,
        extra_requirements=_CORAL_REQUIREMENTS, model_patterns=("Raspberry Pi",), needs_usb=CORAL_USB_IDS,
        notes="Needs libedgetpu1-std from Coral's apt repository; plug the accelerator into a USB 3 port.",
    ),
    BoardProfile(
        name="generic-aarch64", title="Generic aarch64 Linux", arch="aarch64", python=None,
        os="any 64-bit ARM Linux with glibc >= 2.17", backend="ai_edge_litert", delegate=None, model_format="int8",
        source="0", threads=None,
    ),
    BoardProfile(
        name="generic-x86_64", title="Generic x86-64 Linux", arch="x86_64", python=None,
        os="any x86-64 Linux with glibc >= 2.17", backend="ai_edge_litert", delegate=None, model_format="int8",
        source="0", threads=None,
    ),
)

PROFILE_NAMES = tuple(p.name for p in PROFILES)


def get_profile(name: str) -> BoardProfile:
    """The profile called ``name``; an unknown name fails with the nearest suggestion."""
    for profile in PROFILES:
        if profile.name == name:
            return profile
    close = difflib.get_close_matches(name, PROFILE_NAMES, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UserError(f"unknown board profile {name!r}: {hint}choose one of {', '.join(PROFILE_NAMES)} "
                    "(see `edgeface devices list`)")


def normalise_arch(machine: str) -> str:
    """``uname -m`` output -> aarch64 / x86_64 (other values returned as they are)."""
    return ARCH_ALIASES.get(machine.strip().lower(), machine.strip().lower())


@dataclass
class Detection:
    """Why a profile was chosen for a board."""

    profile: BoardProfile
    model: Optional[str]
    machine: str
    reason: str
    usb_ids: list[str] = field(default_factory=list)


def detect_profile(model: Optional[str], machine: str, usb_ids: Iterable[str] = ()) -> Detection:
    """Pick the profile for a board from its device-tree model string, ``uname -m`` and USB ids.

    A board whose device-tree model matches a known board gets that profile (a Pi with a Coral USB
    Accelerator plugged in gets ``coral-usb-pi``); anything else falls back to the generic profile of its
    architecture.  An architecture edgeface has no wheels for (32-bit ARM, ...) is refused.
    """
    arch = normalise_arch(machine)
    model = (model or "").replace("\x00", "").strip() or None
    usb = sorted({u.strip().lower() for u in usb_ids})
    if arch not in ("aarch64", "x86_64"):
        hint = (" (a 32-bit OS on a 64-bit Pi: install Raspberry Pi OS 64-bit)"
                if model and "Raspberry Pi" in model else "")
        raise UserError(f"no edgeface profile for architecture {machine.strip()!r}{hint}: the runtime needs "
                        "aarch64 or x86-64 Linux (ai-edge-litert has no wheels for other architectures)")
    if model:
        matched = [p for p in PROFILES if p.arch == arch and any(pat in model for pat in p.model_patterns)]
        with_usb = [p for p in matched if p.needs_usb and set(p.needs_usb) & set(usb)]
        if with_usb:
            return Detection(with_usb[0], model, machine, f"device-tree model {model!r} and USB id "
                             f"{sorted(set(with_usb[0].needs_usb) & set(usb))[0]}", usb)
        plain = [p for p in matched if not p.needs_usb]
        if plain:
            return Detection(plain[0], model, machine, f"device-tree model {model!r}", usb)
    generic = get_profile(f"generic-{arch}")
    why = f"uname -m {machine.strip()!r}" + (f" (device-tree model {model!r} has no profile)" if model else "")
    return Detection(generic, model, machine, why, usb)


def compare_latency(measured_ms: float, reference_ms: Optional[float], tolerance: float) -> tuple[str, Optional[float]]:
    """Compare a measured median with a reference: ("ok" | "slower" | "faster" | "", relative change).

    ``tolerance`` is a fraction (0.15: within +-15 % counts as ok).  No reference gives ("", None).
    """
    if reference_ms is None or reference_ms <= 0:
        return "", None
    change = measured_ms / reference_ms - 1.0
    if change > tolerance:
        return "slower", change
    if change < -tolerance:
        return "faster", change
    return "ok", change
