"""Data: the face sets of stage 01 and the annotated faces of stage 00.

- ``prepare``: stage 01's entry (``prepare_faces``: world or CelebA -> face set), its input
  check (``check_sources``) and stage 00's faces (``detector_faces``);
- ``world/``: the rendered face world, the embedded default (exact 49 landmarks);
- ``prepare_celeba``: CelebA -> annotated, split face set with provenance, built from
  ``celeba_crops`` (the whole tree, sharded, on all cores, resumable), ``face_crop`` (one
  photo -> one crop), ``celeba`` (reading CelebA's list files) and ``annotators`` (who puts
  the points on a crop: CelebA's 5, the stage-00 detector or dlib);
- ``pts``: folders of images with 300-W ``.pts`` files (stage 00's real-data source);
- ``faceset``: the face-set folder every later stage reads, and stage metrics files;
- ``files``: atomic array / text writers (through ``facelm.checkpoint.atomic_write``);
- ``fakeceleba``: small CelebA trees in the real formats, to dry-run the CelebA path.
"""
