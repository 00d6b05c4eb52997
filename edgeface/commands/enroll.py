"""``edgeface enroll``: add people to a gallery from their photos, or everyone in a folder of people.

The work (detect, align and embed one face per photo, drop repeats, warn of lookalikes) is
:mod:`edgeface.runtime.enroll`'s; here are the flags, the progress bar and the report.  Nothing here imports
TensorFlow, and the runtime modules are imported inside the command body, so ``edgeface --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from edgeface.commands.detector_options import detector_option, detector_precision_option
from edgeface.commands.errors import user_errors
from edgeface.commands.gallery import DEFAULT_GALLERY, key_file_option, resolve_key
from edgeface.commands.model_options import BACKEND_HELP, FORMAT_HELP, MODEL_HELP
from edgeface.console import print_table, progress_bar
from edgeface.errors import UserError
from edgeface.runtime.settings import PICK_CHOICES, RunSettings, check_choice


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
    detector_precision: str = detector_precision_option(),
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
    from edgeface.runtime.enroll import enroll_person, expand_photos, people_folder
    from edgeface.runtime.gallery import Gallery, check_name
    from edgeface.runtime.recognizer import load_recognizer

    if people is not None and (name is not None or images):
        raise UserError("give NAME PHOTOS... or --people FOLDER, not both")
    if people is None and (name is None or not images):
        raise UserError("give a name and photos (`edgeface enroll NAME PHOTO...`), or a folder of people "
                        "(`edgeface enroll --people FOLDER`)")
    if name is not None:
        check_name(name)
    settings = RunSettings(model=_text(model), format=fmt, detector=detector, detector_precision=detector_precision,
                           threads=threads, backend=backend)
    settings.check("detector", "detector_precision")
    check_choice("pick", pick, PICK_CHOICES)
    settings.check("backend", "format", "threads")
    work = people_folder(people) if people is not None else [(name, expand_photos(images))]
    key = resolve_key(key_file)  # before the models load: a bad key file is one line at once
    # with_gallery=False: enroll opens its own --gallery below; load_recognizer would read ./gallery.npz instead.
    rt = load_recognizer(settings, with_gallery=False)
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

            report, person_rows = enroll_person(store, rt.recognizer, rt.threshold, person, photos, pick, replace,
                                                step, pick_name="--pick")
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


def _text(path: Optional[Path]) -> Optional[str]:
    return str(path) if path is not None else None


def register(app: typer.Typer) -> None:
    app.command("enroll")(user_errors(enroll_cmd))
