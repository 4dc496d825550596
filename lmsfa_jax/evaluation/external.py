"""Other models' predictions read into COCO results, to be scored like ours (evaluate --predictions).

    results, report = load(path, ground_truth, match_by="auto")
    print(report.summary())
    metrics, curves = coco.evaluate(ground_truth, results, class_names)

`path` is one of:
- a COCO results JSON file, as `yolo val save_json=True` or pycocotools-based tools write it: a
  list of {"image_id" or "file_name", "category_id", "score", "bbox": [x, y, w, h] and/or
  "segmentation": RLE (compressed or not) or polygons}, in original pixels, with the ground
  truth's category ids (label + 1, as `evaluate --write_gt` writes them);
- a folder of Ultralytics text files, as `yolo predict save_txt=True save_conf=True` writes them:
  STEM.txt per image, a line `cls x1 y1 ... xn yn conf` per instance, cls the 0-based class
  index and the polygon normalised by the image's width and height. Boxes are the polygons'
  extents.

Matching to the split's images (`match_by`, JSON only; text files always match by file stem):
"image_id": integer ids as in the ground truth. "file_stem": file_name, or image_id as a string
or as an integer equal to a numeric file stem (`yolo val save_json=True` writes such ids), against
the split's file names without folder and extension. "auto": file_name and string ids by stem,
integer ids by id, and an error where an integer could also mean another image's numeric stem.

Results are dicts of image_id (the split's), category_id, score, bbox and, where the prediction
has a mask, segmentation (RLE with ASCII counts). Predictions for images outside the split or for
unknown classes are counted in the report and not scored. Input that cannot be read as intended
(a malformed line or entry, a score outside [0, 1], an empty file) raises InputError naming the
file and the line or entry.
"""
import collections
import dataclasses
import json
import math
import pathlib

import numpy as np
from pycocotools import mask as mask_utils

from lmsfa_jax.errors import InputError
from lmsfa_jax.evaluation import coco

MATCH_BY = ("auto", "image_id", "file_stem")
COORDINATE_TOLERANCE = 0.01   # normalised coordinates may stray this far outside [0, 1]
MAX_EXAMPLES = 3              # unmatched image names / classes quoted in the report


@dataclasses.dataclass
class LoadReport:
    """What `load` read, counted by what became of each prediction."""
    source: str
    read: int = 0                        # predictions in the input
    unknown_image: int = 0               # not scored: the image is not in the split
    unknown_class: int = 0               # not scored: the class is not one of the dataset's
    box_only: int = 0                    # scored for boxes only: no mask
    box_from_mask: int = 0               # no bbox given: the mask's extent
    empty_mask: int = 0                  # no polygon of 3+ points: scored as an empty mask
    empty_files: int = 0                 # text files without a line
    images_without_predictions: int = 0  # split images that no prediction names
    unknown_images: list = dataclasses.field(default_factory=list)
    unknown_classes: list = dataclasses.field(default_factory=list)

    @property
    def scored(self) -> int:
        return self.read - self.unknown_image - self.unknown_class

    def count_unknown_image(self, key):
        """Counts a prediction not scored because the split has no image `key` (id or stem)."""
        self.unknown_image += 1
        _add_example(self.unknown_images, key)

    def count_unknown_class(self, key):
        """Counts a prediction not scored because the dataset has no class `key`."""
        self.unknown_class += 1
        _add_example(self.unknown_classes, key)

    def summary(self) -> str:
        """Lines for the terminal: the totals, then every non-zero count."""
        notes = (
            (self.unknown_image, f"name images that are not in the split (e.g. {self.unknown_images}): not scored"),
            (self.unknown_class, f"have classes the dataset does not have (e.g. {self.unknown_classes}): not scored"),
            (self.box_only, "have no mask: scored for boxes only"),
            (self.box_from_mask, "have no bbox: their mask's extent is used"),
            (self.empty_mask, "have no polygon of 3+ points: scored as empty masks"),
            (self.empty_files, "files are empty (images without detections)"),
            (self.images_without_predictions, "images of the split have no prediction"),
        )
        lines = [f"predictions: {self.read} read from {self.source}, {self.scored} scored, "
                 f"{self.read - self.scored} could not be matched"]
        return "\n".join([*lines, *(f"  {count} {text}" for count, text in notes if count)])

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "scored": self.scored}


def _add_example(examples, key):
    if key not in examples and len(examples) < MAX_EXAMPLES:
        examples.append(key)


def load(path, ground_truth, match_by="auto"):
    """A COCO results file or a folder of Ultralytics text files -> (results, LoadReport)."""
    path = pathlib.Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"predictions {path} not found")
    if path.is_dir():
        results, report = read_ultralytics_txt(path, ground_truth)
    elif path.suffix == ".txt":
        raise InputError(f"{path}: pass the folder of Ultralytics .txt files ({path.parent}), not one file")
    else:
        results, report = read_coco_results(path, ground_truth, match_by)
    report.images_without_predictions = len(ground_truth["images"]) - len({r["image_id"] for r in results})
    return results, report


def file_stem(file_name) -> str:
    """'images/val/p100_0003.jpg' -> 'p100_0003' (also for Windows separators)."""
    return pathlib.PurePosixPath(str(file_name).replace("\\", "/")).stem


class SplitImages:
    """The ground truth's images by id, by file stem and by numeric file stem (for matching)."""

    def __init__(self, ground_truth):
        self.size = {im["id"]: (im["height"], im["width"]) for im in ground_truth["images"]}
        self.stems = collections.defaultdict(list)
        self.numeric_stems = collections.defaultdict(list)
        for im in ground_truth["images"]:
            stem = file_stem(im["file_name"])
            self.stems[stem].append(im["id"])
            if stem.isdigit():
                self.numeric_stems[int(stem)].append(im["id"])

    def by_stem(self, stem, where):
        """The image id with this file stem, None if none; InputError if several have it."""
        ids = self.stems.get(stem, [])
        if len(ids) > 1:
            raise InputError(f"{where}: {len(ids)} images of the split are named {stem!r} (ids {ids}); "
                             "match them by image_id instead")
        return ids[0] if ids else None

    def by_numeric_stem(self, number, where):
        ids = self.numeric_stems.get(number, [])
        if len(ids) > 1:
            raise InputError(f"{where}: {len(ids)} images of the split have file stem {number} (ids {ids})")
        return ids[0] if ids else None

    def check_unambiguous(self, image_ids, source):
        """InputError if an integer image_id names one image by id and another by numeric file stem."""
        clashes = sorted(k for k in image_ids if self.numeric_stems.get(k, [k]) != [k])
        if clashes:
            k = clashes[0]
            by_id = f"is image id {k}" if k in self.size else "is no image id"
            raise InputError(
                f"{source}: {len(clashes)} integer image_ids are ambiguous, e.g. {k}: it {by_id}, but the file "
                f"named {k} is image id {self.numeric_stems[k][0]}; pass --match_by image_id (ids as "
                "--write_gt writes them) or --match_by file_stem (numeric file names, as `yolo val "
                "save_json=True` writes ids)")


# ----------------------------------------------------------------------------- COCO results JSON


def read_coco_results(path, ground_truth, match_by="auto"):
    """A COCO results JSON file -> (results, LoadReport); see the module docstring."""
    if match_by not in MATCH_BY:
        raise InputError(f"match_by must be one of {MATCH_BY}, not {match_by!r}")
    entries = _read_json_list(path)
    images = SplitImages(ground_truth)
    categories = {c["id"] for c in ground_truth["categories"]}
    if match_by == "auto":
        images.check_unambiguous({e["image_id"] for e in entries if isinstance(e, dict) and e.get("file_name") is None
                                  and isinstance(e.get("image_id"), int)}, path)
    report = LoadReport(str(path), read=len(entries))
    results, bad_scores = [], []
    for number, entry in enumerate(entries):
        where = f"{path}: entry {number}"
        if not isinstance(entry, dict):
            raise InputError(f"{where}: expected an object with image_id, category_id, score, bbox/segmentation")
        if "bbox" not in entry and "segmentation" not in entry:
            raise InputError(f"{where}: has neither bbox nor segmentation")
        image_id, image_key = _image_of(entry, images, match_by, where)
        category = _integer(entry.get("category_id"), "category_id", where)
        score = _finite(entry.get("score"), "score", where)
        if not 0.0 <= score <= 1.0:
            bad_scores.append((where, score))
        elif image_id is None:
            report.count_unknown_image(image_key)
        elif category not in categories:
            report.count_unknown_class(category)
        else:
            results.append(_coco_result(entry, image_id, category, score, images.size[image_id], where, report))
    _check_scores(bad_scores)
    return results, report


def _read_json_list(path):
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not a text file ({e})") from None
    if not text.strip():
        raise InputError(f"{path} is empty: expected a COCO results list")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, list):
        hint = " (this looks like a ground-truth file)" if isinstance(data, dict) and "images" in data else ""
        raise InputError(f"{path}: expected a list of results (the COCO results format), "
                         f"found a JSON {type(data).__name__}{hint}")
    if not data:
        raise InputError(f"{path}: holds no predictions (an empty list)")
    return data


def _image_of(entry, images, match_by, where):
    """-> (the split's image id or None, the key that named it)."""
    if match_by != "image_id" and entry.get("file_name") is not None:
        stem = file_stem(entry["file_name"])
        return images.by_stem(stem, where), stem
    if entry.get("image_id") is None:
        raise InputError(f"{where}: has no image_id" + ("" if match_by == "image_id" else " or file_name"))
    value = entry["image_id"]
    if isinstance(value, str):
        if match_by == "image_id":
            raise InputError(f"{where}: image_id {value!r} is not an integer (--match_by image_id)")
        return images.by_stem(value, where), value
    image_id = _integer(value, "image_id", where)
    if match_by == "file_stem":
        return images.by_numeric_stem(image_id, where), image_id
    return (image_id if image_id in images.size else None), image_id


def _coco_result(entry, image_id, category, score, size, where, report):
    result = {"image_id": image_id, "category_id": category, "score": score}
    if "segmentation" in entry:
        result["segmentation"] = _segmentation(entry["segmentation"], size, where, report)
    else:
        report.box_only += 1
    if "bbox" in entry:
        result["bbox"] = _bbox(entry["bbox"], where)
    else:
        result["bbox"] = mask_utils.toBbox(result["segmentation"]).tolist()
        report.box_from_mask += 1
    return result


def _segmentation(segmentation, size, where, report):
    """A results segmentation (RLE or polygons) -> compressed RLE, checked against the image size."""
    height, width = size
    if isinstance(segmentation, dict):
        if not isinstance(segmentation.get("counts"), (str, list)) or not isinstance(segmentation.get("size"), list):
            raise InputError(f"{where}: segmentation must be an RLE {{size, counts}} or a list of polygons")
        if segmentation["size"] != [height, width]:
            raise InputError(f"{where}: RLE size {segmentation['size']} but the image is {height} x {width} "
                             "(masks must be at the original resolution)")
        counts = segmentation["counts"]
        if isinstance(counts, list) and not all(isinstance(r, int) for r in counts):
            raise InputError(f"{where}: RLE counts must be integers")
        runs = rle_runs(counts) if isinstance(counts, str) else np.array(counts, np.int64)
        if (runs < 0).any() or runs.sum() != height * width:
            raise InputError(f"{where}: RLE counts are not runs covering the {height} x {width} image")
        return coco.segmentation_to_rle(segmentation, height, width)
    if not isinstance(segmentation, list) or not all(
            isinstance(p, list) and len(p) % 2 == 0 and all(_is_finite(v) for v in p) for p in segmentation):
        raise InputError(f"{where}: segmentation must be an RLE {{size, counts}} or a list of polygons "
                         "[x0, y0, x1, y1, ...] of finite numbers")
    if not any(len(p) >= 6 for p in segmentation):
        report.empty_mask += 1
    return coco.segmentation_to_rle(segmentation, height, width)


def rle_runs(counts):
    """The run lengths (int64 array) of a compressed COCO RLE string; [-1] if it is malformed.

    pycocotools' encoding: a run is 5-bit groups, least significant first, in characters offset
    by 48, bit 6 set while more groups follow and bit 5 of the last one its sign; runs after the
    third are stored as differences to the run two before.
    """
    codes = np.frombuffer(counts.encode("utf-8"), np.uint8).astype(np.int64) - 48
    last = (codes & 0x20) == 0                                   # the last group of each run
    if codes.size and (codes.min() < 0 or codes.max() > 63 or not last[-1]):
        return np.array([-1])
    run = np.cumsum(last) - last                                 # the run each group belongs to
    starts = np.flatnonzero(np.concatenate([[True], last[:-1]]))
    position = np.arange(codes.size) - starts[run]               # the group's place in its run
    if codes.size and position.max() > 11:
        return np.array([-1])
    runs = np.zeros(int(last.sum()), np.int64)
    np.add.at(runs, run, (codes & 0x1F) << (5 * position))
    negative = (codes[last] & 0x10) != 0
    runs[negative] -= np.left_shift(1, 5 * (position[last][negative] + 1))
    runs[1::2] = np.cumsum(runs[1::2])
    runs[2::2] = np.cumsum(runs[2::2])
    return runs


def _bbox(value, where):
    if not (isinstance(value, (list, tuple)) and len(value) == 4 and all(_is_finite(v) for v in value)
            and value[2] >= 0 and value[3] >= 0):
        raise InputError(f"{where}: bbox {value!r} is not [x, y, width, height] with width, height >= 0")
    return [float(v) for v in value]


def _is_finite(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _finite(value, field, where):
    if not _is_finite(value):
        raise InputError(f"{where}: {field} {value!r} is not a finite number")
    return float(value)


def _integer(value, field, where):
    if not _is_finite(value) or value != int(value):
        raise InputError(f"{where}: {field} {value!r} is not an integer")
    return int(value)


def _check_scores(bad_scores):
    """InputError counting the predictions whose score is not a confidence in [0, 1]."""
    if bad_scores:
        where, score = bad_scores[0]
        raise InputError(f"{len(bad_scores)} predictions have a score outside [0, 1] (first: {where}, "
                         f"score {score}); scores must be confidences")


# ----------------------------------------------------------------------------- Ultralytics text files


def read_ultralytics_txt(folder, ground_truth):
    """A folder of `yolo predict save_txt=True save_conf=True` files (or the run folder holding
    its `labels/`) -> (results, LoadReport); see the module docstring."""
    folder = pathlib.Path(folder)
    if not any(folder.glob("*.txt")) and (folder / "labels").is_dir():
        folder = folder / "labels"
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise InputError(f"{folder}: no .txt files; expected the labels folder that `yolo predict "
                         "save_txt=True save_conf=True` writes (e.g. runs/segment/predict/labels)")
    images = SplitImages(ground_truth)
    categories = {c["id"] for c in ground_truth["categories"]}
    report = LoadReport(str(folder))
    results, bad_scores, point_counts = [], [], collections.Counter()
    for path in files:
        lines = _read_lines(path)
        if not lines:
            report.empty_files += 1
        image_id = images.by_stem(path.stem, path)
        for number, line in lines:
            where = f"{path}:{number}"
            label, points, score = _parse_line(line, where)
            report.read += 1
            point_counts[min(len(points), 3)] += 1
            category = label + coco.CATEGORY_ID_OFFSET
            if not 0.0 <= score <= 1.0:
                bad_scores.append((where, score))
            elif image_id is None:
                report.count_unknown_image(path.stem)
            elif category not in categories:
                report.count_unknown_class(label)
            else:
                results.append(_polygon_result(points, image_id, category, score, images.size[image_id], report))
    _check_scores(bad_scores)
    if not report.read:
        raise InputError(f"{folder}: all {len(files)} .txt files are empty; there are no predictions to score")
    if point_counts[2] == report.read:
        raise InputError(f"{folder}: every line has 4 coordinates: these look like boxes (cls x y w h conf) "
                         "of a detection model; scoring needs a segmentation model's polygons")
    return results, report


def _read_lines(path):
    """-> [(line number, text)] of the non-blank lines of a text file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not a text file ({e})") from None
    return [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]


def _parse_line(line, where):
    """`cls x1 y1 ... xn yn conf` -> (class index, points (n, 2) normalised, confidence)."""
    tokens = line.split()
    try:
        values = [float(token) for token in tokens]
    except ValueError:
        bad = next(t for t in tokens if not _parses(t))
        raise InputError(f"{where}: {bad!r} is not a number") from None
    if len(values) < 2 or len(values) % 2:
        raise InputError(f"{where}: {len(values)} values; expected `cls x1 y1 ... xn yn conf` (as "
                         "`yolo predict save_txt=True save_conf=True` writes them)")
    label = _integer(values[0], "class", where)
    points = np.array(values[1:-1], np.float64).reshape(-1, 2)
    outside = points[~((points >= -COORDINATE_TOLERANCE) & (points <= 1 + COORDINATE_TOLERANCE))]
    if outside.size:
        raise InputError(f"{where}: coordinate {outside[0]:g} is outside [0, 1]; Ultralytics text files "
                         "hold coordinates normalised by the image width and height")
    return label, points, values[-1]


def _parses(token):
    try:
        float(token)
    except ValueError:
        return False
    return True


def _polygon_result(points, image_id, category, score, size, report):
    """Normalised polygon points (n, 2) -> a result with the polygon's mask and extent."""
    height, width = size
    polygon = points * [width, height]
    if len(polygon) < 3:
        report.empty_mask += 1
    x0, y0 = polygon.min(axis=0) if len(polygon) else (0.0, 0.0)
    x1, y1 = polygon.max(axis=0) if len(polygon) else (0.0, 0.0)
    return {"image_id": image_id, "category_id": category, "score": score,
            "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
            "segmentation": coco.segmentation_to_rle([polygon.reshape(-1).tolist()], height, width)}
