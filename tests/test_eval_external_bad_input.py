"""Reading other models' predictions: what cannot be scored is counted, what cannot be read is an
error naming the file and line or entry."""
import json

import numpy as np
import pytest

from lmsfa_jax.errors import InputError
from lmsfa_jax.evaluation import coco, external

CLASS_NAMES = ("adipose", "bone")


def rectangle(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


def ground_truth(file_names=("images/val/a.jpg", "b.png"), ids=(10, 11)):
    """Images 40 x 50 with one object each: class 0 at (5, 5)-(25, 30), class 1 at (10, 2)-(30, 20)."""
    boxes = ([5, 5, 25, 30], [10, 2, 30, 20])
    examples = [{"image_id": i, "file_name": name, "height": 40, "width": 50, "labels": np.array([k % 2]),
                 "boxes": np.array([boxes[k % 2]], np.float32), "polygons": [[rectangle(*boxes[k % 2])]]}
                for k, (i, name) in enumerate(zip(ids, file_names))]
    return coco.coco_ground_truth(examples, CLASS_NAMES)


def write_json(tmp_path, data, name="results.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def write_txt(tmp_path, files):
    folder = tmp_path / "labels"
    folder.mkdir(parents=True)
    for stem, text in files.items():
        (folder / f"{stem}.txt").write_text(text)
    return folder


def entry(**fields):
    return {"image_id": 10, "category_id": 1, "score": 0.9, "bbox": [5, 5, 20, 25], **fields}


# ----------------------------------------------------------------------------- counted, not scored


def test_unknown_images_and_classes_are_counted_in_json(tmp_path):
    path = write_json(tmp_path, [entry(), entry(image_id=99), entry(file_name="zzz.jpg"), entry(category_id=7),
                                 entry(file_name="other/b.jpg", category_id=2)])
    results, report = external.load(path, ground_truth())
    assert [(r["image_id"], r["category_id"]) for r in results] == [(10, 1), (11, 2)]
    assert (report.read, report.scored, report.unknown_image, report.unknown_class) == (5, 2, 2, 1)
    assert report.unknown_images == [99, "zzz"] and report.unknown_classes == [7]
    summary = report.summary()
    assert "5 read" in summary and "3 could not be matched" in summary
    assert "2 name images that are not in the split (e.g. [99, 'zzz'])" in summary
    assert "1 have classes the dataset does not have (e.g. [7])" in summary


def test_unknown_images_classes_and_empty_files_are_counted_in_txt(tmp_path):
    folder = write_txt(tmp_path, {"a": "0 0.1 0.1 0.5 0.1 0.5 0.7 0.9\n5 0.1 0.1 0.5 0.1 0.5 0.7 0.8\n",
                                  "b": "", "zzz": "1 0.1 0.1 0.5 0.1 0.5 0.7 0.5\n"})
    results, report = external.load(folder, ground_truth())
    assert len(results) == 1 and results[0]["bbox"] == pytest.approx([5, 4, 20, 24])  # polygon extent, pixels
    assert (report.read, report.unknown_image, report.unknown_class, report.empty_files) == (3, 1, 1, 1)
    assert report.images_without_predictions == 1
    assert "1 files are empty" in report.summary() and "1 images of the split have no prediction" in report.summary()


def test_box_only_mask_only_and_degenerate_predictions_are_counted(tmp_path):
    gt = ground_truth()
    rle = coco.segmentation_to_rle(gt["annotations"][0]["segmentation"], 40, 50)
    path = write_json(tmp_path, [entry(), {"image_id": 10, "category_id": 1, "score": 0.8, "segmentation": rle},
                                 entry(score=0.7, segmentation=[[1, 1, 3, 3]])])
    results, report = external.load(path, gt)
    assert (report.box_only, report.box_from_mask, report.empty_mask) == (1, 1, 1)
    assert results[1]["bbox"] == [5.0, 5.0, 20.0, 25.0]  # the mask's extent
    assert "segmentation" not in results[0] and results[2]["segmentation"]["counts"]
    metrics, _ = coco.evaluate(gt, results[:1], CLASS_NAMES)  # box-only: scored for boxes only
    assert metrics["per_class"]["adipose"]["bbox"]["AP"] == pytest.approx(1.0)
    assert metrics["per_class"]["adipose"]["segm"]["AP"] == 0.0


def test_rle_forms_give_the_same_mask(tmp_path):
    """A compressed RLE, the same as uncompressed runs, and the polygon it was drawn from."""
    gt = ground_truth()
    polygon = gt["annotations"][0]["segmentation"]
    compressed = coco.segmentation_to_rle(polygon, 40, 50)
    runs = external.rle_runs(compressed["counts"]).tolist()
    assert sum(runs) == 40 * 50 and sum(runs[1::2]) == 20 * 25
    path = write_json(tmp_path, [entry(segmentation=s) for s in (compressed, {"size": [40, 50], "counts": runs},
                                                                 polygon)])
    results, _ = external.load(path, gt)
    assert [r["segmentation"] for r in results] == [compressed] * 3


# ----------------------------------------------------------------------------- errors naming the place


@pytest.mark.parametrize("line, message", [
    ("0 0.1 0.1 0.5 abc 0.5 0.7 0.9", r"a.txt:2: 'abc' is not a number"),
    ("0 0.1 0.1 0.5 0.1 0.5 0.7", r"a.txt:2: 7 values; expected `cls x1 y1 ... xn yn conf`.*save_conf=True"),
    ("1.5 0.1 0.1 0.5 0.1 0.5 0.7 0.9", r"a.txt:2: class 1.5 is not an integer"),
    ("0 12 10 30 10 30 35 0.9", r"a.txt:2: coordinate 12 is outside \[0, 1\].*normalised"),
    ("0 0.1 0.1 0.5 0.1 0.5 0.7 1.5", r"1 predictions have a score outside \[0, 1\] \(first: .*a.txt:2, score 1.5\)"),
])
def test_malformed_txt_line_names_file_and_line(tmp_path, line, message):
    folder = write_txt(tmp_path, {"a": f"0 0.1 0.1 0.5 0.1 0.5 0.7 0.9\n{line}\n"})
    with pytest.raises(InputError, match=message):
        external.load(folder, ground_truth())


@pytest.mark.parametrize("data, message", [
    ("", r"results.json is empty"),
    ("[]", r"results.json: holds no predictions"),
    ("[{\"image_id\": 10,", r"results.json: not valid JSON \(.*line 1"),
    (json.dumps({"images": [], "annotations": []}), r"expected a list of results.*looks like a ground-truth file"),
    ([entry(), entry(score=-0.1), entry(score=3)], r"2 predictions have a score outside \[0, 1\] \(first: .*entry 1,"),
    ([entry(), {"image_id": 10, "category_id": 1, "bbox": [0, 0, 1, 1]}], r"entry 1: score None is not a finite"),
    ([entry(bbox=[0, 0, -1, 1])], r"entry 0: bbox \[0, 0, -1, 1\] is not \[x, y, width, height\]"),
    ([entry(segmentation={"size": [80, 100], "counts": "abc"})], r"entry 0: RLE size \[80, 100\].*40 x 50"),
    ([entry(segmentation={"size": [40, 50], "counts": "zzzzzzzz"})], r"entry 0: RLE counts are not runs covering"),
    ([entry(segmentation={"size": [40, 50], "counts": "0W1"})], r"entry 0: RLE counts are not runs covering"),
    ([entry(segmentation={"size": [40, 50], "counts": [1000, 999]})], r"entry 0: RLE counts are not runs covering"),
    ([entry(segmentation=[[1, 2, 3]])], r"entry 0: segmentation must be .* polygons"),
    ([{"image_id": 10, "category_id": 1, "score": 0.5}], r"entry 0: has neither bbox nor segmentation"),
    ([{"category_id": 1, "score": 0.5, "bbox": [0, 0, 1, 1]}], r"entry 0: has no image_id or file_name"),
    ([entry(category_id="bone")], r"entry 0: category_id 'bone' is not an integer"),
])
def test_bad_json_names_file_and_entry(tmp_path, data, message):
    path = write_json(tmp_path, data)
    with pytest.raises(InputError, match=message):
        external.load(path, ground_truth())


def test_bad_txt_folders(tmp_path):
    (tmp_path / "nothing").mkdir()
    with pytest.raises(InputError, match="nothing: no .txt files.*save_txt=True save_conf=True"):
        external.load(tmp_path / "nothing", ground_truth())
    with pytest.raises(InputError, match="all 2 .txt files are empty"):
        external.load(write_txt(tmp_path, {"a": "", "b": "\n"}), ground_truth())
    boxes = write_txt(tmp_path / "boxes", {"a": "0 0.5 0.5 0.2 0.2 0.9\n", "b": "1 0.4 0.5 0.2 0.1 0.8\n"})
    with pytest.raises(InputError, match="look like boxes.*detection model"):
        external.load(boxes, ground_truth())
    with pytest.raises(InputError, match="pass the folder of Ultralytics .txt files"):
        external.load(boxes / "a.txt", ground_truth())
    with pytest.raises(FileNotFoundError, match="missing.json not found"):
        external.load(tmp_path / "missing.json", ground_truth())


# ----------------------------------------------------------------------------- matching images


def test_numeric_file_stems_make_integer_ids_ambiguous(tmp_path):
    """`yolo val save_json=True` writes image_id int(stem): 1 means 0001.jpg, but the split's id 1
    is 0002.jpg; auto refuses to guess, match_by says which."""
    gt = ground_truth(file_names=("0001.jpg", "0002.jpg"), ids=(0, 1))
    path = write_json(tmp_path, [entry(image_id=1)])
    with pytest.raises(InputError, match="1 integer image_ids are ambiguous, e.g. 1: it is image id 1, but the file named 1 is image id 0; "
                       "pass --match_by image_id.*--match_by file_stem"):
        external.load(path, gt)
    assert external.load(path, gt, match_by="file_stem")[0][0]["image_id"] == 0
    assert external.load(path, gt, match_by="image_id")[0][0]["image_id"] == 1
    string_ids = write_json(tmp_path, [entry(image_id="0002")], name="strings.json")
    assert external.load(string_ids, gt)[0][0]["image_id"] == 1  # a string id is a file stem


def test_two_split_images_with_one_stem_are_an_error(tmp_path):
    gt = ground_truth(file_names=("a/x.jpg", "b/x.png"))
    with pytest.raises(InputError, match="labels/x.txt: 2 images of the split are named 'x'"):
        external.load(write_txt(tmp_path, {"x": "0 0.1 0.1 0.5 0.1 0.5 0.7 0.9\n"}), gt)
