"""Anchor grid, DFL box decoding and box-format conversions (YOLOv8), shared by the head,
the loss and post-processing.

Anchors are cell centres (x + 0.5, y + 0.5) in grid units of their level; levels are
concatenated in the given order (P3, P4, P5), each flattened row-major (y outer, x inner).
"""
from typing import Sequence, Tuple

import jax
import jax.numpy as jnp

STRIDES = (8, 16, 32)   # output levels P3, P4, P5
REG_MAX = 16            # DFL bins per box side (distances 0 .. REG_MAX - 1 in grid units)


def make_anchors(
    feature_shapes: Sequence[Tuple[int, int]], strides: Sequence[int], offset: float = 0.5
) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """Anchor centres for feature maps of sizes [(H_l, W_l), ...].

    Returns (points (N, 2) float32 as (x, y) in grid units, strides (N, 1) float32),
    N = sum_l H_l * W_l.
    """
    points, level_strides = [], []
    for (h, w), stride in zip(feature_shapes, strides):
        ys, xs = jnp.meshgrid(
            jnp.arange(h, dtype=jnp.float32) + offset,
            jnp.arange(w, dtype=jnp.float32) + offset,
            indexing="ij",
        )
        points.append(jnp.stack([xs, ys], axis=-1).reshape(h * w, 2))
        level_strides.append(jnp.full((h * w, 1), stride, dtype=jnp.float32))
    return jnp.concatenate(points, axis=0), jnp.concatenate(level_strides, axis=0)


def dfl_expectation(dist_logits: jnp.ndarray, reg_max: int) -> jnp.ndarray:
    """(..., 4 * reg_max) bin logits (side slowest: l, t, r, b) -> (..., 4) expected distances."""
    probs = jax.nn.softmax(dist_logits.reshape(*dist_logits.shape[:-1], 4, reg_max), axis=-1)
    return probs @ jnp.arange(reg_max, dtype=probs.dtype)


def dist2bbox(distances: jnp.ndarray, points: jnp.ndarray) -> jnp.ndarray:
    """(..., 4) l, t, r, b distances around (..., 2) points -> (..., 4) xyxy boxes, same units."""
    left_top, right_bottom = jnp.split(distances, 2, axis=-1)
    return jnp.concatenate([points - left_top, points + right_bottom], axis=-1)


def xyxy_to_cxcywh(boxes: jnp.ndarray) -> jnp.ndarray:
    """(..., 4) corners (x1, y1, x2, y2) -> (..., 4) centre and size (cx, cy, w, h)."""
    x1y1, x2y2 = jnp.split(boxes, 2, axis=-1)
    return jnp.concatenate([(x1y1 + x2y2) / 2, x2y2 - x1y1], axis=-1)


def cxcywh_to_xyxy(boxes: jnp.ndarray) -> jnp.ndarray:
    """(..., 4) centre and size (cx, cy, w, h) -> (..., 4) corners (x1, y1, x2, y2)."""
    centre, size = jnp.split(boxes, 2, axis=-1)
    return jnp.concatenate([centre - size / 2, centre + size / 2], axis=-1)
