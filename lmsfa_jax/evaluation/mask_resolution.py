"""Masks scored on a quarter-resolution grid, as Ultralytics' segmentation validator scores them.

Ultralytics compares predicted and ground-truth masks at the resolution of the model's mask
prototypes: 1/4 of the letterboxed network input (160 x 160 at imgsz 640), whatever the original
image size. A mask that misses a thin border then loses little IoU, so small objects score far
higher than with pycocotools at the original resolution. This module reproduces that grid so that
both numbers come from one evaluator:

    metrics, curves = coco.evaluate(gt, results, class_names)
    add_quarter_metrics(metrics, curves, gt, results, class_names, image_size=640)
    metrics[QUARTER]    # the "segm" stats, with masks on the grid; per_class too
    print(format_comparison(metrics))

An image of H x W pixels maps to a grid of round(H * s) x round(W * s) cells, s = image_size / 4 /
max(H, W). Every mask, ground truth and prediction alike, is area-averaged onto the grid and a
cell is set where it is at least half covered. COCO's small / medium / large ranges keep using
the original-pixel areas. Not reproduced: Ultralytics' merging of overlapping ground-truth masks
into one index map (it matters only where ground-truth masks overlap).
"""
import cv2
import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from lmsfa_jax.evaluation import coco

MASK_RESOLUTIONS = ("full", "quarter")
QUARTER = "segm_quarter"   # the metrics key of the quarter-resolution mask stats
PROTOTYPE_STRIDE = 4       # mask prototypes are 1/4 of the network input


def quarter_grid(height, width, image_size):
    """(rows, cols) of the mask grid for an H x W image and a square network input image_size."""
    scale = image_size / PROTOTYPE_STRIDE / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def downsample_rle(rle, grid):
    """A full-resolution RLE -> the RLE (ASCII counts) of its mask on `grid` (rows, cols): a cell is
    set where the mask covers at least half of it."""
    mask = mask_utils.decode(rle).astype(np.float32)
    coarse = cv2.resize(mask, (grid[1], grid[0]), interpolation=cv2.INTER_AREA) >= 0.5
    encoded = mask_utils.encode(np.asfortranarray(coarse.astype(np.uint8)))
    encoded["counts"] = encoded["counts"].decode("ascii")
    return encoded


def to_quarter(gt, results, image_size, progress=True):
    """A COCO ground-truth dict and results (masks at the original resolution) -> the same on the
    quarter grid: images resized, segmentations downsampled RLEs, areas kept in original pixels.
    Results without a segmentation are dropped (they count for boxes only)."""
    images = {im["id"]: im for im in gt["images"]}
    grids = {i: quarter_grid(im["height"], im["width"], image_size) for i, im in images.items()}

    def coarse(item):
        image = images[item["image_id"]]
        rle = coco.segmentation_to_rle(item["segmentation"], image["height"], image["width"])
        return {**item, "segmentation": downsample_rle(rle, grids[item["image_id"]]),
                "area": float(mask_utils.area(rle))}

    masks = gt["annotations"] + [r for r in results if "segmentation" in r]
    converted = [coarse(item) for item in tqdm(masks, desc="masks to 1/4 resolution",
                                               disable=not progress or len(masks) < 1000)]
    quarter_gt = {**gt, "images": [{**im, "height": grids[i][0], "width": grids[i][1]} for i, im in images.items()],
                  "annotations": converted[:len(gt["annotations"])]}
    return quarter_gt, converted[len(gt["annotations"]):]


def add_quarter_metrics(metrics, curves, gt, results, class_names, image_size, progress=True):
    """Adds the mask stats on the quarter grid to `coco.evaluate`'s metrics and curves, in place:
    metrics[QUARTER] and metrics["per_class"][name][QUARTER] as for "segm", curves[QUARTER], and
    metrics["quarter_grid_input_size"] = image_size."""
    quarter_gt, quarter_results = to_quarter(gt, results, image_size, progress)
    quarter, quarter_curves = coco.evaluate(quarter_gt, quarter_results, class_names, iou_types=("segm",))
    metrics[QUARTER] = quarter["segm"]
    metrics["quarter_grid_input_size"] = image_size
    for name in class_names:
        metrics["per_class"][name][QUARTER] = quarter["per_class"][name]["segm"]
    curves[QUARTER] = quarter_curves["segm"]


def format_comparison(metrics):
    """Terminal table of mask stats at full vs quarter resolution, per class, with differences."""
    names = ("mAP50", "mAP50-95", "AP", "APs")  # Ultralytics-style, then COCO
    head = f"{'Masks':>22}" + "".join(f"{name + ' ' + r:>14}" for name in names
                                       for r in ("full", "1/4", "diff"))
    rows = [("all", metrics)] + list(metrics["per_class"].items())
    lines = [head]
    for name, m in rows:
        line = f"{name:>22}"
        for key in names:
            full, quarter = m["segm"][key], m[QUARTER][key]
            diff = f"{quarter - full:+.3f}" if min(full, quarter) > -1 else "-"
            line += f"{full:>14.3f}{quarter:>14.3f}{diff:>14}"
        lines.append(line)
    return "\n".join(lines)
