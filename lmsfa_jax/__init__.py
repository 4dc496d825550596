"""LMSF-A instance segmentation in JAX/Flax (arXiv 2512.21984)."""
