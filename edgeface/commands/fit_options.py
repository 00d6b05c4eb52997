"""The command-line options ``edgeface train`` and ``edgeface distill`` share, defined once.

Each constant is a Typer option used as a parameter default in both commands,
so a flag's name, default and help cannot drift apart between them; what
differs (defaults, wording tied to one command) stays in that command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import typer

from edgeface.errors import UserError

if TYPE_CHECKING:
    from edgeface.train.augment import AugmentConfig

ARCH = typer.Option("mobilefacenet", help="Architecture: mobilefacenet or seed-cnn.")
WIDTH = typer.Option(1.0, help="Channel multiplier of the architecture (1 = standard, ~1 M parameters for "
                     "mobilefacenet; 1.5 = ~2.1 M, slower on the board).")
SCALE = typer.Option(None, help="Margin head: logit scale s (default 64).")
MARGIN = typer.Option(None, help="Margin head: the margin (arcface 0.5 rad, cosface 0.35).")
MARGINS = typer.Option(None, help="Margin head: all three as m1,m2,m3 for cos(m1*t+m2)-m3.")
LR = typer.Option(None, help="Initial learning rate (default adam 1e-3, sgd 0.05).")
MOMENTUM = typer.Option(0.9, help="SGD momentum.")
WEIGHT_DECAY = typer.Option(None, help="Decoupled weight decay (default sgd 5e-4, adam 0).")
LR_SCHEDULE = typer.Option("cosine", help="cosine (decay to 1% over the epochs) or constant.")
EPOCHS = typer.Option(20, help="Epochs (in total, counting those before a --resume).")
EXCLUDE_PEOPLE = typer.Option(None, help="People file to leave out (FILE or FILE:FOLD, e.g. LFW people.txt:10 or "
                              "pairs.txt).")
PATIENCE = typer.Option(10, help="Early stopping: epochs without improvement (0 = off).")
RESUME = typer.Option(False, help="Continue the run in --out from its last checkpoint.")
CHECKPOINT_EVERY = typer.Option(0, help="Also checkpoint every N optimizer steps (0 = at epoch ends only); --resume "
                                "continues at that step with the batches and augmentation an uninterrupted run "
                                "would have had.")
REMAT = typer.Option(False, "--remat/--no-remat", help="Recompute the network's activations in the backward pass "
                     "instead of keeping them: the same gradients in less memory (MobileFaceNet at batch 64 on a CPU: "
                     "2.40 -> 1.39 GB) for ~35% more time a step. TensorFlow only.")
AUGMENT = typer.Option(True, help="Augmentation on/off (each kind can also be set to 0 below).")
ROTATION = typer.Option(10.0, help="Augment: max rotation, degrees.")
SHIFT = typer.Option(0.08, help="Augment: max width/height shift, fraction.")
SHEAR = typer.Option(0.1, help="Augment: max shear, fraction.")
ZOOM = typer.Option(0.1, help="Augment: max zoom in/out, fraction.")
FLIP = typer.Option(True, help="Augment: random horizontal flip.")
BRIGHTNESS = typer.Option(0.2, help="Augment: max brightness change, fraction.")
CONTRAST = typer.Option(0.2, help="Augment: max contrast change, fraction.")
PRECISION = typer.Option("float32", help="float32, mixed_float16 (GPU) or mixed_bfloat16 (recent CPUs, TPU). The "
                         "saved model is float32 either way.")
SEED = typer.Option(0, help="Random seed (split, shuffling, augmentation, initialisation).")
AS_JSON = typer.Option(False, "--json", help="Print the result as JSON (progress is not shown).")
VAL_BIN = typer.Option(None, "--val-bin", help="InsightFace verification set (lfw.bin, cfp_fp.bin, agedb_30.bin: "
                       "112x112 aligned crops) scored during training with evaluate --bin's 10 folds; repeat for "
                       "several. Read before training starts.")
VAL_EVERY = typer.Option(None, "--val-every", help="Score the --val-bin sets every N optimizer steps (default: at "
                         "the end of every epoch).")


def augment_config(augment: bool, rotation: float, shift: float, shear: float, zoom: float, flip: bool,
                   brightness: float, contrast: float) -> AugmentConfig:
    """The augmentation the flags ask for (``--no-augment`` switches every kind off)."""
    from edgeface.train.augment import AugmentConfig

    if not augment:
        return AugmentConfig.off()
    return AugmentConfig(rotation, shift, shear, zoom, flip, brightness, contrast)


def parse_margins(text: Optional[str]) -> Optional[tuple[float, float, float]]:
    """``"1,0.3,0.2"`` -> (1.0, 0.3, 0.2)."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--margins must be three numbers m1,m2,m3 (e.g. 1,0.3,0.2), got {text!r}") from None
    if len(values) != 3:
        raise UserError(f"--margins must be three numbers m1,m2,m3 (e.g. 1,0.3,0.2), got {text!r}")
    return values  # type: ignore[return-value]


def width_label(width: float) -> str:
    """How result tables show a width multiplier: nothing for the standard network, else `` x1.5``."""
    return "" if width == 1.0 else f" x{width:g}"


def val_bin_rows(metrics: dict, records: list[dict]) -> list[list[str]]:
    """Result-table rows of the --val-bin sets: the saved model's figures and the last validation's."""
    from edgeface.train.progress import bin_figure

    rows = []
    names = list(dict.fromkeys(r["set"] for r in records))
    names += [k[4:] for k in metrics if k.startswith("bin:") and f"{k}_threshold" in metrics and k[4:] not in names]
    for name in names:
        key = f"bin:{name}"
        if key in metrics:
            rows.append([f"{name}.bin, saved model",
                         bin_figure(metrics[key], metrics.get(f"{key}_std"), metrics[f"{key}_threshold"])])
        last = [r for r in records if r["set"] == name]
        if last:
            r = last[-1]
            rows.append([f"{name}.bin at step {r['step']}",
                         bin_figure(r["accuracy"], r["accuracy_std"], r["threshold"])])
    return rows
