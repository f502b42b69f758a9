"""Faces for the screen and for files: upscaled with landmarks and index numbers, and PNG bytes."""
from __future__ import annotations

import numpy as np

from facelm.landmarks import draw_landmarks, to_pixels

__all__ = ["annotate_face", "point_radius", "encode_png"]


def annotate_face(image: np.ndarray, landmarks: np.ndarray, scale: int,
                  points: bool = True, numbers: bool = False, radius: int | None = None) -> np.ndarray:
    """Upscale a uint8 ``[S, S, 3]`` face ``scale`` times (nearest), with points and/or indices.

    Points are :func:`facelm.landmarks.draw_landmarks` (``radius`` in display pixels, default
    :func:`point_radius`); indices are 0-based 49-point numbers.
    """
    import cv2

    if points:
        r = point_radius(image.shape[1] * scale) if radius is None else radius
        canvas = draw_landmarks(image, landmarks, scale=scale, radius=r)
    else:
        h, w = image.shape[:2]
        canvas = cv2.resize(np.ascontiguousarray(image), (w * scale, h * scale),
                            interpolation=cv2.INTER_NEAREST)
    if numbers:
        h, w = canvas.shape[:2]
        font_scale = max(0.5, w / 512)
        for i, (x, y) in enumerate(to_pixels(landmarks, w, h)):
            org = (int(round(x)) + 2, int(round(y)) - 2)
            # dark outline under light text: readable on any skin or background
            cv2.putText(canvas, str(i), org, cv2.FONT_HERSHEY_PLAIN, font_scale, (0, 0, 0), 2, cv2.LINE_AA)
            cv2.putText(canvas, str(i), org, cv2.FONT_HERSHEY_PLAIN, font_scale, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def point_radius(display_width: int) -> int:
    """Landmark dot radius for a face shown ``display_width`` pixels wide (4 px at 384 px).

    49 points crowd a small face: dots about 1 % of the width stay apart.
    """
    return max(2, round(display_width / 96))


def encode_png(image: np.ndarray, compression: int | None = None) -> bytes:
    """A uint8 RGB ``[H, W, 3]`` image as PNG file bytes (lossless).

    ``compression``: zlib level 0-9 (OpenCV's default when None); synth uses 1, the fastest,
    since its PNGs are written by the million.
    """
    import cv2

    params = [] if compression is None else [cv2.IMWRITE_PNG_COMPRESSION, compression]
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR),
                           params)
    if not ok:
        raise OSError("cv2.imencode failed to encode a PNG")
    return buf.tobytes()
