"""COCO-format ground truth and results, pycocotools COCOeval, and Ultralytics-style metrics.

Layouts:
- Ground truth (`coco_ground_truth`): a COCO dataset dict built from dataset examples; category
  ids are label + 1 (`CATEGORY_ID_OFFSET`), segmentations are polygons in original pixels, areas
  are mask areas.
- Results (`detections_to_results`): the COCO results format, one dict per detection with
  image_id, category_id, bbox [x, y, w, h] and score in original pixels, and segmentation as an
  RLE whose counts are an ASCII string (JSON-ready).
  A result without a segmentation (a box-only prediction of another model) is scored for boxes
  only; a result carrying an "area" keeps it for COCO's area ranges (masks scored on a coarser
  grid carry their original-pixel area, see `mask_resolution`).
- `evaluate(gt, results, class_names) -> (metrics, curves)`: metrics is a plain JSON-ready dict
  (see `evaluate`); curves holds the arrays the PR plots need.

Every metric is -1.0 where it is undefined (no ground truth for that class or area range), as
pycocotools reports it.
"""
import contextlib
import copy
import io
import warnings

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

CATEGORY_ID_OFFSET = 1
IOU_TYPES = ("bbox", "segm")
COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                   "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
ULTRALYTICS_STAT_NAMES = ("precision", "recall", "mAP50", "mAP50-95")
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


# ----------------------------------------------------------------------------- ground truth


def coco_ground_truth(examples, class_names):
    """COCO dataset dict from examples with image_id, file_name, height, width, labels (K,),
    boxes (K, 4) xyxy and polygons (K lists of (P, 2) arrays), all in original pixels.

    Polygons with fewer than 3 points are dropped, and objects left without any are skipped,
    with one warning that counts them.
    """
    images, annotations, skipped = [], [], []
    for example in examples:
        height, width = int(example["height"]), int(example["width"])
        images.append({"id": int(example["image_id"]), "file_name": str(example["file_name"]),
                       "height": height, "width": width})
        for label, box, polygons in zip(example["labels"], example["boxes"], example["polygons"]):
            segmentation = [np.asarray(p, np.float64).reshape(-1).tolist()
                            for p in polygons if len(p) >= 3]
            if not segmentation:
                skipped.append(str(example["file_name"]))
                continue
            x0, y0, x1, y1 = (float(v) for v in box)
            rle = segmentation_to_rle(segmentation, height, width)
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": int(example["image_id"]),
                "category_id": int(label) + CATEGORY_ID_OFFSET,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": float(mask_utils.area(rle)),
                "iscrowd": 0,
                "segmentation": segmentation,
            })
    if skipped:
        warnings.warn(f"skipped {len(skipped)} objects without a polygon of >= 3 points "
                      f"(first in {skipped[0]})")
    categories = [{"id": i + CATEGORY_ID_OFFSET, "name": name} for i, name in enumerate(class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}


# ----------------------------------------------------------------------------- masks


def segmentation_to_rle(segmentation, height, width):
    """A COCO segmentation -> one compressed RLE dict with ASCII counts.

    segmentation: polygons (a list of flat [x0, y0, x1, y1, ...] lists in pixels; those with fewer
    than 3 points are dropped, none left gives an empty mask), an uncompressed RLE (list counts) or
    a compressed one (returned as is).
    """
    if isinstance(segmentation, dict):
        if not isinstance(segmentation["counts"], list):
            return segmentation
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        polygons = [list(p) for p in segmentation if len(p) >= 6]
        if polygons:
            rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
        else:
            rle = mask_utils.encode(np.zeros((height, width), np.uint8, order="F"))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def encode_masks(masks):
    """(D, H, W) binary masks -> D COCO RLE dicts with ASCII counts."""
    masks = np.asarray(masks, np.uint8)
    if masks.shape[0] == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def detections_to_results(image_id, boxes, scores, classes, masks):
    """One image's detections in original pixels -> COCO result dicts.

    boxes (D, 4) xyxy, scores (D,), classes (D,) 0-based labels, masks (D, H, W) binary.
    """
    boxes = np.asarray(boxes, np.float64)
    results = []
    for box, score, label, rle in zip(boxes, scores, classes, encode_masks(masks)):
        results.append({
            "image_id": int(image_id),
            "category_id": int(label) + CATEGORY_ID_OFFSET,
            "bbox": [round(float(box[0]), 3), round(float(box[1]), 3),
                     round(float(box[2] - box[0]), 3), round(float(box[3] - box[1]), 3)],
            "score": round(float(score), 5),
            "segmentation": rle,
        })
    return results


def results_to_instances(results, height, width):
    """One image's COCO results -> boxes (D, 4) xyxy, scores (D,), classes (D,) 0-based labels and
    masks (D, H, W) uint8 (empty for box-only results): the inverse of `detections_to_results`."""
    boxes = np.array([r["bbox"] for r in results], np.float64).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    masks = np.zeros((len(results), height, width), np.uint8)
    for mask, r in zip(masks, results):
        if "segmentation" in r:
            mask[:] = mask_utils.decode(segmentation_to_rle(r["segmentation"], height, width))
    return {"boxes": boxes, "scores": np.array([r["score"] for r in results], np.float64),
            "classes": np.array([r["category_id"] - CATEGORY_ID_OFFSET for r in results], int),
            "masks": masks}


# ----------------------------------------------------------------------------- pycocotools


def _coco_from_dict(dataset):
    """A pycocotools COCO over a copy of `dataset` (COCOeval rewrites segmentations in place)."""
    coco = COCO()
    coco.dataset = copy.deepcopy(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_stats(precision, recall, params, class_index=None):
    """The 12 COCOeval.summarize numbers, for all classes or for one class index.

    precision (T, R, K, A, M) and recall (T, K, A, M) are COCOeval.eval arrays (-1 = undefined).
    """
    def mean_defined(values):
        values = values[values > -1]
        return float(values.mean()) if values.size else -1.0

    def pick(array, class_axis, iou=None, area="all", max_dets=100):
        a = params.areaRngLbl.index(area)
        m = params.maxDets.index(max_dets)
        array = array[..., a, m]
        if class_index is not None:
            array = np.take(array, [class_index], axis=class_axis)
        if iou is not None:
            array = array[np.flatnonzero(np.isclose(params.iouThrs, iou))]
        return mean_defined(array)

    ap = lambda **kw: pick(precision, 2, **kw)  # noqa: E731
    ar = lambda **kw: pick(recall, 1, **kw)  # noqa: E731
    values = (ap(), ap(iou=0.5), ap(iou=0.75), ap(area="small"), ap(area="medium"), ap(area="large"),
              ar(max_dets=1), ar(max_dets=10), ar(), ar(area="small"), ar(area="medium"),
              ar(area="large"))
    return dict(zip(COCO_STAT_NAMES, values))


def run_cocoeval(gt, results, iou_type, num_classes):
    """COCOeval (maxDets 1/10/100) -> (overall stats, list of per-class stats), -1 where undefined.

    For `segm` the results' boxes are dropped so that area ranges use mask areas (or the "area"
    a result carries).
    """
    if not results:
        has_gt = {a["category_id"] - CATEGORY_ID_OFFSET for a in gt["annotations"]}
        zeros = {name: 0.0 if gt["annotations"] else -1.0 for name in COCO_STAT_NAMES}
        per_class = [dict(zeros) if k in has_gt else {n: -1.0 for n in COCO_STAT_NAMES}
                     for k in range(num_classes)]
        return zeros, per_class
    # Copies, as loadRes adds fields in place; for segm without the box.
    drop = "bbox" if iou_type == "segm" else None
    results = [{k: v for k, v in r.items() if k != drop} for r in results]
    areas = [r.get("area") for r in results]
    coco_gt = _coco_from_dict(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)  # computes every area, in results' order
        for annotation, area in zip(coco_dt.dataset["annotations"], areas):
            if area is not None:
                annotation["area"] = area
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        evaluator.params.catIds = [k + CATEGORY_ID_OFFSET for k in range(num_classes)]
        evaluator.evaluate()
        evaluator.accumulate()
    precision, recall = evaluator.eval["precision"], evaluator.eval["recall"]
    overall = coco_stats(precision, recall, evaluator.params)
    per_class = [coco_stats(precision, recall, evaluator.params, k) for k in range(num_classes)]
    return overall, per_class


# ----------------------------------------------------------------------------- Ultralytics style


def match_predictions(pred_classes, gt_classes, iou, iou_thresholds=IOU_THRESHOLDS):
    """True positives (P, T) of one image's predictions, sorted by descending score.

    At each threshold a prediction claims the same-class ground truth it overlaps most (IoU >=
    threshold); when several claim one ground truth the highest-scoring one wins, the others are
    false positives. iou (P, G).
    """
    correct = np.zeros((len(pred_classes), len(iou_thresholds)), bool)
    if len(pred_classes) == 0 or len(gt_classes) == 0:
        return correct
    iou = np.where(np.asarray(pred_classes)[:, None] == np.asarray(gt_classes)[None, :], iou, 0.0)
    best_gt = iou.argmax(axis=1)
    best_iou = iou.max(axis=1)
    for t, threshold in enumerate(iou_thresholds):
        claimants = np.flatnonzero(best_iou >= threshold)
        _, first = np.unique(best_gt[claimants], return_index=True)  # lowest index = highest score
        correct[claimants[first], t] = True
    return correct


def interpolated_ap(recall, precision):
    """AP of one PR curve: monotone precision envelope, linearly interpolated at 101 recall points
    and integrated with the trapezoid rule.

    The curve is closed with (recall 1, precision 0) only when it stops short of recall 1, so a
    perfect curve scores 1 (Ultralytics always appends it and caps a perfect AP at 0.995).
    """
    closing = len(recall) == 0 or recall[-1] < 1.0
    mrec = np.concatenate([[0.0], recall, [1.0] if closing else []])
    mpre = np.concatenate([[1.0], precision, [0.0] if closing else []])
    envelope = np.maximum.accumulate(mpre[::-1])[::-1]
    grid = np.linspace(0, 1, 101)
    values = np.interp(grid, mrec, envelope)
    return float(np.sum((values[1:] + values[:-1]) / 2 * np.diff(grid))), mrec, envelope


def box_smooth(values, fraction):
    """Moving average over a window of about `fraction` of the length, edges padded."""
    width = int(round(len(values) * fraction * 2)) // 2 + 1
    padded = np.concatenate([np.full(width // 2, values[0]), values, np.full(width // 2, values[-1])])
    return np.convolve(padded, np.ones(width) / width, mode="valid")


def ap_per_class(correct, scores, pred_classes, gt_classes, num_classes):
    """Ultralytics-style per-class metrics from all images' predictions.

    correct (P, T) bool, scores (P,), pred_classes (P,), gt_classes (G,) -> dict of
    precision, recall (nc,) at the confidence maximising the classes' mean F1, ap (nc, T), and
    curves: confidence grid (1000,), precision / recall / f1 vs confidence (nc, 1000) and the
    PR curve at IoU 0.5 on a recall grid (nc, 1000). Classes without ground truth get -1.
    """
    order = np.argsort(-scores, kind="stable")
    correct, scores, pred_classes = correct[order], scores[order], pred_classes[order]
    grid = np.linspace(0, 1, 1000)
    ap = np.full((num_classes, correct.shape[1]), -1.0)
    p_curve, r_curve, pr_curve = (np.zeros((num_classes, grid.size)) for _ in range(3))
    present = np.zeros(num_classes, bool)
    for k in range(num_classes):
        num_gt = int(np.sum(gt_classes == k))
        if num_gt == 0:
            continue
        present[k] = True
        ap[k] = 0.0
        mine = pred_classes == k
        if not mine.any():
            continue
        tp = np.cumsum(correct[mine], axis=0)
        fp = np.cumsum(~correct[mine], axis=0)
        recall = tp / num_gt
        precision = tp / (tp + fp)
        r_curve[k] = np.interp(-grid, -scores[mine], recall[:, 0], left=0)
        p_curve[k] = np.interp(-grid, -scores[mine], precision[:, 0], left=1)
        for t in range(correct.shape[1]):
            ap[k, t], mrec, envelope = interpolated_ap(recall[:, t], precision[:, t])
            if t == 0:
                pr_curve[k] = np.interp(grid, mrec, envelope)
    f1_curve = 2 * p_curve * r_curve / (p_curve + r_curve + 1e-16)
    best = int(box_smooth(f1_curve[present].mean(axis=0), 0.1).argmax()) if present.any() else 0
    precision = np.where(present, p_curve[:, best], -1.0)
    recall = np.where(present, r_curve[:, best], -1.0)
    return {"precision": precision, "recall": recall, "ap": ap, "present": present,
            "curves": {"confidence": grid, "precision": p_curve, "recall": r_curve,
                       "f1": f1_curve, "pr": pr_curve, "best_index": best}}


def _per_image(gt, results, iou_type):
    """Yields (gt classes, gt objects, pred scores, pred classes, pred objects) per image, with
    objects as xywh boxes or RLEs and predictions sorted by descending score."""
    heights = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    gts = {im["id"]: [] for im in gt["images"]}
    for a in gt["annotations"]:
        gts[a["image_id"]].append(a)
    preds = {im["id"]: [] for im in gt["images"]}
    for r in results:
        preds[r["image_id"]].append(r)
    for image_id, anns in gts.items():
        h, w = heights[image_id]
        dets = sorted(preds[image_id], key=lambda r: -r["score"])
        if iou_type == "bbox":
            gt_objects = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
            dt_objects = np.array([d["bbox"] for d in dets], np.float64).reshape(-1, 4)
        else:
            gt_objects = [segmentation_to_rle(a["segmentation"], h, w) for a in anns]
            dt_objects = [d["segmentation"] for d in dets]
        yield (np.array([a["category_id"] for a in anns], int), gt_objects,
               np.array([d["score"] for d in dets], np.float64),
               np.array([d["category_id"] for d in dets], int), dt_objects)


def ultralytics_metrics(gt, results, iou_type, num_classes):
    """`ap_per_class` over a COCO ground-truth dict and results list, for bbox or segm."""
    correct, scores, pred_classes, gt_classes = [], [], [], []
    for g_cls, g_obj, d_score, d_cls, d_obj in _per_image(gt, results, iou_type):
        if len(d_cls) and len(g_cls):
            iou = np.asarray(mask_utils.iou(d_obj, g_obj, [0] * len(g_cls))).reshape(len(d_cls), -1)
        else:
            iou = np.zeros((len(d_cls), len(g_cls)))
        correct.append(match_predictions(d_cls, g_cls, iou))
        scores.append(d_score)
        pred_classes.append(d_cls - CATEGORY_ID_OFFSET)
        gt_classes.append(g_cls - CATEGORY_ID_OFFSET)
    return ap_per_class(np.concatenate(correct).reshape(-1, len(IOU_THRESHOLDS)),
                        np.concatenate(scores), np.concatenate(pred_classes),
                        np.concatenate(gt_classes), num_classes)


def _ultralytics_stats(stats, class_index=None):
    """Means over the classes with ground truth (or the one class) of `ap_per_class` output."""
    present = stats["present"].copy()
    if class_index is not None:
        present[np.arange(present.size) != class_index] = False
    if not present.any():
        return {name: -1.0 for name in ULTRALYTICS_STAT_NAMES}
    ap = stats["ap"][present]
    return {"precision": float(stats["precision"][present].mean()),
            "recall": float(stats["recall"][present].mean()),
            "mAP50": float(ap[:, 0].mean()), "mAP50-95": float(ap.mean())}


# ----------------------------------------------------------------------------- entry point


def evaluate(gt, results, class_names, iou_types=IOU_TYPES):
    """All metrics of a results list against a COCO ground-truth dict (for `iou_types`).

    Returns (metrics, curves). metrics = {"num_images", "num_instances", "bbox": {...}, "segm":
    {...}, "per_class": {name: {"images", "instances", "bbox": {...}, "segm": {...}}}} where each
    bbox / segm dict holds the COCO stats (COCO_STAT_NAMES, maxDets 100 unless named) and the
    Ultralytics-style precision, recall, mAP50, mAP50-95 (means over classes with ground truth).
    curves = {"bbox": ..., "segm": ...} as in `ap_per_class`["curves"]. Results without a
    segmentation count for bbox only.
    """
    num_classes = len(class_names)
    labels = np.array([a["category_id"] - CATEGORY_ID_OFFSET for a in gt["annotations"]], int)
    images_per_class = [len({a["image_id"] for a in gt["annotations"]
                             if a["category_id"] - CATEGORY_ID_OFFSET == k}) for k in range(num_classes)]
    metrics = {"num_images": len(gt["images"]), "num_instances": len(gt["annotations"]),
               "per_class": {name: {"images": images_per_class[k], "instances": int(np.sum(labels == k))}
                             for k, name in enumerate(class_names)}}
    curves = {}
    for iou_type in iou_types:
        scored = results if iou_type == "bbox" else [r for r in results if "segmentation" in r]
        overall, per_class = run_cocoeval(gt, scored, iou_type, num_classes)
        stats = ultralytics_metrics(gt, scored, iou_type, num_classes)
        metrics[iou_type] = {**overall, **_ultralytics_stats(stats)}
        for k, name in enumerate(class_names):
            metrics["per_class"][name][iou_type] = {**per_class[k], **_ultralytics_stats(stats, k)}
        curves[iou_type] = stats["curves"]
    return metrics, curves


def format_table(metrics):
    """Per-class terminal table: Ultralytics-style box / mask P, R, mAP50, mAP50-95, then COCO AP."""
    head = (f"{'Class':>22}{'Images':>8}{'Instances':>10}"
            + "".join(f"{kind + ' ' + n:>14}" for kind in ("Box", "Mask")
                      for n in ("P", "R", "mAP50", "mAP50-95"))
            + "".join(f"{kind + ' ' + n:>12}" for kind in ("bbox", "segm") for n in ("AP", "AP50", "AP75")))
    rows = [("all", metrics["num_images"], metrics["num_instances"], metrics)]
    rows += [(name, c["images"], c["instances"], c) for name, c in metrics["per_class"].items()]
    lines = [head]
    for name, images, instances, m in rows:
        line = f"{name:>22}{images:>8}{instances:>10}"
        line += "".join(f"{m[kind][n]:>14.3f}" for kind in IOU_TYPES for n in ULTRALYTICS_STAT_NAMES)
        line += "".join(f"{m[kind][n]:>12.3f}" for kind in IOU_TYPES for n in ("AP", "AP50", "AP75"))
        lines.append(line)
    return "\n".join(lines)
