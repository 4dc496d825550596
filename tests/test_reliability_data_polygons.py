"""Issue 10.3: polygons covering no pixel (zero area, collinear, made so by clipping) are skipped, counted."""

import numpy as np
from pycocotools import mask as mask_utils

import source_files
from lmsfa_jax.data import build
from lmsfa_jax.data import reader
from lmsfa_jax.data import report as report_lib


def _masks_are_not_empty(examples):
    """Every stored object rasterises to a non-empty mask the way COCO evaluation does."""
    for ex in examples:
        for polygons in ex["polygons"]:
            flat = [np.asarray(p, np.float64).ravel().tolist() for p in polygons]
            rle = mask_utils.merge(mask_utils.frPyObjects(flat, ex["height"], ex["width"]))
            assert mask_utils.area(rle) > 0, ex["file_name"]


def test_yolo_degenerate_polygons_are_skipped_with_a_counted_line(tmp_path):
    lines = [
        f"0 {source_files.TRIANGLE}",
        "1 0.1 0.1 0.5 0.5 0.9 0.9",  # collinear
        "0 0.3 0.3 0.3 0.3 0.3 0.3",  # one point three times
        "1 1.004 0.1 1.008 0.5 1.009 0.9",  # clipping puts every point on x = 1
        "0 0.2 0.2 0.9 0.2 0.9 0.21",  # a sliver 0.2 px high: no pixel centre inside
    ]
    root = source_files.write_yolo(tmp_path / "src", {"train/x": lines})
    _, report = build.build_dataset(root, "yolo_degenerate", tmp_path / "tfds")
    assert report.counts() == {report_lib.DEGENERATE_POLYGON: 4, report_lib.COORDS_CLIPPED: 1}
    assert [(i.path, i.line) for i in report.of_kind(report_lib.DEGENERATE_POLYGON)] == [
        ("labels/train/x.txt", n) for n in (2, 3, 4, 5)
    ]
    assert "degenerate_polygon: 4 (polygon skipped)" in report.summary()
    examples = list(reader.open_split("yolo_degenerate", tmp_path / "tfds", "train"))
    np.testing.assert_array_equal(examples[0]["labels"], [0])
    _masks_are_not_empty(examples)


def test_coco_degenerate_polygons_are_skipped_and_rle_lines_repaired(tmp_path):
    root = tmp_path / "src"
    source_files.write_image(root / "images" / "train" / "i.png", 80)
    line_mask = np.zeros((20, 20), np.uint8, order="F")
    line_mask[5, 3:15] = 1  # a one-pixel-thin RLE object: its traced outline has no area
    rle = mask_utils.encode(line_mask)
    rle["counts"] = rle["counts"].decode("ascii")
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[2, 2, 10, 2, 10, 10]]},
        {"id": 2, "image_id": 1, "category_id": 2, "segmentation": [[2, 2, 6, 6, 10, 10]]},  # collinear
        {"id": 3, "image_id": 1, "category_id": 2, "segmentation": [[2, 2, 10, 2, 10, 10], [20, 0, 20.1, 9, 20.1, 18]]},
        {"id": 4, "image_id": 1, "category_id": 1, "segmentation": rle},
    ]
    source_files.write_coco(root, "train", [{"id": 1, "file_name": "i.png"}], annotations)
    _, report = build.build_dataset(root, "coco_degenerate", tmp_path / "tfds")
    assert report.counts() == {report_lib.DEGENERATE_POLYGON: 2, report_lib.COORDS_CLIPPED: 1}
    assert [i.line for i in report.of_kind(report_lib.DEGENERATE_POLYGON)] == [2, 3]
    (ex,) = reader.open_split("coco_degenerate", tmp_path / "tfds", "train")
    np.testing.assert_array_equal(ex["labels"], [0, 1, 0])  # annotations 1, 3 (one polygon), 4
    assert [len(p) for p in ex["polygons"]] == [1, 1, 1]
    np.testing.assert_allclose(ex["boxes"][2], [3, 5, 15, 6])  # the line's own pixels
    _masks_are_not_empty([ex])
