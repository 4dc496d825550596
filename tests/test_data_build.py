"""Building YOLO-seg / COCO folders into TFDS without TensorFlow and reading every example back."""

import json
import pathlib
import shutil
import sys

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds
from pycocotools import mask as mask_utils

from lmsfa_jax.data import build
from lmsfa_jax.data import reader
from lmsfa_jax.data import synthetic
from lmsfa_jax.data import transforms


def _iou(a, b):
    union = np.logical_or(a, b).sum()
    return np.logical_and(a, b).sum() / union if union else 1.0


def _write_two_class_folder(root: pathlib.Path):
    """Roboflow-style layout ({split}/images, {split}/labels) with a dict `names` YAML."""
    polygons = {
        "train/a": [(1, [[0.1, 0.1], [0.5, 0.1], [0.5, 0.4]])],
        "train/b": [
            (0, [[0.2, 0.2], [0.8, 0.2], [0.8, 0.9], [0.2, 0.9]]),
            (1, [[0.6, 0.6], [0.9, 0.6], [0.75, 0.95]]),
        ],
        "valid/c": [(0, [[0.3, 0.3], [0.7, 0.3], [0.5, 0.7]])],
    }
    for key, objects in polygons.items():
        split, stem = key.split("/")
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "labels").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / split / "images" / f"{stem}.png"), np.full((30, 40, 3), 60 + ord(stem), np.uint8))
        lines = [" ".join([str(c)] + [str(v) for v in np.ravel(p)]) for c, p in objects]
        (root / split / "labels" / f"{stem}.txt").write_text("\n".join(lines))
    (root / "data.yaml").write_text("nc: 2\nnames:\n  0: tooth\n  1: caries\n")
    return polygons


def test_custom_two_class_yolo_folder_builds_under_its_own_name(tmp_path):
    polygons = _write_two_class_folder(tmp_path / "teeth")
    built, report = build.build_dataset(tmp_path / "teeth", "my_teeth", tmp_path / "tfds")
    assert not report.issues
    assert reader.class_names("my_teeth", tmp_path / "tfds") == ["tooth", "caries"]
    assert sorted(tfds.data_source("my_teeth", data_dir=str(tmp_path / "tfds"))) == ["train", "val"]
    examples = {
        ex["file_name"]: ex
        for split in ("train", "val")
        for ex in reader.open_split("my_teeth", tmp_path / "tfds", split)
    }
    assert sorted(examples) == ["train/images/a.png", "train/images/b.png", "valid/images/c.png"]
    for key, objects in polygons.items():
        split, stem = key.split("/")
        ex = examples[f"{split}/images/{stem}.png"]
        assert ex["image"].shape == (30, 40, 3) and (ex["height"], ex["width"]) == (30, 40)
        np.testing.assert_array_equal(ex["labels"], [c for c, _ in objects])
        for (_, points), got in zip(objects, ex["polygons"]):
            np.testing.assert_allclose(got[0], np.array(points) * [40, 30], atol=1e-4)
        np.testing.assert_allclose(ex["boxes"][0][:2], np.min(objects[0][1], 0) * [40, 30], atol=1e-4)
    assert built.name == "my_teeth"


def _source_masks_yolo(root, file_name, height, width):
    label = (root / file_name.replace("images", "labels", 1)).with_suffix(".txt")
    masks = []
    for line in label.read_text().splitlines():
        values = np.array(line.split()[1:], np.float32).reshape(-1, 2) * [width, height]
        masks.append(transforms.rasterize([values.astype(np.float32)], height, width))
    return masks


def _source_masks_coco(root, split):
    data = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
    images = {im["id"]: im for im in data["images"]}
    out = {}
    for ann in data["annotations"]:
        im = images[ann["image_id"]]
        seg = ann["segmentation"]
        if isinstance(seg, dict):
            mask = mask_utils.decode(seg)
        else:
            mask = transforms.rasterize(
                [np.array(p, np.float32).reshape(-1, 2) for p in seg], im["height"], im["width"]
            )
        out.setdefault(f"images/{split}/{im['file_name']}", []).append(mask)
    return out


@pytest.mark.parametrize("layout,archive", [("yolo", False), ("coco", False), ("yolo", True)])
def test_synthetic_source_round_trips_with_identical_masks(tmp_path, layout, archive):
    counts = {"train": 3, "val": 2}
    root = synthetic.write_dataset(tmp_path / "src", counts, size=64, seed=1, layout=layout)
    source = root
    if archive:
        source = pathlib.Path(shutil.make_archive(str(tmp_path / "peld_archive"), "zip", tmp_path, "src"))
    _, report = build.build_dataset(source, "synthetic_roundtrip", tmp_path / "tfds")
    assert not report.issues, report.summary()
    assert "tensorflow" not in sys.modules
    coco_masks = {}
    if layout == "coco":
        for split in counts:
            coco_masks.update(_source_masks_coco(root, split))
    num_objects = 0
    for split, n in counts.items():
        split_reader = reader.open_split("synthetic_roundtrip", tmp_path / "tfds", split)
        assert split_reader.class_names == synthetic.CLASS_NAMES
        assert len(split_reader) == n
        for ex in split_reader:
            h, w = ex["height"], ex["width"]
            expected = (
                coco_masks[ex["file_name"]]
                if layout == "coco"
                else _source_masks_yolo(root, ex["file_name"], h, w)
            )
            assert len(expected) == len(ex["polygons"])
            assert ex["patient_id"].startswith("p") and ex["frame_id"] >= 0
            np.testing.assert_array_equal(ex["image"], cv2.imread(str(root / ex["file_name"]))[..., ::-1])
            for want, polygons, box in zip(expected, ex["polygons"], ex["boxes"]):
                got = transforms.rasterize(polygons, h, w)
                assert _iou(got, want) >= 0.99
                ys, xs = np.nonzero(got)
                np.testing.assert_allclose(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=1.01)
                num_objects += 1
    assert num_objects == sum(report.objects.values()) > 0


def test_reading_a_dataset_that_is_not_built_names_the_fix(tmp_path):
    with pytest.raises(reader.DatasetNotBuiltError) as error:
        reader.open_split("my_endo", tmp_path / "nowhere", "train")
    message = str(error.value)
    assert "my_endo" in message and str(tmp_path / "nowhere") in message
    assert "python -m lmsfa_jax.build_dataset --source" in message and "--name my_endo" in message


def test_ensure_synthetic_dataset_builds_once(tmp_path):
    name, data_dir = synthetic.ensure_synthetic_dataset(tmp_path, num_train=2, num_val=1, size=32, seed=0)
    info_file = next(pathlib.Path(data_dir).rglob("dataset_info.json"))
    stamp = info_file.stat().st_mtime_ns
    assert synthetic.ensure_synthetic_dataset(tmp_path, 2, 1, 32, 0) == (name, data_dir)
    assert info_file.stat().st_mtime_ns == stamp
    assert len(reader.open_split(name, data_dir, "train")) == 2
    assert len(reader.open_split(name, data_dir, "val")) == 1


def test_synthetic_generator_is_deterministic_and_has_all_classes():
    rng_a, rng_b = np.random.default_rng([3, 0, 5]), np.random.default_rng([3, 0, 5])
    image_a, objects_a = synthetic.generate_image(rng_a, 96)
    image_b, objects_b = synthetic.generate_image(rng_b, 96)
    np.testing.assert_array_equal(image_a, image_b)
    assert [l for l, _ in objects_a] == [l for l, _ in objects_b]
    labels = {
        l for seed in range(12) for l, _ in synthetic.generate_image(np.random.default_rng(seed), 64)[1]
    }
    assert labels == {0, 1, 2, 3}
    assert image_a[0, 0].max() == 0 and image_a[48, 48].max() > 0  # dark outside the circular field of view


def test_peld_builder_matches_source_class_names_by_name(tmp_path):
    root = tmp_path / "src"
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    cv2.imwrite(str(root / "images" / "train" / "x.png"), np.zeros((16, 16, 3), np.uint8))
    (root / "labels" / "train" / "x.txt").write_text("0 0.1 0.1 0.5 0.1 0.5 0.5\n2 0.1 0.1 0.5 0.1 0.5 0.5\n")
    (root / "data.yaml").write_text("names: [Nerve, bone, Adipose_Tissue, ligamentum flavum]\n")
    _, report = build.build_dataset(root, "peld", tmp_path / "tfds")
    assert report.images["train"] == 1
    (ex,) = reader.open_split("peld", tmp_path / "tfds", "train")
    np.testing.assert_array_equal(ex["labels"], [3, 0])  # nerve, adipose tissue in PELD order
    (root / "data.yaml").write_text("names: [nerve, bone, fat, ligamentum flavum]\n")
    with pytest.raises(ValueError, match=r"\['fat'\] are not among"):
        build.build_dataset(root, "peld", tmp_path / "other_tfds")
