"""``edgeface flash``: runtime + model + gallery onto a board over SSH, as atomic releases with rollback.

The steps, each reported as it ends: prepare (here: check the bundle and gallery, build the wheel), connect,
check the board (architecture, Python, venv), download wheels (--offline), check free disk, upload to
``.incoming/<id>`` and verify checksums, install the runtime in a venv, health check (``edgeface run --config
edgeface.toml --self-test`` on the board), switch ``current``, install/restart the systemd service, prune old releases.
The folder layout is described in :mod:`edgeface.devices.remote`.

Every step before ``switch`` works beside the running release, so a failure anywhere (no space, a dropped
connection, a model that fails its self-test) leaves ``current`` and the running service untouched.  The
service step restarts the unit and checks that it stays up; if it does not, the board's service goes back to
what it was (the old unit, or none at all) and ``current`` to the previous release, whose service is restarted
only if it had one.
"""

from __future__ import annotations

import concurrent.futures
import json
import platform
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Optional

from edgeface.devices.inventory import Board
from edgeface.devices.profiles import MIN_PYTHON, BoardProfile, normalise_arch
from edgeface.devices.release import (
    LocalRelease,
    ReleaseSettings,
    board_key_path,
    gallery_check_args,
    prepare_release,
    release_settings,
    resolve_profile,
    run_script,
    self_test_args,
    sha256_bytes,
)
from edgeface.devices.remote import (
    CONFIG_NAME,
    CURRENT,
    GALLERY_NAME,
    HEALTHY,
    INCOMING,
    RELEASES,
    RUN_SCRIPT,
    acquire_lock,
    check_board_key,
    check_remote_dir,
    failed_checks,
    health_check,
    human,
    install_key,
    new_release_id,
    q,
    read_service_info,
    remote_probe,
    select_prunable,
    switch_current,
    upload,
    utc_now,
    who_am_i,
)
from edgeface.devices.service import (
    SERVICE_MODES,
    install_unit,
    remove_unit,
    restart_service,
    restore_service,
    snapshot_service,
)
from edgeface.devices.ssh import SSHConnection, SSHOptions
from edgeface.devices.steps import (
    BoardSession,
    FlashResult,
    StepCallback,
    StepFailed,
    StepRunner,
    connect_step,
    switch_back,
)
from edgeface.devices.wheels import download_wheels
from edgeface.errors import UserError
from edgeface.runtime.gallery_crypto import GalleryKey

# Space a runtime takes once installed, per byte of wheels: the x86-64 venv measured here is 351 MB from
# 106 MB of wheels (numpy, opencv-python-headless, ai-edge-litert), 3.3x.
INSTALL_EXPANSION = 3.5
# Installed size assumed when the board installs from an index (the wheels' sizes are not known here).
ONLINE_INSTALL_BYTES = 400 * 1024 * 1024


@dataclass
class FlashConfig:
    """What to put on the boards and how (the CLI flags of ``edgeface flash``)."""

    bundle: Path
    gallery: Optional[Path] = None
    gallery_key: Optional[GalleryKey] = None  # an encrypted gallery's key: put on each board, 0600, apart
    board_key_file: Optional[str] = None  # or the path where each board already holds it
    profile: Optional[str] = None  # None: detected on each board (or the inventory's)
    format: Optional[str] = None  # bundle format to run; None: the profile's if the bundle has it
    source: Optional[str] = None  # camera source; None: the board's or the profile's
    threads: Optional[int] = None
    detector: Optional[str] = None  # detection mode on the board; None: run's default (auto)
    detector_precision: Optional[str] = None  # float or int8 BlazeFace files; None: float
    offline: bool = False  # install from wheels downloaded here instead of the board reaching an index
    wheelhouse: Optional[Path] = None  # where --offline keeps downloaded wheels (a cache)
    wheel: Optional[Path] = None  # a prebuilt edgeface wheel instead of building one from this checkout
    keep: int = 3
    service: str = "system"
    service_name: str = "edgeface"
    min_free_mb: float = 100.0  # free space to leave on the board beyond the release
    install_timeout: float = 1800.0  # a Pi Zero 2 W installing numpy + OpenCV from an index takes minutes
    health_timeout: float = 300.0
    system_site_packages: Optional[bool] = None  # None: the profile's choice
    clean_install: bool = False  # never reuse the current release's installed dependencies
    break_lock: bool = False  # remove a board lock left by a flash or rollback that no longer runs


@dataclass
class Flash(BoardSession):
    """One board's flash so far: what it was given, and what the steps learned and did there (filled in as they
    run; the recovery after a failed step undoes from it)."""

    cfg: FlashConfig
    local: LocalRelease
    upload_progress: Optional[Callable[[int, int], None]] = None
    profile: Optional[BoardProfile] = field(default=None, init=False)
    settings: Optional[ReleaseSettings] = field(default=None, init=False)
    state: dict = field(default_factory=dict, init=False)  # releases and current, read under the lock
    wheels: list[Path] = field(default_factory=list, init=False)  # what the release installs; edgeface's last
    deps_key: Optional[str] = field(default=None, init=False)  # see dependency_key (--offline only)
    staging: Optional[str] = field(default=None, init=False)  # .incoming/<id> while uploading
    health: dict = field(default_factory=dict, init=False)  # the self-test's report
    switched: bool = field(default=False, init=False)  # `current` points at the new release now


def _check(flash: Flash) -> str:
    conn, board, cfg = flash.conn, flash.board, flash.cfg
    ident = remote_probe(conn, board.python, "identity", board.remote_dir)
    flash.identity = ident
    root = ident["remote_dir"]
    check_remote_dir(root, board.address)
    flash.root = root
    profile, how = resolve_profile(board, cfg.profile, ident)
    flash.profile = profile
    arch = normalise_arch(ident.get("machine", ""))
    if arch != profile.arch:
        raise UserError(f"{board.address} is {ident.get('machine')} but profile {profile.name} is for "
                        f"{profile.arch}: pick the right --profile (see `edgeface devices list`)")
    py = tuple(int(x) for x in ident["python"].split(".")[:2])
    if py < MIN_PYTHON:
        raise UserError(f"{board.python} on {board.address} is Python {ident['python']}; the edgeface runtime "
                        f"needs {'.'.join(map(str, MIN_PYTHON))}+: install a newer Python and pass --python PATH")
    if not ident.get("venv"):
        raise UserError(f"{board.python} on {board.address} cannot create virtual environments: "
                        "install the venv module there (sudo apt-get install python3-venv)")
    flash.settings = release_settings(profile, board, flash.local, cfg.format, cfg.source, cfg.threads,
                                      key_file=board_key_path(root, flash.local), detector=cfg.detector,
                                      detector_precision=cfg.detector_precision)
    # Held until this flash ends: the state read next stays true while it works (see acquire_lock).
    broken = acquire_lock(conn, root, "flash", break_lock=cfg.break_lock)
    flash.locked = True
    flash.state = remote_probe(conn, board.python, "state", root, "0")
    warn = ""
    if profile.python and ident["python"].rsplit(".", 1)[0] != profile.python and cfg.profile:
        warn = f" (profile expects Python {profile.python})"
    board_name = f"{ident['model']}, " if ident.get("model") else ""
    broke = f"; removed the lock of {broken}" if broken else ""
    return (f"{board_name}{ident['machine']}, Python {ident['python']}{warn}, "
            f"profile {profile.name} ({how}), current release: {flash.state.get('current') or 'none'}{broke}")


def _wheels(flash: Flash) -> str:
    cfg, local, profile, ident = flash.cfg, flash.local, flash.profile, flash.identity
    if not cfg.offline:
        flash.wheels = [local.wheel]
        return "skipped: the board installs the dependencies from its package index (--offline to bring them)"
    wheelhouse = Path(cfg.wheelhouse or Path.home() / ".cache" / "edgeface" / "wheelhouse")
    wheels = download_wheels(local.wheel, profile.extra_requirements, ident["python"], ident["machine"],
                             ident.get("libc", []), wheelhouse) + [local.wheel]
    flash.wheels = wheels
    flash.deps_key = dependency_key(ident["python"], [w.name for w in wheels[:-1]], profile.extra_requirements,
                                    _site_packages(cfg, profile))
    return f"{len(wheels)} wheels, {human(sum(w.stat().st_size for w in wheels))}, for Python " \
           f"{ident['python']} {ident['machine']} (cache {wheelhouse})"


def _release_members(flash: Flash) -> list[tuple[Path, str]]:
    local = flash.local
    members = [(w, f"wheels/{w.name}") for w in flash.wheels]
    members += [(p, f"bundle/{name}") for p, name in local.bundle_files]
    if local.gallery:
        members.append((local.gallery, GALLERY_NAME))
    return members


def _space(flash: Flash) -> str:
    cfg = flash.cfg
    upload = sum(p.stat().st_size for p, _ in _release_members(flash))
    wheels_bytes = sum(w.stat().st_size for w in flash.wheels)
    install = wheels_bytes * INSTALL_EXPANSION if cfg.offline else ONLINE_INSTALL_BYTES
    need = upload + install + cfg.min_free_mb * 1e6
    free = float(flash.identity.get("free_bytes", 0))
    if free < need:
        raise UserError(f"not enough disk space on {flash.identity.get('hostname')}: {human(free)} free under "
                        f"{flash.root}, need {human(need)} (release {human(upload + install)} + --min-free-mb "
                        f"{cfg.min_free_mb:g}); free some space there (old releases beyond --keep are pruned "
                        "only after a flash succeeds, so a lower --keep does not help this one)")
    return f"{human(free)} free, need {human(need)} (upload {human(upload)}, install ~{human(install)})"


def _upload_release(flash: Flash) -> str:
    conn, cfg, local, root = flash.conn, flash.cfg, flash.local, flash.root
    existing = {r["id"] for r in flash.state.get("releases", [])}
    rid = flash.release_id = new_release_id(local.content_id, existing)
    staging = f"{root}/{INCOMING}/{rid}"
    flash.staging = staging
    # One folder per board: boards flashed in parallel get different settings (profiles) under the same id.
    work = Path(tempfile.mkdtemp(prefix="meta-", dir=local.workdir))
    settings = flash.settings
    info = {
        "id": rid, "created": utc_now(), "flashed_by": who_am_i(), "edgeface_version": local.edgeface_version,
        "wheel": local.wheel.name, "offline": cfg.offline, "model": local.model_name,
        "formats": local.formats, "manifest_sha256": sha256_bytes((local.bundle_root / "manifest.json").read_bytes()),
        "gallery": bool(local.gallery), "settings": settings.to_dict(), "local_python": platform.python_version(),
        "board_python": flash.identity["python"], "deps_key": flash.deps_key,
    }
    (work / "release.json").write_text(json.dumps(info, indent=2))
    (work / CONFIG_NAME).write_text(settings.to_toml(rid))
    script = work / RUN_SCRIPT
    script.write_text(run_script())
    script.chmod(0o755)
    members = _release_members(flash)
    members += [(work / "release.json", "release.json"), (work / CONFIG_NAME, CONFIG_NAME), (script, RUN_SCRIPT)]
    from edgeface.runtime.bundle import sha256_file

    sums = "".join(f"{sha256_file(p)}  {name}\n" for p, name in members)
    (work / "SHA256SUMS").write_text(sums)
    members.append((work / "SHA256SUMS", "SHA256SUMS"))
    sent = upload(conn, staging, members, flash.upload_progress)
    # Verify what arrived, then make it a release in one rename.
    conn.check(f"cd {q(staging)} && sha256sum -c --quiet SHA256SUMS", "checking the uploaded files")
    final = f"{root}/{RELEASES}/{rid}"
    conn.check(f"mkdir -p {q(root + '/' + RELEASES)} && mv -T {q(staging)} {q(final)}", "moving the upload")
    flash.release_dir = final
    key_note = ""
    if local.gallery_key is not None:
        # Sent on stdin, never on a command line (which `ps` and logs show); beside releases/, not in one
        install_key(conn, settings.run.key_file, local.gallery_key.to_text())
        key_note = f", gallery key {local.gallery_key.key_id} -> {settings.run.key_file} (0600)"
    elif local.board_key_file is not None:
        check_board_key(conn, local.board_key_file)
        key_note = f", gallery key at {local.board_key_file} (the board's)"
    return f"{len(members)} files, {human(sent)} -> {final}{key_note}"


def dependency_key(python_version: str, dependency_wheels: list[str], extra: tuple[str, ...], site: bool) -> str:
    """What decides a release's installed dependencies: equal keys mean identical site-packages but edgeface."""
    text = json.dumps([python_version, sorted(dependency_wheels), list(extra), site])
    return sha256_bytes(text.encode())[:16]


def _site_packages(cfg: FlashConfig, profile: BoardProfile) -> bool:
    return profile.system_site_packages if cfg.system_site_packages is None else cfg.system_site_packages


def _reusable_release(flash: Flash) -> Optional[str]:
    """The current release, if its dependencies are exactly this release's (offline wheels, same Python)."""
    key = flash.deps_key
    current = flash.state.get("current")
    if flash.cfg.clean_install or not key or not current:
        return None
    for r in flash.state.get("releases", []):
        if r["id"] == current and r.get("healthy") and (r.get("info") or {}).get("deps_key") == key:
            return current
    return None


def _install(flash: Flash) -> str:
    conn, board, cfg, profile = flash.conn, flash.board, flash.cfg, flash.profile
    rel = flash.release_dir
    site = _site_packages(cfg, profile)
    wheel = f"{rel}/wheels/{_edgeface_wheel(flash.wheels)}"
    t0 = time.perf_counter()
    reuse = _reusable_release(flash)
    if reuse:
        # Same wheels, same Python: hard-link the current release's site-packages instead of unpacking numpy
        # and OpenCV again (minutes on a Pi Zero), then install only the new edgeface wheel over it.  pip
        # replaces files by unlinking them, so the other release's copies are never touched.
        venv = [board.python, "-m", "venv", "--without-pip"] + (["--system-site-packages"] if site else []) + \
            [f"{rel}/venv"]
        link = f"cp -al {q(flash.root + '/releases/' + reuse + '/venv/lib')}/. {q(rel + '/venv/lib')}/"
        pip = [f"{rel}/venv/bin/python", "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q",
               "--no-index", "--no-deps", "--force-reinstall", wheel]
        cmd = " ".join(q(a) for a in venv) + " && " + link + " && " + " ".join(q(a) for a in pip)
        result = conn.run(cmd, timeout=cfg.install_timeout)
        if result.ok:
            return (f"edgeface {flash.wheels[-1].name.split('-')[1]} installed over the dependencies of release "
                    f"{reuse} (hard links: the same wheels and Python) in {time.perf_counter() - t0:.1f} s")
        conn.run(f"rm -rf {q(rel + '/venv')}", timeout=300)  # e.g. no `cp -l` on this board: install in full
    venv = [board.python, "-m", "venv"] + (["--system-site-packages"] if site else []) + [f"{rel}/venv"]
    pip = [f"{rel}/venv/bin/python", "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q",
           "--find-links", f"{rel}/wheels"]
    if cfg.offline:
        pip.append("--no-index")
    pip += [wheel, *profile.extra_requirements]
    cmd = " ".join(q(a) for a in venv) + " && " + " ".join(q(a) for a in pip)
    result = conn.run(cmd, timeout=cfg.install_timeout)
    if not result.ok:
        hint = ""
        if not cfg.offline and ("No matching distribution" in result.stderr or "connection" in result.stderr.lower()):
            hint = " (the board cannot reach a package index? try --offline)"
        raise UserError(f"pip install failed on the board: {result.tail()}{hint}")
    where = "offline wheels" if cfg.offline else "the package index"
    site_note = ", --system-site-packages" if site else ""
    return f"new venv{site_note}, runtime and dependencies from {where} in {time.perf_counter() - t0:.1f} s"


def _edgeface_wheel(wheels: list[Path]) -> str:
    for w in wheels:
        if Path(w).name.startswith("edgeface-"):
            return Path(w).name
    raise UserError("no edgeface wheel among the release's wheels")


def _health(flash: Flash) -> str:
    conn, cfg, rel, settings = flash.conn, flash.cfg, flash.release_dir, flash.settings
    # Its edgeface.toml, as run.sh runs it: a runtime that cannot read it (a --wheel of an edgeface without
    # `run --config`) fails here, before anything switches to it.
    report = health_check(conn, rel, self_test_args(), cfg.health_timeout)
    flash.health = report
    if not report.get("ok"):
        raise UserError(f"the self-test on the board failed: {failed_checks(report)}")
    if settings.run.gallery:
        # the gallery opens on the board with the key the service will use, before anything switches to it
        cmd = f"cd {q(rel)} && ./venv/bin/edgeface " + " ".join(q(a) for a in gallery_check_args(settings.run))
        result = conn.run(cmd, timeout=cfg.health_timeout)
        if not result.ok:
            raise UserError(f"the gallery does not open on the board: {result.tail()}")
    conn.check(f"printf '%s\\n' {q(json.dumps(report))} > {q(rel + '/' + HEALTHY)}", "marking the release healthy")
    parts = [f"{report.get('format', '?')} model"]
    if report.get("embed_ms") is not None:
        parts.append(f"embed {report['embed_ms']} ms")
    if report.get("backend"):
        parts.append(str(report["backend"]))
    return "self-test passed: " + ", ".join(parts)


def _switch(flash: Flash) -> str:
    switch_current(flash.conn, flash.root, flash.release_id)
    flash.switched = True
    prev = flash.state.get("current")
    return f"current -> {RELEASES}/{flash.release_id}" + (f" (was {prev})" if prev else "")


def _service(flash: Flash) -> str:
    conn, cfg, root = flash.conn, flash.cfg, flash.root
    manual = f"start it by hand: {root}/{CURRENT}/{RUN_SCRIPT}"
    if cfg.service == "none":
        running = read_service_info(conn, root)
        if running is not None:  # it keeps running the old release until it restarts: say so
            return (f"skipped: --service none; the {running['mode']} unit {running['name']} an earlier flash "
                    f"installed still runs the previous release until restarted (`edgeface flash` without "
                    f"--service none restarts it on this one)")
        return f"skipped: --service none; {manual}"
    if not flash.identity.get("systemd"):
        return f"skipped: systemd is not running on this board (no /run/systemd/system); {manual}"
    before = snapshot_service(conn, root)
    info = install_unit(conn, cfg.service, cfg.service_name, root, flash.identity, flash.release_id, before)
    try:
        ok, state = restart_service(conn, info)
    except UserError as exc:  # no answer (a dropped link, a restart past its time limit): not known to be up
        ok, state = False, str(exc)
    if ok and before is not None and before["info"].get("unit") != info["unit"]:
        # another --service-name or mode: the old unit would keep running `current` beside the new one
        remove_unit(conn, before["info"])
        state += f"; the previous unit {before['info']['name']} was removed"
    if not ok:
        # The board gets back the service it had: none (a first flash, or a release run by hand, which must
        # not start now) or the old unit, restarted on the previous release.
        service = restore_service(conn, root, info, before)
        prev = flash.state.get("current")
        if prev:
            back = switch_back(conn, root, prev, service)
            flash.switched = False
        else:
            back = "; no previous release to go back to"
        if service is None:
            back += f"; the {info['name']} unit was removed"
        raise UserError(f"the {info['name']} service did not stay up on the new release ({state}){back}")
    return f"{info['mode']} unit {info['name']} restarted on {flash.release_id}: {state}"


def _prune(flash: Flash) -> str:
    conn, root = flash.conn, flash.root
    state = remote_probe(conn, conn.board.python, "state", root, "0")
    doomed = select_prunable(state["releases"], state.get("current"), flash.state.get("current"), flash.cfg.keep)
    paths = [f"{root}/{RELEASES}/{r}" for r in doomed] + [f"{root}/{INCOMING}/{r}" for r in state["incomplete"]]
    if paths:
        conn.check("rm -rf " + " ".join(q(p) for p in paths), "removing old releases")
    kept = len(state["releases"]) - len(doomed)
    return f"kept {kept} release(s), removed {len(doomed)} old, {len(state['incomplete'])} incomplete upload(s)"


def _recover(flash: Flash) -> Optional[str]:
    """After a failed step: drop the half-made release; make sure `current` is what it was. Returns current."""
    conn, root = flash.conn, flash.root
    prev = flash.state.get("current")
    if not root:
        return prev
    try:
        if flash.switched:
            if prev:
                switch_current(conn, root, prev)
            else:  # a first flash: the board had no release, and has none again
                conn.check(f"rm -f {q(root + '/' + CURRENT)}", "removing the current link")
            flash.switched = False
        leftovers = [p for p in (flash.staging, flash.release_dir) if p]
        if leftovers and flash.release_id != prev:
            conn.run("rm -rf " + " ".join(q(p) for p in leftovers), timeout=120)
        state = remote_probe(conn, conn.board.python, "state", root, "0", timeout=30)
        return state.get("current")
    except (UserError, OSError, KeyError):
        # The board cannot be reached now: nothing was switched unless the switch step itself ran.
        return prev if not flash.switched else flash.release_id


def _connect(flash: Flash) -> str:
    return connect_step(flash.conn)


FlashStep = Callable[[Flash], str]  # takes the flash so far, returns the line the CLI prints after the title

# A flash, step by step (titles: edgeface.devices.steps.STEP_TITLES), after "prepare" (prepare_release, here,
# once for all boards).  Looking at the board writes nothing there but the lock.
LOOK_STEPS: tuple[tuple[str, FlashStep], ...] = (
    ("connect", _connect),
    ("check", _check),
    ("wheels", _wheels),
    ("space", _space),
)
# The new release, made beside the running one and checked before `current` switches to it.
RELEASE_STEPS: tuple[tuple[str, FlashStep], ...] = (
    ("upload", _upload_release),
    ("install", _install),
    ("health", _health),
    ("switch", _switch),
    ("service", _service),
)
# Once the new release runs: failing to tidy up old ones must not undo it.
TIDY_STEPS: tuple[tuple[str, FlashStep], ...] = (
    ("prune", _prune),
)


def flash_board(board: Board, cfg: FlashConfig, local: LocalRelease, options: SSHOptions,
                on_step: Optional[StepCallback] = None,
                upload_progress: Optional[Callable[[int, int], None]] = None) -> FlashResult:
    """Flash one board; never raises for a failed step (the result says which step failed and why)."""
    result = FlashResult(board=board.name, address=board.address, version=local.edgeface_version)
    steps = StepRunner(result, on_step)
    t_start = time.perf_counter()
    flash = Flash(SSHConnection(board, options), cfg, local, upload_progress)
    try:
        steps.record("prepare", "ok", local.seconds, f"edgeface {local.edgeface_version} wheel, bundle "
                     f"{local.model_name} ({', '.join(local.formats)})" + (", gallery" if local.gallery else ""))
        for name, step in LOOK_STEPS:
            steps.run(name, partial(step, flash))
        result.profile = flash.profile.name
        result.previous = flash.state.get("current")
        for name, step in RELEASE_STEPS:
            steps.run(name, partial(step, flash))
        result.release = flash.release_id
        result.ok = True
        for name, step in TIDY_STEPS:
            try:
                steps.run(name, partial(step, flash))
            except StepFailed:
                pass
    except StepFailed as exc:
        result.failed_step, result.error = exc.step, exc.message
        result.release = _recover(flash)
    except KeyboardInterrupt:  # Ctrl-C: put the board back like any failure, record it, then stop
        result.failed_step, result.error = steps.current or "interrupted", "interrupted (Ctrl-C)"
        result.release = _recover(flash)
        raise
    except Exception as exc:  # a bug must not leave the board half-switched without saying so
        result.failed_step, result.error = "internal", f"{type(exc).__name__}: {exc}"
        result.release = _recover(flash)
    finally:
        result.seconds = time.perf_counter() - t_start
        flash.end("flash", result, edgeface_version=local.edgeface_version, model=local.model_name)
    return result


def flash_many(boards: list[Board], cfg: FlashConfig, options: SSHOptions, parallel: int = 4,
               on_step: Optional[StepCallback] = None,
               upload_progress: Optional[Callable[[int, int], None]] = None) -> list[FlashResult]:
    """Flash several boards, ``parallel`` at a time, from one prepared release; results in board order."""
    if cfg.service not in SERVICE_MODES:
        raise UserError(f"--service {cfg.service!r}: choose one of {', '.join(SERVICE_MODES)}")
    if cfg.keep < 1:
        raise UserError("--keep must be at least 1 (the current release)")
    seen: dict[tuple, str] = {}
    for b in boards:
        key = (b.host, b.port, b.user, b.remote_dir)
        if key in seen:
            raise UserError(f"boards {seen[key]!r} and {b.name!r} are the same board and folder; flash it once")
        seen[key] = b.name
    local = prepare_release(cfg.bundle, cfg.gallery, cfg.format, cfg.wheel, gallery_key=cfg.gallery_key,
                            board_key_file=cfg.board_key_file)
    try:
        if len(boards) == 1:
            return [flash_board(boards[0], cfg, local, options, on_step, upload_progress)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            futures = [pool.submit(flash_board, b, cfg, local, options, on_step, None) for b in boards]
            return [f.result() for f in futures]
    finally:
        local.cleanup()
