"""Training: the BEGAN loss, trainers and their shared resume/checkpoint helpers."""
