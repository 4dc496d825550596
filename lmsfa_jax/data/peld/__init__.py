"""PELD (percutaneous endoscopic lumbar discectomy) instance segmentation, as a TFDS dataset."""

from lmsfa_jax.data.peld.peld_dataset_builder import Builder
