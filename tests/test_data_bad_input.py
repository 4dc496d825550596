"""Every kind of bad input is either handled or reported with its file (and line), never lost silently."""

import json

import cv2
import numpy as np
import pytest

from lmsfa_jax.data import build
from lmsfa_jax.data import reader
from lmsfa_jax.data import report as report_lib

TRIANGLE = "0.1 0.1 0.5 0.1 0.5 0.5"


def _image(path, value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((20, 20, 3), value, np.uint8))


def _labels(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def test_yolo_bad_inputs_are_counted_with_file_and_line(tmp_path):
    root = tmp_path / "src"
    (root / "data.yaml").parent.mkdir(parents=True)
    (root / "data.yaml").write_text("names: [a, b]\n")
    imgs, labs = root / "images" / "train", root / "labels" / "train"
    _image(imgs / "good.png")
    _labels(
        labs / "good.txt",
        [
            f"1 {TRIANGLE}",
            f"5 {TRIANGLE}",  # line 2: class out of range
            "0 0.1 0.1 0.5 0.5",  # line 3: two points
            "0 0.1 0.1 0.5 0.1 0.5",  # line 4: odd count
            "0 0.1 0.1 5.0 0.1 0.5 0.5",  # line 5: not normalised
            "0 -0.005 0.1 0.5 0.1 1.004 0.5",  # line 6: clipped, kept
            "0 0.1 abc 0.5 0.1 0.5 0.5",
        ],
    )  # line 7: not a number
    (imgs / "corrupt.jpg").write_bytes(b"this is not a jpeg")
    _labels(labs / "corrupt.txt", [f"0 {TRIANGLE}"])
    _image(imgs / "empty.png")
    _labels(labs / "empty.txt", [])
    _image(imgs / "nolabel.png")
    _image(imgs / "dup.jpg")
    _image(imgs / "dup.png", value=200)
    _labels(labs / "dup.txt", [f"0 {TRIANGLE}"])
    _labels(labs / "orphan.txt", [f"0 {TRIANGLE}"])
    _image(root / "images" / "val" / "v.png", value=150)
    _labels(root / "labels" / "val" / "v.txt", [f"1 {TRIANGLE}"])

    _, report = build.build_dataset(root, "bad_yolo", tmp_path / "tfds")

    assert report.counts() == {
        report_lib.CLASS_OUT_OF_RANGE: 1,
        report_lib.TOO_FEW_POINTS: 1,
        report_lib.ODD_COORDINATE_COUNT: 1,
        report_lib.COORDS_OUT_OF_RANGE: 1,
        report_lib.COORDS_CLIPPED: 1,
        report_lib.NOT_A_NUMBER: 1,
        report_lib.UNREADABLE_IMAGE: 1,
        report_lib.EMPTY_LABEL_FILE: 1,
        report_lib.MISSING_LABEL_FILE: 1,
        report_lib.DUPLICATE_FILE_NAME: 1,
        report_lib.ORPHAN_LABEL_FILE: 1,
    }
    where = {i.kind: (i.path, i.line) for i in report.issues}
    assert where[report_lib.CLASS_OUT_OF_RANGE] == ("labels/train/good.txt", 2)
    assert where[report_lib.TOO_FEW_POINTS] == ("labels/train/good.txt", 3)
    assert where[report_lib.ODD_COORDINATE_COUNT] == ("labels/train/good.txt", 4)
    assert where[report_lib.COORDS_OUT_OF_RANGE] == ("labels/train/good.txt", 5)
    assert where[report_lib.COORDS_CLIPPED] == ("labels/train/good.txt", 6)
    assert where[report_lib.NOT_A_NUMBER] == ("labels/train/good.txt", 7)
    assert where[report_lib.UNREADABLE_IMAGE] == ("images/train/corrupt.jpg", None)
    assert where[report_lib.DUPLICATE_FILE_NAME] == ("images/train/dup.png", None)
    assert where[report_lib.ORPHAN_LABEL_FILE] == ("labels/train/orphan.txt", None)
    assert "class id 5 outside 0..1" in str(report.of_kind(report_lib.CLASS_OUT_OF_RANGE)[0])
    summary = report.summary()
    assert "train: 4 images, 3 objects" in summary and "unreadable_image: 1 (image skipped)" in summary

    examples = {ex["file_name"]: ex for ex in reader.open_split("bad_yolo", tmp_path / "tfds", "train")}
    assert sorted(examples) == [
        "images/train/dup.jpg",
        "images/train/empty.png",
        "images/train/good.png",
        "images/train/nolabel.png",
    ]  # corrupt.jpg and dup.png skipped
    good = examples["images/train/good.png"]
    np.testing.assert_array_equal(good["labels"], [1, 0])
    assert good["polygons"][1][0].min() >= 0 and good["polygons"][1][0].max() <= 20
    assert len(examples["images/train/empty.png"]["labels"]) == 0
    assert len(examples["images/train/nolabel.png"]["labels"]) == 0


def test_coco_bad_inputs_are_counted(tmp_path):
    root = tmp_path / "src"
    _image(root / "images" / "train" / "a.png")
    _image(root / "images" / "train" / "b.png")
    (root / "images" / "train" / "broken.png").write_bytes(b"\x89PNG broken")
    triangle = [[2, 2, 10, 2, 10, 10]]
    data = {
        "categories": [{"id": 3, "name": "nerve"}, {"id": 1, "name": "bone"}],
        "images": [
            {"id": 1, "file_name": "a.png"},
            {"id": 2, "file_name": "a.png"},
            {"id": 3, "file_name": "missing.png"},
            {"id": 4, "file_name": "broken.png"},
            {"id": 5, "file_name": "b.png"},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, "segmentation": triangle},
            {"id": 11, "image_id": 1, "category_id": 7, "segmentation": triangle},
            {"id": 12, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 5, 5]]},
            {"id": 13, "image_id": 5, "category_id": 1, "segmentation": [[1, 1, 5, 5, 9]]},
            {"id": 14, "image_id": 5, "category_id": 1, "segmentation": {"size": [20, 20], "counts": []}},
        ],
    }
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_train.json").write_text(json.dumps(data))

    _, report = build.build_dataset(root, "bad_coco", tmp_path / "tfds")

    assert report.counts() == {
        report_lib.DUPLICATE_FILE_NAME: 1,
        report_lib.MISSING_IMAGE: 1,
        report_lib.UNREADABLE_IMAGE: 1,
        report_lib.CLASS_OUT_OF_RANGE: 1,
        report_lib.TOO_FEW_POINTS: 1,
        report_lib.ODD_COORDINATE_COUNT: 1,
        report_lib.BAD_ANNOTATION: 1,
    }
    assert [i.line for i in report.of_kind(report_lib.BAD_ANNOTATION)] == [14]
    assert [i.line for i in report.of_kind(report_lib.TOO_FEW_POINTS)] == [12]
    assert report.of_kind(report_lib.CLASS_OUT_OF_RANGE)[0].line == 11
    assert reader.class_names("bad_coco", tmp_path / "tfds") == ["bone", "nerve"]  # sorted by category id
    examples = {ex["file_name"]: ex for ex in reader.open_split("bad_coco", tmp_path / "tfds", "train")}
    assert sorted(examples) == ["images/train/a.png", "images/train/b.png"]
    np.testing.assert_array_equal(examples["images/train/a.png"]["labels"], [1])


def test_invalid_data_yaml_is_one_line_naming_file_and_line(tmp_path):
    root = tmp_path / "src"
    _image(root / "images" / "train" / "a.png")
    _labels(root / "labels" / "train" / "a.txt", [f"0 {TRIANGLE}"])
    (root / "data.yaml").write_text("names:\n  - a\n  - [b\n")
    with pytest.raises(report_lib.SourceError, match=r"data\.yaml:\d+: invalid YAML") as error:
        build.build_dataset(root, "bad_yaml", tmp_path / "tfds")
    assert "\n" not in str(error.value)
