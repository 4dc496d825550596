"""Readers for instance-segmentation datasets on disk: Ultralytics YOLO-seg folders and COCO JSON.

Accepted layouts (a folder, or a .zip / .tar / .tar.gz archive of one; a single top-level folder inside
is looked through):

* YOLO-seg: images under a split folder and a label file per image found by replacing the last
  `images` path component with `labels` and the extension with `.txt` — so both
  `images/{train,val,test}/x.jpg` + `labels/{split}/x.txt` (Ultralytics) and
  `{train,valid,test}/images/x.jpg` + `{split}/labels/x.txt` (Roboflow) work. Each label line is
  `class x1 y1 x2 y2 ...` with coordinates normalised to [0, 1]. Class names come from the `names`
  entry of a data YAML (`*.yaml` / `*.yml`) in the dataset root (a list, or a dict id -> name).
* COCO: instance JSON files whose name or folder contains the split (`instances_train.json`,
  `annotations/val.json`, `train/_annotations.coco.json`, ...), segmentation as polygons or RLE
  (RLE is turned into polygons by tracing the mask outline). Class names are the categories sorted
  by id; images are found by their `file_name` relative to the JSON, the root, or by base name.

Split names `valid`/`validation` become `val`. Every example is yielded as a `SourceExample` with
polygons in original pixel coordinates; problems go to a `report.BuildReport`.
"""

import collections
import contextlib
import dataclasses
import json
import pathlib
import re
import shutil
import tempfile

import cv2
import numpy as np
import yaml

from lmsfa_jax.data import report as report_lib

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
COORD_TOLERANCE = 0.01  # normalised coordinates this far outside [0, 1] are clipped, further ones rejected


@dataclasses.dataclass
class SourceObject:
    label: int
    polygons: list  # of (P, 2) float32 arrays, (x, y) in original pixels, P >= 3
    is_crowd: bool = False


@dataclasses.dataclass
class SourceExample:
    file_name: str  # path relative to the dataset root
    image_id: int
    image_bytes: bytes  # the original encoded file
    height: int
    width: int
    objects: list  # of SourceObject
    patient_id: str = ""  # "" when the source does not say
    frame_id: int = -1  # -1 when the source does not say


def is_archive(path) -> bool:
    return pathlib.Path(path).name.lower().endswith(ARCHIVE_SUFFIXES)


@contextlib.contextmanager
def opened(path):
    """Yields the dataset root folder for a folder or an archive (extracted into a temporary folder)."""
    path = pathlib.Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"dataset source {path} does not exist")
    if path.is_dir():
        yield _descend(path)
        return
    if not is_archive(path):
        raise ValueError(
            f"dataset source {path} is neither a folder nor a {'/'.join(ARCHIVE_SUFFIXES)} archive"
        )
    with tempfile.TemporaryDirectory(prefix="lmsfa_source_") as tmp:
        shutil.unpack_archive(str(path), tmp)
        yield _descend(pathlib.Path(tmp))


def _descend(root: pathlib.Path) -> pathlib.Path:
    """Walks down single-folder wrappers (`archive/PELD/...`) to the folder that holds the data."""
    while True:
        entries = [p for p in root.iterdir() if not p.name.startswith((".", "__MACOSX"))]
        if len(entries) == 1 and entries[0].is_dir():
            root = entries[0]
        else:
            return root


def split_of(rel_path: pathlib.PurePath) -> str | None:
    """The split named by a path: a component (or a COCO file stem part) such as train/val/valid/test."""
    for part in rel_path.parts:
        words = re.split(r"[^a-z]+", part.lower())
        for word in words:
            if word in SPLIT_ALIASES:
                return SPLIT_ALIASES[word]
    return None


def patient_and_frame(rel_path: pathlib.PurePath) -> tuple[str, int]:
    """(patient_id, frame_id) when the name carries them: `.../<patient>/<frame>.jpg` or `<patient>_<frame>.jpg`."""
    stem = rel_path.stem
    parent = rel_path.parent.name
    if (
        parent
        and split_of(pathlib.PurePath(parent)) is None
        and parent not in ("images", "labels")
        and stem.isdigit()
    ):
        return parent, int(stem)
    match = re.fullmatch(r"(.*?[A-Za-z].*?)[_\- ]+(\d+)", stem)
    if match:
        return match.group(1), int(match.group(2))
    return "", -1


def decode_size(image_bytes: bytes) -> tuple[int, int] | None:
    """(height, width) of an encoded image, None when OpenCV cannot decode it."""
    array = np.frombuffer(image_bytes, np.uint8)
    image = cv2.imdecode(array, cv2.IMREAD_COLOR) if array.size else None
    if image is None:
        return None
    return image.shape[0], image.shape[1]


def detect_format(root: pathlib.Path) -> str:
    """'coco' when the root holds COCO instance JSON files, 'yolo' when it holds label .txt files."""
    if _coco_files(root):
        return "coco"
    if any(p.suffix == ".txt" and "labels" in p.parts for p in root.rglob("*.txt")) or _yaml_file(root):
        return "yolo"
    raise ValueError(f"{root}: found neither COCO instance JSON files nor a YOLO-seg labels/ folder")


def read_class_names(root: pathlib.Path) -> list[str]:
    """Class names of the dataset, in id order, from its data YAML or COCO categories."""
    if detect_format(root) == "coco":
        return _coco_class_names(root)[0]
    yaml_path = _yaml_file(root)
    if yaml_path is None:
        raise ValueError(f"{root}: YOLO-seg dataset without a data YAML (*.yaml with `names`)")
    with open(yaml_path) as f:
        data = yaml.safe_load(f) or {}
    names = data.get("names")
    if isinstance(names, dict):
        ids = sorted(int(k) for k in names)
        if ids != list(range(len(ids))):
            raise ValueError(f"{yaml_path}: class ids in `names` must be 0..n-1, got {ids}")
        names = [names[k] if k in names else names[str(k)] for k in ids]
    if not isinstance(names, list) or not names:
        raise ValueError(f"{yaml_path}: missing or empty `names` list")
    return [str(n) for n in names]


def find_splits(root: pathlib.Path) -> list[str]:
    """Splits present in the source, in train/val/test order."""
    if detect_format(root) == "coco":
        present = {split for split, _ in _coco_files(root)}
    else:
        present = {split_of(p.relative_to(root)) for p in _image_files(root)}
    return [s for s in ("train", "val", "test") if s in present]


def iter_examples(
    root: pathlib.Path,
    split: str,
    num_classes: int,
    report: report_lib.BuildReport,
    label_map: dict[int, int] | None = None,
):
    """Yields the `SourceExample`s of one split; `label_map` renumbers source class ids (default identity)."""
    if detect_format(root) == "coco":
        yield from _coco_examples(root, split, num_classes, report, label_map)
    else:
        yield from _yolo_examples(root, split, num_classes, report, label_map)


# ---------------------------------------------------------------------------------------------- YOLO


def _yaml_file(root: pathlib.Path) -> pathlib.Path | None:
    candidates = sorted(list(root.glob("*.yaml")) + list(root.glob("*.yml")))
    return candidates[0] if candidates else None


def _image_files(root: pathlib.Path) -> list[pathlib.Path]:
    return sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and "images" in p.relative_to(root).parts
        and split_of(p.relative_to(root)) is not None
    )


def _label_path(image_path: pathlib.Path) -> pathlib.Path:
    parts = list(image_path.parts)
    i = len(parts) - 1 - parts[::-1].index("images")
    parts[i] = "labels"
    return pathlib.Path(*parts).with_suffix(".txt")


def _yolo_examples(root, split, num_classes, report, label_map):
    images = [p for p in _image_files(root) if split_of(p.relative_to(root)) == split]
    seen_stems = {}
    used_labels = set()
    image_id = 0
    for image_path in images:
        rel = image_path.relative_to(root)
        label_path = _label_path(image_path)
        stem_key = str(label_path)
        if stem_key in seen_stems:
            report.add(
                report_lib.DUPLICATE_FILE_NAME,
                rel,
                None,
                f"shares its label file {label_path.relative_to(root)} with {seen_stems[stem_key]}",
            )
            continue
        seen_stems[stem_key] = rel
        image_bytes = image_path.read_bytes()
        size = decode_size(image_bytes)
        if size is None:
            report.add(report_lib.UNREADABLE_IMAGE, rel, None, "cannot be decoded as an image")
            continue
        height, width = size
        if label_path.exists():
            used_labels.add(label_path)
            objects = _parse_label_file(label_path, root, num_classes, width, height, report, label_map)
        else:
            report.add(
                report_lib.MISSING_LABEL_FILE, rel, None, f"no label file {label_path.relative_to(root)}"
            )
            objects = []
        patient, frame = patient_and_frame(rel)
        yield SourceExample(str(rel), image_id, image_bytes, height, width, objects, patient, frame)
        image_id += 1
    label_dir_files = {
        p
        for p in root.rglob("*.txt")
        if "labels" in p.relative_to(root).parts and split_of(p.relative_to(root)) == split
    }
    for orphan in sorted(label_dir_files - used_labels - {_label_path(p) for p in images}):
        report.add(report_lib.ORPHAN_LABEL_FILE, orphan.relative_to(root), None, "no image with this name")


def _parse_label_file(path, root, num_classes, width, height, report, label_map):
    rel = path.relative_to(root)
    text = path.read_text(errors="replace")
    if not text.strip():
        report.add(report_lib.EMPTY_LABEL_FILE, rel, None, "empty label file")
        return []
    objects = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            class_id = int(fields[0])
            coords = np.array([float(v) for v in fields[1:]], np.float64)
        except ValueError:
            report.add(report_lib.NOT_A_NUMBER, rel, line_no, f"cannot parse {line.strip()[:60]!r}")
            continue
        if not 0 <= class_id < num_classes:
            report.add(
                report_lib.CLASS_OUT_OF_RANGE,
                rel,
                line_no,
                f"class id {class_id} outside 0..{num_classes - 1}",
            )
            continue
        if coords.size % 2:
            report.add(
                report_lib.ODD_COORDINATE_COUNT, rel, line_no, f"odd number of coordinates ({coords.size})"
            )
            continue
        if coords.size < 6:
            report.add(
                report_lib.TOO_FEW_POINTS, rel, line_no, f"{coords.size // 2} points, a polygon needs 3"
            )
            continue
        if (
            not np.all(np.isfinite(coords))
            or coords.min() < -COORD_TOLERANCE
            or coords.max() > 1 + COORD_TOLERANCE
        ):
            report.add(
                report_lib.COORDS_OUT_OF_RANGE,
                rel,
                line_no,
                f"coordinates in [{coords.min():.3g}, {coords.max():.3g}] are not normalised to [0, 1]",
            )
            continue
        if coords.min() < 0 or coords.max() > 1:
            report.add(
                report_lib.COORDS_CLIPPED,
                rel,
                line_no,
                f"coordinates in [{coords.min():.3g}, {coords.max():.3g}] slightly outside [0, 1]",
            )
            coords = np.clip(coords, 0, 1)
        points = (coords.reshape(-1, 2) * [width, height]).astype(np.float32)
        label = class_id if label_map is None else label_map[class_id]
        objects.append(SourceObject(label, [points]))
    return objects


# ---------------------------------------------------------------------------------------------- COCO


def _coco_files(root: pathlib.Path) -> list[tuple[str, pathlib.Path]]:
    """(split, path) of the COCO instance JSON files under root (one per split)."""
    found = []
    for path in sorted(root.rglob("*.json")):
        split = split_of(path.relative_to(root))
        if split is None:
            continue
        with open(path) as f:
            head = f.read(4096)
        if '"images"' in head or '"annotations"' in head or '"categories"' in head:
            found.append((split, path))
    return found


def _load_json(path):
    with open(path) as f:
        return json.load(f)


def _coco_class_names(root):
    """(names, source category id -> label) from the first COCO file; all files must agree."""
    names_by_file = {}
    for _, path in _coco_files(root):
        categories = sorted(_load_json(path).get("categories", []), key=lambda c: c["id"])
        names_by_file[path] = (
            [c["name"] for c in categories],
            {c["id"]: i for i, c in enumerate(categories)},
        )
    first_path, (names, ids) = next(iter(names_by_file.items()))
    for path, (other, _) in names_by_file.items():
        if other != names:
            raise ValueError(f"{path}: categories {other} differ from {first_path}: {names}")
    if not names:
        raise ValueError(f"{first_path}: no categories")
    return names, ids


def _coco_examples(root, split, num_classes, report, label_map):
    _, category_to_label = _coco_class_names(root)
    files = [p for s, p in _coco_files(root) if s == split]
    if len(files) > 1:
        raise ValueError(f"{root}: several COCO files for split {split}: {[str(p) for p in files]}")
    json_path = files[0]
    data = _load_json(json_path)
    by_image = collections.defaultdict(list)
    for ann in data.get("annotations", []):
        by_image[ann.get("image_id")].append(ann)
    by_basename = collections.defaultdict(list)
    for p in root.rglob("*"):
        if p.suffix.lower() in IMAGE_SUFFIXES:
            by_basename[p.name].append(p)
    seen = {}
    rel_json = json_path.relative_to(root)
    for info in sorted(data.get("images", []), key=lambda im: im["id"]):
        name = info.get("file_name", "")
        if name in seen:
            report.add(
                report_lib.DUPLICATE_FILE_NAME,
                rel_json,
                None,
                f"image id {info['id']} repeats file_name {name!r} of image id {seen[name]}",
            )
            continue
        seen[name] = info["id"]
        path = _resolve_coco_image(root, json_path, name, split, by_basename)
        if path is None:
            report.add(report_lib.MISSING_IMAGE, rel_json, None, f"image file {name!r} not found")
            continue
        image_bytes = path.read_bytes()
        size = decode_size(image_bytes)
        rel = path.relative_to(root)
        if size is None:
            report.add(report_lib.UNREADABLE_IMAGE, rel, None, "cannot be decoded as an image")
            continue
        height, width = size
        objects = []
        for ann in by_image.get(info["id"], []):
            obj = _coco_object(ann, height, width, category_to_label, num_classes, rel_json, report)
            if obj is not None:
                obj.label = obj.label if label_map is None else label_map[obj.label]
                objects.append(obj)
        patient, frame = patient_and_frame(rel)
        yield SourceExample(str(rel), int(info["id"]), image_bytes, height, width, objects, patient, frame)


def _resolve_coco_image(root, json_path, name, split, by_basename):
    for base in (json_path.parent, root, root / "images", root / "images" / split, root / split):
        if (base / name).is_file():
            return base / name
    candidates = by_basename.get(pathlib.Path(name).name, [])
    in_split = [p for p in candidates if split_of(p.relative_to(root)) == split]
    chosen = in_split or candidates
    return chosen[0] if len(chosen) == 1 else None


def _coco_object(ann, height, width, category_to_label, num_classes, rel_json, report):
    ann_id = ann.get("id")
    category = ann.get("category_id")
    if category not in category_to_label or category_to_label[category] >= num_classes:
        report.add(
            report_lib.CLASS_OUT_OF_RANGE, rel_json, ann_id, f"annotation has unknown category {category}"
        )
        return None
    segmentation = ann.get("segmentation")
    polygons, reported = [], False
    if isinstance(segmentation, list):
        for flat in segmentation:
            coords = np.asarray(flat, np.float64).ravel()
            if coords.size % 2:
                report.add(
                    report_lib.ODD_COORDINATE_COUNT,
                    rel_json,
                    ann_id,
                    f"odd number of coordinates ({coords.size})",
                )
                reported = True
            elif coords.size < 6:
                report.add(
                    report_lib.TOO_FEW_POINTS,
                    rel_json,
                    ann_id,
                    f"{coords.size // 2} points, a polygon needs 3",
                )
                reported = True
            else:
                polygons.append(coords.reshape(-1, 2).astype(np.float32))
    elif isinstance(segmentation, dict) and "counts" in segmentation:
        try:
            polygons = rle_to_polygons(segmentation, height, width)
        except (TypeError, ValueError, KeyError, IndexError) as error:
            report.add(report_lib.BAD_ANNOTATION, rel_json, ann_id, f"cannot decode RLE: {error}")
            reported = True
    if not polygons:
        if not reported:
            report.add(
                report_lib.BAD_ANNOTATION, rel_json, ann_id, "annotation without a usable segmentation"
            )
        return None
    polygons = [np.clip(p, 0, [width, height]).astype(np.float32) for p in polygons]
    return SourceObject(category_to_label[category], polygons, bool(ann.get("iscrowd", 0)))


def rle_to_polygons(rle: dict, height: int, width: int) -> list[np.ndarray]:
    """Outline polygons (pixel-edge coordinates) of a COCO RLE mask; holes are not kept."""
    from pycocotools import mask as mask_utils  # pylint: disable=g-import-not-at-top

    if list(rle["size"]) != [height, width]:
        raise ValueError(f"RLE size {rle['size']} differs from the image size {[height, width]}")
    counts = rle["counts"]
    if isinstance(counts, list):
        if sum(counts) != height * width:
            raise ValueError(f"uncompressed RLE counts sum to {sum(counts)}, not {height * width}")
        rle = mask_utils.frPyObjects(rle, height, width)
    elif not counts:
        raise ValueError("empty RLE counts")
    else:
        rle = {
            "size": [height, width],
            "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
        }
    mask = mask_utils.decode(rle)
    return mask_to_polygons(mask)


def mask_to_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """Polygons tracing the outer boundary of each blob of a (H, W) binary mask, in pixel-edge coordinates.

    Each boundary pixel contributes its centre (x + 0.5, y + 0.5), so filling the polygon with the
    same centre convention reproduces the blob (up to thin concavities).
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    polygons = []
    for contour in contours:
        points = contour[:, 0, :].astype(np.float32) + 0.5
        if len(points) < 3:  # a one- or two-pixel blob: use its pixel square
            x0, y0 = points.min(0) - 0.5
            x1, y1 = points.max(0) + 0.5
            points = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)
        polygons.append(points)
    return polygons
