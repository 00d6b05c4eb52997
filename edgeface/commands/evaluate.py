"""``edgeface evaluate``: LFW-style pair verification and closed-set rank-1 identification."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from edgeface.commands.detector_options import DETECTOR_MODES_HELP, detector_option
from edgeface.commands.errors import user_errors
from edgeface.console import console, print_table, progress_bar
from edgeface.errors import UserError


@user_errors
def evaluate_cmd(
    model: Path = typer.Argument(
        ..., help="Embedding model: a .keras file (edgeface train/import) or .tflite (edgeface export)."),
    spec: Optional[Path] = typer.Option(
        None, "--spec", help="Face-model spec (TOML: input size, alignment template, normalisation); default: the "
        "bundle's manifest, MODEL.toml beside the model, else edgeface's own."),
    pairs: Optional[Path] = typer.Option(
        None, "--pairs", help="Pairs file, e.g. LFW pairs.txt (10 folds) or pairsDevTest.txt."),
    images: Optional[Path] = typer.Option(
        None, "--images", help="Folder of the pairs' images: raw (e.g. lfw-deepfunneled) or prepared crops."),
    bins: Optional[list[Path]] = typer.Option(
        None, "--bin", help="InsightFace verification set (lfw.bin, cfp_fp.bin, agedb_30.bin: aligned 112x112 "
        "crops, read with a restricted unpickler), 10 folds; repeat for several."),
    fold: Optional[int] = typer.Option(
        None, "--fold", help="Evaluate this fold only (1-based); its threshold is chosen on the other folds."),
    far: float = typer.Option(1e-3, "--far", help="False accept rate for TAR@FAR and the threshold at FAR."),
    roc: Optional[Path] = typer.Option(None, "--roc", help="Write a ROC plot (PNG, log FAR axis) to this file."),
    gallery: Optional[Path] = typer.Option(None, "--gallery", help="Identity folder of enrolled faces (rank-1)."),
    probe: Optional[Path] = typer.Option(None, "--probe", help="Identity folder of query faces (rank-1)."),
    detector: str = detector_option("Face detector for raw images: " + DETECTOR_MODES_HELP),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for the model (default: all)."),
    backend: Optional[str] = typer.Option(
        None, "--backend",
        help="TFLite interpreter: ai_edge_litert, tflite_runtime or tensorflow (default: first found)."),
    flip: bool = typer.Option(False, "--flip", help="Flip test: embed each face and its mirror image and average "
                              "the two (twice the model runs)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON (only JSON on stdout)."),
) -> None:
    """Measure a model: 10-fold verification (--pairs with --images, or --bin) or rank-1 (--gallery/--probe)."""
    from edgeface.evaluate.embedders import check_model_path, make_embedder
    from edgeface.evaluate.pairs import PairImages, read_pairs

    # Every cheap check first: a typo should not cost a model load or minutes of face detection.
    check_model_path(model)
    if spec is not None:
        from edgeface.runtime.facemodel import read_spec_file

        read_spec_file(spec)
    bins = list(bins or [])
    if pairs is None and not bins and gallery is None and probe is None:
        raise UserError("nothing to evaluate: give --pairs PAIRS --images DIR or --bin lfw.bin (verification) "
                        "or --gallery DIR --probe DIR (rank-1 identification)")
    if pairs is None and images is not None:
        raise UserError("--images belongs to pair verification: add --pairs PAIRS")
    if pairs is None and not bins and (fold is not None or roc is not None):
        raise UserError("--fold and --roc belong to verification: add --pairs PAIRS or --bin FILE")
    if roc is not None and (pairs is not None) + len(bins) > 1:
        raise UserError("--roc plots one verification set: give --pairs or a single --bin")
    if (gallery is None) != (probe is None):
        raise UserError("rank-1 identification needs both --gallery DIR and --probe DIR")
    for name, folder in (("--gallery", gallery), ("--probe", probe)):
        if folder is not None and not folder.is_dir():
            raise UserError(f"{name} folder not found: {folder}")
    if not 0.0 < far < 1.0:
        raise UserError(f"--far must be between 0 and 1 (e.g. 1e-3), got {far}")
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    pair_list, pair_images = None, None
    if pairs is not None:
        if images is None:
            raise UserError("--pairs needs --images DIR: the folder holding the pairs' images")
        pair_list = read_pairs(pairs)
        pair_images = PairImages(images, detector=detector, backend=backend)
        if fold is not None:
            from edgeface.evaluate.verification import select_folds

            select_folds(pair_list, fold)
        if roc is not None:
            from edgeface.evaluate.plots import check_png_path

            check_png_path(roc)

    bin_sets = []
    if bins:
        from edgeface.evaluate.binsets import BinImages, read_bin

        bin_sets = [BinImages(read_bin(b)) for b in bins]
        if fold is not None:
            from edgeface.evaluate.verification import select_folds

            select_folds(bin_sets[0].binset.pairs(), fold)
        if roc is not None and pairs is None:
            from edgeface.evaluate.plots import check_png_path

            check_png_path(roc)

    embedder = make_embedder(model, threads=threads, backend=backend, flip=flip, spec_file=spec)
    if pair_images is not None:
        pair_images.check_spec(embedder.spec, model.name)
    for b in bin_sets:
        b.check_spec(embedder.spec, model.name)
    report: dict = {"model": str(model), "flip_test": flip}
    if pair_list is not None:
        from edgeface.evaluate.verification import evaluate_pairs

        with progress_bar("aligning and embedding pair images", disable=as_json) as advance:
            result = evaluate_pairs(embedder, pair_list, pair_images, folds=fold, far=far, progress=advance)
        report["verification"] = result.to_dict()
        if roc is not None:
            from edgeface.evaluate.plots import RocCurve, plot_roc

            far_pts, tar_pts, _ = result.roc()
            label = f"{model.name} (AUC {result.auc:.4f})"
            which = f"fold {result.folds[0]}, " if fold is not None else ""
            plot_roc([RocCurve(label, far_pts, tar_pts, result.n_impostor)], roc,
                     title=f"ROC on {pairs.name} ({which}{result.n_pairs} pairs)", mark_far=far)
            report["verification"]["roc"] = str(roc)
        if not as_json:
            _print_verification(result, pairs)
    if bin_sets:
        _evaluate_bins(embedder, bin_sets, model, fold, far, roc, as_json, report)
    if gallery is not None:
        from edgeface.evaluate.verification import evaluate_identification

        with progress_bar("aligning and embedding gallery and probe", disable=as_json) as advance:
            ident = evaluate_identification(embedder, gallery, probe, detector=detector, progress=advance)
        report["identification"] = ident
        if not as_json:
            _print_identification(ident)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    elif roc is not None:
        console.print(f"ROC plot written to {roc}")


def _evaluate_bins(embedder, bin_sets: list, model: Path, fold: Optional[int], far: float, roc: Optional[Path],
                   as_json: bool, report: dict) -> None:
    """Each .bin through the pairs evaluation (InsightFace's 10 consecutive folds); results under report["bins"]."""
    from edgeface.evaluate.verification import evaluate_pairs
    from edgeface.runtime.facemodel import FaceModelSpec

    report["bins"] = []
    for b in bin_sets:
        path = b.binset.path
        with progress_bar(f"embedding {path.name}", disable=as_json) as advance:
            result = evaluate_pairs(embedder, b.binset.pairs(), b, folds=fold, far=far, progress=advance)
        report["bins"].append({"file": str(path), **result.to_dict()})
        if roc is not None:
            from edgeface.evaluate.plots import RocCurve, plot_roc

            far_pts, tar_pts, _ = result.roc()
            which = f"fold {result.folds[0]}, " if fold is not None else ""
            plot_roc([RocCurve(f"{model.name} (AUC {result.auc:.4f})", far_pts, tar_pts, result.n_impostor)], roc,
                     title=f"ROC on {path.name} ({which}{result.n_pairs} pairs)", mark_far=far)
            report["bins"][-1]["roc"] = str(roc)
        if not as_json:
            _print_verification(result, path)
    if not as_json and not embedder.spec.same_alignment(FaceModelSpec(size=(112, 112))):
        console.print(f"note: InsightFace's .bin crops are aligned to the ArcFace template; {model.name} is aligned "
                      "to another one, so these faces sit a few pixels off the ones it was trained on")


def _print_verification(r, pairs: Path) -> None:
    from edgeface.evaluate.verification import THRESHOLD_TEST_FOLD

    folds = f"fold {r.folds[0]}" if len(r.folds) == 1 else f"{len(r.folds)} folds"
    if len(r.folds) > 1:
        accuracy = f"{100 * r.accuracy_mean:.2f} ± {100 * r.accuracy_std:.2f} %"
    elif r.threshold_source == THRESHOLD_TEST_FOLD:  # a spread over one fold would read as a measured 0
        accuracy = f"{100 * r.accuracy_mean:.2f} % (optimistic)"
    else:
        accuracy = f"{100 * r.accuracy_mean:.2f} % at {r.fold_thresholds[0]:.4f}"
    if r.tar_at_far_cv is not None:
        spread = f" ± {100 * r.tar_at_far_cv_std:.2f}" if r.tar_at_far_cv_std is not None else ""
        tar_cv = f"{100 * r.tar_at_far_cv:.2f}{spread} % (FAR {100 * r.far_cv:.3g} %)"
    else:
        tar_cv = "-"
    print_table(
        f"verification: {r.model} on {pairs.name} ({folds}, {r.n_pairs} pairs)",
        ["accuracy", "AUC", f"TAR@FAR={r.far:g}, threshold of other folds", f"TAR@FAR={r.far:g} pooled (threshold)",
         "best threshold (acc.) on these pairs", "no face (pairs)", "pairs"],
        [[accuracy, f"{r.auc:.4f}", tar_cv, f"{100 * r.tar_at_far:.2f} % ({r.threshold_at_far:.4f})",
          f"{r.best_threshold:.4f} ({100 * r.best_accuracy:.2f} %)", f"{r.no_face} ({r.no_face_pairs})",
          r.n_pairs]],
    )
    console.print("pooled TAR and best threshold are set on the evaluated pairs themselves (optimistic); the "
                  "cross-validated TAR uses the threshold at FAR of the other folds, with the FAR it then reached")
    if len(r.folds) > 1:
        rows = zip(r.folds, r.fold_accuracies, r.fold_thresholds)
        print_table("per fold", ["fold", "accuracy %", "threshold"],
                    [[f, f"{100 * a:.2f}", f"{t:.4f}"] for f, a, t in rows])
    console.print(f"threshold for accuracy: {r.threshold_source}; faces from {r.images}; "
                  f"aligning {r.align_seconds:.1f} s, embedding {r.embed_seconds:.1f} s")
    if r.far < r.far_resolution:
        console.print(f"[yellow]note:[/] {r.n_impostor} impostor pairs resolve FAR down to "
                      f"{r.far_resolution:.2g} only: the threshold at FAR={r.far:g} accepts no impostor pair",
                      markup=True)
    if r.no_face:
        shown = ", ".join(r.no_face_images[:5]) + (" ..." if r.no_face > 5 else "")
        console.print(f"no face found in {r.no_face} image(s) ({shown})")


def _print_identification(d: dict) -> None:
    print_table(
        f"rank-1 identification: {d['model']}",
        ["rank-1", "correct", "probes", "gallery images", "identities", "chance", "no face", "unknown probes",
         "probes also in gallery"],
        [[f"{100 * d['rank1']:.2f} %", d["correct"], d["n_probe"], d["n_gallery"], d["gallery_identities"],
          f"{100 * d['chance']:.2f} %", d["no_face"], d["probe_unknown_excluded"], d["probe_in_gallery_excluded"]]],
    )


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_cmd)
