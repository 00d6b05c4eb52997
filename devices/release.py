"""A release before it reaches a board: the checked bundle and gallery, the wheel, and its settings."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edgeface.devices.inventory import Board
from edgeface.devices.profiles import BoardProfile, detect_profile, get_profile
from edgeface.devices.remote import CONFIG_NAME, GALLERY_NAME, q
from edgeface.devices.wheels import build_runtime_wheel
from edgeface.errors import UserError
from edgeface.runtime.gallery_crypto import GalleryKey
from edgeface.runtime.settings import RunSettings

KEYS_DIR = "keys"  # under the deployment folder, beside releases/: keys outlive releases (rollback needs them)


@dataclass
class LocalRelease:
    """What is uploaded to every board, prepared once per command."""

    wheel: Path
    bundle_root: Path
    bundle_files: list[tuple[Path, str]]  # (local file, path inside bundle/)
    manifest: dict
    gallery: Optional[Path]
    content_id: str
    edgeface_version: str
    workdir: Path
    seconds: float = 0.0  # time spent preparing it
    gallery_key: Optional[GalleryKey] = None  # an encrypted gallery's key, to put on the board
    board_key_file: Optional[str] = None  # or where the board already holds it (the user's to place)

    @property
    def gallery_encrypted(self) -> bool:
        return self.gallery_key is not None or self.board_key_file is not None

    @property
    def model_name(self) -> str:
        return str(self.manifest.get("model", {}).get("name", "model"))

    @property
    def formats(self) -> list[str]:
        return [f["format"] for f in self.manifest.get("files", [])]

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def prepare_release(bundle_dir: Path, gallery: Optional[Path] = None, fmt: Optional[str] = None,
                    wheel: Optional[Path] = None, workdir: Optional[Path] = None,
                    gallery_key: Optional[GalleryKey] = None, board_key_file: Optional[str] = None) -> LocalRelease:
    """Check the bundle and gallery here, build the wheel: everything that does not need the board.

    An encrypted gallery needs ``gallery_key`` (opened here, so a wrong key fails before any board is touched;
    the key then goes to each board) or ``board_key_file``, a path on the board where the user keeps its key
    (then only the model identity in the gallery's clear header can be checked here).  A plain gallery needs
    neither and ignores a key (nothing to open).
    """
    from edgeface import __version__
    from edgeface.runtime.bundle import MANIFEST_NAME, Bundle, sha256_file

    t0 = time.perf_counter()
    bundle = Bundle.load(bundle_dir)
    if not bundle.files:
        raise UserError(f"bundle {bundle.root} lists no model files: re-run `edgeface export`")
    files: list[tuple[Path, str]] = [(bundle.root / MANIFEST_NAME, MANIFEST_NAME)]
    for entry in list(bundle.files) + list(bundle.manifest.get("detectors", [])):
        path = bundle.root / entry["path"]
        bundle.verify(path, entry)  # refuse a corrupted bundle here, before touching any board
        files.append((path, entry["path"]))
    if fmt is not None:
        bundle.entry(fmt)  # fails with the formats the bundle has
    if gallery is not None:
        gallery = Path(gallery)
        if not gallery.is_file():
            raise UserError(f"gallery file not found: {gallery} (make one with `edgeface enroll`)")
        from edgeface.runtime.gallery import Gallery, ModelId, sealed_model

        # Refuses a gallery enrolled with another model (its embeddings would not compare).
        model_id = ModelId.from_bundle(bundle, fmt if fmt in bundle.formats else None)
        sealed = sealed_model(gallery)
        if sealed is None:
            gallery_key = board_key_file = None
            Gallery.load(gallery, model_id)
        elif gallery_key is not None:
            board_key_file = None
            Gallery.load(gallery, model_id, key=gallery_key)
        elif board_key_file is not None:
            Gallery(model=sealed).check_model(model_id, gallery)
        else:
            raise UserError(f"gallery {gallery} is encrypted: pass --key-file FILE to put its key on the board, or "
                            "--board-key-file PATH where the board already holds it")
    else:
        gallery_key = board_key_file = None
    workdir = workdir or Path(tempfile.mkdtemp(prefix="edgeface-flash-"))
    if wheel is not None:
        wheel = Path(wheel)
        if not wheel.is_file() or not wheel.name.startswith("edgeface-") or wheel.suffix != ".whl":
            raise UserError(f"--wheel {wheel}: not an edgeface wheel file (edgeface-X-py3-none-any.whl)")
    else:
        wheel = build_runtime_wheel(workdir)
    h = hashlib.sha256()
    for path in [wheel] + [p for p, _ in files] + ([gallery] if gallery else []):
        h.update(sha256_file(path).encode())
    version = wheel.name.split("-")[1] if wheel.name.count("-") >= 2 else __version__
    return LocalRelease(wheel=wheel, bundle_root=bundle.root, bundle_files=files, manifest=bundle.manifest,
                        gallery=gallery, content_id=h.hexdigest(), edgeface_version=version, workdir=workdir,
                        seconds=time.perf_counter() - t0, gallery_key=gallery_key, board_key_file=board_key_file)


def board_key_path(root: str, local: LocalRelease) -> Optional[str]:
    """Where the release's gallery key is on the board: the user's --board-key-file, or the key flash puts in
    ``<root>/keys/`` (one file per key, named by its id: a rollback to a release sealed under an older key
    still finds it)."""
    if local.board_key_file is not None:
        return local.board_key_file
    if local.gallery_key is not None:
        return f"{root}/{KEYS_DIR}/gallery-{local.gallery_key.key_id}.key"
    return None


def resolve_profile(board: Board, cfg_profile: Optional[str], identity: dict) -> tuple[BoardProfile, str]:
    """The profile to use: --profile, else the inventory's, else detected from the board."""
    name = cfg_profile or board.profile
    if name:
        return get_profile(name), "given"
    det = detect_profile(identity.get("model") if identity.get("model_from_device_tree") else None,
                         identity.get("machine", ""), identity.get("usb_ids", []))
    return det.profile, f"detected: {det.reason}"


# The ``edgeface run`` settings a release records: every one of them in release.json's "settings" (beside "profile",
# None when not set, as every edgeface version wrote them: `devices status` and rollback read that), the ones set in
# edgeface.toml's [run] table (what run.sh runs with).
RUN_KEYS = ("model", "format", "source", "threads", "backend", "delegate", "gallery", "key_file")
# Written only when flash was told them (--detector, --detector-precision): a release flashed without them keeps
# run's defaults, and its files read as before.
DETECTION_KEYS = ("detector", "detector_precision")


@dataclass(frozen=True)
class ReleaseSettings:
    """What a release runs with on its board: the profile it was made for, and the settings ``edgeface run`` reads
    from the release's ``edgeface.toml``."""

    profile: str
    run: RunSettings

    @property
    def keys(self) -> tuple[str, ...]:
        """The run settings this release records: :data:`RUN_KEYS`, and the detection ones flash was given."""
        default = RunSettings()
        return RUN_KEYS + tuple(k for k in DETECTION_KEYS if getattr(self.run, k) != getattr(default, k))

    def to_dict(self) -> dict:
        """release.json's ``settings``: plain JSON, every key present (None: not set)."""
        return {"profile": self.profile, **{key: getattr(self.run, key) for key in self.keys}}

    def to_toml(self, release_id: str) -> str:
        """``edgeface.toml`` of a release: the [run] table run.sh starts ``edgeface run --config`` with, and the
        profile in a [board] table (for people; the runtime does not read it)."""
        return self.run.to_toml(
            header=f"Written by `edgeface flash` for release {release_id}; run.sh runs edgeface with these settings.",
            keys=self.keys, extra=f"[board]\nprofile = {json.dumps(self.profile)}\n")


def release_settings(profile: BoardProfile, board: Board, local: LocalRelease, fmt: Optional[str] = None,
                     source: Optional[str] = None, threads: Optional[int] = None,
                     key_file: Optional[str] = None, detector: Optional[str] = None,
                     detector_precision: Optional[str] = None) -> ReleaseSettings:
    """The settings ``edgeface run`` gets on this board: flags beat the inventory, which beats the profile."""
    detection = {k: v for k, v in (("detector", detector), ("detector_precision", detector_precision)) if v}
    if fmt is None:
        fmt = profile.model_format if profile.model_format in local.formats else None
        if fmt is None and profile.delegate == "edgetpu":
            raise UserError(f"profile {profile.name} runs an Edge TPU model but bundle {local.bundle_root} has "
                            f"none ({', '.join(local.formats)}): compile one with `edgeface export --format "
                            "edgetpu`, or pick another --profile")
    return ReleaseSettings(profile=profile.name, run=RunSettings(
        model="bundle",
        format=fmt,
        source=str(source or board.source or profile.source),  # an inventory's camera index is a TOML number
        threads=threads or board.threads or profile.threads,
        backend=profile.backend,
        delegate=profile.delegate,
        gallery=GALLERY_NAME if local.gallery else None,
        key_file=key_file if local.gallery else None,  # a path on the board; the key never enters settings
        **detection,
    ))


def run_args(settings: dict, self_test: bool = False) -> list[str]:
    """``edgeface run`` arguments for a release's settings (paths relative to the release folder).

    ``settings`` is release.json's (:meth:`ReleaseSettings.to_dict`): rollback runs the self-test of a release
    that an older edgeface flashed with these flags, which that release's runtime knows (``--config`` it may not).
    """
    args = ["run", "--model", settings["model"]]
    if settings.get("format"):
        args += ["--format", settings["format"]]
    if settings.get("threads"):
        args += ["--threads", str(settings["threads"])]
    if settings.get("backend"):
        args += ["--backend", settings["backend"]]
    if settings.get("delegate"):
        args += ["--delegate", settings["delegate"]]
    for key in DETECTION_KEYS:  # present only in releases flashed with them, whose runtime knows the flags
        if settings.get(key):
            args += ["--" + key.replace("_", "-"), settings[key]]
    if self_test:
        return args + ["--self-test"]
    args += ["--source", settings["source"]]
    if settings.get("gallery"):
        args += ["--gallery", settings["gallery"]]
        if settings.get("key_file"):
            args += ["--key-file", settings["key_file"]]
    return args


def self_test_args() -> list[str]:
    """``edgeface run`` arguments that self-test a release flashed by this edgeface: with its ``edgeface.toml``,
    read by the release's own runtime, as run.sh will start it."""
    return ["run", "--config", CONFIG_NAME, "--self-test"]


def gallery_check_args(run: RunSettings) -> list[str]:
    """``edgeface`` arguments that open the release's gallery (with its key) and exit 0 only if it opens."""
    args = ["gallery", "list", "--gallery", run.gallery, "--json"]
    if run.key_file:
        args += ["--key-file", run.key_file]
    return args


def run_script() -> str:
    """``run.sh``: start the runtime from the release folder (what the service and a person run) with the
    release's ``edgeface.toml``; arguments given to run.sh are passed on (flags beside ``--config`` win)."""
    return ("#!/bin/sh\n"
            "# Written by `edgeface flash`: runs this release's runtime with its settings (edgeface.toml).\n"
            'cd "$(dirname "$(readlink -f "$0")")" || exit 1\n'
            f'exec ./venv/bin/edgeface run --config {q(CONFIG_NAME)} "$@"\n')
