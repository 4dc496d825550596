"""COCO instance JSON sources: one file per split, polygons or RLE segmentations.

A file belongs to the split its name or folder names (`instances_train.json`, `annotations/val.json`,
`train/_annotations.coco.json`, ...). Class names are the categories sorted by id; images are found by
their `file_name` relative to the JSON, the root, or by base name. RLE masks become polygons by
tracing their outline. A file that is not valid JSON, an image entry without an integer `id` or a
segmentation with non-numeric values stops the build with a `report.SourceError` naming the file (and
annotation id); annotations of unknown images and unusable coordinates are skipped and reported.
"""

import collections
import json
import pathlib

from lmsfa_jax.data import naming
from lmsfa_jax.data import polygons as polygons_lib
from lmsfa_jax.data import report as report_lib
from lmsfa_jax.data import source_example


def instance_files(root: pathlib.Path) -> list[tuple[str, pathlib.Path]]:
    """(split, path) of the COCO instance JSON files under root."""
    found = []
    for path in sorted(root.rglob("*.json")):
        split = naming.split_of(path.relative_to(root))
        if split is None:
            continue
        with open(path, errors="replace") as f:
            head = f.read(4096)
        if '"images"' in head or '"annotations"' in head or '"categories"' in head:
            found.append((split, path))
    return found


def _load(path: pathlib.Path, root: pathlib.Path) -> dict:
    """The JSON of an instance file with list-valued images / annotations / categories."""
    rel = path.relative_to(root)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as error:
        raise report_lib.SourceError(
            f"{rel}:{error.lineno}: invalid or truncated JSON ({error.msg}, column {error.colno})"
        ) from error
    except UnicodeDecodeError as error:
        raise report_lib.SourceError(f"{rel}: not UTF-8 text ({error.reason})") from error
    if not isinstance(data, dict):
        raise report_lib.SourceError(
            f"{rel}: the top level must be an object with images, annotations and categories"
        )
    for key in ("images", "annotations", "categories"):
        data.setdefault(key, [])
        if not isinstance(data[key], list):
            raise report_lib.SourceError(f"{rel}: `{key}` must be a list, not {type(data[key]).__name__}")
    return data


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def class_names_and_ids(root: pathlib.Path) -> tuple[list[str], dict[int, int]]:
    """(names, source category id -> label) from the instance files, which must all agree."""
    names_by_file = {}
    for _, path in instance_files(root):
        rel = path.relative_to(root)
        categories = _load(path, root)["categories"]
        for i, c in enumerate(categories):
            if not (isinstance(c, dict) and _is_int(c.get("id")) and isinstance(c.get("name"), str)):
                raise report_lib.SourceError(f"{rel}: categories[{i}] needs an integer `id` and a `name`")
        categories = sorted(categories, key=lambda c: c["id"])
        names_by_file[rel] = (
            [c["name"] for c in categories],
            {c["id"]: i for i, c in enumerate(categories)},
        )
    first, (names, ids) = next(iter(names_by_file.items()))
    for rel, (other, _) in names_by_file.items():
        if other != names:
            raise report_lib.SourceError(f"{rel}: categories {other} differ from {first}: {names}")
    if not names:
        raise report_lib.SourceError(f"{first}: no categories")
    return names, ids


def _image_entries(data: dict, rel_json) -> list[dict]:
    """The image entries sorted by id; each must have an integer id, used once."""
    first_index = {}
    for i, info in enumerate(data["images"]):
        if not isinstance(info, dict) or not _is_int(info.get("id")):
            name = info.get("file_name") if isinstance(info, dict) else None
            about = f" ({name!r})" if name else ""
            raise report_lib.SourceError(f"{rel_json}: images[{i}]{about} has no integer `id`")
        if info["id"] in first_index:
            raise report_lib.SourceError(
                f"{rel_json}: images[{i}] repeats image id {info['id']} of images[{first_index[info['id']]}]"
            )
        first_index[info["id"]] = i
    return sorted(data["images"], key=lambda im: im["id"])


def _annotations_by_image(data: dict, image_ids: set, rel_json, report) -> dict[int, list[dict]]:
    by_image = collections.defaultdict(list)
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise report_lib.SourceError(f"{rel_json}: annotations[{i}] is not an object")
        if ann.get("image_id") not in image_ids:
            report.add(
                report_lib.ORPHAN_ANNOTATION,
                rel_json,
                ann.get("id"),
                f"image_id {ann.get('image_id')!r} has no entry in `images`",
            )
            continue
        by_image[ann["image_id"]].append(ann)
    return by_image


def examples(root, split, num_classes, report, label_map):
    """Yields the `SourceExample`s of one split, with the COCO image ids."""
    _, category_to_label = class_names_and_ids(root)
    files = [p for s, p in instance_files(root) if s == split]
    if len(files) > 1:
        raise report_lib.SourceError(
            f"{root}: several COCO files for split {split}: {[str(p.relative_to(root)) for p in files]}"
        )
    json_path = files[0]
    rel_json = json_path.relative_to(root)
    data = _load(json_path, root)
    images = _image_entries(data, rel_json)
    by_image = _annotations_by_image(data, {im["id"] for im in images}, rel_json, report)
    by_basename = collections.defaultdict(list)
    for p in root.rglob("*"):
        if naming.is_image(p):
            by_basename[p.name].append(p)
    seen = {}
    for info in images:
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
        path = _resolve_image(root, json_path, name, split, by_basename)
        if path is None:
            report.add(report_lib.MISSING_IMAGE, rel_json, None, f"image file {name!r} not found")
            continue
        image = source_example.read_image(path, root, report)
        if image is None:
            continue
        objects = []
        for ann in by_image.get(info["id"], []):
            obj = _object(ann, image, category_to_label, num_classes, rel_json, report)
            if obj is not None:
                obj.label = obj.label if label_map is None else label_map[obj.label]
                objects.append(obj)
        yield source_example.make_example(path, root, info["id"], image, objects)


def _resolve_image(root, json_path, name, split, by_basename):
    for base in (json_path.parent, root, root / "images", root / "images" / split, root / split):
        if (base / name).is_file():
            return base / name
    candidates = by_basename.get(pathlib.Path(name).name, [])
    in_split = [p for p in candidates if naming.split_of(p.relative_to(root)) == split]
    chosen = in_split or candidates
    return chosen[0] if len(chosen) == 1 else None


def _object(ann, image, category_to_label, num_classes, rel_json, report):
    """The `SourceObject` of one annotation, or None after reporting why it is skipped."""
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
            if not isinstance(flat, list) or not all(_is_number(v) for v in flat):
                raise report_lib.SourceError(
                    f"{rel_json}: annotation id {ann_id}: segmentation polygon {str(flat)[:60]} is not a "
                    "list of numbers"
                )
            points = polygons_lib.checked_polygon(
                flat, image.height, image.width, False, report, rel_json, ann_id
            )
            reported |= points is None
            if points is not None:
                polygons.append(points)
    elif isinstance(segmentation, dict) and "counts" in segmentation:
        try:
            polygons = polygons_lib.rle_to_polygons(segmentation, image.height, image.width)
        except (TypeError, ValueError, KeyError, IndexError) as error:
            report.add(report_lib.BAD_ANNOTATION, rel_json, ann_id, f"cannot decode RLE: {error}")
            reported = True
    if not polygons:
        if not reported:
            report.add(
                report_lib.BAD_ANNOTATION, rel_json, ann_id, "annotation without a usable segmentation"
            )
        return None
    return source_example.SourceObject(category_to_label[category], polygons, bool(ann.get("iscrowd", 0)))
