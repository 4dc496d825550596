"""YOLOv8 segmentation training loss (Ultralytics 8.2.50 `v8SegmentationLoss`, per-instance masks).

Inputs follow the model's train-mode outputs and the data pipeline's padded batch (NHWC):
  feats      list over levels of (B, H/s, W/s, 4 * reg_max + nc): box-distribution logits
             (side slowest: l, t, r, b) then class logits; levels in `strides` order.
  mask_coef  (B, N, P) mask coefficients, N = sum of H/s * W/s, anchors in level order.
  protos     (B, Hm, Wm, P) prototype masks (stride 4).
  batch      dict: boxes (B, M, 4) xyxy input pixels, labels (B, M) int, valid (B, M) bool,
             masks (B, M, Hm, Wm) 0/1 (uint8 or float). Padding slots have valid=False.
The image size is the first level's map size times its stride.

Components (before gains):
  box  sum over positives of (1 - CIoU) * target score, / max(sum of target scores, 1)
  dfl  the same with the DFL loss against l, t, r, b distances (grid units, clipped to reg_max-1.01)
  cls  BCE(class logits, target scores) summed over anchors and classes, / max(sum of scores, 1)
  seg  per positive anchor, BCE of coef . protos vs the assigned GT mask inside the GT box,
       mean over the proto grid / normalised box area; summed, / number of positives.
All four are zero-safe: with no positives box, dfl and seg are 0 and cls is the plain BCE sum.

Cost follows the real work while shapes stay fixed: the assigner runs over the GT slots up to
the batch's last valid one and the mask term over each image's positives, both rounded up to
static buckets (`buckets.switch_on_size`); the mask term's gradient is two matrix products.
"""
from typing import Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from lmsfa_jax.anchors import REG_MAX, STRIDES, dfl_expectation, dist2bbox, make_anchors
from lmsfa_jax.losses.assigner import tal_assign
from lmsfa_jax.losses.box import bbox2dist, bbox_ciou, dfl_loss
from lmsfa_jax.losses.buckets import bucket_sizes, switch_on_size
from lmsfa_jax.losses.mask import bce_with_logits, positive_mask_loss_sum

DEFAULT_GAINS = {"box": 7.5, "cls": 0.5, "dfl": 1.5}


def _flatten_levels(feats: Sequence[jnp.ndarray]) -> jnp.ndarray:
    """List of (B, H, W, C) maps -> (B, N, C), levels concatenated, each row-major."""
    return jnp.concatenate([f.reshape(f.shape[0], -1, f.shape[-1]) for f in feats], axis=1)


def _assign_bucketed(pred_scores, pred_boxes, anchor_points, gt_labels, gt_boxes, gt_valid, **kwargs):
    """`tal_assign` over the GT slots up to the batch's last valid one (rounded up to a bucket).

    The assigner is dense in (B, M, N); slots past the last valid one of every image cannot
    change its result, so only the first m slots are used, m the smallest bucket holding them.
    """
    used = jnp.max(jnp.where(gt_valid, jnp.arange(1, gt_valid.shape[1] + 1), 0))

    def at_size(m: int):
        return tal_assign(pred_scores, pred_boxes, anchor_points, gt_labels[:, :m], gt_boxes[:, :m],
                          gt_valid[:, :m], **kwargs)

    return switch_on_size(used, bucket_sizes(gt_valid.shape[1], smallest=8, growth=4), at_size)


def segmentation_loss(
    feats: Sequence[jnp.ndarray],
    mask_coef: jnp.ndarray,
    protos: jnp.ndarray,
    batch: Mapping[str, jnp.ndarray],
    num_classes: int,
    hyp: Optional[Mapping[str, float]] = None,
    *,
    strides: Sequence[int] = STRIDES,
    reg_max: int = REG_MAX,
    topk: int = 10,
    alpha: float = 0.5,
    beta: float = 6.0,
) -> Tuple[jnp.ndarray, dict]:
    """YOLOv8-seg loss. Returns (total, components).

    components: {'box', 'seg', 'cls', 'dfl'} scalars after their gains (box, box, cls, dfl of
    `hyp`, default 7.5 / 7.5 / 0.5 / 1.5), i.e. what Ultralytics logs; total = their sum x batch
    size, the value Ultralytics back-propagates. Layouts: see the module docstring.
    """
    gains = {**DEFAULT_GAINS, **(dict(hyp) if hyp is not None else {})}
    if len(feats) != len(strides):
        raise ValueError(f"got {len(feats)} feature maps for {len(strides)} strides {tuple(strides)}")
    channels = 4 * reg_max + num_classes
    for level, f in enumerate(feats):
        if f.ndim != 4 or f.shape[-1] != channels:
            raise ValueError(
                f"feats[{level}] has shape {f.shape}; expected (B, H, W, {channels}) = 4*{reg_max} box bins + {num_classes} classes"
            )
    gt_masks = batch["masks"]
    if gt_masks.shape[-2:] != protos.shape[1:3]:
        raise ValueError(f"batch masks are {gt_masks.shape[-2:]} but protos are {protos.shape[1:3]}; they must match")

    batch_size = feats[0].shape[0]
    image_hw = (feats[0].shape[1] * strides[0], feats[0].shape[2] * strides[0])
    anchor_points, stride_per_anchor = make_anchors([f.shape[1:3] for f in feats], strides)
    flat = _flatten_levels(feats)
    dist_logits, cls_logits = flat[..., : 4 * reg_max], flat[..., 4 * reg_max :]
    pred_boxes = dist2bbox(dfl_expectation(dist_logits, reg_max), anchor_points)  # grid units

    gt_valid = batch["valid"].astype(bool)
    target = _assign_bucketed(
        jax.nn.sigmoid(cls_logits),
        pred_boxes * stride_per_anchor,
        anchor_points * stride_per_anchor,
        batch["labels"],
        batch["boxes"].astype(flat.dtype),
        gt_valid,
        topk=topk,
        alpha=alpha,
        beta=beta,
    )
    score_sum = jnp.maximum(jnp.sum(target.scores), 1.0)
    cls_loss = jnp.sum(bce_with_logits(cls_logits, target.scores)) / score_sum

    weight = jnp.sum(target.scores, axis=-1) * target.fg  # (B, N)
    target_boxes_grid = target.boxes / stride_per_anchor
    iou = bbox_ciou(pred_boxes, target_boxes_grid)
    box_loss = jnp.sum((1.0 - iou) * weight) / score_sum
    target_ltrb = bbox2dist(anchor_points, target_boxes_grid, reg_max - 1 - 0.01)
    side_logits = dist_logits.reshape(*dist_logits.shape[:-1], 4, reg_max)
    dfl = jnp.sum(dfl_loss(side_logits, target_ltrb) * weight) / score_sum

    num_positives = jnp.sum(target.fg)
    height, width = image_hw
    mask_sum = positive_mask_loss_sum(
        target.fg, target.gt_index, target.boxes / jnp.array([width, height, width, height], flat.dtype),
        mask_coef, protos, gt_masks, max_positives=min(anchor_points.shape[0], gt_valid.shape[1] * topk))
    seg_loss = mask_sum / jnp.maximum(num_positives, 1)

    components = {
        "box": box_loss * gains["box"],
        "seg": seg_loss * gains["box"],
        "cls": cls_loss * gains["cls"],
        "dfl": dfl * gains["dfl"],
    }
    total = sum(components.values()) * batch_size
    return total, components
