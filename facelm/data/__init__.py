"""Data: the rendered face world, CelebA, .pts folders, crops and face sets (stage 01, 00's data)."""
