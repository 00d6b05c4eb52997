"""Board commands: ``edgeface flash``, ``rollback``, ``status``, ``benchmark`` and the ``devices`` group."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import List, Optional

import typer

from edgeface.commands.board_options import (
    BREAK_LOCK,
    INVENTORY,
    PYTHON,
    REMOTE_DIR,
    TARGET_HELP,
    SSHFlags,
    ssh_flags,
)
from edgeface.commands.detector_options import DETECTOR_MODES_HELP, detector_option
from edgeface.commands.errors import user_errors
from edgeface.commands.gallery import key_file_option, resolve_key
from edgeface.console import console, escape
from edgeface.errors import UserError
from edgeface.fileio import check_writable_file

devices_app = typer.Typer(help="Board profiles: list them, detect a board's.", no_args_is_help=True)

class _StepPrinter:
    """Prints each flash/rollback step as it ends; one board at a time also gets a spinner while it runs."""

    MARKS = {"ok": "[green]✓[/]", "failed": "[red]✗[/]", "skipped": "[yellow]–[/]"}

    def __init__(self, multi: bool, quiet: bool) -> None:
        self.multi, self.quiet = multi, quiet
        self.status = None

    def __call__(self, board: str, step) -> None:
        if self.quiet:
            return
        if step.status == "running":
            if not self.multi:
                self.status = console.status(f"{step.title}...")
                self.status.start()
            return
        self.stop()
        prefix = f"[bold]{escape(board)}[/] " if self.multi else ""
        console.print(f"{prefix}{self.MARKS.get(step.status, '?')} {escape(f'{step.title:<18}')} "
                      f"{step.seconds:6.1f} s  {escape(step.detail)}", highlight=False, markup=True)

    def stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


def _wide_table(title: str, columns, rows) -> None:
    """A result table on stdout that keeps every figure whole when stdout is a pipe or a file.

    Rich fits tables to the terminal; without one it assumes 80 columns, which cuts benchmark figures to
    "3.…" in logs and CI output.  Terminals keep their own width.
    """
    from rich.measure import Measurement
    from rich.table import Table

    from edgeface.console import stdout

    table = Table(title=title)
    for c in columns:
        table.add_column(str(c), no_wrap=True)
    for r in rows:
        table.add_row(*[str(v) for v in r])
    if stdout.is_terminal:
        stdout.print(table)
    else:
        from rich.console import Console

        width = Measurement.get(stdout, stdout.options.update(max_width=10_000), table).maximum
        Console(width=max(80, width), no_color=True, markup=False).print(table)


def _results_table(title: str, results) -> None:
    rows = []
    for r in results:
        status = "ok" if r.ok else f"FAILED at {r.failed_step}"
        rows.append([r.board, status, r.release or "-", r.version or "-", f"{r.seconds:.1f}",
                     "" if r.ok else (r.error or "")[:100]])
    _wide_table(title, ["board", "status", "release", "version", "seconds", "error"], rows)


# --- flash ---------------------------------------------------------------------------------


@user_errors
@ssh_flags
def flash_cmd(
    target: Optional[str] = typer.Argument(None, help=TARGET_HELP),
    bundle: Path = typer.Option(..., "--bundle", "-b", help="Model bundle folder (from `edgeface export`).",
                                exists=True, file_okay=False),
    gallery: Optional[Path] = typer.Option(None, "--gallery", "-g", help="Gallery file (from `edgeface enroll`).",
                                           exists=True, dir_okay=False),
    key_file: Optional[Path] = key_file_option("Key of an encrypted --gallery (or $EDGEFACE_GALLERY_KEY_FILE, "
                                               "$EDGEFACE_GALLERY_KEY): opened here, then put on each board in "
                                               "<remote-dir>/keys/ (0600, folder 0700; sent over SSH's stdin, never "
                                               "on a command line or in a log)."),
    board_key_file: Optional[str] = typer.Option(None, "--board-key-file", help="Or: the path where each board "
                                                 "already holds the encrypted gallery's key (you place it, mode "
                                                 "0600); flash only checks it is there."),
    inventory: Optional[Path] = INVENTORY,
    all_boards: bool = typer.Option(False, "--all", help="Flash every board of the inventory."),
    parallel: int = typer.Option(4, "--parallel", "-j", min=1, help="Boards flashed at the same time."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Board profile (default: the inventory's, else "
                                          "detected on the board); see `edgeface devices list`."),
    fmt: Optional[str] = typer.Option(None, "--format", help="Bundle format to run (default: the profile's)."),
    source: Optional[str] = typer.Option(None, "--source", help="Camera source for the service (default: the "
                                         "profile's, e.g. picamera2 on a Pi)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Interpreter threads (default: profile's)."),
    detector: Optional[str] = typer.Option(None, "--detector", help="Face detector the service runs (default: "
                                           "run's, auto): " + DETECTOR_MODES_HELP),
    detector_precision: Optional[str] = typer.Option(None, "--detector-precision", help="float (default) or int8 "
                                                     "BlazeFace files on the board's CPU."),
    offline: bool = typer.Option(False, "--offline", help="Download the dependencies' wheels here for the board's "
                                 "platform and Python, and install them there without an index."),
    wheelhouse: Optional[Path] = typer.Option(None, "--wheelhouse", help="Cache folder for --offline wheels "
                                              "(default: ~/.cache/edgeface/wheelhouse).", file_okay=False),
    wheel: Optional[Path] = typer.Option(None, "--wheel", help="A prebuilt edgeface wheel (default: built from "
                                         "this checkout).", exists=True, dir_okay=False),
    break_lock: bool = BREAK_LOCK,
    clean_install: bool = typer.Option(False, "--clean-install", help="Install every dependency afresh, even when "
                                       "the current release has the same ones (they are hard-linked otherwise)."),
    keep: int = typer.Option(3, "--keep", min=1, help="Releases kept on the board (the current and previous "
                             "always are)."),
    service: str = typer.Option("system", "--service", help="systemd unit: system, user (systemctl --user) or "
                                "none."),
    service_name: str = typer.Option("edgeface", "--service-name", help="Name of the systemd unit."),
    min_free_mb: float = typer.Option(100.0, "--min-free-mb", min=0, help="Free disk to leave on the board after "
                                      "the release, MB."),
    remote_dir: Optional[str] = REMOTE_DIR,
    python: Optional[str] = PYTHON,
    ssh: SSHFlags = SSHFlags(),  # --identity, --known-hosts, ... (board_options.ssh_flags)
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Put the runtime, a model bundle and a gallery on boards over SSH, as a release with rollback."""
    from edgeface.devices.flash import FlashConfig, flash_many
    from edgeface.devices.profiles import get_profile
    from edgeface.devices.service import SERVICE_MODES

    if service not in SERVICE_MODES:
        raise UserError(f"--service {service!r}: choose one of {', '.join(SERVICE_MODES)}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@-]*", service_name):
        raise UserError(f"--service-name {service_name!r}: use letters, digits, '-', '_', '.' and '@'")
    if profile is not None:
        get_profile(profile)
    from edgeface.runtime.settings import DETECTOR_CHOICES, DETECTOR_PRECISION_CHOICES, check_choice

    check_choice("detector", detector, DETECTOR_CHOICES)
    check_choice("detector_precision", detector_precision, DETECTOR_PRECISION_CHOICES)
    options = ssh.options()
    boards = ssh.boards(target, inventory, all_boards, remote_dir, python)
    key = resolve_key(key_file) if board_key_file is None else None
    cfg = FlashConfig(bundle=bundle, gallery=gallery, gallery_key=key, board_key_file=board_key_file,
                      profile=profile, format=fmt, source=source, threads=threads, detector=detector,
                      detector_precision=detector_precision,
                      offline=offline, wheelhouse=wheelhouse, wheel=wheel, keep=keep, service=service,
                      service_name=service_name, min_free_mb=min_free_mb, clean_install=clean_install,
                      break_lock=break_lock)
    multi = len(boards) > 1
    progress = None
    printer = _StepPrinter(multi, as_json)
    if not multi and not as_json:
        progress = _upload_bar(printer)
    try:
        results = flash_many(boards, cfg, options, parallel=parallel, on_step=printer, upload_progress=progress)
    finally:
        printer.stop()
        if progress is not None:
            progress.close()
    failed = [r for r in results if not r.ok]
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in results], indent=2))
    elif len(results) > 1 or not failed:  # one failed board: the error line below says it all
        _results_table("edgeface flash", results)
    if len(results) == 1 and failed:
        r = failed[0]
        if r.release:
            where = f"the board stays on release {r.release}"
        elif r.failed_step in ("connect", "check"):  # its state was never read: say nothing false about it
            where = "the board was not changed"
        else:
            where = "the board has no current release, as before"
        raise UserError(f"flashing {r.board} failed at step '{r.failed_step}': {r.error}; {where}")
    if failed:
        raise UserError(f"{len(failed)} of {len(results)} boards failed to flash (see the table); each stays on its "
                        "previous release")


class _upload_bar:
    """A byte progress bar for the upload step (one board); it replaces the step's spinner."""

    def __init__(self, printer: _StepPrinter) -> None:
        self.printer = printer
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        self.progress = Progress(TextColumn("  upload"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                                 console=console, transient=True)
        self.task = None

    def __call__(self, done: int, total: int) -> None:
        if self.task is None:
            self.printer.stop()
            self.progress.start()
            self.task = self.progress.add_task("upload", total=total)
        self.progress.update(self.task, completed=done, total=total)

    def close(self) -> None:
        if self.task is not None:
            self.progress.stop()


# --- rollback / status -------------------------------------------------------------------------


@user_errors
@ssh_flags
def rollback_cmd(
    target: Optional[str] = typer.Argument(None, help=TARGET_HELP),
    to: Optional[str] = typer.Option(None, "--to", help="Release id to return to (default: the one before "
                                     "current)."),
    no_check: bool = typer.Option(False, "--no-check", help="Skip the self-test of the release returned to."),
    break_lock: bool = BREAK_LOCK,
    inventory: Optional[Path] = INVENTORY,
    all_boards: bool = typer.Option(False, "--all", help="Roll back every board of the inventory."),
    remote_dir: Optional[str] = REMOTE_DIR,
    python: Optional[str] = PYTHON,
    ssh: SSHFlags = SSHFlags(),  # --identity, --known-hosts, ... (board_options.ssh_flags)
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Return a board to its previous release (or --to one) and restart the service on it."""
    from edgeface.devices.manage import rollback_board

    options = ssh.options()
    boards = ssh.boards(target, inventory, all_boards, remote_dir, python)
    printer = _StepPrinter(len(boards) > 1, as_json)
    try:
        results = [rollback_board(b, options, to=to, check=not no_check, on_step=printer, break_lock=break_lock)
                   for b in boards]
    finally:
        printer.stop()
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        _results_table("edgeface rollback", results)
    failed = [r for r in results if not r.ok]
    if failed:
        r = failed[0]
        raise UserError(f"rollback of {r.board} failed at step '{r.failed_step}': {r.error}"
                        + (f" ({len(failed)} boards failed)" if len(failed) > 1 else ""))


@user_errors
@ssh_flags
def status_cmd(
    target: Optional[str] = typer.Argument(None, help=TARGET_HELP),
    events: int = typer.Option(10, "--events", min=0, help="How many of the last events to show."),
    inventory: Optional[Path] = INVENTORY,
    all_boards: bool = typer.Option(False, "--all", help="Every board of the inventory."),
    remote_dir: Optional[str] = REMOTE_DIR,
    python: Optional[str] = PYTHON,
    ssh: SSHFlags = SSHFlags(),  # --identity, --known-hosts, ... (board_options.ssh_flags)
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
) -> None:
    """Show a board's current release, its releases, the service state and the last events."""
    from edgeface.devices.manage import board_status

    options = ssh.options()
    boards = ssh.boards(target, inventory, all_boards, remote_dir, python)
    if len(boards) == 1:
        statuses = [board_status(boards[0], options, events=events)]
    else:
        # several boards: one unreachable board must not hide the others' status
        statuses = []
        for b in boards:
            try:
                statuses.append(board_status(b, options, events=events))
            except UserError as exc:
                statuses.append({"board": b.name, "address": b.address, "error": str(exc)})
    if as_json:
        typer.echo(json.dumps(statuses if len(statuses) > 1 else statuses[0], indent=2))
    else:
        for st in statuses:
            if "error" in st:
                console.print(f"[bold]{escape(st['board'])}[/] " + escape(f"({st['address']}): {st['error']}"),
                              highlight=False, markup=True)
            else:
                _print_status(st)
    unreachable = [st["board"] for st in statuses if "error" in st]
    if unreachable:
        raise UserError(f"{len(unreachable)} of {len(statuses)} boards gave no status: {', '.join(unreachable)}")


def _print_status(st: dict) -> None:
    ident = st["identity"]
    svc = st["service"]
    console.print(f"[bold]{escape(st['board'])}[/] " + escape(
                  f"({st['address']}): {ident.get('model') or ident.get('machine')}, "
                  f"{ident.get('machine')}, Python {ident.get('python')}, profile {st['profile']}, "
                  f"{ident.get('free_bytes', 0) / 1e9:.1f} GB free under {st['remote_dir']}"), highlight=False,
                  markup=True)
    console.print(f"current release: [bold]{escape(st['current'] or 'none')}[/]; " + escape(
                  f"service: {svc.get('state')}"
                  + (f" ({svc.get('mode')} unit {svc.get('name')})" if svc.get("mode") else "")
                  + (f" - {svc['detail']}" if svc.get("detail") else "")), highlight=False, markup=True)
    rows = []
    for r in st["releases"]:
        info = r.get("info") or {}
        settings = info.get("settings") if isinstance(info.get("settings"), dict) else {}  # damaged release.json
        rows.append(["*" if r["current"] else "", r["id"], info.get("edgeface_version", "?"), info.get("model", "?"),
                     settings.get("format") or "-", "yes" if r["healthy"] else "no", info.get("flashed_by", "?")])
    _wide_table(f"releases on {st['board']}", ["", "release", "edgeface", "model", "format", "healthy", "by"], rows)
    if st["incomplete"]:
        console.print(f"incomplete uploads (removed by the next flash): {', '.join(st['incomplete'])}")
    if st["events"]:
        erows = [[e.get("time", ""), e.get("event", ""), e.get("status", ""), e.get("release") or "",
                  e.get("step") or "", str(e.get("message") or "")[:80]] for e in st["events"]]
        _wide_table(f"last events on {st['board']}", ["time", "event", "status", "release", "step", "message"],
                    erows)


# --- benchmark --------------------------------------------------------------------------------


@user_errors
@ssh_flags
def benchmark_cmd(
    models: Optional[List[Path]] = typer.Argument(
        None, help="TFLite files, bundle folders and/or shipped model names (default, mobilefacenet); with --target, "
        "default: the board's flashed bundle."),
    threads: Optional[str] = typer.Option(None, "--threads", "-t", help="Thread counts to measure, e.g. 1,2,4 "
                                          "(default: 1 and all cores of the machine measured)."),
    warmup: int = typer.Option(10, "--warmup", min=0, help="Untimed runs before timing."),
    runs: int = typer.Option(100, "--runs", min=1, help="Timed runs per setting."),
    delegate: Optional[str] = typer.Option(None, "--delegate", help="edgetpu to run Edge TPU-compiled files "
                                           "(default: CPU with XNNPACK)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="TFLite interpreter: ai_edge_litert, "
                                          "tflite_runtime or tensorflow (default: the first installed)."),
    fmt: Optional[List[str]] = typer.Option(None, "--format", help="Only these bundle formats (repeatable)."),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="Pairs file (e.g. LFW pairs.txt): adds an accuracy "
                                         "column.", exists=True, dir_okay=False),
    images: Optional[Path] = typer.Option(None, "--images", help="Folder of the pairs' images (raw or prepared "
                                          "crops).", exists=True, file_okay=False),
    video: Optional[Path] = typer.Option(None, "--video", help="Video file: time the whole pipeline (capture, "
                                         "detect, align, embed, match) per stage.", exists=True, dir_okay=False),
    video_frames: Optional[int] = typer.Option(None, "--video-frames", min=1, help="Stop the video after this many "
                                               "frames."),
    gallery: Optional[Path] = typer.Option(None, "--gallery", "-g", help="Gallery for the --video pipeline.",
                                           exists=True, dir_okay=False),
    detector: str = detector_option("Face detector of the --video pipeline and of raw --images: "
                                    + DETECTOR_MODES_HELP),
    profile: Optional[str] = typer.Option(None, "--profile", help="Board profile to compare with (default: "
                                          "detected)."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="CSV of an earlier `benchmark --csv` to "
                                             "compare with.", exists=True, dir_okay=False),
    tolerance: float = typer.Option(0.15, "--tolerance", min=0, help="Allowed relative difference from the "
                                    "reference median (0.15 = 15 %)."),
    csv_out: Optional[Path] = typer.Option(None, "--csv", help="Also write the results to this CSV file.",
                                           dir_okay=False),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a bar chart of latency per format and threads "
                                        "(PNG).", dir_okay=False),
    target: Optional[List[str]] = typer.Option(None, "--target", "-T", help="Run on this board over SSH "
                                               "(repeatable): " + TARGET_HELP),
    inventory: Optional[Path] = INVENTORY,
    remote_dir: Optional[str] = REMOTE_DIR,
    python: Optional[str] = PYTHON,
    ssh: SSHFlags = SSHFlags(),  # --identity, --known-hosts, ... (board_options.ssh_flags)
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON (only JSON on stdout)."),
) -> None:
    """Measure latency, FPS and memory of TFLite files and bundles, here or on boards over SSH."""
    from edgeface.console import progress_bar
    from edgeface.devices.benchmark import (
        BenchmarkConfig,
        check_plot_support,
        load_reference,
        parse_threads,
        run_benchmark,
        write_csv,
        write_plot,
    )
    from edgeface.devices.profiles import get_profile

    if plot is not None:
        if plot.suffix.lower() != ".png":
            raise UserError(f"--plot {plot}: the chart is a PNG file; name it .png")
        check_plot_support()
        check_writable_file(plot, "--plot")
    if csv_out is not None:
        check_writable_file(csv_out, "--csv")
    if profile is not None:
        get_profile(profile)
    if delegate not in (None, "edgetpu", "cpu"):
        raise UserError(f"--delegate {delegate!r}: use edgetpu, or leave it out for the CPU")
    if (pairs is None) != (images is None):
        raise UserError("--pairs and --images go together: the pairs file and the folder of its images")
    cfg = BenchmarkConfig(models=list(models or []), threads=parse_threads(threads) if threads else None,
                          warmup=warmup, runs=runs,
                          delegate=None if delegate == "cpu" else delegate, backend=backend, formats=fmt or None,
                          pairs=pairs, images=images, video=video, video_frames=video_frames, gallery=gallery,
                          detector=detector, profile=profile, reference=reference, tolerance=tolerance)
    load_reference(cfg)  # a bad --reference fails now, not after every model (and board) was measured
    if target:
        from concurrent.futures import ThreadPoolExecutor

        from edgeface.devices.remote_benchmark import run_remote_benchmark

        options = ssh.options()
        boards = [b for t in target for b in ssh.boards(t, inventory, False, remote_dir, python)]
        if not as_json:
            console.print(f"benchmarking on {', '.join(b.name for b in boards)} over SSH...")
        with ThreadPoolExecutor(max_workers=max(1, len(boards))) as pool:
            reports = list(pool.map(lambda b: run_remote_benchmark(b, options, cfg), boards))
    else:
        if not cfg.models:
            raise UserError("nothing to benchmark: give .tflite files, bundle folders or shipped model names (default, "
                            "mobilefacenet), or --target BOARD")
        accuracy = None
        if pairs is not None:  # read before anything is measured: a bad pairs file fails at once
            from edgeface.evaluate.verification import FileAccuracy

            accuracy = FileAccuracy(pairs, images, detector=detector, backend=backend,
                                    delegate=cfg.delegate)
        with progress_bar("benchmarking", disable=as_json) as advance:
            reports = [run_benchmark(cfg, progress=advance, accuracy=accuracy)]
    written: list[tuple[str, Path]] = []
    write_error = None
    for path, what, writer in ((csv_out, "CSV", write_csv), (plot, "plot", write_plot)):
        if path is None:
            continue
        try:
            writer(reports, path)
            written.append((what, path))
        except OSError as exc:  # e.g. the disk filled while measuring: the results are still shown, then this
            write_error = f"cannot write the {what} {exc.filename or path}: {exc.strerror}"
            break
    if as_json:
        typer.echo(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
    else:
        _print_benchmark(reports, tolerance, written)
    if write_error:
        raise UserError(write_error)


def _print_benchmark(reports: list[dict], tolerance: float, written: list[tuple[str, Path]]) -> None:
    from edgeface.devices.benchmark import board_line, result_rows, video_rows

    for rep in reports:
        console.print(f"[bold]{escape(str(rep.get('label') or rep['board'].get('hostname')))}[/]: "
                      f"{escape(board_line(rep))}", highlight=False, markup=True)
        for w in rep.get("warnings", []):
            console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, markup=True)
    s = reports[0]["settings"]
    cols, rows = result_rows(reports)
    _wide_table(f"edgeface benchmark (warmup {s['warmup']}, {s['runs']} runs, latency in ms)", cols, rows)
    if any(rep.get("video") for rep in reports):
        vcols, vrows = video_rows(reports)
        _wide_table(f"pipeline on {Path(s['video']).name} (median ms per frame)", vcols, vrows)
    flagged = [r for rep in reports for r in rep["results"] if r.get("flag") in ("slower", "faster")]
    if flagged:
        console.print(f"[yellow]{len(flagged)} result(s) outside ±{tolerance:.0%} of the reference[/]", markup=True)
    for what, path in written:
        console.print(f"{what} written to {path}")


# --- devices group --------------------------------------------------------------------------


@devices_app.command("list")
@user_errors
def devices_list_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print the profiles as JSON."),
) -> None:
    """List the board profiles: architecture, Python, backend, delegate, camera, threads."""
    from edgeface.devices.profiles import PROFILES

    if as_json:
        typer.echo(json.dumps([p.to_dict() for p in PROFILES], indent=2))
        return
    rows = [[p.name, p.title, p.arch, p.python or "any 3.9+", p.backend, p.delegate or "cpu (xnnpack)",
             p.model_format, p.source, p.threads or "all cores", len(p.reference) or "none measured"]
            for p in PROFILES]
    _wide_table("board profiles", ["profile", "board", "arch", "python", "backend", "delegate", "format", "source",
                                   "threads", "reference"], rows)


@devices_app.command("detect")
@user_errors
@ssh_flags
def devices_detect_cmd(
    target: Optional[str] = typer.Argument(None, help="Board to probe over SSH (default: this machine). "
                                           + TARGET_HELP),
    inventory: Optional[Path] = INVENTORY,
    python: Optional[str] = PYTHON,
    ssh: SSHFlags = SSHFlags(),  # --identity, --known-hosts, ... (board_options.ssh_flags)
    as_json: bool = typer.Option(False, "--json", help="Print the detection as JSON."),
) -> None:
    """Detect a board's profile from /proc/device-tree/model, uname -m and USB ids (this machine or over SSH)."""
    from edgeface.devices import probe
    from edgeface.devices.profiles import detect_profile

    results = []
    if target is None:
        results.append(("local", probe.identity()))
    else:
        from edgeface.devices.remote import remote_probe
        from edgeface.devices.ssh import SSHConnection

        options = ssh.options()
        for board in ssh.boards(target, inventory, False, None, python):
            with SSHConnection(board, options) as conn:
                results.append((board.name, remote_probe(conn, board.python, "identity")))
    out = []
    for name, ident in results:
        det = detect_profile(ident.get("model") if ident.get("model_from_device_tree") else None,
                             ident.get("machine", ""), ident.get("usb_ids", []))
        out.append({"board": name, "profile": det.profile.name, "reason": det.reason, "identity": ident})
    if as_json:
        typer.echo(json.dumps(out if len(out) > 1 else out[0], indent=2))
        return
    rows = [[o["board"], o["profile"], o["reason"], o["identity"].get("model") or "-", o["identity"].get("cpu"),
             o["identity"].get("cores"), o["identity"].get("python")] for o in out]
    _wide_table("detected profile", ["board", "profile", "why", "model", "cpu", "cores", "python"], rows)


def register(app: typer.Typer) -> None:
    app.command("flash")(flash_cmd)
    app.command("rollback")(rollback_cmd)
    app.command("status")(status_cmd)
    app.command("benchmark")(benchmark_cmd)
    app.add_typer(devices_app, name="devices", help="Board profiles: list them, detect a board's.")
