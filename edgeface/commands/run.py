"""``edgeface run``, ``edgeface enroll`` and ``edgeface gallery``: the on-board runtime commands.

Nothing here imports TensorFlow: a board with only the light install runs them.
The runtime modules are imported inside the command bodies, so ``edgeface --help``
stays fast.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import signal
import sys
import threading
from pathlib import Path
from typing import List, Optional, TextIO

import typer

from edgeface.commands.detector_options import DETECTOR_CHOICES, detector_option
from edgeface.commands.errors import user_errors
from edgeface.commands.gallery import DEFAULT_GALLERY, key_file_option, resolve_key
from edgeface.console import print_table, progress_bar
from edgeface.errors import UserError
from edgeface.runtime.bundle import EDGETPU_FORMATS, FORMAT_PREFERENCE  # light: no numpy, no interpreter

# One table per family of choices; the options' help and the checks both read them.
# The detector and backend tables live in edgeface.runtime.detector (imports OpenCV) and .interpreter (imports
# numpy), too heavy for `edgeface --help`: they are copied here (the detector's in commands/detector_options.py) and
# a test keeps the copies equal.
BACKEND_CHOICES = ("ai_edge_litert", "tflite_runtime", "tensorflow")  # = interpreter.BACKENDS
DELEGATE_CHOICES = ("edgetpu",)
FORMAT_CHOICES = (*FORMAT_PREFERENCE, *EDGETPU_FORMATS)
PICK_CHOICES = ("largest",)

MODEL_HELP = ("Model bundle folder (from `edgeface export`) or the name of a shipped model (default, mobilefacenet); "
              "default: the default bundle shipped in the package.")
GALLERY_HELP = f"Gallery file (.npz); default: ./{DEFAULT_GALLERY}."
FORMAT_HELP = (f"Model file of the bundle: {', '.join(FORMAT_CHOICES)} (default: the first the bundle has of "
               f"{', '.join(FORMAT_PREFERENCE)}).")
BACKEND_HELP = f"TFLite interpreter: {', '.join(BACKEND_CHOICES)} (default: the first one installed)."


def _choice(value: Optional[str], choices: tuple, option: str) -> Optional[str]:
    """Reject an unknown choice with the nearest valid one as a suggestion."""
    if value is None or value in choices:
        return value
    close = difflib.get_close_matches(value, choices, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UserError(f"{option} {value!r} is not valid{hint}: choose one of {', '.join(choices)}")


def _parse_size(text: Optional[str]) -> Optional[tuple[int, int]]:
    if not text:
        return None
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UserError(f"--capture-size {text!r} is not WIDTHxHEIGHT (e.g. 640x480)")
    return int(parts[0]), int(parts[1])


MIN_FPS_LIMIT = 1e-3


def _positive(value: Optional[float], option: str) -> None:
    # NaN passes `value <= 0`: ask for a finite number first
    if value is not None and not (math.isfinite(value) and value > 0):
        raise UserError(f"{option} must be a positive number, got {value}")


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
    source: Optional[str] = typer.Option(None, "--source", "-s", help="Camera index (0) or /dev/videoN, picamera2[:N], "
                                         "video file, rtsp:// or http:// URL, folder of images, or one image."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    gallery: Optional[Path] = typer.Option(None, "--gallery", "-g", help=GALLERY_HELP + " Without one, every face "
                                           "is 'unknown'."),
    key_file: Optional[Path] = key_file_option(),
    detector: str = detector_option(),
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
    capture_size: Optional[str] = typer.Option(None, help="Camera resolution WIDTHxHEIGHT (cameras and picamera2)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No rolling status line on stderr."),
    self_test: bool = typer.Option(False, "--self-test", help="Check that this machine runs the bundle correctly; "
                                   "print JSON; exit 1 if a check fails."),
) -> None:
    """Recognise faces live: detect, align, embed and match every frame of a camera, stream, video or folder."""
    _choice(detector, DETECTOR_CHOICES, "--detector")
    _choice(backend, BACKEND_CHOICES, "--backend")
    _choice(delegate, DELEGATE_CHOICES, "--delegate")
    _choice(fmt, FORMAT_CHOICES, "--format")
    _positive(threads, "--threads")
    if self_test:
        _self_test(model, fmt, detector, threads, backend, delegate)
        return
    if source is None:
        raise UserError("--source is required: a camera index (0), /dev/videoN, picamera2, a video file, a stream "
                        "URL or a folder of images")
    _positive(fps_limit, "--fps-limit")
    if fps_limit is not None and fps_limit < MIN_FPS_LIMIT:
        raise UserError(f"--fps-limit {fps_limit:g} is below {MIN_FPS_LIMIT:g} (one frame every "
                        f"{1 / MIN_FPS_LIMIT:.0f} s)")
    _positive(max_frames, "--max-frames")

    from edgeface.runtime.capture import CaptureConfig, open_source, parse_source
    from edgeface.runtime.pipeline import (
        EventWriter,
        StatusLine,
        UnknownSaver,
        check_threshold,
        load_recognizer,
        run_loop,
    )
    from edgeface.runtime.preview import PreviewServer, parse_host_port, read_token_file

    spec = parse_source(source)  # before the models load: a typo in the source fails at once
    key = resolve_key(key_file)  # likewise a missing or open key file
    check_threshold(threshold)
    size = _parse_size(capture_size)
    host_port = parse_host_port(preview) if preview else None
    if preview_token_file is not None and host_port is None:
        raise UserError("--preview-token-file protects the preview: add --preview HOST:PORT")
    token = read_token_file(preview_token_file) if preview_token_file is not None else None
    if save_unknown is not None and save_unknown.exists() and not save_unknown.is_dir():
        raise UserError(f"--save-unknown {save_unknown} is a file: give a folder for the crops (created if missing)")
    for flag, value in (("--unknown-max-files", unknown_max_files), ("--unknown-max-mb", unknown_max_mb),
                        ("--unknown-max-days", unknown_max_days)):
        if not (math.isfinite(value) and value > 0):
            raise UserError(f"{flag} must be a positive number, got {value}")

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
        out = _open_events(events) if events else sys.stdout
        rt = load_recognizer(model, gallery, fmt=fmt, detector=detector, threshold=threshold, threads=threads,
                             backend=backend, delegate=delegate, gallery_key=key)
        stopper = _Stopper()
        writer = EventWriter(out, stop=stopper.event)
        sinks: list = [writer, status]
        if host_port:
            server = PreviewServer(*host_port, source=src.description, token=token).start()  # logs the URL
            sinks.append(server)
        saver = UnknownSaver(save_unknown, rt.threshold, max_files=unknown_max_files,
                             max_bytes=int(unknown_max_mb * 1024 * 1024),
                             max_age_s=unknown_max_days * 86400.0) if save_unknown else None
        if saver:
            sinks.append(saver)
        logger.info("running %s on %s: %d people in the gallery, threshold %.3f", rt.model_path.name,
                    src.description, len(rt.gallery.names()), rt.threshold)
        with stopper:
            stats = run_loop(src, rt.recognizer, sinks, max_frames=max_frames, fps_limit=fps_limit,
                             stop=stopper.event, keep_image=bool(server or saver))
        status.clear()
        if stopper.signal_name:
            logger.warning("%s received: stopped after %d frames", stopper.signal_name, stats.frames)
        summary = stats.summary({
            "source": spec.text,
            "model": str(rt.model_path),
            "backend": rt.recognizer.embedder.model.backend.name,
            "detector": getattr(rt.recognizer.detector, "kind", detector),
            "threshold": rt.threshold,
            "gallery": str(rt.gallery_path) if rt.gallery_path else None,
            "people": len(rt.gallery.names()),
            "stopped_by": stopper.signal_name,
            "capture": src.stats.to_dict(),
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


def _self_test(model, fmt, detector, threads, backend, delegate) -> None:
    from edgeface.runtime.bundle import Bundle
    from edgeface.runtime.selftest import self_test

    # A wrong --model or --format is the user's mistake (exit 2), not a check this machine failed (exit 1).
    bundle = Bundle.load(model)
    if delegate != "edgetpu":
        bundle.entry(fmt)
    result = self_test(model, fmt=fmt, detector=detector, threads=threads, backend=backend, delegate=delegate)
    typer.echo(json.dumps(result, indent=2))
    if not result["ok"]:
        failed = [k for k, v in result["checks"].items() if not v]
        reason = result.get("error") or f"failed checks: {', '.join(failed)}"
        typer.echo(f"error: self-test failed: {reason}", err=True)
        raise typer.Exit(code=1)


# --- enroll ---------------------------------------------------------------------------------


def _images_in(folder: Path) -> list[Path]:
    """The image files below ``folder``, sorted, leaving out hidden files and folders (thumbnail caches, macOS
    ``._`` companions), which hold other people's faces or none."""
    from edgeface.runtime.images import is_image_file

    return sorted(f for f in folder.rglob("*") if f.is_file() and is_image_file(f)
                  and not any(part.startswith(".") for part in f.relative_to(folder).parts))


def _expand_photos(paths: List[Path]) -> list[Path]:
    photos: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = _images_in(p)
            if not found:
                raise UserError(f"no images in folder {p}")
            photos.extend(found)
        elif p.is_file():
            photos.append(p)
        else:
            raise UserError(f"photo not found: {p}")
    return photos


def _people_folder(root: Path) -> list[tuple[str, list[Path]]]:
    """(name, photos) for each person in a people folder: every subfolder is a person named after it (its images,
    at any depth), and an image lying directly in the folder is a person named after the file (face_recognition's
    known-people layout: ``Barack Obama.jpg``)."""
    from edgeface.runtime.gallery import check_name
    from edgeface.runtime.images import is_image_file

    layout = "one subfolder of photos per person, or photos named after their person"
    if not root.is_dir():
        raise UserError(f"--people {root}: not a folder ({layout})")
    try:
        entries = sorted(root.iterdir())
    except OSError as exc:
        raise UserError(f"--people {root}: cannot read it ({exc.strerror})") from None
    people: dict[str, list[Path]] = {}
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            name = entry.name
            photos = _images_in(entry)
        elif entry.is_file() and is_image_file(entry):
            name, photos = entry.stem, [entry]
        else:
            continue
        try:
            check_name(name)
        except UserError as exc:
            raise UserError(f"--people {root}: {entry.name!r} cannot name a person: {exc}") from None
        people.setdefault(name, []).extend(photos)
    if not people:
        raise UserError(f"--people {root}: no person in it ({layout})")
    return list(people.items())


def _enroll_person(store, recognizer, threshold: float, name: str, photos: list[Path], pick: Optional[str],
                   replace: bool, progress) -> tuple[dict, list]:
    """Embed ``photos`` and add them to ``store`` under ``name`` (not saved yet): the person's report (``embedded``:
    photos with one usable face, before repeats are dropped; ``enrolled``: embeddings added) and its photo rows."""
    from edgeface.runtime.pipeline import enroll_photos

    embeddings, sources, rows = enroll_photos(recognizer, photos, pick=pick, progress=progress)
    embedded = len(embeddings)
    warnings = _lookalike_warnings(store, name, embeddings, sources, threshold) if embedded else []
    if not replace:
        embeddings, sources, repeats = _drop_repeats(store, name, embeddings, sources)
        warnings += repeats
        if repeats:  # one warning per photo dropped
            for row in rows:  # the row says what happened to the photo: it added nothing
                if row.status == "enrolled" and row.photo not in sources:
                    row.status, row.detail = "already enrolled", "the same face is in the gallery"
    # --replace with no usable photo keeps what the person has
    replaced = store.remove(name) if replace and embedded and name in store.names() else 0
    if len(embeddings):
        store.add(name, embeddings, sources)
    report = {"name": name, "embedded": embedded, "enrolled": len(embeddings), "replaced": replaced,
              "skipped": len(rows) - len(embeddings), "photos": [r.to_dict() for r in rows], "warnings": warnings}
    return report, rows


def enroll_cmd(
    name: Optional[str] = typer.Argument(None, help="The person's name, as `edgeface run` will report it."),
    images: Optional[List[Path]] = typer.Argument(None, help="Photos of this person (files or folders), one face "
                                                             "each."),
    people: Optional[Path] = typer.Option(None, "--people", help="Enroll everyone in a folder instead of NAME "
                                          "PHOTOS: one subfolder of photos per person, named after them, or photos "
                                          "named after their person (Barack Obama.jpg)."),
    gallery: Path = typer.Option(Path(DEFAULT_GALLERY), "--gallery", "-g", help="Gallery file to add to (created if "
                                 "missing)."),
    key_file: Optional[Path] = key_file_option(),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    fmt: Optional[str] = typer.Option(None, "--format", help=FORMAT_HELP),
    detector: str = detector_option(),
    pick: Optional[str] = typer.Option(None, help="With several faces in a photo: 'largest' enrolls the largest "
                                       "(default: skip the photo)."),
    replace: bool = typer.Option(False, "--replace", help="Replace this person's existing embeddings instead of "
                                 "adding to them."),
    threads: Optional[int] = typer.Option(None, help="Interpreter threads."),
    backend: Optional[str] = typer.Option(None, help=BACKEND_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Enroll a person from photos (or everyone in a --people folder): detect, align and embed one face per photo
    into the gallery."""
    from edgeface.runtime.gallery import Gallery, check_name
    from edgeface.runtime.pipeline import load_recognizer

    if people is not None and (name is not None or images):
        raise UserError("give NAME PHOTOS... or --people FOLDER, not both")
    if people is None and (name is None or not images):
        raise UserError("give a name and photos (`edgeface enroll NAME PHOTO...`), or a folder of people "
                        "(`edgeface enroll --people FOLDER`)")
    if name is not None:
        check_name(name)
    _choice(detector, DETECTOR_CHOICES, "--detector")
    _choice(pick, PICK_CHOICES, "--pick")
    _choice(backend, BACKEND_CHOICES, "--backend")
    _choice(fmt, FORMAT_CHOICES, "--format")
    _positive(threads, "--threads")
    work = _people_folder(people) if people is not None else [(name, _expand_photos(images))]
    key = resolve_key(key_file)  # before the models load: a bad key file is one line at once
    # with_gallery=False: enroll opens its own --gallery below; load_recognizer would read ./gallery.npz instead.
    rt = load_recognizer(model, None, fmt=fmt, detector=detector, threads=threads, backend=backend,
                         with_gallery=False)
    # Read (and check) the gallery before the work: a corrupt one or another model's stops us here, untouched.
    store = Gallery.open_or_create(gallery, rt.model_id, key=key)
    total = sum(len(photos) for _, photos in work)
    reports, rows = [], []
    label = f"enrolling {name}" if people is None else f"enrolling {len(work)} " + ("person" if len(work) == 1
                                                                                  else "people")
    with progress_bar(label, disable=as_json) as advance:
        for person, photos in work:
            def step(i: int, _n: int, base: int = len(rows)) -> None:
                advance(base + i, total)

            report, person_rows = _enroll_person(store, rt.recognizer, rt.threshold, person, photos, pick, replace,
                                                 step)
            reports.append(report)
            rows.extend(person_rows)
    if not any(r["embedded"] for r in reports):
        reasons = "; ".join(f"{Path(r.photo).name}: {r.detail}" for r in rows[:5]) or "no photos"
        what = f"no photo of {name!r}" if people is None else f"nobody in {people}"
        raise UserError(f"{what} could be enrolled ({reasons}); {gallery} was not changed")
    if any(r["enrolled"] for r in reports):
        store.save(gallery)
    warnings = [w for r in reports for w in r.pop("warnings")]
    totals = {k: sum(r[k] for r in reports) for k in ("enrolled", "replaced", "skipped")}
    if people is None:
        report = {"name": name, "gallery": str(gallery), **totals, "people": len(store.names()),
                  "embeddings": len(store), "photos": reports[0]["photos"], "warnings": warnings}
    else:
        report = {"folder": str(people), "gallery": str(gallery), "enrolled_people": sum(r["enrolled"] > 0
                  for r in reports), **totals, "people": len(store.names()), "embeddings": len(store),
                  "persons": reports, "warnings": warnings}
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    if people is None:
        print_table(f"enroll {name}", ["photo", "faces", "result", "detail"],
                    [[Path(r.photo).name, r.faces, r.status, r.detail] for r in rows])
    else:
        print_table(f"enroll {people}", ["name", "photos", "enrolled", "skipped", "why skipped"],
                    [[r["name"], len(r["photos"]), r["enrolled"], r["skipped"],
                      "; ".join(sorted({p["status"] for p in r["photos"] if p["status"] != "enrolled"}))
                      if r["photos"] else "no images in its folder"]
                     for r in reports])
    for w in warnings:
        typer.echo(f"warning: {w}", err=True)
    replaced = totals["replaced"]
    who = name if people is None else f"{report['enrolled_people']} of {len(reports)} people"
    typer.echo(f"{who}: {totals['enrolled']} embedding(s) added{f', {replaced} replaced' if replaced else ''}; "
               f"{gallery} holds {len(store.names())} people, {len(store)} embeddings", err=True)


# Two embeddings this close are the same photo (or the same frame) enrolled again, not another view of the face.
REPEAT_COSINE = 0.999


def _drop_repeats(store, name: str, embeddings, sources) -> tuple:
    """``embeddings``/``sources`` less the photos ``name`` already has in ``store``, and a warning for each.

    Re-running an enroll command must not stack identical rows: they add nothing to matching and
    inflate the person's count.
    """
    import numpy as np

    mine = [i for i, label in enumerate(store.labels) if label == name]
    if not mine or not len(embeddings):
        return embeddings, sources, []
    best = (np.asarray(embeddings, np.float32) @ store.embeddings[mine].T).max(axis=1)
    keep = best < REPEAT_COSINE
    warnings = [f"{Path(src).name} is already enrolled for {name!r} (cosine {b:.4f}): skipped"
                for src, b, k in zip(sources, best, keep) if not k]
    return embeddings[keep], [s for s, k in zip(sources, keep) if k], warnings


def _lookalike_warnings(store, name: str, embeddings, sources, threshold: float) -> list[str]:
    """Photos that already match somebody else: a mislabelled photo or two names for one person."""
    if not len(store):
        return []
    from edgeface.runtime.matcher import Matcher

    others = [i for i, label in enumerate(store.labels) if label != name]
    if not others:
        return []
    matcher = Matcher(store.embeddings[others], [store.labels[i] for i in others], threshold)
    return [f"{Path(src).name} matches {m.identity!r} (cosine {m.score:.2f}): check that it shows {name}"
            for src, m in zip(sources, matcher.match(embeddings)) if m.known]


def register(app: typer.Typer) -> None:
    app.command("run")(user_errors(run_cmd))
    app.command("enroll")(user_errors(enroll_cmd))
