"""What defines one rendered face (:class:`FaceParams`), its mirror image, and random draws.

``sample_params(rng, world)`` draws a face with the pose limits of a ``WorldParams``
section; the draws (their generator calls and their order) fix every face of the world,
so changing anything here changes the data set.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import cv2
import numpy as np

from facelm.config import WorldParams
from facelm.data.world.shape import SHAPE_NAMES
from facelm.landmarks import FLIP_PERM_68

SIZE_RANGE = (32, 128)
ANGLE_LIMITS = {"yaw_max": 60.0, "pitch_max": 40.0, "roll_max": 45.0}


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


def sample_params(rng: np.random.Generator, world: WorldParams | None = None) -> FaceParams:
    """Draw one random face. Poses are truncated normals (most faces near frontal, as in CelebA)
    within ``world``'s ``yaw_max``, ``pitch_max`` and ``roll_max`` (default: ``WorldParams()``).

    Standard deviations are 0.4, 0.4 and 0.35 of the range; expressions, identity, colours,
    hair style, light and background are drawn independently.
    """
    return _sample(rng, *pose_limits(world))


def pose_limits(world: WorldParams | None) -> tuple[float, float, float]:
    """``(yaw_max, pitch_max, roll_max)`` of a world section, checked against ``ANGLE_LIMITS``."""
    w = world if world is not None else WorldParams()
    _check_angles(yaw_max=w.yaw_max, pitch_max=w.pitch_max, roll_max=w.roll_max)
    return w.yaw_max, w.pitch_max, w.roll_max


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

