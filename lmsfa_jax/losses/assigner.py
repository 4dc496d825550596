"""Task-aligned assigner (TOOD / YOLOv8) over padded ground truth, with fixed shapes.

Per image: a GT's candidates are anchors whose centre lies strictly inside its box; among them
the top-k by align metric score**alpha * CIoU**beta are positives. An anchor claimed by several
GTs keeps the GT of highest CIoU. Target scores are the one-hot GT class times the align metric
normalised per GT so that its best anchor scores the GT's best CIoU.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp

from lmsfa_jax.losses.box import bbox_ciou


class Assignment(NamedTuple):
    """Per-anchor targets (B = batch, N = anchors, C = classes)."""

    labels: jnp.ndarray  # (B, N) int32 class of the assigned GT (meaningful where fg)
    boxes: jnp.ndarray  # (B, N, 4) xyxy of the assigned GT, same units as gt_boxes
    scores: jnp.ndarray  # (B, N, C) soft class targets, zero on background
    fg: jnp.ndarray  # (B, N) bool, anchor is a positive
    gt_index: jnp.ndarray  # (B, N) int32 index of the assigned GT slot (0 on background)


def anchors_inside_boxes(points: jnp.ndarray, boxes: jnp.ndarray, eps: float = 1e-9) -> jnp.ndarray:
    """(N, 2) points, (B, M, 4) xyxy boxes -> (B, M, N) bool, point strictly inside (margin eps)."""
    p = points[None, None]
    b = boxes[:, :, None]
    deltas = jnp.concatenate([p - b[..., :2], b[..., 2:] - p], axis=-1)
    return jnp.min(deltas, axis=-1) > eps


def tal_assign(
    pred_scores: jnp.ndarray,
    pred_boxes: jnp.ndarray,
    anchor_points: jnp.ndarray,
    gt_labels: jnp.ndarray,
    gt_boxes: jnp.ndarray,
    gt_valid: jnp.ndarray,
    topk: int = 10,
    alpha: float = 0.5,
    beta: float = 6.0,
    eps: float = 1e-9,
) -> Assignment:
    """Assigns GTs to anchors. No gradient flows through the result.

    pred_scores (B, N, C) class probabilities; pred_boxes (B, N, 4) xyxy and anchor_points (N, 2)
    in the same (pixel) units as gt_boxes (B, M, 4) xyxy; gt_labels (B, M) int; gt_valid (B, M)
    bool marks real GT slots (padding is ignored whatever its box or label).
    """
    pred_scores, pred_boxes = jax.lax.stop_gradient((pred_scores, pred_boxes))
    num_classes = pred_scores.shape[-1]
    gt_labels = jnp.where(gt_valid, gt_labels, 0).astype(jnp.int32)
    gt_boxes = jnp.where(gt_valid[..., None], gt_boxes, 0.0)

    candidate = anchors_inside_boxes(anchor_points, gt_boxes) & gt_valid[..., None]  # (B, M, N)
    overlaps = jnp.clip(bbox_ciou(gt_boxes[:, :, None], pred_boxes[:, None]), 0)
    overlaps = jnp.where(candidate, overlaps, 0.0)
    gt_class_scores = jnp.take_along_axis(
        jnp.swapaxes(pred_scores, 1, 2), gt_labels[..., None], axis=1
    )  # (B, M, N): each anchor's probability of the GT's class
    align = jnp.where(candidate, gt_class_scores**alpha * overlaps**beta, 0.0)

    _, topk_index = jax.lax.top_k(align, topk)  # (B, M, k)
    batch_index = jnp.arange(align.shape[0])[:, None, None]
    gt_slot = jnp.arange(align.shape[1])[None, :, None]
    in_topk = jnp.zeros(align.shape, bool).at[batch_index, gt_slot, topk_index].set(True)
    positive = in_topk & candidate  # (B, M, N)

    # An anchor claimed by several GTs goes to the GT it overlaps most (over all GTs).
    claimed_by_many = jnp.sum(positive, axis=1, keepdims=True) > 1
    best_gt = jax.nn.one_hot(jnp.argmax(overlaps, axis=1), align.shape[1], axis=1, dtype=bool)
    positive = jnp.where(claimed_by_many, best_gt, positive)

    fg = jnp.any(positive, axis=1)  # (B, N)
    gt_index = jnp.argmax(positive, axis=1).astype(jnp.int32)
    labels = jnp.take_along_axis(gt_labels, gt_index, axis=1)
    boxes = jnp.take_along_axis(gt_boxes, gt_index[..., None], axis=1)

    align = jnp.where(positive, align, 0.0)
    best_align = jnp.max(align, axis=-1, keepdims=True)  # (B, M, 1)
    best_overlap = jnp.max(jnp.where(positive, overlaps, 0.0), axis=-1, keepdims=True)
    norm_align = jnp.max(align * best_overlap / (best_align + eps), axis=1)  # (B, N)
    scores = jax.nn.one_hot(labels, num_classes) * (fg * norm_align)[..., None]
    return Assignment(labels, boxes, scores, fg, gt_index)
