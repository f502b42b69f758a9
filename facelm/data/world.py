"""The embedded default data set: a procedurally rendered face world with exact 49 landmarks.

Each face is a small linear 3-D face model (a mean shape of the 68 iBUG points plus
identity and expression offsets), rotated by its head pose and projected with a mild
perspective. Every part (head outline, hair, ears, eyes, brows, nose, lips) is drawn
*from* the projected points, so the landmarks lie on the drawn features. Drawing is flat
colour with cv2 at ``supersample`` times the size, then ``INTER_AREA`` downsampling; light
is a smooth multiplicative field (Lambert on an ellipsoid) applied at the final size.

Coordinates: head units (half the face width ~ 1), x to the image right, y down, z towards
the camera; the subject's right eye (49-point 19-24) is on the image left. Positive yaw
turns the nose towards the image right, positive pitch lifts it, positive roll turns the
eye line clockwise on screen (the angle of the line from point 19 to 28 equals the roll).

API: ``render_faces(n, size, seed, start)`` makes the data set (face ``i`` depends only on
``(seed, i)``); ``sample_params(rng)`` draws a ``FaceParams`` and ``render_face(params, size)``
draws it (``return_masks=True`` adds per-part coverage maps, for checks); ``mirror_params``
gives the parameters of the mirror image (what ``landmarks.flip_faces`` makes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import cv2
import numpy as np

from facelm.landmarks import FLIP_PERM_68, IDX_68_TO_49

__all__ = ["FaceParams", "SHAPE_NAMES", "mirror_params", "render_face", "render_faces", "sample_params"]

SIZE_RANGE = (32, 128)
ANGLE_LIMITS = {"yaw_max": 60.0, "pitch_max": 40.0, "roll_max": 45.0}
_FOCAL = 9.0            # camera distance in head units: mild perspective
_FRAME_SCALE = 0.32     # image units per head unit (before jitter): the face box fills ~70 %
_FRAME_Y = 0.54         # where the face box centre sits (brows..chin, cheek..cheek)
_MARGIN = 0.03          # landmarks are kept at least this far inside the image

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


# ---------------------------------------------------------------------------- parameters
def _rgb(*v) -> np.ndarray:
    return np.array(v, dtype=np.float64)


@dataclass(eq=False)
class FaceParams:
    """Everything that defines one rendered face (defaults: a neutral frontal face).

    Angles in degrees; colours RGB 0..255; ``shape`` holds the identity coefficients named
    by ``SHAPE_NAMES`` (about N(0, 1)); ``jitter`` small per-point 3-D offsets [68, 3].
    """

    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    scale: float = 1.0                 # framing: face size relative to the default crop
    shift_x: float = 0.0               # framing: offset of the face box centre (image units)
    shift_y: float = 0.0
    shape: np.ndarray = field(default_factory=lambda: np.zeros(len(SHAPE_NAMES)))
    jitter: np.ndarray = field(default_factory=lambda: np.zeros((68, 3)))
    mouth_open: float = 0.0            # 0 closed .. 1 wide open
    smile: float = 0.0                 # -0.5 (corners down) .. 1
    brow_raise: float = 0.0            # -1 frown .. 1 raised
    eye_open: float = 1.0              # lid opening factor
    gaze_x: float = 0.0                # -1 .. 1 (image right)
    gaze_y: float = 0.0
    skin: np.ndarray = field(default_factory=lambda: _rgb(225, 180, 150))
    hair: np.ndarray = field(default_factory=lambda: _rgb(70, 45, 30))
    brow: np.ndarray = field(default_factory=lambda: _rgb(55, 38, 28))
    iris: np.ndarray = field(default_factory=lambda: _rgb(95, 60, 35))
    lip: np.ndarray = field(default_factory=lambda: _rgb(185, 105, 100))
    eye_white: np.ndarray = field(default_factory=lambda: _rgb(238, 234, 228))
    iris_size: float = 1.0
    brow_thickness: float = 0.075      # head units
    hair_volume: float = 0.15          # head units of hair outside the skull
    hair_length: float = 0.3           # y (head units) where the hair ends: ~0 ears .. 3 shoulders
    hair_flare: float = 0.1
    hairline: float = -0.9             # y of the hairline at the forehead centre
    hairline_side: float = -0.35       # y of the hairline at the temples
    hair_slant: float = 0.0            # parting: hairline tilt (image right higher when > 0)
    fringe: float = -1.0               # < 0: none; else gap between fringe and brows (head units)
    fringe_slant: float = 0.0
    beard: int = 0                     # 0 none, 1 stubble, 2 beard
    moustache: bool = False
    ear_size: float = 1.0
    ears_visible: bool = True
    neck_width: float = 1.0
    light: np.ndarray = field(default_factory=lambda: _rgb(0.0, -0.4, 1.0))   # towards the light, camera frame
    ambient: float = 0.55
    brightness: float = 1.0
    tint: np.ndarray = field(default_factory=lambda: _rgb(1.0, 1.0, 1.0))
    background: np.ndarray = field(default_factory=lambda: _rgb(120, 140, 160))
    bg_gradient: np.ndarray = field(default_factory=lambda: _rgb(0.0, 1.0, 0.2))  # direction x, y; strength
    blobs: np.ndarray = field(default_factory=lambda: np.zeros((0, 8)))  # cx, cy, rx, ry, angle(rad), r, g, b

    def copy(self, **changes) -> "FaceParams":
        """A copy (arrays copied too) with ``changes`` applied."""
        d = {f.name: (getattr(self, f.name).copy() if isinstance(getattr(self, f.name), np.ndarray)
                      else getattr(self, f.name)) for f in fields(self)}
        d.update(changes)
        return FaceParams(**d)


def mirror_params(p: FaceParams) -> FaceParams:
    """Parameters of the left-right mirror image of ``p``'s face (as ``landmarks.flip_faces`` makes)."""
    jitter = p.jitter[FLIP_PERM_68].copy()
    jitter[:, 0] *= -1
    blobs = p.blobs.copy()
    blobs[:, 0] = 1.0 - blobs[:, 0]
    blobs[:, 4] *= -1
    return p.copy(yaw=-p.yaw, roll=-p.roll, shift_x=-p.shift_x, jitter=jitter, gaze_x=-p.gaze_x,
                  hair_slant=-p.hair_slant, fringe_slant=-p.fringe_slant,
                  light=p.light * (-1, 1, 1), bg_gradient=p.bg_gradient * (-1, 1, 1), blobs=blobs)


def _tnormal(rng: np.random.Generator, sd: float, limit: float) -> float:
    """Normal(0, sd) truncated to [-limit, limit] (rejection: the tails are rarer, never out of range)."""
    if limit <= 0:
        return 0.0
    while True:
        v = rng.normal(0.0, sd)
        if abs(v) <= limit:
            return float(v)


_SKIN = np.array([(247, 222, 204), (236, 200, 176), (222, 178, 148), (198, 146, 112), (160, 110, 80),
                  (118, 80, 58), (82, 56, 42)], dtype=np.float64)
_HAIR = np.array([(22, 18, 16), (55, 38, 26), (95, 62, 38), (140, 98, 60), (200, 160, 100),
                  (228, 205, 160), (140, 58, 30), (105, 40, 25), (140, 138, 135), (215, 212, 205)],
                 dtype=np.float64)
_HAIR_CUM = np.cumsum([20, 24, 18, 10, 8, 3, 3, 4, 5, 3]) / 98
_IRIS = np.array([(90, 55, 30), (45, 30, 22), (120, 95, 50), (75, 115, 70), (70, 115, 165), (115, 125, 135)],
                 dtype=np.float64)
_IRIS_CUM = np.cumsum([30, 20, 12, 10, 18, 10]) / 100
_MAX_BLOBS = 4


def sample_params(rng: np.random.Generator, *, yaw_max: float = 40.0, pitch_max: float = 20.0,
                  roll_max: float = 25.0) -> FaceParams:
    """Draw one random face. Poses are truncated normals (most faces near frontal, as in CelebA).

    Standard deviations are 0.4, 0.4 and 0.35 of the range; expressions, identity, colours,
    hair style, light and background are drawn independently.
    """
    _check_angles(yaw_max=yaw_max, pitch_max=pitch_max, roll_max=roll_max)
    return _sample(rng, yaw_max, pitch_max, roll_max)


def _sample(rng: np.random.Generator, yaw_max: float, pitch_max: float, roll_max: float) -> FaceParams:
    yaw = _tnormal(rng, 0.4 * yaw_max, yaw_max)
    pitch = _tnormal(rng, 0.4 * pitch_max, pitch_max)
    roll = _tnormal(rng, 0.35 * roll_max, roll_max)
    # one block of draws per kind keeps sampling cheap (a few generator calls per face)
    normal = rng.standard_normal(len(SHAPE_NAMES) + 24)
    shape = np.clip(normal[:len(SHAPE_NAMES)], -2.5, 2.5)
    nz = iter(normal[len(SHAPE_NAMES):].tolist()).__next__
    jitter = rng.normal(0, 0.012, (68, 3))
    uni = iter(rng.random(64).tolist()).__next__  # at most ~45 are used

    def u(lo: float = 0.0, hi: float = 1.0) -> float:
        return lo + (hi - lo) * uni()

    def jit(c: np.ndarray, s: float) -> np.ndarray:  # a little hue and more brightness variation
        return np.clip(c * (1 + s * np.array([nz(), nz(), nz()]) + 2 * s * nz()), 0, 255)

    t = min(rng.beta(1.2, 2.6) * (len(_SKIN) - 1), len(_SKIN) - 1.001)
    skin = jit((1 - t % 1) * _SKIN[int(t)] + (t % 1) * _SKIN[int(t) + 1], 0.02)
    bald = u() < 0.05
    hair = skin * u(0.8, 0.95) if bald else jit(_HAIR[np.searchsorted(_HAIR_CUM, u())], 0.05)
    brow = hair * u(0.55, 0.85) if hair.mean() > 80 else hair * u(0.9, 1.2)
    if bald:
        brow = skin * 0.55
    lipstick = u() < 0.12
    a = u(0.25, 0.5)
    lip = skin * (1 - a) + (_rgb(200, 70, 90) if lipstick else _rgb(190, 105, 105)) * a * u(0.8, 1.0)
    long_hair = u() < 0.4
    hair_length = u(1.2, 3.2) if long_hair else u(-0.15, 0.6)
    has_fringe = (not bald) and u() < 0.3
    blobs = rng.random((_MAX_BLOBS, 8)) * (1.2, 1.2, 0.37, 0.37, 2 * np.pi, 255, 255, 255) \
        + (-0.1, -0.1, 0.08, 0.08, -np.pi, 0, 0, 0)
    blobs = blobs[:int(u() * (_MAX_BLOBS + 1))]
    hsv = np.uint8([[[u(0, 180), u(0, 160), u(35, 245)]]])
    background = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64)
    ang = u(-np.pi, np.pi)
    mouth = u()
    smile = u()
    beard = u()
    return FaceParams(
        yaw=yaw, pitch=pitch, roll=roll,
        scale=float(np.clip(1.0 + 0.05 * nz(), 0.88, 1.12)),
        shift_x=float(np.clip(0.02 * nz(), -0.045, 0.045)),
        shift_y=float(np.clip(0.02 * nz(), -0.045, 0.045)),
        shape=shape, jitter=jitter,
        mouth_open=u(0.1, 1.0) if mouth < 0.35 else 0.0,
        smile=u(0.2, 1.0) if smile < 0.45 else u(-0.4, 0.2),
        brow_raise=float(np.clip(0.45 * nz(), -1, 1)),
        eye_open=u(0.7, 1.2),
        gaze_x=u(-0.7, 0.7), gaze_y=u(-0.5, 0.5),
        skin=skin, hair=hair, brow=brow, lip=lip,
        iris=jit(_IRIS[np.searchsorted(_IRIS_CUM, u())], 0.06),
        eye_white=_rgb(238, 234, 228) * u(0.88, 1.0),
        iris_size=u(0.85, 1.15),
        brow_thickness=u(0.05, 0.11),
        hair_volume=u(0.0, 0.06) if bald else u(0.04, 0.42),
        hair_length=0.0 if bald else hair_length,
        hair_flare=u(-0.1, 0.5),
        hairline=u(-1.5, -1.3) if bald else u(-1.05, -0.72),
        hairline_side=u(-0.5, -0.2),
        hair_slant=u(-0.12, 0.12),
        fringe=u(0.06, 0.3) if has_fringe else -1.0,
        fringe_slant=u(-0.2, 0.2),
        beard=0 if beard < 0.89 else (1 if beard < 0.95 else 2),
        moustache=u() < 0.07,
        ear_size=u(0.85, 1.15),
        ears_visible=not long_hair or u() < 0.25,
        neck_width=u(0.85, 1.15),
        light=_rgb(u(-0.9, 0.9), u(-0.8, 0.25), u(0.6, 1.2)),
        ambient=u(0.4, 0.7), brightness=u(0.85, 1.12),
        tint=_rgb(1 + u(-0.04, 0.04), 1.0, 1 + u(-0.04, 0.04)),
        background=background,
        bg_gradient=_rgb(math.cos(ang), math.sin(ang), u(0.0, 0.7)),
        blobs=blobs,
    )


# -------------------------------------------------------------------------------- checks
def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_size(size) -> int:
    if not _is_int(size) or not SIZE_RANGE[0] <= size <= SIZE_RANGE[1]:
        raise ValueError(f"size must be an int in [{SIZE_RANGE[0]}, {SIZE_RANGE[1]}], got {size!r}")
    return int(size)


def _check_angles(**angles: float) -> None:
    for name, v in angles.items():
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not 0 <= v <= ANGLE_LIMITS[name]:
            raise ValueError(f"{name} must be a number in [0, {ANGLE_LIMITS[name]}] degrees, got {v!r}")


# ------------------------------------------------------------------------------ geometry
def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """``Rz(roll) @ Rx(pitch) @ Ry(yaw)``, multiplied out (3x3)."""
    a, b, c = math.radians(yaw), math.radians(pitch), math.radians(roll)
    ca, sa, cb, sb, cc, sc = math.cos(a), math.sin(a), math.cos(b), math.sin(b), math.cos(c), math.sin(c)
    return np.array([[cc * ca - sc * sb * sa, -sc * cb, cc * sa + sc * sb * ca],
                     [sc * ca + cc * sb * sa, cc * cb, sc * sa - cc * sb * ca],
                     [-cb * sa, sb, cb * ca]])


def _points68(p: FaceParams) -> np.ndarray:
    """The 68 model points in head coordinates [68, 3] (identity + expression + jitter)."""
    coef = np.concatenate([p.shape, [p.mouth_open, p.smile, max(p.brow_raise, 0.0), max(-p.brow_raise, 0.0),
                                     p.eye_open - 1.0]])
    m = _MEAN + (coef @ _BASIS_FLAT).reshape(68, 3)
    width = 1.0 + 0.05 * p.shape[0]
    m[:, 2] += _face_z(m[:, 0], m[:, 1], width)
    return m + p.jitter


_DISC = np.column_stack([_CIRCLE, np.zeros(len(_CIRCLE))])
_AZ = np.linspace(0, 2 * np.pi, 14, endpoint=False)
_CAP = np.concatenate([np.column_stack([math.sin(a) * np.sin(_AZ), np.full(14, -math.cos(a)),
                                        math.sin(a) * np.cos(_AZ)]) for a in np.linspace(0.2, np.pi / 2, 4)])
_RING = np.column_stack([np.sin(_AZ), np.zeros(14), np.cos(_AZ)])
_EAR_TH = np.linspace(0, 2 * np.pi, 12, endpoint=False)
_EAR_D, _EAR_H = np.maximum(0.09 + 0.11 * np.cos(_EAR_TH), 0.0), 0.3 * np.sin(_EAR_TH)
_NECK = np.array([[sx, y, z] for sx in (-1, 1) for y in (0.8, 3.2) for z in (-0.6, 0.05)])
_ARCH_T = np.linspace(-1, 1, 9)
_SURF = np.array([(x, y) for y in (-0.6, -0.3, 0.0, 0.3, 0.6, 0.9, 1.2)
                  for x in (-0.85, -0.6, -0.3, 0.3, 0.6, 0.85)])
_FRINGE_T = np.linspace(-1, 1, 9)
_FRINGE_WAVE = 0.02 * np.cos(np.arange(9) * np.pi)   # strands; symmetric so mirroring is exact
_NOSE_W = np.array([0.045, 0.10, 0.15])
_I_NOSE_W = SHAPE_NAMES.index("nose_width")
_HEAD_CENTRE = np.array([0.0, 0.3, -0.3])   # rotations turn the head about this point


class _Layout:
    """All 3-D parts of one face, rotated and projected to unit image coordinates (``uv``)."""

    def __init__(self, p: FaceParams):
        self.p = p
        P = _points68(p)
        width = 1.0 + 0.05 * p.shape[0]
        parts: dict[str, np.ndarray] = {"lm": P}
        C = _CURVES @ P
        for name, sl in _CS.items():
            parts[name] = C[sl]
        # brows: a band around the centre curve, thickest near the inner end
        for side, prof in (("brow_r", _BROW_PROFILE), ("brow_l", _BROW_PROFILE[::-1])):
            c, t = parts[side], np.zeros((len(prof), 3))
            t[:, 1] = 0.5 * p.brow_thickness * prof
            parts[side + "_poly"] = np.concatenate([c - t, (c + t)[::-1]])
        # eyes: iris, pupil and catch-light discs in the eye plane
        for side, a in (("r", 36), ("l", 42)):
            e = P[a:a + 6]
            centre = e.sum(0) / 6 + (0.075 * p.gaze_x, 0.03 * p.gaze_y, 0.02)
            r = 0.23 * math.dist(e[0], e[3]) * p.iris_size
            parts["iris_" + side] = centre + r * _DISC
            parts["pupil_" + side] = centre + 0.42 * r * _DISC
            glint = centre + r * np.array([0.3 * p.light[0], 0.3 * p.light[1] - 0.25, 0])
            parts["glint_" + side] = glint + 0.16 * r * _DISC
        # nose: two side planes from the ridge to the wings, the underside, the nostrils
        # (one depth evaluation for the nose sides, the hairline arch and the face surface)
        nose_w = 1 + 0.15 * p.shape[_I_NOSE_W]
        hx = _ARCH_T * 0.92 * width
        hy = p.hairline + (p.hairline_side - p.hairline) * _ARCH_T ** 2 - p.hair_slant * hx
        nx, ny = P[28:31, 0], P[28:31, 1] + 0.02
        sx = np.concatenate([nx - nose_w * _NOSE_W, nx + nose_w * _NOSE_W, hx, _SURF[:, 0] * width])
        sy = np.concatenate([ny, ny, hy, _SURF[:, 1]])
        surf = np.stack([sx, sy, _face_z(sx, sy, width)], axis=1)
        surf[:6, 2] += 0.03
        parts["nose_r"] = np.concatenate([P[27:31], P[[32, 31]], surf[2::-1]])
        parts["nose_l"] = np.concatenate([P[27:31], P[[34, 35]], surf[5:2:-1]])
        surf = surf[6:]
        parts["nose_under"] = np.concatenate([parts["nose_base"], P[[35]] + (0, -0.07, 0.04), P[[30]],
                                              P[[31]] + (0, -0.07, 0.04)])
        nostril = _DISC * (0.055 * nose_w, 0.026, 0)
        parts["nostril_r"] = 0.55 * P[31] + 0.45 * P[32] + (0, -0.03, 0) + nostril
        parts["nostril_l"] = 0.55 * P[35] + 0.45 * P[34] + (0, -0.03, 0) + nostril
        # skin: jaw contour, hairline arch, points on the face surface (its outline when the
        # head turns), sides of the head in front of the ears
        arch = surf[:len(hx)]
        back = np.array([[sx * width, y, -0.35] for sx in (-1.0, 1.0) for y in (p.hairline_side + 0.1, 0.4)])
        parts["skin"] = np.concatenate([parts["jaw"], surf, back])
        # hair: an ellipsoidal cap around the skull, continued down to the hair length
        v = p.hair_volume
        rx, ry, rz, cy, cz = 1.05 * width + v, 1.45 + v, 1.25 + v, -0.3, -0.25
        cx = -0.8 * p.hair_slant  # more hair on the side away from the parting
        rows = [(cx, cy, cz) + _CAP * (rx, ry, rz)]
        drop = max(p.hair_length - cy, 0.0)
        for frac in (0.5, 1.0):
            g = 1 + p.hair_flare * frac * drop / 3.0
            rows.append((cx, cy + frac * drop, cz) + _RING * (rx * g, 0, rz * 0.8))
        parts["hair"] = np.concatenate(rows)
        if p.fringe >= 0:
            top = min(P[17:27, 1].min() - 0.6 * p.brow_thickness, p.hairline + 0.3)
            fx = _FRINGE_T * 0.95 * width
            fy = np.minimum(top - p.fringe + p.fringe_slant * fx + _FRINGE_WAVE, top - 0.03)
            lower = np.column_stack([fx, fy, _face_z(fx, fy, width) + 0.04])
            parts["fringe"] = np.concatenate([lower, arch[::-1] + (0, -0.25, 0.02)])
        # ears: ovals on the sides of the head, swept back
        d, h = _EAR_D * p.ear_size, 0.15 + _EAR_H * p.ear_size
        ear, inner = np.empty((len(d), 3)), np.empty((len(d), 3))
        ear[:, 1], ear[:, 2] = h, -0.3 - 0.45 * d
        inner[:, 1], inner[:, 2] = 0.15 + 0.6 * (h - 0.15), ear[:, 2] + 0.02
        for side, sgn in (("r", -1), ("l", 1)):
            ear[:, 0], inner[:, 0] = sgn * (0.93 * width + d), sgn * (0.93 * width + 0.6 * d)
            parts["ear_" + side], parts["earin_" + side] = ear.copy(), inner.copy()
        parts["neck"] = _NECK * (0.52 * p.neck_width, 1, 1)
        if p.beard:
            inner = np.concatenate([P[[54]] + (0.1, 0.02, 0), P[55:60] + (0, 0.06, 0), P[[48]] + (-0.1, 0.02, 0)])
            parts["beard"] = np.concatenate([P[3:14], inner])
        if p.moustache:
            parts["moustache"] = np.concatenate([P[[48]] + (-0.04, 0.01, 0), P[31:36] + (0, 0.05, 0),
                                                 P[[54]] + (0.04, 0.01, 0),
                                                 parts["lip_out_up"][::-1] + (0, -0.01, 0)])
        self._project(parts)

    def _project(self, parts: dict[str, np.ndarray]) -> None:
        p = self.p
        self.slices, at = {}, 0
        for name, v in parts.items():
            self.slices[name] = slice(at, at + len(v))
            at += len(v)
        R = _rotation(p.yaw, p.pitch, p.roll)
        q = (np.concatenate(list(parts.values())) - _HEAD_CENTRE) @ R.T
        xy = q[:, :2] * (_FOCAL / (_FOCAL - q[:, 2:3]))
        # framing like a face detector: centred on the face box (68 points), a fixed scale per face
        lo, hi = xy[:68].min(0), xy[:68].max(0)
        k = _FRAME_SCALE * p.scale
        uv = (0.5 + p.shift_x, _FRAME_Y + p.shift_y) + (xy - (lo + hi) / 2) * k
        # keep every landmark inside the image (bites only at extreme poses and framing jitter)
        lm = uv[IDX_68_TO_49]
        a, b = lm.min(0), lm.max(0)
        span = (b - a).max()
        if span > 1 - 2 * _MARGIN:
            s = (1 - 2 * _MARGIN) / span
            uv = 0.5 + (uv - (a + b) / 2) * s
            k *= s
            lm = uv[IDX_68_TO_49]
            a, b = lm.min(0), lm.max(0)
        uv = uv + np.maximum(_MARGIN - a, 0) - np.maximum(b - (1 - _MARGIN), 0)
        self.k, self.rot, self.uv_all = k, R, uv
        self.landmarks = uv[IDX_68_TO_49].astype(np.float32)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.uv_all[self.slices[name]]

    def fixed(self, n: int) -> dict[str, np.ndarray]:
        """All parts in cv2 fixed-point pixel coordinates of an ``n``-pixel canvas (shift 4)."""
        f = _fix(self.uv_all, n)
        return {name: f[sl] for name, sl in self.slices.items()}


# ------------------------------------------------------------------------------ drawing
_LABELS = {"skin": 1, "hair": 2, "eye": 3, "brow": 4, "nose": 5, "lip": 6, "ear": 7, "neck": 8}


def _fix(uv: np.ndarray, n: int) -> np.ndarray:
    # unit coords -> cv2 pixel coords (pixel centres on integers) in 1/16 px, for shift=4
    return np.rint(uv * (n * 16) - 8).astype(np.int32)


class _Canvas:
    """A supersampled colour canvas, a foreground mask, and optionally a part-label map."""

    def __init__(self, size: int, ss: int, background: np.ndarray, labels: bool):
        self.n = n = size * ss
        self.img = np.empty((n, n, 3), np.uint8)
        # fill row-wise: broadcasting a 3-vector over the image is ~10x slower in numpy
        self.img.reshape(n, 3 * n)[:] = np.tile(np.clip(background, 0, 255).astype(np.uint8), n)
        self.fg = np.zeros((n, n), np.uint8)
        self.lab = np.zeros((n, n), np.uint8) if labels else None

    def poly(self, pts: np.ndarray, colour, label: str | None = None, fg: bool = False) -> None:
        """Fill a polygon given in fixed-point pixels."""
        c = colour.tolist() if isinstance(colour, np.ndarray) else colour  # cv2 saturates to 0..255
        cv2.fillPoly(self.img, [pts], c, cv2.LINE_AA, 4)
        if fg:
            cv2.fillPoly(self.fg, [pts], 255, cv2.LINE_AA, 4)
        if self.lab is not None and label:
            cv2.fillPoly(self.lab, [pts], _LABELS[label], cv2.LINE_8, 4)

    def line(self, pts: np.ndarray, colour, width: float, label: str | None = None) -> None:
        """Draw an open polyline (fixed-point pixels), ``width`` in unit image coordinates."""
        c = colour.tolist() if isinstance(colour, np.ndarray) else colour
        t = max(1, int(round(width * self.n)))
        cv2.polylines(self.img, [pts], False, c, t, cv2.LINE_AA, 4)
        if self.lab is not None and label:
            cv2.polylines(self.lab, [pts], False, _LABELS[label], t, cv2.LINE_8, 4)


def _shade(normal: np.ndarray, light: np.ndarray, ambient: float) -> float:
    return ambient + (1 - ambient) * max(0.0, float(normal @ light))


def _draw(L: _Layout, cv: _Canvas) -> None:
    """Paint the face back to front: background blobs, hair, neck, ears, skin, then the features."""
    p, k, n = L.p, L.k, cv.n
    F = L.fixed(n)
    skin = p.skin
    light = p.light / np.linalg.norm(p.light)
    for cx, cy, rx, ry, ang, *rgb in p.blobs:
        c, s = math.cos(ang), math.sin(ang)
        cv.poly(_fix((cx, cy) + (_CIRCLE * (rx, ry)) @ np.array([[c, s], [-s, c]]), n), rgb)
    cv.poly(cv2.convexHull(F["hair"]), p.hair, "hair", fg=True)
    cv.poly(cv2.convexHull(F["neck"]), skin * 0.78, "neck", fg=True)
    # an ear turned towards the camera is drawn over the face outline, otherwise behind it
    front = [s for s, sgn in (("r", -1.0), ("l", 1.0)) if (L.rot[2] @ (sgn, 0.0, 0.45)) > 0.62]
    ears = ("r", "l") if p.ears_visible else ()

    def ear(side):
        cv.poly(F["ear_" + side], skin * (0.97, 0.92, 0.92), "ear", fg=True)
        cv.poly(F["earin_" + side], skin * 0.72, "ear")

    for side in ears:
        if side not in front:
            ear(side)
    cv.poly(cv2.convexHull(F["skin"]), skin, "skin", fg=True)
    for side in ears:
        if side in front:
            ear(side)
    if p.beard:
        cv.poly(F["beard"], p.hair if p.beard == 2 else 0.8 * skin + 0.2 * p.hair, "hair")
    if p.moustache:
        cv.poly(F["moustache"], p.hair, "hair")
    # nose sides, shaded by their own normals relative to the face front
    lit = _shade(L.rot[:, 2], light, p.ambient)
    turned = p.yaw if p.yaw != 0 else p.light[0]  # the side nearer the camera is drawn last
    for side, sgn in ((("r", -1), ("l", 1)) if turned < 0 else (("l", 1), ("r", -1))):
        f = _shade(L.rot @ (sgn * 0.6, 0.0, 0.8), light, p.ambient) / lit
        cv.poly(F["nose_" + side], skin * min(max(f, 0.8), 1.08), "nose")
    cv.poly(F["nose_under"], skin * 0.86, "nose")
    # eyes: white, iris and pupil clipped to the opening, lid lines
    lash = np.minimum(p.brow, 60) * 0.6
    for side in ("r", "l"):
        upper, lower = F[f"eye_{side}_up"], F[f"eye_{side}_lo"]
        opening = np.concatenate([upper, lower[1:-1]])
        cv.poly(opening, p.eye_white, "eye")
        hull = cv2.convexHull(opening).astype(np.float32)
        for part, colour in (("iris", p.iris * 0.7), ("pupil", (22, 16, 16)), ("glint", (250, 250, 250))):
            area, inter = cv2.intersectConvexConvex(F[f"{part}_{side}"].astype(np.float32), hull)
            if inter is not None and area > 0:
                cv.poly(np.rint(inter).astype(np.int32), colour, "eye")
        cv.line(upper - (0, int(0.06 * k * n * 16)), skin * 0.8, 0.012 * k)
        cv.line(lower, skin * 0.65, 0.018 * k, "eye")
        cv.line(upper, lash, 0.035 * k, "eye")
    for side in ("r", "l"):
        cv.poly(F[f"brow_{side}_poly"], p.brow, "brow")
    if p.fringe >= 0:
        cv.poly(F["fringe"], p.hair, "hair")
    for side in ("r", "l"):
        cv.poly(F["nostril_" + side], skin * 0.35, "nose")
    cv.line(F["nose_base"], skin * 0.6, 0.02 * k, "nose")
    # lips: outer fill (lower-lip colour), upper lip darker, mouth opening with teeth, lip line
    out_up, out_lo, in_up, in_lo = F["lip_out_up"], F["lip_out_lo"], F["lip_in_up"], F["lip_in_lo"]
    cv.poly(np.concatenate([out_up, out_lo[1:-1]]), p.lip, "lip")
    cv.poly(np.concatenate([out_up, in_up[::-1]]), p.lip * 0.85, "lip")
    if p.mouth_open > 0.05:
        cv.poly(np.concatenate([in_up, in_lo[1:-1]]), (55, 20, 25), "lip")
        teeth = np.rint(in_up + 0.4 * (in_lo[::-1] - in_up)).astype(np.int32)
        cv.poly(np.concatenate([in_up, teeth[::-1]]), (232, 226, 212), "lip")
    cv.line(in_up, p.lip * 0.45, 0.02 * k, "lip")


_FIELD = 16                                  # light fields are smooth: compute them on a 16x16 grid
_GRID = (np.arange(_FIELD, dtype=np.float32) + 0.5) / _FIELD


def _shading(L: _Layout, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Multiplicative light fields [S, S] at the output size: on the head and on the background."""
    p = L.p
    X, Y = _GRID[None, :], _GRID[:, None]
    # the head as an ellipsoid around the middle of the face: Lambert shading of its normals
    c = L["lm"][[27, 30, 8, 51]].sum(0) / 4
    ax, ay = 1.15 * L.k, 1.55 * L.k
    cr, sr = math.cos(math.radians(p.roll)), math.sin(math.radians(p.roll))
    dx, dy = X - c[0], Y - c[1]
    u = (dx * cr + dy * sr) / ax
    v = (-dx * sr + dy * cr) / ay
    r = np.maximum(np.sqrt(u * u + v * v), 1.0)  # outside the ellipse: the normal of its rim
    u, v = u / r, v / r
    w = np.sqrt(np.maximum(0.0, 1 - u * u - v * v))
    light = p.light / np.linalg.norm(p.light)
    lx, ly = light[0] * cr + light[1] * sr, -light[0] * sr + light[1] * cr  # light in the ellipse frame
    lam = np.maximum(0.0, u * lx + v * ly + w * light[2])
    head = ((p.ambient + (1 - p.ambient) * lam) * p.brightness).astype(np.float32)
    gx, gy, a = p.bg_gradient
    bg = (1 + a * ((X - 0.5) * gx + (Y - 0.5) * gy)).astype(np.float32)
    head = cv2.resize(head, (size, size), interpolation=cv2.INTER_LINEAR)
    bg = cv2.resize(bg, (size, size), interpolation=cv2.INTER_LINEAR)
    return head, bg


def _default_supersample(size: int) -> int:
    return 4 if size < 64 else 2


def _check_supersample(supersample, size: int) -> int:
    if supersample is None:
        return _default_supersample(size)
    if not _is_int(supersample) or not 1 <= supersample <= 8:
        raise ValueError(f"supersample must be None or an int in [1, 8], got {supersample!r}")
    return int(supersample)


def render_face(params: FaceParams, size: int, *, supersample: int | None = None, return_masks: bool = False
                ) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Render one face: ``(uint8 [size, size, 3], float32 [49, 2])`` (+ part masks if asked).

    ``supersample``: drawing scale before ``INTER_AREA`` downsampling (default 4 below 64 px,
    else 2). ``return_masks=True`` adds a dict of float coverage maps [size, size] in [0, 1]
    of the visible pixels of each part ('skin', 'hair', 'eye', 'brow', 'nose', 'lip', 'ear',
    'neck'), drawn with the same polygons.
    """
    size = _check_size(size)
    if not isinstance(params, FaceParams):
        raise ValueError(f"params must be a FaceParams, got {type(params).__name__}")
    ss = _check_supersample(supersample, size)
    L = _Layout(params)
    cv = _Canvas(size, ss, params.background, return_masks)
    _draw(L, cv)
    img = cv2.resize(cv.img, (size, size), interpolation=cv2.INTER_AREA)
    m = cv2.resize(cv.fg, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) * (1 / 255)
    head, bg = _shading(L, size)
    lit, unlit = m * head, bg - m * bg  # light on the foreground, gradient on the background
    factor = cv2.merge([lit * float(t) + unlit for t in params.tint])
    out = cv2.multiply(img, factor, dtype=cv2.CV_8U)  # rounds and saturates
    if not return_masks:
        return out, L.landmarks
    masks = {name: cv2.resize((cv.lab == i).astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
             for name, i in _LABELS.items()}
    return out, L.landmarks, masks


_META_KEYS = ("yaw", "pitch", "roll", "mouth_open", "smile", "brow_raise", "eye_open", "scale",
              "hair_length", "fringe", "beard", "light", "skin", "hair")


def render_faces(n: int, size: int = 32, seed: int = 0, start: int = 0, *, yaw_max: float = 40.0,
                 pitch_max: float = 20.0, roll_max: float = 25.0, return_meta: bool = False,
                 supersample: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Render faces ``start .. start + n - 1`` of the world ``seed``.

    Returns ``images uint8 [n, size, size, 3]`` and ``landmarks float32 [n, 49, 2]`` (unit
    coordinates, 300-W 49-point order). Face ``i`` uses only ``np.random.default_rng([seed, i])``,
    so any split into calls gives the same faces. Poses are truncated normals within
    ``+-yaw_max`` etc. (degrees; at most 60, 40, 45). ``return_meta`` adds a dict of float32
    per-face arrays: yaw, pitch, roll, mouth_open, smile, brow_raise, eye_open, scale,
    hair_length, fringe (-1: none), beard (0/1/2) ``[n]``; light (unit direction), skin, hair
    (RGB) ``[n, 3]``.
    """
    if not _is_int(n) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    size = _check_size(size)
    for name, v in (("seed", seed), ("start", start)):
        if not _is_int(v) or v < 0:
            raise ValueError(f"{name} must be an int >= 0, got {v!r}")
    _check_angles(yaw_max=yaw_max, pitch_max=pitch_max, roll_max=roll_max)
    _check_supersample(supersample, size)
    images = np.empty((n, size, size, 3), np.uint8)
    landmarks = np.empty((n, 49, 2), np.float32)
    meta = {key: [] for key in _META_KEYS}
    for j in range(n):
        rng = np.random.default_rng([int(seed), int(start) + j])
        p = _sample(rng, yaw_max, pitch_max, roll_max)
        images[j], landmarks[j] = render_face(p, size, supersample=supersample)
        if return_meta:
            for key in _META_KEYS:
                meta[key].append(getattr(p, key))
            meta["light"][-1] = p.light / np.linalg.norm(p.light)
    if not return_meta:
        return images, landmarks
    out = {}
    for key, vals in meta.items():
        out[key] = np.asarray(vals, dtype=np.float32).reshape((n, 3) if key in ("light", "skin", "hair") else (n,))
    return images, landmarks, out
