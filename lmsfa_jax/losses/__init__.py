"""Training losses (YOLOv8-seg)."""
from lmsfa_jax.losses.segmentation import DEFAULT_GAINS, segmentation_loss

__all__ = ["DEFAULT_GAINS", "segmentation_loss"]
