"""Ultralytics / Roboflow YOLO-seg folders: data YAML class names, image files and label files.

Images lie under a split folder; the label file of an image is found by replacing the last `images`
path component with `labels` and the extension with `.txt`, so both `images/{split}/x.jpg` +
`labels/{split}/x.txt` (Ultralytics) and `{split}/images/x.jpg` + `{split}/labels/x.txt` (Roboflow)
work. Each label line is `class x1 y1 x2 y2 ...` with coordinates normalised to [0, 1]. Class names
come from the `names` entry (a list, or a dict id -> name) of a `*.yaml` / `*.yml` in the root.
"""

import pathlib

import numpy as np
import yaml

from lmsfa_jax.data import naming
from lmsfa_jax.data import polygons as polygons_lib
from lmsfa_jax.data import report as report_lib
from lmsfa_jax.data import source_example


def yaml_file(root: pathlib.Path) -> pathlib.Path | None:
    candidates = sorted(list(root.glob("*.yaml")) + list(root.glob("*.yml")))
    return candidates[0] if candidates else None


def has_label_files(root: pathlib.Path) -> bool:
    return any("labels" in p.relative_to(root).parts for p in root.rglob("*.txt"))


def class_names(root: pathlib.Path) -> list[str]:
    """Class names in id order from the data YAML's `names`."""
    yaml_path = yaml_file(root)
    if yaml_path is None:
        raise report_lib.SourceError(f"{root}: YOLO-seg dataset without a data YAML (*.yaml with `names`)")
    try:
        with open(yaml_path, errors="replace") as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{yaml_path}:{mark.line + 1}" if mark is not None else str(yaml_path)
        problem = getattr(error, "problem", None) or type(error).__name__
        raise report_lib.SourceError(f"{where}: invalid YAML ({problem})") from error
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        try:
            ids = sorted(int(k) for k in names)
        except (TypeError, ValueError) as error:
            raise report_lib.SourceError(f"{yaml_path}: class ids in `names` must be integers") from error
        if ids != list(range(len(ids))):
            raise report_lib.SourceError(f"{yaml_path}: class ids in `names` must be 0..n-1, got {ids}")
        names = [names[k] if k in names else names[str(k)] for k in ids]
    if not isinstance(names, list) or not names:
        raise report_lib.SourceError(f"{yaml_path}: missing or empty `names` list")
    return [str(n) for n in names]


def image_files(root: pathlib.Path) -> list[pathlib.Path]:
    """Image files below an `images` folder in a path naming a split, sorted."""
    return sorted(
        p
        for p in root.rglob("*")
        if naming.is_image(p)
        and "images" in p.relative_to(root).parts
        and naming.split_of(p.relative_to(root)) is not None
    )


def _label_path(image_path: pathlib.Path) -> pathlib.Path:
    parts = list(image_path.parts)
    i = len(parts) - 1 - parts[::-1].index("images")
    parts[i] = "labels"
    return pathlib.Path(*parts).with_suffix(".txt")


def examples(root, split, num_classes, report, label_map):
    """Yields the `SourceExample`s of one split (image ids count from 0 in sorted file order)."""
    images = [p for p in image_files(root) if naming.split_of(p.relative_to(root)) == split]
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
        image = source_example.read_image(image_path, root, report)
        if image is None:
            continue
        if label_path.exists():
            used_labels.add(label_path)
            objects = _parse_label_file(label_path, root, num_classes, image, report, label_map)
        else:
            report.add(
                report_lib.MISSING_LABEL_FILE, rel, None, f"no label file {label_path.relative_to(root)}"
            )
            objects = []
        yield source_example.make_example(image_path, root, image_id, image, objects)
        image_id += 1
    label_dir_files = {
        p
        for p in root.rglob("*.txt")
        if "labels" in p.relative_to(root).parts and naming.split_of(p.relative_to(root)) == split
    }
    for orphan in sorted(label_dir_files - used_labels - {_label_path(p) for p in images}):
        report.add(report_lib.ORPHAN_LABEL_FILE, orphan.relative_to(root), None, "no image with this name")


def _parse_label_file(path, root, num_classes, image, report, label_map):
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
        points = polygons_lib.checked_polygon(
            coords, image.height, image.width, True, report, rel, line_no
        )
        if points is not None:
            label = class_id if label_map is None else label_map[class_id]
            objects.append(source_example.SourceObject(label, [points]))
    return objects
