"""Issue 10.7: a name built again from a changed source is an error suggesting --overwrite, overwrite
rebuilds (that dataset's version folder only), a reused build reports what is stored, and folders
left by a killed build are cleaned up."""

import pytest

import source_files
from lmsfa_jax.data import build
from lmsfa_jax.data import reader
from lmsfa_jax.data import report as report_lib

ONE = [f"0 {source_files.TRIANGLE}"]


def _objects(name, data_dir, split="train"):
    return sum(len(ex["labels"]) for ex in reader.open_split(name, data_dir, split))


def test_changed_source_needs_overwrite_and_overwrite_rebuilds(tmp_path):
    root = source_files.write_yolo(tmp_path / "src", {"train/x": ONE, "val/y": ONE})
    data_dir = tmp_path / "tfds"
    build.build_dataset(root, "mine", data_dir)
    source_files.write_yolo(tmp_path / "other", {"train/z": ONE})
    build.build_dataset(tmp_path / "other", "other", data_dir)

    built, report = build.build_dataset(root, "mine", data_dir)  # unchanged: reused, says so
    assert report.reused and report.class_names == ["a", "b"]
    assert report.summary().splitlines()[:4] == [
        "reused the existing build: its source and class names are unchanged",
        "classes: a, b",
        "train: 1 images, 1 objects",
        "val: 1 images, 1 objects",
    ]
    assert built.info.features["objects"]["label"].names == ["a", "b"]

    (root / "labels" / "train" / "x.txt").write_text(f"0 {source_files.TRIANGLE}\n1 {source_files.TRIANGLE}\n")
    with pytest.raises(report_lib.SourceError) as error:
        build.build_dataset(root, "mine", data_dir)
    message = str(error.value)
    assert "--overwrite" in message and "labels/train/x.txt (changed)" in message and "\n" not in message
    assert _objects("mine", data_dir) == 1  # the old build is untouched

    built, report = build.build_dataset(root, "mine", data_dir, overwrite=True)
    assert not report.reused and report.objects["train"] == 2
    assert _objects("mine", data_dir) == 2
    assert _objects("other", data_dir) == 1  # overwrite deleted nothing but mine's version folder
    _, report = build.build_dataset(root, "mine", data_dir)
    assert report.reused and report.objects["train"] == 2


def test_other_class_names_need_overwrite_and_the_summary_shows_the_stored_ones(tmp_path):
    root = source_files.write_yolo(tmp_path / "src", {"train/x": ONE})
    data_dir = tmp_path / "tfds"
    build.build_dataset(root, "named", data_dir)
    with pytest.raises(report_lib.SourceError, match=r"class names \['A', 'B'\] differ from the stored \['a', 'b'\]"):
        build.build_dataset(root, "named", data_dir, class_names=["A", "B"])
    built, report = build.build_dataset(root, "named", data_dir, class_names=["A", "B"], overwrite=True)
    assert report.class_names == ["A", "B"] == reader.class_names("named", data_dir)
    assert built.info.features["objects"]["label"].names == ["A", "B"]


def test_interrupted_build_leftovers_are_removed(tmp_path):
    root = source_files.write_yolo(tmp_path / "src", {"train/x": ONE})
    leftover = tmp_path / "tfds" / "tidy" / "incomplete.K1LL3D_1.0.0"
    (leftover / "junk").mkdir(parents=True)
    build.build_dataset(root, "tidy", tmp_path / "tfds")
    assert sorted(p.name for p in (tmp_path / "tfds" / "tidy").iterdir()) == ["1.0.0"]


def test_peld_builder_path_detects_a_changed_source(tmp_path):
    root = source_files.write_yolo(
        tmp_path / "src", {"train/x": ONE}, names=["adipose tissue", "bone", "ligamentum flavum", "nerve"]
    )
    data_dir = tmp_path / "tfds"
    build.build_dataset(root, "peld", data_dir)
    _, report = build.build_dataset(root, "peld", data_dir)
    assert report.reused and report.class_names[0] == "adipose tissue"
    source_files.write_image(root / "images" / "train" / "x.png", 200)
    with pytest.raises(report_lib.SourceError, match=r"peld/1\.0\.0 was built from another source .*--overwrite"):
        build.build_dataset(root, "peld", data_dir)
    _, report = build.build_dataset(root, "peld", data_dir, overwrite=True)
    assert not report.reused and report.images["train"] == 1
    (ex,) = reader.open_split("peld", data_dir, "train")
    assert ex["image"][0, 0, 0] == 200


def test_existing_build_without_a_fingerprint_is_not_trusted(tmp_path):
    root = source_files.write_yolo(tmp_path / "src", {"train/x": ONE})
    build.build_dataset(root, "old", tmp_path / "tfds")
    (tmp_path / "tfds" / "old" / "1.0.0" / "lmsfa_source.json").unlink()  # as built by earlier versions
    with pytest.raises(report_lib.SourceError, match="without a source fingerprint.*--overwrite"):
        build.build_dataset(root, "old", tmp_path / "tfds")
    _, report = build.build_dataset(root, "old", tmp_path / "tfds", overwrite=True)
    assert report.images["train"] == 1 and not report.reused
