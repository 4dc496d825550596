"""Ultralytics-style training augmentation and evaluation letterboxing of one sample.

A sample is a dict: image (h, w, 3) uint8 RGB, labels (K,) int32, polygons (list of K lists of
(P, 2) float32 pixel arrays). `to_targets` turns a final (S, S) sample into fixed-shape arrays.
`cfg` is `config.data` (fields and defaults: `pipeline.default_data_config`).
"""

import numpy as np

from lmsfa_jax.data import transforms

_MIN_BOX_SIDE = 2.0  # pixels; smaller objects are dropped after augmentation
_MIN_AREA_KEPT = 0.1  # objects losing more of their area to the image border are dropped
_MAX_ASPECT = 100.0


def resize_sample(sample: dict, size: int) -> dict:
    """Resizes so the long side is `size` (what the RAM cache stores)."""
    image, r = transforms.resize_long_side(sample["image"], size)
    return {
        "image": image,
        "labels": sample["labels"],
        "polygons": _map_polygons(sample["polygons"], r, (0, 0)),
    }


def letterbox_sample(sample: dict, size: int) -> tuple[dict, float, tuple[int, int]]:
    image, r, pad = transforms.letterbox(sample["image"], size)
    return (
        {"image": image, "labels": sample["labels"], "polygons": _map_polygons(sample["polygons"], r, pad)},
        r,
        pad,
    )


def _map_polygons(polygons, r, pad):
    offset = np.asarray(pad, np.float32)
    return [[(p * r + offset).astype(np.float32) for p in obj] for obj in polygons]


def mosaic(samples: list[dict], rng: np.random.Generator, size: int) -> dict:
    """Four samples (long side <= size) around a random centre of a (2 size, 2 size) grey canvas."""
    canvas = np.full((2 * size, 2 * size, 3), transforms.PAD_VALUE, np.uint8)
    xc, yc = (int(v) for v in rng.uniform(size / 2, 3 * size / 2, 2))
    labels, polygons = [], []
    for quadrant, sample in enumerate(samples):
        h, w = sample["image"].shape[:2]
        left = xc - w if quadrant in (0, 2) else xc
        top = yc - h if quadrant in (0, 1) else yc
        x0, y0 = max(left, 0), max(top, 0)
        x1, y1 = min(left + w, 2 * size), min(top + h, 2 * size)
        canvas[y0:y1, x0:x1] = sample["image"][y0 - top : y1 - top, x0 - left : x1 - left]
        offset = np.array([left, top], np.float32)
        for label, obj in zip(sample["labels"], sample["polygons"]):
            clipped = [transforms.clip_polygon(p + offset, x0, y0, x1, y1) for p in obj]
            clipped = [p for p in clipped if len(p) >= 3 and transforms.polygon_area(p) > 0]
            if clipped:
                labels.append(label)
                polygons.append(clipped)
    return {"image": canvas, "labels": np.asarray(labels, np.int32), "polygons": polygons}


def random_affine(sample: dict, rng: np.random.Generator, cfg) -> dict:
    """Random rotation/scale/shear/translation into (S, S); polygons are clipped and small leftovers dropped."""
    size = cfg.image_size
    h, w = sample["image"].shape[:2]
    matrix = transforms.random_affine_matrix(
        rng, size, (w / 2, h / 2), cfg.degrees, cfg.translate, cfg.scale, cfg.shear
    )
    image = transforms.warp_image(sample["image"], matrix, size)
    labels, polygons = [], []
    for label, obj in zip(sample["labels"], sample["polygons"]):
        moved = [transforms.transform_points(p, matrix) for p in obj]
        before = sum(transforms.polygon_area(p) for p in moved)
        clipped = [transforms.clip_polygon(p, 0, 0, size, size) for p in moved]
        clipped = [p for p in clipped if len(p) >= 3 and transforms.polygon_area(p) > 0]
        if not clipped:
            continue
        after = sum(transforms.polygon_area(p) for p in clipped)
        x0, y0, x1, y1 = transforms.polygons_box(clipped)
        bw, bh = x1 - x0, y1 - y0
        if (
            bw > _MIN_BOX_SIDE
            and bh > _MIN_BOX_SIDE
            and after > _MIN_AREA_KEPT * before
            and max(bw / bh, bh / bw) < _MAX_ASPECT
        ):
            labels.append(label)
            polygons.append(clipped)
    return {"image": image, "labels": np.asarray(labels, np.int32), "polygons": polygons}


def color_and_flip(sample: dict, rng: np.random.Generator, cfg) -> dict:
    image = transforms.hsv_jitter(sample["image"], rng, cfg.hsv_h, cfg.hsv_s, cfg.hsv_v)
    polygons = sample["polygons"]
    if rng.random() < cfg.fliplr:
        image, polygons = transforms.flip_lr(image, polygons)
    return {"image": image, "labels": sample["labels"], "polygons": polygons}


def train_sample(
    load, index: int, num_images: int, rng: np.random.Generator, cfg, use_mosaic: bool
) -> dict:
    """Augmented (S, S) sample of image `index`; `load(i)` gives the resized sample of image i."""
    if use_mosaic and rng.random() < cfg.mosaic:
        others = rng.integers(0, num_images, 3)
        sample = mosaic([load(index)] + [load(int(i)) for i in others], rng, cfg.image_size)
    else:
        sample, _, _ = letterbox_sample(load(index), cfg.image_size)
    sample = random_affine(sample, rng, cfg)
    return color_and_flip(sample, rng, cfg)


def to_targets(sample: dict, max_instances: int, mask_ratio: int) -> tuple[dict, int]:
    """Fixed-shape targets of an (S, S) sample -> (arrays, number of instances dropped beyond M).

    boxes (M, 4) float32 xyxy pixels, labels (M,) int32, valid (M,) bool, masks (M, S/r, S/r) uint8.
    """
    size = sample["image"].shape[0]
    count = min(len(sample["labels"]), max_instances)
    boxes = np.zeros((max_instances, 4), np.float32)
    labels = np.zeros((max_instances,), np.int32)
    masks = np.zeros((max_instances, size // mask_ratio, size // mask_ratio), np.uint8)
    for k in range(count):
        polygons = sample["polygons"][k]
        boxes[k] = np.clip(transforms.polygons_box(polygons), 0, size)
        labels[k] = sample["labels"][k]
        masks[k] = transforms.rasterize(polygons, size, size, mask_ratio)
    valid = np.arange(max_instances) < count
    return {"boxes": boxes, "labels": labels, "valid": valid, "masks": masks}, len(sample["labels"]) - count
