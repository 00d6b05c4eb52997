"""Face alignment: a similarity transform from detected keypoints to a fixed 112x112 template.

This one function is used by ``edgeface data prepare`` for training crops and by
the runtime on the board, so a model always sees faces aligned the same way.
"""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

CROP_SIZE = 112

# Reference points in a 112x112 crop: eye on the image's left, eye on the image's
# right, nose tip, mouth centre.  They are the widely used ArcFace 5-point
# template with its two mouth corners averaged into one centre, because BlazeFace
# gives a mouth centre rather than corners.
TEMPLATE_POINTS_112 = ((38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (56.1396, 92.2848))
TEMPLATE_112 = np.array(TEMPLATE_POINTS_112, dtype=np.float32)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) src -> dst.

    Umeyama (1991), "Least-squares estimation of transformation parameters between
    two point patterns".  Returns a 2x3 matrix for ``cv2.warpAffine``.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    n = src.shape[0]
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s_c, d_c = src - mu_s, dst - mu_d
    cov = d_c.T @ s_c / n
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # avoid a reflection
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    var_s = (s_c**2).sum() / n
    scale = (sig * d).sum() / var_s if var_s > 0 else 1.0
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]]).astype(np.float32)


def alignment_points(keypoints: np.ndarray) -> np.ndarray:
    """The 4 points used for alignment (eyes left-to-right in the image, nose, mouth) from 6 BlazeFace keypoints."""
    kp = np.asarray(keypoints, np.float32).reshape(-1, 2)
    eyes = kp[:2]
    if eyes[0, 0] > eyes[1, 0]:  # keep image-left eye first, as in the template
        eyes = eyes[::-1]
    return np.vstack([eyes, kp[2:4]])


def align_face(image: np.ndarray, keypoints: np.ndarray, size: int = CROP_SIZE,
               template: Optional[np.ndarray] = None) -> np.ndarray:
    """Warp ``image`` so the face's keypoints land on the template; returns a ``size`` x ``size`` crop.

    ``template``: the 4 (x, y) target points in crop pixels (a bundle's own, from its manifest); None is
    edgeface's template scaled to ``size``.
    """
    if template is None:
        template = TEMPLATE_112 * (size / CROP_SIZE)
    matrix = umeyama(alignment_points(keypoints), template)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (N, 2) points."""
    pts = np.asarray(points, np.float32).reshape(-1, 2)
    return pts @ matrix[:, :2].T + matrix[:, 2]
