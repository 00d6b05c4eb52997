"""``edgeface run``: recognise faces live on the board, or ``--self-test`` whether this board runs the bundle.

Nothing here imports TensorFlow: a board with only the light install runs it.
The runtime modules are imported inside the command body, so ``edgeface --help``
stays fast.  The flags become one :class:`~edgeface.runtime.settings.RunSettings` (``--config FILE`` reads them
from a file's [run] table, flags given beside it win), which the runtime takes; a bad one is a
:class:`~edgeface.errors.SettingError` that :func:`~edgeface.commands.errors.user_errors` reports as its flag.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Optional, TextIO

import typer

from edgeface.commands.detector_options import detector_option, detector_precision_option
from edgeface.commands.errors import user_errors
from edgeface.commands.gallery import DEFAULT_GALLERY, key_file_option, resolve_key
from edgeface.commands.model_options import BACKEND_HELP, FORMAT_HELP, MODEL_HELP
from edgeface.console import print_table
from edgeface.errors import UserError
from edgeface.runtime.capture.kinds import SIZE_HELP, SOURCE_HELP  # light: no OpenCV, no numpy
from edgeface.runtime.settings import RunSettings

GALLERY_HELP = f"Gallery file (.npz); default: ./{DEFAULT_GALLERY}."
# The settings the self-test reads (the model and how it runs), checked before it; the rest after --source.
MODEL_SETTINGS = ("detector", "detector_precision", "backend", "delegate", "format", "threads")


class _Stopper:
    """Ctrl-C / SIGTERM set a flag the loop checks, so the run ends cleanly with its summary.

    A second Ctrl-C raises KeyboardInterrupt at once (for a stuck device).
    """

    def __init__(self) -> None:
        from edgeface.runtime.stopflag import StopFlag

        self.event = StopFlag()  # not threading.Event: its set() can deadlock inside a signal handler
        self.signal_name: Optional[str] = None
        self._saved: dict = {}

    def __enter__(self) -> _Stopper:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal_name is not None:  # a second signal, maybe while the first handler still runs
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        # Nothing else here: writing to stderr from a handler that interrupted a stderr write (the status
        # line) raises "reentrant call"; run_cmd says which signal stopped the run once the loop ends.
        self.signal_name = signal.Signals(signum).name
        self.event.set()

    def __exit__(self, *exc) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)


def run_cmd(
    ctx: typer.Context,
    source: Optional[str] = typer.Option(None, "--source", "-s", help=f"{SOURCE_HELP[:1].upper()}{SOURCE_HELP[1:]}."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    gallery: Optional[Path] = typer.Option(None, "--gallery", "-g", help=GALLERY_HELP + " Without one, every face "
                                           "is 'unknown'."),
    key_file: Optional[Path] = key_file_option(),
    detector: str = detector_option(),
    detector_precision: str = detector_precision_option(),
    threshold: Optional[float] = typer.Option(None, help="Cosine similarity needed to name a face (default: the "
                                              "bundle's threshold)."),
    fmt: Optional[str] = typer.Option(None, "--format", help=FORMAT_HELP),
    threads: Optional[int] = typer.Option(None, help="Interpreter threads (default: the interpreter's choice)."),
    backend: Optional[str] = typer.Option(None, help=BACKEND_HELP),
    delegate: Optional[str] = typer.Option(None, help="edgetpu: run the bundle's Edge TPU model on a Coral "
                                           "(needs libedgetpu.so.1)."),
    events: Optional[Path] = typer.Option(None, help="Append the JSON lines to this file instead of stdout."),
    max_frames: Optional[int] = typer.Option(None, help="Stop after this many processed frames."),
    fps_limit: Optional[float] = typer.Option(None, help="Process at most this many frames per second."),
    preview: Optional[str] = typer.Option(None, help="Serve a live preview page at HOST:PORT (host 127.0.0.1 "
                                          "unless given, e.g. 0.0.0.0:8080 for the whole network: then a random "
                                          "access token is printed in its URL)."),
    preview_token_file: Optional[Path] = typer.Option(None, "--preview-token-file", help="Read the preview's "
                                                      "access token from this file instead (required then on any "
                                                      "host)."),
    save_unknown: Optional[Path] = typer.Option(None, help="Save crops of unknown faces in this folder (to enroll "
                                                "them later; files 0600 in a 0700 folder)."),
    unknown_max_files: int = typer.Option(1000, "--unknown-max-files", help="--save-unknown keeps at most this many "
                                          "crops (the oldest go first)."),
    unknown_max_mb: float = typer.Option(100.0, "--unknown-max-mb", help="... and at most this many MB of them."),
    unknown_max_days: float = typer.Option(30.0, "--unknown-max-days", help="... and none older than this many days."),
    capture_size: Optional[str] = typer.Option(None, help=f"Camera resolution WIDTHxHEIGHT ({SIZE_HELP})."),
    track: bool = typer.Option(True, "--track/--no-track", help="Follow faces over frames (videos, cameras, "
                               "streams; not a folder's photos): a face scoring just under the threshold takes "
                               "the name its track was matched with in clearer frames (events mark it "
                               "\"named_by\": \"track\")."),
    config: Optional[Path] = typer.Option(None, "--config", help="Read the settings from this TOML file (its run "
                                          "table; `edgeface flash` writes edgeface.toml); flags given beside it "
                                          "win."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No rolling status line on stderr."),
    self_test: bool = typer.Option(False, "--self-test", help="Check that this machine runs the bundle correctly; "
                                   "print JSON; exit 1 if a check fails."),
) -> None:
    """Recognise faces live: detect, align, embed and match every frame of a camera, stream, video or folder."""
    settings = _run_settings(ctx, config, source=source, model=model, gallery=gallery, key_file=key_file,
                             detector=detector, detector_precision=detector_precision, threshold=threshold,
                             format=fmt, threads=threads, backend=backend,
                             delegate=delegate, events=events, max_frames=max_frames, fps_limit=fps_limit,
                             preview=preview, preview_token_file=preview_token_file, save_unknown=save_unknown,
                             unknown_max_files=unknown_max_files, unknown_max_mb=unknown_max_mb,
                             unknown_max_days=unknown_max_days, capture_size=capture_size, track=track)
    settings.check(*MODEL_SETTINGS)
    if self_test:
        _self_test(settings)
        return
    if settings.source is None:
        raise UserError(f"--source is required: {SOURCE_HELP}")
    settings.check("fps_limit", "max_frames")

    from edgeface.runtime.capture import CaptureConfig, open_source, parse_source
    from edgeface.runtime.pipeline import run_loop
    from edgeface.runtime.preview import PreviewServer, parse_host_port, read_token_file
    from edgeface.runtime.recognizer import load_recognizer
    from edgeface.runtime.sinks import EventWriter, StatusLine, UnknownSaver
    from edgeface.runtime.tracker import FaceTracker

    spec = parse_source(settings.source)  # before the models load: a typo in the source fails at once
    key = resolve_key(_path(settings.key_file))  # likewise a missing or open key file
    settings.check("threshold", "capture_size")
    size = settings.size
    host_port = parse_host_port(settings.preview) if settings.preview else None
    if settings.preview_token_file is not None and host_port is None:
        raise UserError("--preview-token-file protects the preview: add --preview HOST:PORT")
    token = read_token_file(Path(settings.preview_token_file)) if settings.preview_token_file is not None else None
    save_unknown = _path(settings.save_unknown)
    if save_unknown is not None and save_unknown.exists() and not save_unknown.is_dir():
        raise UserError(f"--save-unknown {save_unknown} is a file: give a folder for the crops (created if missing)")
    settings.check("unknown_max_files", "unknown_max_mb", "unknown_max_days")

    status = StatusLine(sys.stderr, enabled=not quiet)
    logger = logging.getLogger("edgeface")
    saved_level, saved_propagate = logger.level, logger.propagate
    logger.addHandler(status)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    out = None
    src = server = None
    try:
        # The source first: a missing camera or unreadable file is reported before anything slow, and a
        # live source's thread is already warming up while the models load.
        src = open_source(spec, CaptureConfig(size=size))
        # Opened before the models load, so a wrong path is one line at once, not after seconds of loading.
        # Appended: on a board the events file is a log that outlives one run (each run ends with its summary).
        out = _open_events(Path(settings.events)) if settings.events else sys.stdout
        rt = load_recognizer(settings, gallery_key=key)
        stopper = _Stopper()
        writer = EventWriter(out, stop=stopper.event)
        sinks: list = [writer, status]
        if host_port:
            server = PreviewServer(*host_port, source=src.description, token=token).start()  # logs the URL
            sinks.append(server)
        saver = UnknownSaver(save_unknown, rt.threshold, max_files=settings.unknown_max_files,
                             max_bytes=int(settings.unknown_max_mb * 1024 * 1024),
                             max_age_s=settings.unknown_max_days * 86400.0) if save_unknown else None
        if saver:
            sinks.append(saver)
        logger.info("running %s on %s: %d people in the gallery, threshold %.3f", rt.model_path.name,
                    src.description, len(rt.gallery.names()), rt.threshold)
        tracker = FaceTracker(rt.threshold) if settings.track and spec.continuous else None
        with stopper:
            stats = run_loop(src, rt.recognizer, sinks, max_frames=settings.max_frames, fps_limit=settings.fps_limit,
                             stop=stopper.event, keep_image=bool(server or saver), tracker=tracker)
        status.clear()
        if stopper.signal_name:
            logger.warning("%s received: stopped after %d frames", stopper.signal_name, stats.frames)
        summary = stats.summary({
            "source": spec.text,
            "model": str(rt.model_path),
            "backend": rt.recognizer.embedder.model.backend.name,
            "detector": getattr(rt.recognizer.detector, "kind", settings.detector),
            "threshold": rt.threshold,
            "gallery": str(rt.gallery_path) if rt.gallery_path else None,
            "people": len(rt.gallery.names()),
            "stopped_by": stopper.signal_name,
            "capture": src.stats.to_dict(),
            "named_by_track": tracker.named if tracker else None,
            **({"unknown_saved": saver.saved, "unknown_pruned": saver.pruned} if saver else {}),
        })
        writer.write_summary(summary)
    finally:
        if src is not None:
            src.close()
        if server is not None:
            server.close()
        if out is not None and out is not sys.stdout:
            out.close()
        status.clear()
        logger.removeHandler(status)
        logger.setLevel(saved_level)
        logger.propagate = saved_propagate
    _print_summary(summary)


# The run_cmd parameters whose setting has another name.
_SETTING_OF_PARAM = {"fmt": "format"}


def _run_settings(ctx: typer.Context, config: Optional[Path], **flags: Any) -> RunSettings:
    """The flags as :class:`RunSettings`; with ``--config``, the file's [run] table under the flags given on the
    command line (or by their environment variable): a flag left at its default does not override the file."""
    values = {key: str(value) if isinstance(value, Path) else value for key, value in flags.items()}
    if config is None:
        return RunSettings(**values)
    param = {key: name for name, key in _SETTING_OF_PARAM.items()}
    given = {key: value for key, value in values.items() if _given(ctx, param.get(key, key))}
    return RunSettings.from_toml(config).replace(**given)


def _given(ctx: typer.Context, param: str) -> bool:
    """Whether a parameter's value came from the command line or its environment variable, not its default."""
    source = ctx.get_parameter_source(param)  # Click's ParameterSource (Typer may carry its own copy of Click)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _path(value: Optional[str]) -> Optional[Path]:
    return Path(value) if value is not None else None


def _open_events(path: Path) -> TextIO:
    """The events file opened for appending, or a :class:`UserError` saying why it cannot be."""
    try:
        return open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed by run_cmd)
    except OSError as exc:
        raise UserError(f"--events {path}: cannot write to it ({exc.strerror or exc})") from None


def _print_summary(s: dict) -> None:
    m = s["median_ms"]
    rows = [[s["frames"], s["faces"], f"{s['fps']:.1f}", *(f"{m[k]:.2f}" for k in m), f"{s['median_frame_ms']:.2f}"]]
    print_table("run summary (median ms per stage)", ["frames", "faces", "fps", *m, "frame"], rows, to_stdout=False)
    if s["identities"]:
        print_table("identities seen", ["identity", "faces"], [[k, v] for k, v in s["identities"].items()],
                    to_stdout=False)
    notes = []
    if s.get("named_by_track"):
        notes.append(f"{s['named_by_track']} faces named by their track")
    if s.get("first_frame_s") is not None:
        notes.append(f"first frame {s['first_frame_s']:.2f} s after start")
    if s.get("peak_rss_mb") is not None:
        notes.append(f"peak RSS {s['peak_rss_mb']:.0f} MiB")
    cap = s.get("capture", {})
    if cap.get("dropped"):
        notes.append(f"{cap['dropped']} frames dropped (newest frame kept)")
    if cap.get("reconnects") or cap.get("outages"):
        notes.append(f"source dropped {cap.get('outages', 0)}x, reopened {cap.get('reconnects', 0)}x")
    if cap.get("skipped"):
        notes.append(f"{cap['skipped']} unreadable images skipped")
    if cap.get("ended_early"):
        notes.append(cap["ended_early"])
    if s.get("stopped_by"):
        notes.append(f"stopped by {s['stopped_by']}")
    if notes:
        typer.echo("; ".join(notes), err=True)


def _self_test(settings: RunSettings) -> None:
    from edgeface.runtime.bundle import Bundle
    from edgeface.runtime.selftest import self_test

    # A wrong --model or --format is the user's mistake (exit 2), not a check this machine failed (exit 1).
    bundle = Bundle.load(settings.model)
    if settings.delegate != "edgetpu":
        bundle.entry(settings.format)
    result = self_test(settings)
    typer.echo(json.dumps(result, indent=2))
    if not result["ok"]:
        failed = [k for k, v in result["checks"].items() if not v]
        reason = result.get("error") or f"failed checks: {', '.join(failed)}"
        typer.echo(f"error: self-test failed: {reason}", err=True)
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.command("run")(user_errors(run_cmd))
