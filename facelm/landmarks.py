"""49-point facial landmarks (300-W layout): index maps, .pts files, mirroring, metrics, drawing.

Conventions used across facelm:
- landmarks are ``float32 [N, 49, 2]``, x then y, in continuous image coordinates
  divided by width and height, so the image spans [0, 1] and pixel ``i`` has its centre
  at ``(i + 0.5) / W``;
- ``.pts`` files (300-W) hold 1-based pixel centres, i.e. ``pts = x * W + 0.5``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

# iBUG 68 minus the 17 jaw points and the two inner-mouth corners (60, 64).
IDX_68_TO_49 = np.array(list(range(17, 60)) + [61, 62, 63, 65, 66, 67])
N_POINTS = 49

# Named groups in 49-point indices (subject's right = image left for a frontal face).
GROUPS_49: dict[str, list[int]] = {
    "right_brow": list(range(0, 5)),
    "left_brow": list(range(5, 10)),
    "nose_bridge": list(range(10, 14)),
    "nose_base": list(range(14, 19)),
    "right_eye": list(range(19, 25)),
    "left_eye": list(range(25, 31)),
    "outer_lip": list(range(31, 43)),
    "inner_lip": list(range(43, 49)),
}
# Outer eye corners, the NME normaliser (68-point 36 and 45).
OUTER_EYE_CORNERS_49 = (19, 28)
# CelebA's 5 points: left eye, right eye, nose, left mouth corner, right mouth corner
# (left/right as seen in the image); their normaliser is the distance between the eyes.
NORMALISER = {49: OUTER_EYE_CORNERS_49, 68: (36, 45), 5: (0, 1)}


def _flip_permutation_68() -> np.ndarray:
    pairs = [(i, 16 - i) for i in range(8)]  # jaw
    pairs += [(17, 26), (18, 25), (19, 24), (20, 23), (21, 22)]  # brows
    pairs += [(31, 35), (32, 34)]  # nostrils
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lip
    pairs += [(60, 64), (61, 63), (65, 67)]  # inner lip
    perm = np.arange(68)
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


FLIP_PERM_68 = _flip_permutation_68()
_pos_49 = {int(j): i for i, j in enumerate(IDX_68_TO_49)}
FLIP_PERM_49 = np.array([_pos_49[int(FLIP_PERM_68[j])] for j in IDX_68_TO_49])
FLIP_PERM_5 = np.array([1, 0, 2, 4, 3])
FLIP_PERMS = {49: FLIP_PERM_49, 68: FLIP_PERM_68, 5: FLIP_PERM_5}


def to_49(points: np.ndarray) -> np.ndarray:
    """Select the 49-point layout from 68-point landmarks ``[..., 68, 2]``."""
    if points.shape[-2] != 68:
        raise ValueError(f"expected 68 points, got {points.shape[-2]}")
    return points[..., IDX_68_TO_49, :]


# CelebA's 5 points from the 49: eye centres (image-left eye first), nose tip, mouth corners.
FIVE_FROM_49 = {"lefteye": list(range(19, 25)), "righteye": list(range(25, 31)), "nose": [13],
                "leftmouth": [31], "rightmouth": [37]}


def to_5(landmarks49: np.ndarray) -> np.ndarray:
    """CelebA's 5 points ``[..., 5, 2]`` from 49-point landmarks ``[..., 49, 2]`` (any units)."""
    return np.stack([landmarks49[..., idx, :].mean(axis=-2) for idx in FIVE_FROM_49.values()], axis=-2)


def flip_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks ``[..., P, 2]`` (unit coordinates) of the left-right mirrored image.

    Mirroring moves x to 1 - x and swaps the left/right points (eye corners, brows, ...).
    Works for the 49-, 68- and CelebA 5-point layouts.
    """
    n = landmarks.shape[-2]
    perm = FLIP_PERMS.get(n)
    if perm is None:
        raise ValueError(f"no mirror permutation for {n} points")
    out = landmarks[..., perm, :].copy()
    out[..., 0] = 1.0 - out[..., 0]
    return out


def flip_faces(images: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror images ``[N, H, W, C]`` (or one ``[H, W, C]``) and their landmarks together."""
    return np.ascontiguousarray(images[..., ::-1, :]), flip_landmarks(landmarks)


# ---------------------------------------------------------------------------- .pts files
def write_pts(path: str | Path, points_px: np.ndarray) -> None:
    """Write pixel landmarks ``[P, 2]`` (0-based continuous coordinates) as a 300-W .pts file."""
    pts = np.asarray(points_px, dtype=np.float64) + 0.5
    lines = ["version: 1", f"n_points:  {len(pts)}", "{"]
    body = np.char.mod("%.3f", pts)  # one vectorised formatting call, not one per point
    lines += [" ".join(row) for row in body]
    lines.append("}")
    Path(path).write_text("\n".join(lines) + "\n")


def read_pts(path: str | Path) -> np.ndarray:
    """Read a 300-W .pts file into pixel landmarks ``[P, 2]`` (0-based continuous coordinates)."""
    text = Path(path).read_text().split("\n")
    header = {}
    body: list[str] | None = None
    for line in text:
        line = line.strip()
        if not line:
            continue
        if body is None:
            if line == "{":
                body = []
            elif ":" in line:
                key, value = line.split(":", 1)
                header[key.strip()] = value.strip()
            else:
                raise ValueError(f"{path}: unexpected header line {line!r}")
        elif line == "}":
            break
        else:
            body.append(line)
    if body is None:
        raise ValueError(f"{path}: no '{{' ... '}}' block of points")
    pts = np.array([[float(v) for v in row.split()] for row in body], dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"{path}: each point line must hold 'x y'")
    n = int(header.get("n_points", len(pts)))
    if n != len(pts):
        raise ValueError(f"{path}: header says n_points {n} but the file holds {len(pts)}")
    return pts - 0.5


def to_unit(points_px: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixel coordinates to unit coordinates (x / W, y / H) as float32."""
    return (np.asarray(points_px) / np.array([width, height])).astype(np.float32)


def to_pixels(landmarks: np.ndarray, width: int, height: int) -> np.ndarray:
    """Unit coordinates to pixel coordinates."""
    return np.asarray(landmarks, dtype=np.float64) * np.array([width, height])


# ------------------------------------------------------------------------------ metrics
def nme(pred: np.ndarray, target: np.ndarray, image_size: tuple[int, int] | None = None) -> np.ndarray:
    """Per-face normalised mean error ``[N]``.

    Mean point-to-point distance between ``pred`` and ``target`` (``[N, 49, 2]``) divided by
    the distance between the target's outer eye corners (49-point indices 19 and 28; for
    68 points 36 and 45; for CelebA's 5 points the two eye centres).
    ``image_size = (W, H)`` scales unit coordinates to pixels first (needed when W != H).
    """
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    n = target.shape[-2]
    if pred.shape != target.shape or target.shape[-1] != 2 or n not in NORMALISER:
        raise ValueError(f"nme needs two [N, P, 2] arrays with P in {sorted(NORMALISER)}, "
                         f"got {pred.shape} and {target.shape}")
    if image_size is not None:
        scale = np.array(image_size, dtype=np.float64)
        pred, target = pred * scale, target * scale
    err = np.linalg.norm(pred - target, axis=-1).mean(axis=-1)
    a, b = NORMALISER[n]
    iod = np.linalg.norm(target[..., a, :] - target[..., b, :], axis=-1)
    return err / np.maximum(iod, 1e-12)


def ced(errors: np.ndarray, thresholds: np.ndarray | None = None, max_error: float = 0.08):
    """Cumulative error distribution: fraction of faces with error <= each threshold."""
    errors = np.asarray(errors, dtype=np.float64)
    if thresholds is None:
        thresholds = np.linspace(0.0, max_error, 161)
    frac = (errors[None, :] <= thresholds[:, None]).mean(axis=1)
    return thresholds, frac


def auc(errors: np.ndarray, max_error: float = 0.08) -> float:
    """Area under the CED curve up to ``max_error``, normalised to [0, 1]."""
    t, f = ced(errors, np.linspace(0.0, max_error, 1001))
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz
    return float(trapezoid(f, t) / max_error)


def failure_rate(errors: np.ndarray, max_error: float = 0.08) -> float:
    """Fraction of faces whose error exceeds ``max_error``."""
    return float((np.asarray(errors) > max_error).mean())


# ------------------------------------------------------------------------------ drawing
GROUP_COLOURS = {
    "right_brow": (255, 200, 0), "left_brow": (255, 200, 0),
    "nose_bridge": (0, 220, 255), "nose_base": (0, 220, 255),
    "right_eye": (0, 255, 120), "left_eye": (0, 255, 120),
    "outer_lip": (255, 60, 160), "inner_lip": (255, 60, 160),
}


def draw_landmarks(image: np.ndarray, landmarks: np.ndarray, scale: int = 4,
                   colour: tuple[int, int, int] | None = None, radius: int | None = None) -> np.ndarray:
    """Return ``image`` (uint8 RGB) upscaled ``scale`` times with the 49 points drawn on it.

    Each facial part gets its own colour unless ``colour`` is given.
    """
    import cv2

    h, w = image.shape[:2]
    canvas = cv2.resize(np.ascontiguousarray(image), (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
    r = radius if radius is not None else max(1, scale // 2 + w * scale // 256)
    pts = to_pixels(landmarks, w * scale, h * scale)
    for name, idx in GROUPS_49.items() if len(landmarks) == N_POINTS else [("all", range(len(landmarks)))]:
        c = colour or GROUP_COLOURS.get(name, (0, 255, 0))
        for i in idx:
            x, y = pts[i]
            # shift=4: sub-pixel centres so points are drawn where they are, not rounded
            cv2.circle(canvas, (int(round(x * 16)), int(round(y * 16))), r * 16, c, -1, cv2.LINE_AA, shift=4)
    return canvas
