"""Issue 10.4: the same image in two splits (same bytes, or same file name) is reported with both paths."""

import shutil

import source_files
from lmsfa_jax.data import build
from lmsfa_jax.data import report as report_lib


def test_images_shared_between_splits_are_reported_with_both_paths(tmp_path):
    one = [f"0 {source_files.TRIANGLE}"]
    root = source_files.write_yolo(
        tmp_path / "src", {"train/a": one, "train/b": one, "val/a": one, "val/c": one, "test/d": one}
    )
    shutil.copy(root / "images" / "train" / "b.png", root / "images" / "val" / "c.png")  # same bytes
    shutil.copy(root / "images" / "train" / "b.png", root / "images" / "test" / "d.png")  # again, in test

    _, report = build.build_dataset(root, "leaky", tmp_path / "tfds")

    assert report.counts() == {report_lib.SPLIT_LEAK_SAME_CONTENT: 2, report_lib.SPLIT_LEAK_SAME_NAME: 1}
    content = sorted((i.path, i.message) for i in report.of_kind(report_lib.SPLIT_LEAK_SAME_CONTENT))
    assert [path for path, _ in content] == ["images/test/d.png", "images/val/c.png"]
    assert all("images/train/b.png" in message for _, message in content)
    (name,) = report.of_kind(report_lib.SPLIT_LEAK_SAME_NAME)
    assert name.path == "images/val/a.png" and "images/train/a.png" in name.message
    assert "split_leak_same_content: 2" in report.summary()
    assert dict(report.images) == {"train": 2, "val": 2, "test": 1}  # reported, nothing dropped
