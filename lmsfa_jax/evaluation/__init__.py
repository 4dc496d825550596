"""Evaluation: on-device post-processing, COCO / Ultralytics-style metrics, plots."""
