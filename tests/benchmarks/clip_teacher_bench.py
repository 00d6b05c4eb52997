"""What a distillation teacher recognises on a clip, next to the runtime's model, on the very same faces.

    python tests/benchmarks/clip_teacher_bench.py [--model BUNDLE] [--teacher dlib] [--clip CLIP]
        [--detector full] [--teacher-tolerance 0.6] [--json]

Both models see the faces BlazeFace finds in every frame of the clip (the runtime's detector); the
runtime's model embeds the runtime's aligned crop, the teacher prepares its own input from the frame
(dlib: its 5-point landmarks and 150x150 chip).  Lin-Manuel Miranda and Alex Lacamoire are enrolled from
one photo each, Obama and Biden as distractors (they are not on stage).  A face is named after the
nearest enrolled photo when it is close enough: cosine >= the bundle's threshold for the runtime's model,
Euclidean distance <= ``--teacher-tolerance`` for the teacher (0.6 is `face_recognition`'s default
tolerance for the dlib model).  Prints, per model and person: faces named, the frames they are in, faces
where that person is merely the nearest photo (no threshold), the median cosine (student) or distance
(teacher) over those faces, and faces given a distractor's name.

The teacher bounds what distillation can give the student: a person the teacher itself does not
recognise from that one photo will not be recognised by a student that imitates it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime_bench import DATA, DISTRACTORS, PEOPLE, _ranges  # noqa: E402


def reference_faces(rec, media: Path) -> dict:
    """Name -> (RGB photo, its largest face as the runtime finds, aligns and embeds it) for everyone enrolled."""
    from edgeface.runtime.images import read_image

    refs = {}
    for name, photo in {**PEOPLE, **DISTRACTORS}.items():
        image = read_image(media / photo)
        faces = rec.process(image)  # largest face first
        if not faces:
            raise SystemExit(f"no face found in {photo}")
        refs[name] = (image, faces[0])
    return refs


def tally(names: list[str], scores: np.ndarray, accept: np.ndarray, frames: list[int]) -> dict:
    """Per-person counts from a (faces, people) score matrix where higher is closer."""
    nearest = scores.argmax(axis=1) if len(scores) else np.zeros(0, int)
    best = scores.max(axis=1) if len(scores) else np.zeros(0)
    named = accept[np.arange(len(nearest)), nearest] if len(scores) else np.zeros(0, bool)
    out = {}
    for j, name in enumerate(names):
        is_nearest = nearest == j
        hit = is_nearest & named
        hit_frames = sorted({frames[i] for i in np.flatnonzero(hit)})
        out[name] = {"named_faces": int(hit.sum()), "named_frames": _ranges(hit_frames),
                     "nearest_faces": int(is_nearest.sum()),
                     "median_score_when_nearest": round(float(np.median(best[is_nearest])), 3) if is_nearest.any()
                     else None}
    out["unknown_faces"] = int((~named).sum())
    out["faces_named_as_a_distractor"] = sum(out[n]["named_faces"] for n in DISTRACTORS)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="runtime bundle (default: the shipped default model)")
    ap.add_argument("--teacher", default="dlib", help="teacher spec, as `edgeface distill --teacher`")
    ap.add_argument("--teacher-config", type=Path, default=None)
    ap.add_argument("--teacher-tolerance", type=float, default=0.6,
                    help="largest Euclidean distance between raw teacher embeddings called the same person")
    ap.add_argument("--clip", type=Path, default=DATA / "media" / "short_hamilton_clip.mp4")
    ap.add_argument("--detector", default="full")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from edgeface.console import progress_bar
    from edgeface.distill.teachers import load_teacher
    from edgeface.runtime.capture import open_source
    from edgeface.runtime.recognizer import load_recognizer
    from edgeface.runtime.settings import RunSettings

    loaded = load_recognizer(RunSettings(model=args.model, detector=args.detector))
    rec = loaded.recognizer
    teacher = load_teacher(args.teacher, args.teacher_config)
    refs = reference_faces(rec, DATA / "media")
    names = list(refs)
    s_ref = np.stack([face.embedding for _, face in refs.values()])
    t_ref = np.stack([teacher.embed(img, face) for img, face in refs.values()])

    s_emb, t_emb, frames = [], [], []
    with open_source(str(args.clip)) as source, \
            progress_bar(f"teacher and student on {args.clip.name}") as advance:
        total = getattr(source, "expected", 0)
        while (frame := source.read()) is not None:
            # The runtime's own detect -> align -> embed; the teacher gets the same box and keypoints.
            for face in rec.process(frame.image):
                s_emb.append(face.embedding)
                t_emb.append(teacher.embed(frame.image, face))
                frames.append(frame.index)
            advance(frame.index + 1, max(total, frame.index + 1))
    s_emb, t_emb = np.asarray(s_emb).reshape(-1, s_ref.shape[1]), np.asarray(t_emb).reshape(-1, t_ref.shape[1])
    s_scores = s_emb @ s_ref.T
    t_dist = np.linalg.norm(t_emb[:, None, :] - t_ref[None, :, :], axis=2)
    figures = {
        "clip": args.clip.name, "detector": args.detector, "faces": len(frames),
        "frames_with_a_face": len(set(frames)),
        "student": {"model": str(loaded.model_path), "threshold": loaded.threshold,
                    **tally(names, s_scores, s_scores >= loaded.threshold, frames)},
        "teacher": {"spec": args.teacher, "tolerance": args.teacher_tolerance,
                    **tally(names, -t_dist, t_dist <= args.teacher_tolerance, frames)},
    }
    for name in names:  # the teacher's scores are negated distances: report distances
        t = figures["teacher"][name]
        d = t.pop("median_score_when_nearest")
        t["median_distance_when_nearest"] = None if d is None else -d
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"{figures['faces']} faces in {figures['frames_with_a_face']} frames of {args.clip.name} "
          f"({args.detector} detector)")
    for who in ("student", "teacher"):
        f = figures[who]
        rule = f"cosine >= {f['threshold']}" if who == "student" else f"distance <= {f['tolerance']}"
        print(f"\n{who} ({f.get('model') or f.get('spec')}, named when {rule}):")
        for n in PEOPLE:
            p = f[n]
            median = (f"median cosine there {p['median_score_when_nearest']}" if who == "student"
                      else f"median distance there {p['median_distance_when_nearest']}")
            print(f"  {n}: named on {p['named_faces']} faces (frames {p['named_frames'] or '-'}); nearest photo on "
                  f"{p['nearest_faces']} faces, {median}")
        print(f"  unknown {f['unknown_faces']}, named as a distractor {f['faces_named_as_a_distractor']}")


if __name__ == "__main__":
    main()
