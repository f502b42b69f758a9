"""Painting a laid-out face: flat-colour cv2 polygons on a supersampled canvas, then light."""
from __future__ import annotations

import math

import cv2
import numpy as np

from facelm.data.world.layout import _Layout, _fix
from facelm.data.world.shape import _CIRCLE

_LABELS = {"skin": 1, "hair": 2, "eye": 3, "brow": 4, "nose": 5, "lip": 6, "ear": 7, "neck": 8}


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

