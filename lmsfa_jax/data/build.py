"""Building a YOLO-seg or COCO folder/archive into TFDS under a chosen name (library; no TensorFlow).

    builder, report = build_dataset(source, name, data_dir, class_names=None, overwrite=False)

The command line is `python -m lmsfa_jax.build_dataset` (or `lmsfa-build-dataset`). A name that is
already built is reused only when its stored source fingerprint matches the source (files and class
names); otherwise the build stops with a `report.SourceError` suggesting `--overwrite`, which deletes
that one version folder and builds again. `incomplete.*` folders left by a killed build are removed.
"""

import logging
import pathlib
import shutil
import sys

import tensorflow_datasets as tfds

from lmsfa_jax.data import archives
from lmsfa_jax.data import builder as builder_lib
from lmsfa_jax.data import fingerprint
from lmsfa_jax.data import peld
from lmsfa_jax.data import report as report_lib
from lmsfa_jax.data import sources


def _builder_class(source, name: str, class_names: list[str] | None):
    """The registered PELD builder for "peld", else a custom one with the given or the source's names."""
    if name == "peld":
        return peld.Builder
    if class_names is None:
        with archives.opened(source) as root:
            class_names = sources.read_class_names(root)
    return builder_lib.custom_builder_class(name, class_names)


def _remove_incomplete_builds(dataset_dir: pathlib.Path) -> None:
    for leftover in sorted(dataset_dir.glob("incomplete.*")):
        if leftover.is_dir() and not leftover.is_symlink():
            logging.info("removing %s, left by an interrupted build", leftover)
            shutil.rmtree(leftover)


def _reuse(version_dir: pathlib.Path, source, class_names: list[str], data_dir: pathlib.Path):
    """(read-only builder, stored report) of an existing build whose source is unchanged."""
    stored = fingerprint.load(version_dir)
    if stored is None:
        raise report_lib.SourceError(
            f"{version_dir}: existing build without a source fingerprint (older lmsfa_jax or an "
            f"interrupted build), so it cannot be checked against {source}; rebuild it with --overwrite"
        )
    stamp, report = stored
    current = fingerprint.compute(source, class_names, exclude=data_dir, previous=stamp)
    difference = fingerprint.difference(stamp, current)
    if difference is not None:
        raise report_lib.SourceError(
            f"{version_dir} was built from another source than {source} ({difference}); "
            "rebuild it with --overwrite, or build under another --name"
        )
    report.reused = True
    return tfds.builder_from_directory(str(version_dir)), report


def build_dataset(source, name: str, data_dir, class_names: list[str] | None = None, overwrite: bool = False):
    """Builds a YOLO-seg/COCO folder or archive into TFDS as `name` -> (builder, report.BuildReport).

    Class names default to the source's YAML `names` / COCO categories, in their order; the name
    "peld" uses the registered PELD builder (class names fixed, matched by name). An existing build
    is reused when its source is unchanged (the report then says so and is the stored one); a changed
    source raises `report.SourceError` unless `overwrite`, which deletes `data_dir/name/<version>`
    (nothing else) and builds again.
    """
    source = pathlib.Path(source).expanduser()
    data_dir = pathlib.Path(data_dir).expanduser()
    builder_cls = _builder_class(source, name, class_names)
    dataset_dir = data_dir / name
    version_dir = dataset_dir / str(builder_cls.VERSION)
    if dataset_dir.is_dir():
        _remove_incomplete_builds(dataset_dir)
    if version_dir.exists():
        if not overwrite:
            return _reuse(version_dir, source, builder_cls.CLASS_NAMES, data_dir)
        logging.info("overwrite: deleting the previous build %s", version_dir)
        shutil.rmtree(version_dir)
    builder = builder_cls(source=source, data_dir=str(data_dir))
    builder.download_and_prepare()
    return builder, builder.build_report


if __name__ == "__main__":
    sys.exit("moved: use python -m lmsfa_jax.build_dataset (or lmsfa-build-dataset)")
