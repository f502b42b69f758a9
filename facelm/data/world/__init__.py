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

API: ``render_faces(n, size, seed, start, world=WorldParams)`` makes the data set (face ``i``
depends only on ``(seed, i)``); ``sample_params(rng, world)`` draws a ``FaceParams`` and
``render_face(params, size)`` draws it (``return_masks=True`` adds per-part coverage maps, for
checks); ``mirror_params`` gives the parameters of the mirror image (what
``landmarks.flip_faces`` makes).

Modules, in the order a face is made: ``shape`` (the 68-point face model and its basis),
``faceparams`` (what defines a face, random draws, mirroring), ``layout`` (3-D parts, pose,
projection, framing), ``draw`` (polygons on a supersampled canvas, light), ``render``
(the public entry points).
"""

from facelm.data.world.faceparams import FaceParams, mirror_params, sample_params
from facelm.data.world.render import render_face, render_faces
from facelm.data.world.shape import SHAPE_NAMES

__all__ = ["FaceParams", "SHAPE_NAMES", "mirror_params", "render_face", "render_faces", "sample_params"]
