"""A synthetic endoscopy-like stand-in for PELD, written in the same on-disk layouts as the real data.

    write_dataset(out, {"train": 64, "val": 16}, size=320, seed=0, layout="yolo"|"coco")
    python -m lmsfa_jax.make_synthetic --out DIR --train 64 --val 16 --size 320 --seed 0 [--format coco]

Each image has a circular field of view with a dark vignette, textured reddish tissue, specular
highlights and blurred smoke patches, and 2-7 instances of the four PELD classes drawn with distinct
looks: adipose tissue (yellow lobular blobs), bone (pale rough regions), ligamentum flavum (pink-red
striped bands), nerve (whitish shaded tubes); sizes vary about tenfold and instances overlap. Labels
are the visible part of each instance (later ones occlude earlier ones, the field of view cuts them).

Layouts: `yolo` (images/{split}/pXX_FFFF.jpg, labels/{split}/*.txt, data.yaml) or `coco`
(images/{split}/..., annotations/instances_{split}.json, every second annotation stored as RLE).
Output is a deterministic function of (seed, split, index, size).
"""

import json
import pathlib

import cv2
import numpy as np

from lmsfa_jax.data import polygons as polygons_lib

CLASS_NAMES = ["adipose tissue", "bone", "ligamentum flavum", "nerve"]
IMAGES_PER_PATIENT = 10
_SPLIT_SEED = {"train": 0, "val": 1, "test": 2}


def _smooth_noise(rng, size: int, cells: int) -> np.ndarray:
    """(size, size) float32 noise in [0, 1] with about `cells` blobs per side."""
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _blob_polygon(rng, center, radius, lobes, roughness, points=48) -> np.ndarray:
    theta = np.linspace(0, 2 * np.pi, points, endpoint=False)
    r = np.ones_like(theta)
    for k in rng.integers(2, 2 + lobes, size=3):
        r += rng.uniform(0.05, 0.25) * np.sin(k * theta + rng.uniform(0, 2 * np.pi))
    r += roughness * rng.standard_normal(points)
    r = radius * np.clip(r, 0.3, None)
    return np.stack([center[0] + r * np.cos(theta), center[1] + r * np.sin(theta)], 1).astype(np.float32)


def _band_polygon(rng, center, length, width, points=24) -> np.ndarray:
    """A curved strip: a bent centre line offset by +-width/2."""
    angle = rng.uniform(0, np.pi)
    t = np.linspace(-0.5, 0.5, points)
    bend = rng.uniform(-0.3, 0.3) * length
    line = np.stack([t * length, bend * (4 * t**2 - 1)], 1)
    normal_dir = np.gradient(line, axis=0)[:, ::-1] * [1, -1]
    normal_dir /= np.linalg.norm(normal_dir, axis=1, keepdims=True)
    half = width / 2 * (1 + 0.2 * np.sin(np.linspace(0, rng.uniform(2, 6), points)))
    outline = np.concatenate([line + normal_dir * half[:, None], (line - normal_dir * half[:, None])[::-1]])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return (outline @ rot.T + center).astype(np.float32)


def _shape(rng, label: int, center, radius) -> np.ndarray:
    if label == 0:  # adipose tissue: lobular blob
        return _blob_polygon(rng, center, radius, lobes=5, roughness=0.02)
    if label == 1:  # bone: rough irregular region
        return _blob_polygon(rng, center, radius, lobes=3, roughness=0.08)
    if label == 2:  # ligamentum flavum: broad band
        return _band_polygon(rng, center, 2.2 * radius, 0.8 * radius)
    return _band_polygon(rng, center, 2.8 * radius, 0.3 * radius)  # nerve: thin tube


def _texture(rng, label: int, size: int, mask: np.ndarray) -> np.ndarray:
    """(size, size, 3) float32 RGB appearance of a class (only pixels under mask matter)."""
    fine = _smooth_noise(rng, size, max(4, size // 6))[..., None]
    coarse = _smooth_noise(rng, size, 6)[..., None]
    if label == 0:
        base = np.array([235, 200, 95], np.float32)
        lobules = (np.sin(fine[..., 0] * 40) > 0.6).astype(np.float32)[..., None]  # septa between lobules
        return base * (0.85 + 0.25 * coarse) * (1 - 0.25 * lobules)
    if label == 1:
        speckle = rng.random((size, size, 1)).astype(np.float32)
        return np.array([225, 215, 190], np.float32) * (0.8 + 0.15 * fine + 0.1 * speckle)
    if label == 2:
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
        angle = rng.uniform(0, np.pi)
        stripes = 0.5 + 0.5 * np.sin((xs * np.cos(angle) + ys * np.sin(angle)) * rng.uniform(0.3, 0.6))
        return np.array([205, 75, 95], np.float32) * (0.8 + 0.2 * stripes[..., None]) * (0.9 + 0.2 * coarse)
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    shade = dist / max(float(dist.max()), 1.0)
    return np.array([240, 235, 225], np.float32) * (0.75 + 0.25 * shade[..., None]) * (0.95 + 0.05 * fine)


def generate_image(rng: np.random.Generator, size: int):
    """-> (image (size, size, 3) uint8 RGB, objects [(label, (P, 2) float32 polygon in pixels)])."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    c = size / 2
    fov_radius = size * rng.uniform(0.46, 0.52)
    dist = np.hypot(xs - c, ys - c) / fov_radius
    fov = (dist <= 1).astype(np.uint8)

    tissue = np.array([175, 60, 55], np.float32) * (0.7 + 0.4 * _smooth_noise(rng, size, 5)[..., None])
    tissue *= 0.9 + 0.15 * _smooth_noise(rng, size, max(4, size // 8))[..., None]
    image = tissue

    masks, labels = [], []
    for _ in range(rng.integers(2, 8)):
        label = int(rng.integers(0, 4))
        radius = size * rng.uniform(0.04, 0.3)
        angle, rad = rng.uniform(0, 2 * np.pi), fov_radius * np.sqrt(rng.uniform(0, 0.7))
        polygon = _shape(rng, label, (c + rad * np.cos(angle), c + rad * np.sin(angle)), radius)
        mask = np.zeros((size, size), np.uint8)
        cv2.fillPoly(mask, [np.round(polygon - 0.5).astype(np.int32)], 1)
        if not mask.any():
            continue
        texture = _texture(rng, label, size, mask)
        image = np.where(mask[..., None] > 0, texture, image)
        for earlier in masks:
            earlier &= 1 - mask
        masks.append(mask)
        labels.append(label)

    image = cv2.GaussianBlur(image, (0, 0), 0.6 + size / 640)
    for _ in range(rng.integers(0, 3)):  # smoke / defocus patches
        patch = np.zeros((size, size), np.float32)
        cv2.circle(
            patch, tuple(int(v) for v in rng.uniform(0, size, 2)), int(size * rng.uniform(0.1, 0.3)), 1.0, -1
        )
        patch = cv2.GaussianBlur(patch, (0, 0), size / 12)[..., None] * rng.uniform(0.4, 0.8)
        blurred = cv2.GaussianBlur(image, (0, 0), size / 60) * 0.7 + 200 * 0.3
        image = image * (1 - patch) + blurred * patch
    for _ in range(rng.integers(3, 12)):  # specular highlights
        spot = np.zeros((size, size), np.float32)
        center = tuple(int(v) for v in rng.uniform(0.2 * size, 0.8 * size, 2))
        axes = tuple(max(1, int(size * v)) for v in rng.uniform(0.004, 0.025, 2))
        cv2.ellipse(spot, center, axes, rng.uniform(0, 180), 0, 360, 1.0, -1)
        image = image + 255 * cv2.GaussianBlur(spot, (0, 0), 0.5 + axes[0] / 3)[..., None]
    vignette = np.clip(1.15 - 0.9 * dist**3, 0, 1)[..., None]
    image = np.clip(image * vignette * fov[..., None], 0, 255).astype(np.uint8)

    objects = []
    for label, mask in zip(labels, masks):
        visible = mask & fov
        polygons = polygons_lib.mask_to_polygons(visible)
        if not polygons:
            continue
        largest = max(polygons, key=len)
        simplified = cv2.approxPolyDP(largest[:, None, :], 0.7, True)[:, 0, :]
        if visible.sum() >= 4 and len(simplified) >= 3:
            objects.append((label, simplified.astype(np.float32)))
    return image, objects


def _example_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_SEED[split], index])


def _file_stem(split: str, index: int) -> str:
    offset = {"train": 0, "val": 1000, "test": 2000}[split]
    return f"p{(offset + index) // IMAGES_PER_PATIENT:03d}_{index % IMAGES_PER_PATIENT:04d}"


def write_dataset(out, counts: dict[str, int], size: int, seed: int, layout: str = "yolo") -> pathlib.Path:
    """Writes the synthetic dataset under `out`; counts maps split -> number of images."""
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top

    out = pathlib.Path(out)
    coco = {}
    for split, n in counts.items():
        if n == 0:
            continue
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        if layout == "yolo":
            (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        coco[split] = {
            "images": [],
            "annotations": [],
            "categories": [{"id": i + 1, "name": n_} for i, n_ in enumerate(CLASS_NAMES)],
        }
        for i in tqdm(range(n), desc=f"synthetic {split}", disable=n < 50):
            image, objects = generate_image(_example_rng(seed, split, i), size)
            name = _file_stem(split, i) + ".jpg"
            cv2.imwrite(
                str(out / "images" / split / name),
                cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 92],
            )
            if layout == "yolo":
                lines = [
                    " ".join([str(label)] + [f"{v:.6f}" for v in (poly / size).ravel()])
                    for label, poly in objects
                ]
                (out / "labels" / split / (name[:-4] + ".txt")).write_text(
                    "\n".join(lines) + ("\n" if lines else "")
                )
            else:
                _add_coco(coco[split], name, i, size, objects)
    if layout == "yolo":
        (out / "data.yaml").write_text(
            "path: .\n"
            + "".join(f"{s}: images/{s}\n" for s in coco)
            + "names:\n"
            + "".join(f"  {i}: {n}\n" for i, n in enumerate(CLASS_NAMES))
        )
    else:
        (out / "annotations").mkdir(parents=True, exist_ok=True)
        for split, data in coco.items():
            (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return out


def _add_coco(data: dict, name: str, index: int, size: int, objects) -> None:
    from pycocotools import mask as mask_utils  # pylint: disable=g-import-not-at-top

    image_id = index + 1
    data["images"].append({"id": image_id, "file_name": name, "height": size, "width": size})
    for label, poly in objects:
        ann_id = len(data["annotations"]) + 1
        x0, y0 = poly.min(0)
        x1, y1 = poly.max(0)
        if ann_id % 2:
            segmentation = [[round(float(v), 3) for v in poly.ravel()]]
        else:  # the same shape as run-length encoding
            mask = np.zeros((size, size), np.uint8)
            cv2.fillPoly(mask, [np.round((poly - 0.5) * 16).astype(np.int32)], 1, shift=4)
            rle = mask_utils.encode(np.asfortranarray(mask))
            segmentation = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
        data["annotations"].append(
            {
                "id": ann_id,
                "image_id": image_id,
                "category_id": label + 1,
                "iscrowd": 0,
                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                "area": float(cv2.contourArea(poly)),
                "segmentation": segmentation,
            }
        )


def ensure_synthetic_dataset(workdir, num_train: int, num_val: int, size: int, seed: int = 0):
    """Generates and builds the synthetic dataset into TFDS once -> (name, data_dir) for config.data."""
    from lmsfa_jax.data import build  # pylint: disable=g-import-not-at-top
    from lmsfa_jax.data import reader  # pylint: disable=g-import-not-at-top

    name = "synthetic_peld"
    root = pathlib.Path(workdir).expanduser() / f"synthetic_{num_train}_{num_val}_{size}_seed{seed}"
    data_dir = root / "tfds"
    try:
        reader.load_builder(name, data_dir)
    except reader.DatasetNotBuiltError:
        source = write_dataset(root / "source", {"train": num_train, "val": num_val}, size, seed)
        build.build_dataset(source, name, data_dir, CLASS_NAMES)
    return name, str(data_dir)


def prepare_data_config(config, workdir) -> None:
    """If config.synthetic.enabled, makes sure the synthetic dataset is built under
    `<workdir>/data` and points config.data.{name, data_dir} at it (in place)."""
    s = config.get("synthetic")
    if s is None or not s.enabled:
        return
    name, data_dir = ensure_synthetic_dataset(
        pathlib.Path(workdir) / "data", s.num_train, s.num_val, s.size, s.seed
    )
    config.data.name, config.data.data_dir = name, data_dir


if __name__ == "__main__":
    raise SystemExit("moved: use python -m lmsfa_jax.make_synthetic (or lmsfa-make-synthetic)")
