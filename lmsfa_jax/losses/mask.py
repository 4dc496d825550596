"""Per-instance mask loss of YOLOv8-seg: BCE of coefficient x prototype masks inside the box."""
import jax.numpy as jnp


def box_crop_mask(boxes: jnp.ndarray, height: int, width: int) -> jnp.ndarray:
    """(..., 4) xyxy boxes in mask pixels -> (..., height, width) float, 1 on pixels with
    x1 <= col < x2 and y1 <= row < y2 (pixel index, as Ultralytics' crop_mask)."""
    cols = jnp.arange(width, dtype=boxes.dtype)
    rows = jnp.arange(height, dtype=boxes.dtype)
    x1, y1, x2, y2 = (boxes[..., i, None] for i in range(4))
    inside_x = (cols >= x1) & (cols < x2)  # (..., W)
    inside_y = (rows >= y1) & (rows < y2)  # (..., H)
    return (inside_y[..., :, None] & inside_x[..., None, :]).astype(boxes.dtype)


def bce_with_logits(logits: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
    """Element-wise binary cross-entropy on logits (numerically stable)."""
    return jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def instance_mask_losses(
    coefs: jnp.ndarray,
    protos: jnp.ndarray,
    gt_masks: jnp.ndarray,
    boxes_normalised: jnp.ndarray,
    active: jnp.ndarray,
) -> jnp.ndarray:
    """Mask loss of each instance, before averaging over instances.

    coefs (K, P) mask coefficients; protos (Hm, Wm, P); gt_masks (K, Hm, Wm) 0/1 masks;
    boxes_normalised (K, 4) xyxy in [0, 1] of the image; active (K,) bool. Returns (K,): BCE of
    coefs . protos against the mask, zeroed outside the box, mean over the Hm x Wm grid, divided
    by the box's normalised area; 0 where not active (so padding rows never divide by zero).
    """
    height, width = protos.shape[:2]
    logits = jnp.einsum("kp,hwp->khw", coefs, protos)
    crop = box_crop_mask(boxes_normalised * jnp.array([width, height, width, height], coefs.dtype), height, width)
    area = (boxes_normalised[:, 2] - boxes_normalised[:, 0]) * (boxes_normalised[:, 3] - boxes_normalised[:, 1])
    area = jnp.where(active, area, 1.0)
    per_instance = jnp.mean(bce_with_logits(logits, gt_masks) * crop, axis=(1, 2)) / area
    return jnp.where(active, per_instance, 0.0)
