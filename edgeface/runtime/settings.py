"""What the board runtime runs with: one typed settings object, from CLI flags or the TOML file a board reads.

``edgeface run`` builds a :class:`RunSettings` from its flags, or from ``--config edgeface.toml`` (the file
``edgeface flash`` writes into every release) with flags given beside it winning; the runtime
(:func:`edgeface.runtime.recognizer.load_recognizer`, the self-test) takes that object instead of a dozen keyword
arguments.  The same class writes the TOML, so what flash records is what the board reads.

A bad value raises :class:`edgeface.errors.SettingError` naming the setting by its key (``threshold``); the
layer that took the value says where it came from: the CLI names the flag (``--threshold``), a TOML file its key
and path.

Light on purpose (no numpy, no OpenCV): the CLI imports it to check flags before anything slow loads.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from edgeface.choices import did_you_mean
from edgeface.errors import SettingError, UserError
from edgeface.runtime.bundle import EDGETPU_FORMATS, FORMAT_PREFERENCE  # light: no numpy, no interpreter

# The choices a setting takes; the CLI's option help and the checks both read them.  The detector and backend tables
# are copies of the runtime's own (detector.DETECTOR_KINDS and its default, interpreter.BACKENDS), whose modules load
# OpenCV and numpy: too heavy for checking a flag or `edgeface --help`.  A test keeps the copies equal.
DETECTOR_CHOICES = ("auto", "short", "full", "haar")
DEFAULT_DETECTOR = "auto"
DETECTOR_PRECISION_CHOICES = ("float", "int8")  # detector.DETECTOR_PRECISIONS (a test keeps them equal)
BACKEND_CHOICES = ("ai_edge_litert", "tflite_runtime", "tensorflow")
DELEGATE_CHOICES = ("edgetpu",)
FORMAT_CHOICES = (*FORMAT_PREFERENCE, *EDGETPU_FORMATS)
PICK_CHOICES = ("largest",)

# --fps-limit below this is one frame every 1000 s: a typo (0.0001 for 10), not a setting.
MIN_FPS_LIMIT = 1e-3

# The TOML table ``edgeface run --config`` reads; flash also writes a [board] table (the profile), read by people.
RUN_TABLE = "run"


def check_choice(key: str, value: Optional[str], choices: tuple) -> None:
    """An unknown choice is a :class:`SettingError` with the nearest valid one suggested (None: not set)."""
    if value is None or value in choices:
        return
    raise SettingError(key, f"{value!r} is not valid{did_you_mean(value, choices)}: choose one of "
                       f"{', '.join(choices)}")


def check_positive(key: str, value: Optional[float]) -> None:
    """A count, rate or size must be a finite number above 0 (None: not set)."""
    # NaN passes `value <= 0`: ask for a finite number first
    if value is not None and not (math.isfinite(value) and value > 0):
        raise SettingError(key, f"must be a positive number, got {value}")


def check_threshold(threshold: Optional[float]) -> None:
    """A match threshold must be a cosine similarity (None: the bundle's own)."""
    if threshold is not None and not -1.0 <= float(threshold) <= 1.0:
        raise SettingError("threshold", f"{threshold} is not a cosine similarity: use a value between -1 and 1")


def parse_size(text: Optional[str]) -> Optional[tuple[int, int]]:
    """``"640x480"`` as ``(640, 480)``; None or empty: no size asked for."""
    if not text:
        return None
    parts = str(text).lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise SettingError("capture_size", f"{text!r} is not WIDTHxHEIGHT (e.g. 640x480)")
    return int(parts[0]), int(parts[1])


class SettingConflict(SettingError):
    """Settings that do not go together: ``template`` names each of ``keys`` as ``{key}``, and whoever reports the
    error names them its way (the CLI as flags: "--delegate edgetpu runs ...; drop --format int8")."""

    def __init__(self, template: str, keys: tuple[str, ...], names: Optional[Mapping[str, str]] = None) -> None:
        self.template, self.keys = template, tuple(keys)
        self.names = {k: (names or {}).get(k, k) for k in self.keys}
        text = template
        for key, name in self.names.items():  # not str.format: the values quoted in the text may hold braces
            text = text.replace("{" + key + "}", name)
        UserError.__init__(self, text)
        self.key, self.message = self.keys[0], text

    def named(self, name: str) -> SettingConflict:
        """The same conflict, its first setting called ``name``."""
        return SettingConflict(self.template, self.keys, {**self.names, self.key: name})

    def as_flag(self) -> SettingConflict:
        """The same conflict naming the CLI flags that set the settings."""
        return SettingConflict(self.template, self.keys, {k: "--" + k.replace("_", "-") for k in self.keys})


@dataclass(frozen=True)
class RunSettings:
    """Everything ``edgeface run`` (and the runtime under it) is told: which model, how it runs, what it watches.

    ``None`` means "not set": the bundle, the interpreter or the runtime then picks (the bundle's threshold, the
    interpreter's thread count, the first installed backend, the best format the bundle has).
    """

    model: Optional[str] = None  # bundle folder or shipped model name
    format: Optional[str] = None
    detector: str = DEFAULT_DETECTOR
    detector_precision: str = "float"  # the BlazeFace files run on the CPU: the wheel's float ones or their int8
    threads: Optional[int] = None
    backend: Optional[str] = None
    delegate: Optional[str] = None
    threshold: Optional[float] = None
    gallery: Optional[str] = None
    key_file: Optional[str] = None  # the gallery key's file (the key itself never enters settings)
    source: Optional[str] = None
    capture_size: Optional[str] = None  # WIDTHxHEIGHT
    fps_limit: Optional[float] = None
    max_frames: Optional[int] = None
    events: Optional[str] = None
    preview: Optional[str] = None  # HOST:PORT
    preview_token_file: Optional[str] = None
    save_unknown: Optional[str] = None
    unknown_max_files: int = 1000
    unknown_max_mb: float = 100.0
    unknown_max_days: float = 30.0
    track: bool = True  # follow faces over frames (runtime.tracker); only sources whose frames follow in time

    def check(self, *keys: str) -> RunSettings:
        """Every value in range and every choice known, else a :class:`SettingError`; returns self.

        With ``keys``, only those settings, in that order (a command checks what it reads when it reads it, so that
        of two mistakes the first it meets is the one reported); a setting with nothing to check passes.
        """
        for key in keys or tuple(_CHECKS):
            check = _CHECKS.get(key)
            if check is None and key not in _FIELDS:
                raise ValueError(f"RunSettings has no setting {key!r}")
            if check is not None:
                check(self)
        return self

    @property
    def size(self) -> Optional[tuple[int, int]]:
        """The capture size as (width, height), or None."""
        return parse_size(self.capture_size)

    def replace(self, **changes: Any) -> RunSettings:
        """A copy with ``changes`` applied; a ``None`` change leaves that setting as it is (an unset flag)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self, keys: Optional[tuple[str, ...]] = None) -> dict:
        """The settings that are set (not None and not their default), as plain JSON values, in field order."""
        out = {}
        for f in fields(self):
            if keys is not None and f.name not in keys:
                continue
            value = getattr(self, f.name)
            if value is None or (keys is None and value == f.default):
                continue
            out[f.name] = str(value) if isinstance(value, os.PathLike) else value
        return out

    def to_toml(self, header: str = "", keys: Optional[tuple[str, ...]] = None, extra: str = "") -> str:
        """The settings as a ``[run]`` TOML table that :meth:`from_toml` reads back (``extra``: tables after it)."""
        lines = [f"# {line}" if line else "#" for line in header.splitlines()]
        lines.append(f"[{RUN_TABLE}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in self.to_dict(keys).items()]
        return "\n".join(lines) + "\n" + (f"\n{extra}" if extra else "")

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any], where: str = "settings") -> RunSettings:
        """Settings from a ``[run]`` table's keys; an unknown key or a value of the wrong type is a UserError."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key not in known:
                raise UserError(f"{where}: unknown setting {key!r}{did_you_mean(key, known)}")
            values[key] = _typed(key, value, known[key], where)
        return cls(**values)

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> RunSettings:
        """The ``[run]`` table of a TOML file (``edgeface.toml`` of a flashed release), checked."""
        from edgeface.runtime.facemodel import toml_module

        path = Path(path)
        try:
            data = toml_module().loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"settings file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read settings file {path}: {getattr(exc, 'strerror', None) or exc}") from None
        except ValueError as exc:  # tomllib.TOMLDecodeError
            raise UserError(f"{path} is not valid TOML: {exc}") from None
        table = data.get(RUN_TABLE)
        if not isinstance(table, dict):
            raise UserError(f"{path} has no [{RUN_TABLE}] table of settings")
        settings = cls.from_mapping(table, where=str(path))
        try:
            return settings.check()
        except SettingError as exc:  # a plain UserError: the name is the file's key, not a flag (see user_errors)
            raise UserError(f"{path}: {exc}") from None


def _check_fps_limit(s: RunSettings) -> None:
    check_positive("fps_limit", s.fps_limit)
    if s.fps_limit is not None and s.fps_limit < MIN_FPS_LIMIT:
        raise SettingError("fps_limit", f"{s.fps_limit:g} is below {MIN_FPS_LIMIT:g} (one frame every "
                           f"{1 / MIN_FPS_LIMIT:.0f} s)")


def _check_limit(key: str) -> Callable[[RunSettings], None]:
    def check(s: RunSettings) -> None:
        value = getattr(s, key)
        if not (math.isfinite(value) and value > 0):
            raise SettingError(key, f"must be a positive number, got {value}")
    return check


# What RunSettings.check() checks, in the order it checks everything.
_CHECKS: dict[str, Callable[[RunSettings], None]] = {
    "detector": lambda s: check_choice("detector", s.detector, DETECTOR_CHOICES),
    "detector_precision": lambda s: check_choice("detector_precision", s.detector_precision,
                                                 DETECTOR_PRECISION_CHOICES),
    "backend": lambda s: check_choice("backend", s.backend, BACKEND_CHOICES),
    "delegate": lambda s: check_choice("delegate", s.delegate, DELEGATE_CHOICES),
    "format": lambda s: check_choice("format", s.format, FORMAT_CHOICES),
    "threads": lambda s: check_positive("threads", s.threads),
    "fps_limit": _check_fps_limit,
    "max_frames": lambda s: check_positive("max_frames", s.max_frames),
    "threshold": lambda s: check_threshold(s.threshold),
    "capture_size": lambda s: parse_size(s.capture_size),
    **{key: _check_limit(key) for key in ("unknown_max_files", "unknown_max_mb", "unknown_max_days")},
}
_FIELDS = frozenset(f.name for f in fields(RunSettings))

# The Python types a TOML value may have for each setting's annotation (an int is a fine float).
_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}
_TYPE_WORDS = {"str": "a text (in quotes)", "int": "a whole number", "float": "a number", "bool": "true or false"}


def _typed(key: str, value: Any, f: dataclasses.Field, where: str) -> Any:
    kind = str(f.type).replace("Optional[", "").rstrip("]")
    accepted = _TYPES.get(kind, (object,))
    if isinstance(value, bool) != (kind == "bool") or not isinstance(value, accepted):
        raise UserError(f"{where}: setting {key!r} must be {_TYPE_WORDS.get(kind, kind)}, got {value!r}")
    return float(value) if kind == "float" else value
