"""Issue 10.5: bad COCO numbers and orphans are reported and skipped; broken files stop with one line."""

import numpy as np
import pytest

import source_files
from lmsfa_jax.data import build
from lmsfa_jax.data import reader
from lmsfa_jax.data import report as report_lib

TRIANGLE = [2, 2, 10, 2, 10, 10]


def _images(root, n=2):
    for k in range(n):
        source_files.write_image(root / "images" / "train" / f"i{k}.png", 50 + 40 * k)
    return [{"id": k + 1, "file_name": f"i{k}.png"} for k in range(n)]


def test_non_finite_huge_and_orphan_annotations_are_reported(tmp_path):
    root = tmp_path / "src"
    images = _images(root)
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [TRIANGLE]},
        {"id": 2, "image_id": 1, "category_id": 2, "segmentation": [[2, 2, float("nan"), 2, 10, 10]]},
        {"id": 3, "image_id": 2, "category_id": 1, "segmentation": [[2, 2, float("inf"), 2, 10, 10]]},
        {"id": 4, "image_id": 2, "category_id": 2, "segmentation": [[2, 2, 1e300, 2, 10, 10]]},
        {"id": 5, "image_id": 99, "category_id": 1, "segmentation": [TRIANGLE]},  # no image 99
        {"id": 6, "image_id": 2, "category_id": 2, "segmentation": [TRIANGLE, [2, 2, -1e12, 5, 9, 9]]},
    ]
    source_files.write_coco(root, "train", images, annotations)  # json writes NaN / Infinity literals

    _, report = build.build_dataset(root, "coco_numbers", tmp_path / "tfds")

    assert report.counts() == {
        report_lib.NON_FINITE_COORDS: 2,
        report_lib.COORDS_OUT_OF_RANGE: 2,
        report_lib.ORPHAN_ANNOTATION: 1,
    }
    lines = {kind: sorted(i.line for i in report.of_kind(kind)) for kind in report.counts()}
    assert lines == {
        report_lib.NON_FINITE_COORDS: [2, 3],
        report_lib.COORDS_OUT_OF_RANGE: [4, 6],
        report_lib.ORPHAN_ANNOTATION: [5],
    }
    orphan = report.of_kind(report_lib.ORPHAN_ANNOTATION)[0]
    assert orphan.path == "annotations/instances_train.json" and "image_id 99" in orphan.message
    examples = {ex["image_id"]: ex for ex in reader.open_split("coco_numbers", tmp_path / "tfds", "train")}
    assert [len(examples[1]["labels"]), len(examples[2]["labels"])] == [1, 1]
    assert len(examples[2]["polygons"][0]) == 1  # object 6 keeps its good polygon only
    for ex in examples.values():
        for polygons in ex["polygons"]:
            for p in polygons:
                assert np.all(np.isfinite(p)) and p.min() >= 0 and p.max() <= 20


@pytest.mark.parametrize(
    "images,annotations,text,expected",
    [
        ([{"id": 1, "file_name": "i0.png"}, {"file_name": "i1.png"}], [], None,
         r"annotations/instances_train\.json: images\[1\] \('i1\.png'\) has no integer `id`"),
        ([{"id": 1, "file_name": "i0.png"}, {"id": 1, "file_name": "i1.png"}], [], None,
         r"annotations/instances_train\.json: images\[1\] repeats image id 1 of images\[0\]"),
        ([{"id": 1, "file_name": "i0.png"}],
         [{"id": 7, "image_id": 1, "category_id": 1, "segmentation": [[2, 2, "x", 2, 10, 10]]}], None,
         r"annotations/instances_train\.json: annotation id 7: segmentation polygon .* is not a list of numbers"),
        ([{"id": 1, "file_name": "i0.png"}],
         [{"id": 8, "image_id": 1, "category_id": 1, "segmentation": [[2, 2, None, 2, 10, 10]]}], None,
         r"annotations/instances_train\.json: annotation id 8: segmentation polygon"),
        ([], [], '{"categories": [{"id": 1, "name": "a"}],\n "images": [{"id": 1, "file_na',
         r"annotations/instances_train\.json:2: invalid or truncated JSON"),
        ([], [], '{"images": [], "categories": [{"id": 1, "name": "a"}], "annotations": {}}',
         r"annotations/instances_train\.json: `annotations` must be a list"),
    ],
    ids=["image_without_id", "repeated_image_id", "non_numeric_segmentation", "null_in_segmentation", "truncated_json", "wrong_type"],
)
def test_broken_coco_files_stop_with_one_line_naming_file_and_annotation(
    tmp_path, images, annotations, text, expected
):
    root = tmp_path / "src"
    _images(root)
    source_files.write_coco(root, "train", images, annotations, text=text)
    with pytest.raises(report_lib.SourceError, match=expected) as error:
        build.build_dataset(root, "coco_broken", tmp_path / "tfds")
    assert "\n" not in str(error.value)
