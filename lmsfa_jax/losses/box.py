"""Box regression terms: complete IoU (CIoU), box -> DFL target distances, DFL cross-entropy."""
import math

import jax
import jax.numpy as jnp


def bbox_ciou(box1: jnp.ndarray, box2: jnp.ndarray, eps: float = 1e-7) -> jnp.ndarray:
    """Complete IoU of (..., 4) xyxy boxes box1 and box2 (broadcasting) -> (...,).

    Follows Ultralytics: eps is added to the heights and the union, and the aspect-ratio
    trade-off factor alpha carries no gradient.
    """
    b1x1, b1y1, b1x2, b1y2 = jnp.moveaxis(box1, -1, 0)
    b2x1, b2y1, b2x2, b2y2 = jnp.moveaxis(box2, -1, 0)
    w1, h1 = b1x2 - b1x1, b1y2 - b1y1 + eps
    w2, h2 = b2x2 - b2x1, b2y2 - b2y1 + eps
    inter = jnp.clip(jnp.minimum(b1x2, b2x2) - jnp.maximum(b1x1, b2x1), 0) * jnp.clip(
        jnp.minimum(b1y2, b2y2) - jnp.maximum(b1y1, b2y1), 0
    )
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    enclosing_w = jnp.maximum(b1x2, b2x2) - jnp.minimum(b1x1, b2x1)
    enclosing_h = jnp.maximum(b1y2, b2y2) - jnp.minimum(b1y1, b2y1)
    diag2 = enclosing_w**2 + enclosing_h**2 + eps
    centre_dist2 = ((b2x1 + b2x2 - b1x1 - b1x2) ** 2 + (b2y1 + b2y2 - b1y1 - b1y2) ** 2) / 4
    v = (4 / math.pi**2) * (jnp.arctan(w2 / h2) - jnp.arctan(w1 / h1)) ** 2
    alpha = jax.lax.stop_gradient(v / (v - iou + (1 + eps)))
    return iou - (centre_dist2 / diag2 + v * alpha)


def bbox2dist(points: jnp.ndarray, boxes: jnp.ndarray, max_dist: float) -> jnp.ndarray:
    """(..., 2) points and (..., 4) xyxy boxes -> (..., 4) l, t, r, b distances in [0, max_dist]."""
    x1y1, x2y2 = jnp.split(boxes, 2, axis=-1)
    return jnp.clip(jnp.concatenate([points - x1y1, x2y2 - points], axis=-1), 0, max_dist)


def dfl_loss(dist_logits: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    """Distribution focal loss, averaged over the 4 sides.

    dist_logits (..., 4, reg_max) bin logits; target (..., 4) distances in [0, reg_max - 1)
    -> (...,). Cross-entropy against the two bins around the target, linearly weighted.
    """
    log_probs = jax.nn.log_softmax(dist_logits, axis=-1)
    left = jnp.floor(target).astype(jnp.int32)
    weight_left = (left + 1).astype(target.dtype) - target
    ce_left = -jnp.take_along_axis(log_probs, left[..., None], axis=-1)[..., 0]
    ce_right = -jnp.take_along_axis(log_probs, (left + 1)[..., None], axis=-1)[..., 0]
    return jnp.mean(ce_left * weight_left + ce_right * (1 - weight_left), axis=-1)
