"""Tiny dataset sources written into a test's tmp_path (imported by the data reliability tests)."""

import json
import pathlib

import cv2
import numpy as np

TRIANGLE = "0.1 0.1 0.5 0.1 0.5 0.5"


def write_image(path: pathlib.Path, value: int, size=(20, 20)) -> pathlib.Path:
    """A flat grey PNG/JPEG; give each image its own `value` unless a duplicate is meant."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*size, 3), value, np.uint8))
    return path


def write_yolo(root: pathlib.Path, labels: dict, names=("a", "b")) -> pathlib.Path:
    """Ultralytics layout: labels maps "split/stem" -> label lines; image k gets grey value 40 + 10 k."""
    for k, (key, lines) in enumerate(labels.items()):
        split, stem = key.split("/")
        write_image(root / "images" / split / f"{stem}.png", 40 + 10 * k)
        label = root / "labels" / split / f"{stem}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text(f"names: {list(names)}\n")
    return root


def write_coco(root: pathlib.Path, split: str, images: list, annotations: list, text=None) -> pathlib.Path:
    """annotations/instances_{split}.json with categories 1: a, 2: b; images as given (files must
    exist under images/{split}); `text` replaces the JSON (for broken files)."""
    data = {
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "images": images,
        "annotations": annotations,
    }
    path = root / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if text is None else text)
    return path
