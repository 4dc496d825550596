"""Reading an instance-segmentation source: format detection and the per-format readers behind one API.

A source is a folder, or a .zip / .tar / .tar.gz archive of one (`archives.opened`; a single top-level
folder inside is looked through), in one of two formats:

* YOLO-seg (`yolo_source`): images/labels folders per split and a data YAML with `names`.
* COCO (`coco_source`): instance JSON files per split, polygons or RLE.

Split names `valid`/`validation` become `val` (`naming.split_of`). Every example is yielded as a
`source_example.SourceExample` with polygons in original pixel coordinates; problems go to a
`report.BuildReport`, and those that stop the build raise `report.SourceError`.
"""

import pathlib

from lmsfa_jax.data import coco_source
from lmsfa_jax.data import naming
from lmsfa_jax.data import report as report_lib
from lmsfa_jax.data import yolo_source


def detect_format(root: pathlib.Path) -> str:
    """'coco' when the root holds COCO instance JSON files, 'yolo' when it holds label .txt files."""
    if coco_source.instance_files(root):
        return "coco"
    if yolo_source.has_label_files(root) or yolo_source.yaml_file(root):
        return "yolo"
    raise report_lib.SourceError(
        f"{root}: found neither COCO instance JSON files nor a YOLO-seg labels/ folder"
    )


def read_class_names(root: pathlib.Path) -> list[str]:
    """Class names of the dataset, in id order, from its data YAML or COCO categories."""
    if detect_format(root) == "coco":
        return coco_source.class_names_and_ids(root)[0]
    return yolo_source.class_names(root)


def find_splits(root: pathlib.Path) -> list[str]:
    """Splits present in the source, in train/val/test order."""
    if detect_format(root) == "coco":
        present = {split for split, _ in coco_source.instance_files(root)}
    else:
        present = {naming.split_of(p.relative_to(root)) for p in yolo_source.image_files(root)}
    return [s for s in ("train", "val", "test") if s in present]


def iter_examples(
    root: pathlib.Path,
    split: str,
    num_classes: int,
    report: report_lib.BuildReport,
    label_map: dict[int, int] | None = None,
):
    """Yields the `SourceExample`s of one split; `label_map` renumbers source class ids (default identity)."""
    reader = coco_source if detect_format(root) == "coco" else yolo_source
    yield from reader.examples(root, split, num_classes, report, label_map)
