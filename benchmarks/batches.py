"""A random training batch with a fixed number of objects per image, shared by the benchmarks.

Objects are random ellipses (as polygons) of 4 classes; their targets come from the input
pipeline's own `augment.to_targets`, so boxes, masks and padding are what training sees.
"""
import numpy as np

from lmsfa_jax.data import augment

NUM_CLASSES = 4


def ellipse(rng: np.random.Generator, size: int, points: int = 24) -> np.ndarray:
    """A random ellipse polygon (points, 2) inside a (size, size) image, 4 %-30 % of its side."""
    rx, ry = size * rng.uniform(0.02, 0.15, 2)
    cx, cy = rng.uniform(rx, size - rx), rng.uniform(ry, size - ry)
    t = np.linspace(0, 2 * np.pi, points, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], -1).astype(np.float32)


def random_batch(batch: int, size: int, objects: int, max_instances: int, mask_ratio: int = 4,
                 seed: int = 0) -> dict:
    """-> {images (B, S, S, 3) float32 in [0, 1], boxes (B, M, 4), labels (B, M), valid (B, M),
    masks (B, M, S/r, S/r) uint8}, `objects` objects per image (at most `max_instances` kept)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(batch):
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        sample = {"image": image, "labels": rng.integers(0, NUM_CLASSES, objects).astype(np.int32),
                  "polygons": [[ellipse(rng, size)] for _ in range(objects)]}
        targets, _ = augment.to_targets(sample, max_instances, mask_ratio)
        rows.append({"images": image.astype(np.float32) / 255, **targets})
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}
