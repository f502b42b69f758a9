"""The face model of the rendered world: 68-point mean shape, shape/expression basis, curves.

Head units: half the face width ~ 1, x to the image right, y down, z towards the camera;
the eye line is at y = 0. Everything here is a constant computed once at import.
"""
from __future__ import annotations

import numpy as np

from facelm.landmarks import FLIP_PERM_68

# ------------------------------------------------------------------ mean shape (68 points)
# (x, y, depth above the face surface) for the subject's right half and the midline;
# the left half is its mirror image. Units: head units, eye line at y = 0.
_RIGHT = {
    0: (-1.00, -0.05, 0.0), 1: (-0.99, 0.22, 0.0), 2: (-0.96, 0.50, 0.0), 3: (-0.91, 0.77, 0.0),
    4: (-0.82, 1.03, 0.0), 5: (-0.68, 1.26, 0.0), 6: (-0.50, 1.45, 0.0), 7: (-0.27, 1.58, 0.02),
    8: (0.00, 1.63, 0.04),
    17: (-0.80, -0.27, -0.01), 18: (-0.64, -0.37, 0.04), 19: (-0.46, -0.40, 0.07),
    20: (-0.29, -0.38, 0.07), 21: (-0.13, -0.33, 0.07),
    27: (0.00, -0.14, 0.05), 28: (0.00, 0.07, 0.13), 29: (0.00, 0.27, 0.25), 30: (0.00, 0.47, 0.40),
    31: (-0.19, 0.58, 0.10), 32: (-0.09, 0.62, 0.17), 33: (0.00, 0.64, 0.22),
    36: (-0.67, 0.01, -0.06), 37: (-0.55, -0.085, -0.01), 38: (-0.37, -0.09, -0.01),
    39: (-0.23, 0.01, -0.05), 40: (-0.37, 0.065, -0.02), 41: (-0.55, 0.06, -0.03),
    48: (-0.40, 1.00, 0.02), 49: (-0.25, 0.915, 0.07), 50: (-0.09, 0.865, 0.09), 51: (0.00, 0.885, 0.09),
    59: (-0.26, 1.09, 0.06), 58: (-0.12, 1.145, 0.08), 57: (0.00, 1.155, 0.08),
    60: (-0.33, 1.00, 0.03), 61: (-0.14, 0.985, 0.06), 62: (0.00, 0.99, 0.07),
    67: (-0.14, 0.989, 0.06), 66: (0.00, 0.994, 0.07),
}


def _mean_shape() -> np.ndarray:
    m = np.full((68, 3), np.nan)
    for i, v in _RIGHT.items():
        m[i] = v
        m[FLIP_PERM_68[i]] = (-v[0], v[1], v[2])
    assert not np.isnan(m).any()
    return m


_MEAN = _mean_shape()
_SIDE = np.sign(_MEAN[:, 0])  # -1 right half (image left), +1 left half, 0 midline


def _basis() -> tuple[list[str], np.ndarray]:
    """Offsets of the 68 points per unit coefficient ``[K, 68, 3]``: identity terms, then expression.

    Every term is left-right symmetric, so mirroring a face only mirrors its pose, jitter and
    the few asymmetric style terms (see ``mirror_params``).
    """
    x, y, side = _MEAN[:, 0], _MEAN[:, 1], _SIDE
    jaw, brow, nose = np.arange(17), np.arange(17, 27), np.arange(27, 36)
    eyes, lips = np.arange(36, 48), np.arange(48, 68)
    upper_lid, lower_lid = np.array([37, 38, 43, 44]), np.array([40, 41, 46, 47])
    lids, low = np.r_[upper_lid, lower_lid], np.where(y > 0.2)[0]
    frown = np.array([20, 21, 22, 23])
    b: dict[str, np.ndarray] = {}

    def put(name: str, idx, axis: int, value) -> None:
        b.setdefault(name, np.zeros((68, 3)))[idx, axis] += value

    # identity (each coefficient ~ N(0, 1); the factors are the offsets at one standard deviation)
    put("face_width", jaw, 0, 0.06 * x[jaw])
    put("face_length", low, 1, 0.06 * (y[low] - 0.2))
    put("jaw_width", jaw, 0, 0.09 * x[jaw] * np.clip((y[jaw] - 0.3) / 0.7, 0, 1) * (np.abs(x[jaw]) > 0.3))
    put("chin_length", jaw, 1, 0.07 * np.clip((y[jaw] - 1.1) / 0.5, 0, 1))
    put("eye_spacing", eyes, 0, 0.035 * side[eyes])
    put("eye_width", eyes, 0, 0.10 * (x[eyes] - 0.45 * side[eyes]))
    put("eye_height", lids, 1, 0.18 * (y[lids] - 0.01))
    put("eye_tilt", [36, 45], 1, -0.025)
    put("eye_tilt", [39, 42], 1, 0.01)
    put("eye_y", eyes, 1, 0.03)
    put("eye_y", brow, 1, 0.02)
    put("brow_height", brow, 1, -0.04)
    put("brow_arch", [18, 19, 20, 23, 24, 25], 1, -0.025)
    put("brow_length", [17, 26], 0, 0.05 * side[[17, 26]])
    put("brow_length", [17, 26], 1, 0.02)
    put("nose_length", nose, 1, 0.06 * np.clip((y[nose] + 0.14) / 0.78, 0, 1))
    put("nose_width", np.arange(31, 36), 0, 0.15 * x[31:36])
    put("nose_depth", nose, 2, 0.2 * _MEAN[27:36, 2])
    put("mouth_width", lips, 0, 0.10 * x[lips])
    put("upper_lip", np.arange(49, 54), 1, -0.025 * np.array([0.7, 1, 1, 1, 0.7]))
    put("lower_lip", np.arange(55, 60), 1, 0.03 * np.array([0.7, 1, 1, 1, 0.7]))
    put("mouth_y", lips, 1, 0.035)
    n_identity = len(b)
    # expression: mouth open (lower lip and jaw drop), smile, brows raised, frown, eye opening
    drop = 0.32
    put("mouth_open", [65, 66, 67], 1, drop * np.array([0.85, 1, 0.85]))
    put("mouth_open", np.arange(55, 60), 1, drop * np.array([0.75, 0.95, 1, 0.95, 0.75]))
    put("mouth_open", [60, 64], 1, 0.45 * drop)
    put("mouth_open", [48, 54], 1, 0.4 * drop)
    put("mouth_open", [61, 62, 63], 1, -0.04 * drop)
    put("mouth_open", [48, 54, 60, 64], 0, -0.05 * x[[48, 54, 60, 64]])
    put("mouth_open", jaw, 1, drop * np.clip((y[jaw] - 0.5) / 1.1, 0, 1) ** 1.5)
    put("smile", [48, 54], 0, 0.07 * side[[48, 54]])
    put("smile", [48, 54], 1, -0.09)
    put("smile", [60, 64], 0, 0.06 * side[[60, 64]])
    put("smile", [60, 64], 1, -0.08)
    put("smile", [49, 53, 59, 55], 1, -0.035)
    put("smile", [61, 63, 65, 67], 1, -0.03)
    put("smile", [56, 57, 58], 1, -0.01)
    put("smile", lower_lid, 1, -0.014)     # cheeks push the lower lids up
    put("brow_raise", brow, 1, -0.08 * np.array([0.75, 0.9, 1, 0.95, 0.85, 0.85, 0.95, 1, 0.9, 0.75]))
    put("brow_raise", upper_lid, 1, -0.012)
    put("frown", frown, 1, 0.06 * np.array([0.6, 1, 1, 0.6]))
    put("frown", frown, 0, -0.035 * side[frown] * np.array([0.6, 1, 1, 0.6]))
    put("eye_open", lids, 1, y[lids] - 0.01)
    return list(b)[:n_identity], np.stack(list(b.values()))


SHAPE_NAMES, _BASIS = _basis()               # SHAPE_NAMES: the identity coefficients, in order
_BASIS_FLAT = _BASIS.reshape(len(_BASIS), -1)


# ------------------------------------------------------------------------------- splines
def _catmull_rom(n_ctrl: int, per_seg: int) -> np.ndarray:
    """Weights ``[(n_ctrl - 1) * per_seg + 1, n_ctrl]`` of an open Catmull-Rom curve through all points."""
    ext = np.zeros((n_ctrl + 2, n_ctrl))
    ext[1:-1] = np.eye(n_ctrl)
    ext[0], ext[-1] = 2 * ext[1] - ext[2], 2 * ext[-2] - ext[-3]  # reflected end tangents
    rows = []
    for i in range(n_ctrl - 1):
        for t in np.arange(per_seg) / per_seg:
            w = 0.5 * np.array([-t**3 + 2 * t**2 - t, 3 * t**3 - 5 * t**2 + 2,
                                -3 * t**3 + 4 * t**2 + t, t**3 - t**2])
            rows.append(w @ ext[i:i + 4])
    rows.append(ext[n_ctrl])
    return np.array(rows)


_CURVE_DEFS = {
    "brow_r": (list(range(17, 22)), 4), "brow_l": (list(range(22, 27)), 4),
    "eye_r_up": ([36, 37, 38, 39], 4), "eye_r_lo": ([39, 40, 41, 36], 4),
    "eye_l_up": ([42, 43, 44, 45], 4), "eye_l_lo": ([45, 46, 47, 42], 4),
    "lip_out_up": (list(range(48, 55)), 3), "lip_out_lo": ([54, 55, 56, 57, 58, 59, 48], 3),
    "lip_in_up": ([60, 61, 62, 63, 64], 3), "lip_in_lo": ([64, 65, 66, 67, 60], 3),
    "nose_base": (list(range(31, 36)), 3),
    "jaw": (list(range(17)), 3),
}


def _curve_matrix():
    mats, slices, at = [], {}, 0
    for name, (idx, per) in _CURVE_DEFS.items():
        w = _catmull_rom(len(idx), per)
        full = np.zeros((len(w), 68))
        full[:, idx] = w
        mats.append(full)
        slices[name] = slice(at, at + len(w))
        at += len(w)
    return np.concatenate(mats), slices


_CURVES, _CS = _curve_matrix()
# brow thickness along the curve, outer end -> inner end
_BROW_PROFILE = np.interp(np.linspace(0, 1, _CS["brow_r"].stop - _CS["brow_r"].start), [0, 0.35, 1],
                          [0.55, 0.95, 1.15])
_CIRCLE = np.stack([np.cos(np.linspace(0, 2 * np.pi, 16, endpoint=False)),
                    np.sin(np.linspace(0, 2 * np.pi, 16, endpoint=False))], 1)


def _face_z(x: np.ndarray, y: np.ndarray, width: float = 1.0) -> np.ndarray:
    """Depth of the face surface: an ellipsoidal cross-section narrowing to the chin and the crown."""
    lower = np.maximum(y - 0.2, 0.0)
    upper = np.minimum(y + 0.3, 0.0)
    w = width * 1.03 * np.sqrt(np.maximum(0.08, 1 - (lower / 1.55) ** 2) * np.maximum(0.05, 1 - (upper / 1.45) ** 2))
    zc = 0.92 * np.sqrt(np.maximum(0.05, 1 - (upper / 1.6) ** 2))
    return zc * np.sqrt(np.maximum(0.0, 1 - (x / w) ** 2))

