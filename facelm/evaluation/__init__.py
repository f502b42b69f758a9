"""Evaluation: results (stage 05), consistency with a judge (06), augmentation study (07)."""
