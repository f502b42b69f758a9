"""Inverse of the generator (paper section III): find z with G(z) close to a given face.

- ``refine.py``: `invert`, the batched Adam search for z (the paper's method), from a
  random start (the authors') or from an encoder's guess;
- ``encoder.py``: `train_encoder`, a small CNN trained on (z, G(z)) pairs that G makes for
  free, whose z(x) is that start point; `build_encoder`, the one stage 03 uses (fresh, or
  from stage 02's mode-regulariser encoder);
- ``mirror.py``: which training faces get their mirror image inverted too (Fig. 9): the
  most turned ones, by the world's yaw or a landmark yaw proxy.
"""
from facelm.inversion.encoder import LatentEncoder, build_encoder, encode, train_encoder
from facelm.inversion.mirror import MirrorChoice, choose_mirror_faces, world_yaw, yaw_proxy
from facelm.inversion.refine import InversionResult, invert, start_z

__all__ = ["InversionResult", "LatentEncoder", "MirrorChoice", "build_encoder", "choose_mirror_faces",
           "encode", "invert", "start_z", "train_encoder", "world_yaw", "yaw_proxy"]
