"""Post-processing of LMSF-A outputs: confidence filter, class-aware NMS, masks, letterbox inverse.

The device part (`postprocess`) is jit-able and has fixed output shapes, so a whole evaluation
runs with one compilation. It takes the model's eval outputs

  decoded (B, N, 4 + nc + nm): box (cx, cy, w, h) in input pixels, class probabilities, nm mask
          coefficients (nm = 32);
  protos  (B, H/4, W/4, nm) prototype masks (stride `PROTO_STRIDE` = 4)

and returns a `Detections` pytree padded to `max_det` rows per image with a valid `count`.

The host part maps detections from the letterboxed input back to the original image
(`boxes_to_original`, `masks_to_original`). Letterbox convention (Ultralytics): a point of the
original image maps to the input as x_in = x * ratio + pad_x, y_in = y * ratio + pad_y.
"""
from typing import NamedTuple

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from lmsfa_jax.anchors import cxcywh_to_xyxy

PROTO_STRIDE = 4
# Defaults (Ultralytics val): scoring keeps nearly every candidate, then class-aware NMS.
CONF_THRESHOLD = 0.001
IOU_THRESHOLD = 0.7
MAX_DET = 300
MAX_CANDIDATES = 1024   # top-scoring candidates that enter NMS
# Detections shown to a person (overlays, `predict`) score at least this (Ultralytics predict).
DISPLAY_CONF_THRESHOLD = 0.25


class Detections(NamedTuple):
    """Padded per-image detections; rows >= count are zeros (class -1).

    boxes (B, D, 4) float32 xyxy in input pixels; scores (B, D) float32; classes (B, D) int32;
    masks (B, D, h, w) bool, (h, w) = protos' (H/4, W/4) or the input (H, W) with retina masks;
    count (B,) int32. D = max_det.
    """
    boxes: jax.Array
    scores: jax.Array
    classes: jax.Array
    masks: jax.Array
    count: jax.Array


def box_iou(boxes_a, boxes_b):
    """IoU matrix (A, B) of xyxy boxes (A, 4) and (B, 4)."""
    area_a = jnp.prod(jnp.clip(boxes_a[:, 2:] - boxes_a[:, :2], 0), axis=-1)
    area_b = jnp.prod(jnp.clip(boxes_b[:, 2:] - boxes_b[:, :2], 0), axis=-1)
    top_left = jnp.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = jnp.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    inter = jnp.prod(jnp.clip(bottom_right - top_left, 0), axis=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / jnp.maximum(union, 1e-9)


def greedy_nms(boxes, scores, classes, valid, iou_threshold):
    """Class-aware greedy NMS over candidates already sorted by descending score.

    boxes (K, 4) xyxy, scores (K,), classes (K,), valid (K,) bool -> keep (K,) bool.
    A candidate is kept iff it is valid and no kept, higher-ranked candidate of the same class
    overlaps it with IoU > iou_threshold. That recursion is solved as the fixed point of one
    parallel suppression step; candidate j is final once all candidates before it are, so the
    loop ends after at most K steps and usually after a handful.
    """
    del scores  # the order carries the ranking
    k = boxes.shape[0]
    same_class = classes[:, None] == classes[None, :]
    earlier = jnp.arange(k)[:, None] < jnp.arange(k)[None, :]
    suppresses = (box_iou(boxes, boxes) > iou_threshold) & same_class & earlier  # (i, j): i kills j

    def step(state):
        keep, _, it = state
        new_keep = valid & ~jnp.any(suppresses & keep[:, None], axis=0)
        return new_keep, jnp.any(new_keep != keep), it + 1

    keep, _, _ = jax.lax.while_loop(lambda s: s[1] & (s[2] < k), step, (valid, jnp.array(True), jnp.array(0)))
    return keep


def select_candidates(decoded, num_classes, conf_threshold, max_candidates, multi_label):
    """Top-scoring candidates of one image.

    decoded (N, 4 + nc + nm) -> boxes (K, 4) xyxy, scores (K,), classes (K,), coefficients (K, nm),
    valid (K,) bool, sorted by descending score. With multi_label every (anchor, class) pair whose
    probability exceeds the threshold is a candidate (as in Ultralytics validation), otherwise
    only each anchor's best class.
    """
    boxes = cxcywh_to_xyxy(decoded[:, :4])
    probs = decoded[:, 4:4 + num_classes]
    coefficients = decoded[:, 4 + num_classes:]
    if multi_label:
        flat = probs.reshape(-1)
        scores, index = jax.lax.top_k(flat, min(max_candidates, flat.shape[0]))
        anchor, classes = index // num_classes, index % num_classes
    else:
        best = probs.max(axis=-1)
        scores, anchor = jax.lax.top_k(best, min(max_candidates, best.shape[0]))
        classes = probs[anchor].argmax(axis=-1)
    return boxes[anchor], scores, classes.astype(jnp.int32), coefficients[anchor], scores > conf_threshold


def assemble_masks(coefficients, protos, boxes, retina_masks=False):
    """Binary instance masks: sigmoid(coefficients . protos) > 0.5, zeroed outside the box.

    coefficients (D, nm), protos (h, w, nm), boxes (D, 4) xyxy input pixels -> (D, h, w) bool, or
    (D, 4h, 4w) bool with retina_masks (logits bilinearly upsampled to the input first).
    """
    logits = jnp.einsum("dc,hwc->dhw", coefficients, protos)
    scale = 1.0 / PROTO_STRIDE
    if retina_masks:
        h, w = protos.shape[0] * PROTO_STRIDE, protos.shape[1] * PROTO_STRIDE
        logits = jax.image.resize(logits, (logits.shape[0], h, w), method="bilinear")
        scale = 1.0
    h, w = logits.shape[1:]
    cols = jnp.arange(w, dtype=jnp.float32) + 0.5
    rows = jnp.arange(h, dtype=jnp.float32) + 0.5
    b = boxes * scale
    inside_x = (cols[None, :] >= b[:, 0:1]) & (cols[None, :] < b[:, 2:3])  # (D, w)
    inside_y = (rows[None, :] >= b[:, 1:2]) & (rows[None, :] < b[:, 3:4])  # (D, h)
    return (logits > 0.0) & inside_y[:, :, None] & inside_x[:, None, :]  # sigmoid > 0.5 <=> logit > 0


def postprocess_image(decoded, protos, *, conf_threshold=CONF_THRESHOLD, iou_threshold=IOU_THRESHOLD,
                      max_det=MAX_DET, max_candidates=MAX_CANDIDATES, multi_label=False, retina_masks=False):
    """One image: decoded (N, 4 + nc + nm), protos (h, w, nm) -> Detections without batch axis."""
    num_classes = decoded.shape[-1] - 4 - protos.shape[-1]
    boxes, scores, classes, coefficients, valid = select_candidates(
        decoded, num_classes, conf_threshold, max_candidates, multi_label)
    keep = greedy_nms(boxes, scores, classes, valid, iou_threshold)
    order = jnp.argsort(~keep, stable=True)  # kept candidates first, still by descending score
    if order.shape[0] < max_det:
        order = jnp.pad(order, (0, max_det - order.shape[0]))
    order = order[:max_det]
    count = jnp.minimum(keep.sum(), max_det).astype(jnp.int32)
    row_valid = jnp.arange(max_det) < count
    boxes = jnp.where(row_valid[:, None], boxes[order], 0.0)
    masks = assemble_masks(coefficients[order], protos, boxes, retina_masks) & row_valid[:, None, None]
    return Detections(
        boxes=boxes,
        scores=jnp.where(row_valid, scores[order], 0.0),
        classes=jnp.where(row_valid, classes[order], -1),
        masks=masks,
        count=count,
    )


def postprocess(decoded, protos, **kwargs):
    """Batched `postprocess_image`: decoded (B, N, 4 + nc + nm), protos (B, h, w, nm) -> Detections.

    Keyword arguments (all static under jit): conf_threshold (CONF_THRESHOLD), iou_threshold
    (IOU_THRESHOLD), max_det (MAX_DET), max_candidates (MAX_CANDIDATES), multi_label (False), retina_masks (False).
    """
    return jax.vmap(lambda d, p: postprocess_image(d, p, **kwargs))(decoded, protos)


def boxes_to_original(boxes, ratio, pad, original_hw):
    """xyxy boxes (..., 4) in input pixels -> original pixels, clipped to the (height, width) image."""
    pad_x, pad_y = pad
    height, width = original_hw
    boxes = (np.asarray(boxes, np.float32) - np.array([pad_x, pad_y, pad_x, pad_y], np.float32)) / ratio
    return np.clip(boxes, 0, np.array([width, height, width, height], np.float32))


def masks_to_original(masks, boxes_original, ratio, pad, original_hw, input_hw):
    """Binary masks (D, h, w) on the letterboxed input grid -> (D, H, W) uint8 masks of the original.

    boxes_original (D, 4) xyxy original pixels; input_hw: (H, W) of the letterboxed input. The mask
    grid has stride s = input width / w (4 for proto masks, 1 for retina masks); original pixel
    centre x + 0.5 sits at x_in = (x + 0.5) * ratio + pad_x, i.e. at mask coordinate x_in / s - 0.5.
    Each instance's box region is resampled bilinearly and thresholded at 0.5; the mask cells
    inside its box are edge-extended first, so the box crop does not erode the corners. Pixels
    outside the box stay 0.
    """
    masks = np.asarray(masks)
    height, width = original_hw
    out = np.zeros((masks.shape[0], height, width), np.uint8)
    stride = input_hw[1] / masks.shape[2]
    pad_xy = np.asarray(pad, np.float64)
    for i, (mask, box) in enumerate(zip(masks, np.asarray(boxes_original, np.float64))):
        x0, y0 = int(np.floor(box[0])), int(np.floor(box[1]))
        x1, y1 = min(int(np.ceil(box[2])), width), min(int(np.ceil(box[3])), height)
        # Mask cells whose centres lie inside the box (the cells the device crop kept).
        lo = np.ceil((box[:2] * ratio + pad_xy) / stride - 0.5).astype(int).clip(0)
        hi = np.ceil((box[2:] * ratio + pad_xy) / stride - 0.5).astype(int).clip(None, mask.shape[::-1])
        if x1 <= x0 or y1 <= y0 or np.any(hi <= lo):
            continue
        cells = mask[lo[1]:hi[1], lo[0]:hi[0]].astype(np.float32)
        a = ratio / stride
        offset = ((np.array([x0, y0]) + 0.5) * ratio + pad_xy) / stride - 0.5 - lo
        warp = np.array([[a, 0.0, offset[0]], [0.0, a, offset[1]]], np.float64)
        region = cv2.warpAffine(cells, warp, (x1 - x0, y1 - y0),
                                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_REPLICATE)
        cols = np.arange(x0, x1) + 0.5
        rows = np.arange(y0, y1) + 0.5
        in_box = (((rows >= box[1]) & (rows < box[3]))[:, None]
                  & ((cols >= box[0]) & (cols < box[2]))[None, :])
        out[i, y0:y1, x0:x1] = (region > 0.5) & in_box
    return out
