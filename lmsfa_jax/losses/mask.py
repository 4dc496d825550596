"""Per-instance mask loss of YOLOv8-seg: BCE of coefficient x prototype masks inside the box.

The loss is evaluated only for the positive anchors: they are gathered per image into a padded
set whose size is the smallest of a few static buckets that holds the batch's largest per-image
count (`buckets`), so the work follows the positives that exist, not `max_instances x topk`.
"""
import functools

import jax
import jax.numpy as jnp

from lmsfa_jax.losses.buckets import bucket_sizes, switch_on_size


def bce_with_logits(logits: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
    """Element-wise binary cross-entropy on logits (numerically stable)."""
    return jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def _positive_rows(fg, arrays, k: int):
    """Gathers each image's first k anchors with fg first (in anchor order) -> (picked (B, k), rows)."""
    _, picked = jax.lax.top_k(fg.astype(jnp.float32), k)
    return picked, [jnp.take_along_axis(a, picked.reshape(*picked.shape, *([1] * (a.ndim - 2))), axis=1,
                                        mode="promise_in_bounds") for a in arrays]


def _mask_bce_at_size(k, fg, gt_index, boxes, weights, mask_coef, protos, gt_masks, with_grads: bool):
    """The summed, weighted BCE of each image's first k positives; with_grads: also its gradients
    (B, N, P) with respect to mask_coef and (B, Hm, Wm, P) with respect to protos.

    Layout (B, k, Hm, Wm), so that every large operand of the three matmuls is already in the
    order they read it (only the small protos and coefficient arrays get transposed); the crop
    is a row mask (carrying the weight) times a column mask; the targets are whole GT mask rows.
    """
    batch, height, width, num_masks = protos.shape
    picked, (coefs, slots, boxes, weights) = _positive_rows(fg, (mask_coef, gt_index, boxes, weights), k)
    pixels = protos.reshape(batch, height * width, num_masks)
    z = jnp.einsum("bkp,bpn->bkn", coefs, pixels.transpose(0, 2, 1)).reshape(batch, k, height, width)
    rows = jnp.arange(height, dtype=boxes.dtype)
    cols = jnp.arange(width, dtype=boxes.dtype)
    x1, y1, x2, y2 = (boxes[..., i, None] for i in range(4))                                 # (B, k, 1)
    row_weight = jnp.where((rows >= y1) & (rows < y2), weights[..., None], 0.0)[..., None]  # (B, k, Hm, 1)
    col_inside = ((cols >= x1) & (cols < x2)).astype(z.dtype)[:, :, None, :]                 # (B, k, 1, Wm)
    w = row_weight * col_inside
    t = jnp.take_along_axis(gt_masks, slots[:, :, None, None], axis=1, mode="promise_in_bounds").astype(z.dtype)
    e = jnp.exp(-jnp.abs(z))
    # Per-row sums first: a fused reduction straight to a scalar runs on one thread in XLA:CPU.
    loss = jnp.sum(jnp.sum(w * (jnp.maximum(z, 0) - z * t + jnp.log1p(e)), axis=(2, 3)))
    if not with_grads:
        return loss
    sigmoid = jnp.where(z >= 0, 1, e) / (1 + e)
    dz = (w * (sigmoid - t)).reshape(batch, k, height * width)
    d_coefs = jnp.einsum("bkn,bnp->bkp", dz, pixels)
    d_mask_coef = jnp.zeros_like(mask_coef).at[jnp.arange(batch)[:, None], picked].set(d_coefs)
    d_pixels = jnp.einsum("bpk,bkn->bpn", coefs.transpose(0, 2, 1), dz)
    return loss, d_mask_coef, d_pixels.transpose(0, 2, 1).reshape(protos.shape)


def _bucketed(fg, gt_index, boxes_normalised, mask_coef, protos, gt_masks, max_positives, with_grads):
    batch, height, width, _ = protos.shape
    scale = jnp.array([width, height, width, height], boxes_normalised.dtype)
    area = (boxes_normalised[..., 2] - boxes_normalised[..., 0]) * (boxes_normalised[..., 3] - boxes_normalised[..., 1])
    weights = jnp.where(fg, 1 / (height * width * jnp.where(fg, area, 1.0)), 0.0)
    args = (fg, gt_index, boxes_normalised * scale, weights, mask_coef, protos, gt_masks)
    return switch_on_size(jnp.max(jnp.sum(fg, axis=1)), bucket_sizes(max_positives),
                          lambda k: _mask_bce_at_size(k, *args, with_grads=with_grads))


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def positive_mask_loss_sum(fg, gt_index, boxes_normalised, mask_coef, protos, gt_masks, max_positives: int):
    """Sum over every positive anchor of the batch of its instance mask loss.

    fg (B, N) bool positives; gt_index (B, N) assigned GT slot; boxes_normalised (B, N, 4) xyxy in
    [0, 1] of the assigned GT box; mask_coef (B, N, P); protos (B, Hm, Wm, P); gt_masks
    (B, M, Hm, Wm) 0/1. An instance's loss is the BCE of coef . protos against its GT mask, summed
    inside the box, divided by Hm·Wm and by the box's normalised area (Ultralytics'
    `single_mask_loss`). `max_positives` bounds the positives of any image.

    Each image's positives are gathered (in anchor order) into K rows, K the smallest bucket
    holding the batch's largest per-image count, so the cost is B x K x Hm x Wm whatever
    `max_positives` is. Differentiable in mask_coef and protos only; under `jax.grad` the
    forward pass also forms both gradients (the output is a scalar, so the backward pass only
    scales them), which keeps the saved residuals the same for every bucket.
    """
    return _bucketed(fg, gt_index, boxes_normalised, mask_coef, protos, gt_masks, max_positives, False)


def _positive_mask_loss_sum_fwd(fg, gt_index, boxes_normalised, mask_coef, protos, gt_masks, max_positives):
    loss, d_mask_coef, d_protos = _bucketed(fg, gt_index, boxes_normalised, mask_coef, protos, gt_masks,
                                            max_positives, True)
    return loss, (d_mask_coef, d_protos)


def _positive_mask_loss_sum_bwd(max_positives, residuals, g):
    d_mask_coef, d_protos = residuals
    return None, None, None, d_mask_coef * g, d_protos * g, None


positive_mask_loss_sum.defvjp(_positive_mask_loss_sum_fwd, _positive_mask_loss_sum_bwd)
