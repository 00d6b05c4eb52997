#!/usr/bin/env bash
# How edgeface/models/mobilefacenet was made: edgeface's own CLI only, on ../shared/data/lfw.
#
#   RUN=runs/mobilefacenet INSTALL=1 bash edgeface/models/mobilefacenet/recipe.sh      (from the repository root)
#
# 1. distil dlib's ResNet face model (99 % on LFW) into a 128-d MobileFaceNet on LFW deep-funneled
#    photos, with the people of View 2 fold 10 left out (and a light CosFace term on the identity
#    folders), 2. export every format (int8 calibrated on training people only) with the accuracy cost
#    measured on all 6,000 View 2 pairs, 3. evaluate fold 10 (people never seen in training), then
#    the 10-fold number (optimistic: folds 1-9 people were trained on).
# The teacher's embeddings are cached in $RUN/dlib_teacher.sqlite, so a re-run only trains.
#
# On a 2-core CPU the distillation takes ~7.5 min per epoch (25 img/s) plus ~30 min for the teacher cache.
# Training runs in two phases (PHASES="14 32"): a cosine schedule over 14 epochs, then a warm restart with
# `--resume --epochs 32`, whose cosine follows the new total, so epoch 15 starts again at 0.60x the peak rate and
# decays to 1 % at epoch 32 (the 14-epoch model was 90.8 % on fold 10 and still improving, so it was continued).
# The shipped model was trained over several sessions: phase 1 started with --epochs 40, stopped after epoch 2, then
# `--resume --epochs 14` (epochs 1-2 ran at 0.998x and 0.994x the peak rate instead of 0.988x and 0.951x); phase 2
# ran epochs 15-19 with --epochs 40 (0.73x down to 0.54x of the peak rate instead of 0.60x down to 0.36x), then
# `--resume --epochs 32`. RESUME=1 adds --resume to the first phase; PHASES="14" gives the 14-epoch model.
set -euo pipefail
DATA=${EDGEFACE_DATA:-../shared/data}
RUN=${RUN:-runs/mobilefacenet}
LFW=$DATA/lfw/lfw-deepfunneled
PHASES=${PHASES:-14 32}
mkdir -p "$RUN"

resume=${RESUME:+--resume}
for epochs in $PHASES; do
    edgeface distill "$LFW" --teacher dlib --cache "$RUN/dlib_teacher.sqlite" \
        --exclude-people "$DATA/lfw/people.txt:10" --out "$RUN/student" \
        --arch mobilefacenet --embedding-dim 128 --loss cosine --structure 1.0 \
        --labels 0.05 --head cosface --scale 32 --margin 0.35 \
        --epochs "$epochs" --batch-size 64 --lr-schedule cosine --patience 0 --seed 0 \
        $resume
    resume=--resume
done

# Aligned crops once (the runtime's own detector and alignment), so export and evaluate skip detection.
edgeface data prepare "$LFW" --out "$RUN/lfw_crops" --json > "$RUN/prepare.json"

# --far 1e-2: the shipped match threshold accepts 1 % of impostor pairs. At 1e-3 this model accepts only 49 %
# of genuine pairs (threshold 0.64), too few for a camera; at 1e-2, 82 % (threshold 0.47). evaluate below
# still reports TAR at FAR 1e-3.
# Per-channel int8 (export's default). `--per-tensor` makes the int8 file 18 % smaller (26.9 % of float32
# instead of 32.7 %). With the 14-epoch weights it was 0.50 pt below per-channel on fold 10 (3 pairs of 600);
# with the 32-epoch weights 0.50 pt above (94.33 vs 93.83 %) and 0.08 pt above on the 6,000 pairs: noise
# either way, so the default model keeps export's default.
edgeface export "$RUN/student/model.keras" --formats all --name mobilefacenet \
    --calib "$RUN/lfw_crops" --calib-exclude-people "$DATA/lfw/people.txt:10" \
    --pairs "$DATA/lfw/pairs.txt" --images "$RUN/lfw_crops" --far 1e-2 --out "$RUN/bundle" --json > "$RUN/export.json"

for fmt in float32 int8; do
    edgeface evaluate "$RUN/bundle/mobilefacenet_$fmt.tflite" --pairs "$DATA/lfw/pairs.txt" --images "$RUN/lfw_crops" \
        --fold 10 --roc "$RUN/roc_fold10_$fmt.png" --json > "$RUN/eval_fold10_$fmt.json"
    edgeface evaluate "$RUN/bundle/mobilefacenet_$fmt.tflite" --pairs "$DATA/lfw/pairs.txt" --images "$RUN/lfw_crops" \
        --json > "$RUN/eval_10fold_$fmt.json"
done

# Record the fold-10 / 10-fold figures and this recipe in the manifest, then install the bundle as the package's
# mobilefacenet model (float32 + int8 + detectors; the other formats are not shipped).
python3 - "$RUN" <<'PY'
import json, pathlib, sys
run = pathlib.Path(sys.argv[1])
mf_path = run / "bundle" / "manifest.json"
mf = json.loads(mf_path.read_text())
mf["recipe"] = "edgeface/models/mobilefacenet/recipe.sh"
mf["evaluation"] = {f"{proto}_{fmt}": json.loads((run / f"eval_{proto}_{fmt}.json").read_text())
                    for proto in ("fold10", "10fold") for fmt in ("float32", "int8")}
mf["evaluation"]["note"] = ("fold10: LFW View 2 fold 10, whose people were left out of training; 10fold: all ten "
                            "folds, optimistic because folds 1-9 people were trained on")
# train.json's "seconds" counts the last session only; the per-epoch history spans every resume.
history = json.loads((run / "student" / "train.json").read_text())["history"]
mf["training_time"] = {"epochs": len(history), "seconds_all_sessions": round(sum(h["seconds"] for h in history), 1),
                       "lr_per_epoch": [h["lr"] for h in history]}
tmp = mf_path.with_suffix(".tmp")
tmp.write_text(json.dumps(mf, indent=2) + "\n")
tmp.replace(mf_path)
PY
# INSTALL=1: copy the shipped files (the manifest, float32, int8, the detectors and their licence note) into the
# package; the bundle's other formats, if any, stay in $RUN.
if [ "${INSTALL:-0}" = 1 ]; then
    python3 - "$RUN/bundle" edgeface/models/mobilefacenet <<'PY'
import json, pathlib, shutil, sys
src, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
mf = json.loads((src / "manifest.json").read_text())
mf["files"] = [f for f in mf["files"] if f["format"] in ("fp32", "int8")]
paths = [f["path"] for f in mf["files"]] + [d["path"] for d in mf.get("detectors", [])]
paths += [d["license_file"] for d in mf.get("detectors", []) if d.get("license_file")]
for rel in paths:
    (dest / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / rel, dest / rel)
(dest / "manifest.json").write_text(json.dumps(mf, indent=2) + "\n")
PY
    cp "$RUN/roc_fold10_int8.png" edgeface/models/mobilefacenet/  # README shows it
fi
