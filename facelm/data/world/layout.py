"""One face's 3-D parts (from its 68 model points), rotated by the head pose and projected.

:class:`_Layout` holds every part (brows, eyes, nose, skin, hair, ears, neck, beard) in
unit image coordinates, framed like a face detector's crop, and the 49 landmarks.
"""
from __future__ import annotations

import math

import numpy as np

from facelm.data.world.faceparams import FaceParams
from facelm.data.world.shape import (_BASIS_FLAT, _BROW_PROFILE, _CIRCLE, _CS, _CURVES, _MEAN, SHAPE_NAMES,
                                     _face_z)
from facelm.landmarks import IDX_68_TO_49

_FOCAL = 9.0            # camera distance in head units: mild perspective
_FRAME_SCALE = 0.32     # image units per head unit (before jitter): the face box fills ~70 %
_FRAME_Y = 0.54         # where the face box centre sits (brows..chin, cheek..cheek)
_MARGIN = 0.03          # landmarks are kept at least this far inside the image


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



def _fix(uv: np.ndarray, n: int) -> np.ndarray:
    # unit coords -> cv2 pixel coords (pixel centres on integers) in 1/16 px, for shift=4
    return np.rint(uv * (n * 16) - 8).astype(np.int32)
