"""Random access to the examples of a built TFDS split, decoded to numpy (no TensorFlow).

    reader = open_split("peld", "~/tensorflow_datasets", "val")
    reader.class_names            # ['adipose tissue', 'bone', 'ligamentum flavum', 'nerve']
    len(reader); ex = reader[i]   # i in [0, len)

An example is a dict:
  image      (H, W, 3) uint8 RGB          file_name  str      image_id  int
  height, width  int                      patient_id str ("" unknown), frame_id int (-1 unknown)
  labels     (K,) int32                   boxes      (K, 4) float32 xyxy in original pixels
  is_crowd   (K,) bool                    polygons   list of K lists of (P, 2) float32 (x, y) arrays
"""

import pathlib

import cv2
import numpy as np
import tensorflow_datasets as tfds

from lmsfa_jax.errors import first_line


class DatasetNotBuiltError(FileNotFoundError):
    """The requested TFDS dataset has not been built into the data directory."""


def _build_hint(name: str) -> str:
    return (
        f"build it with `python -m lmsfa_jax.build_dataset --source DIR_OR_ARCHIVE --name {name} "
        "--data_dir DATA_DIR`"
    )


def load_builder(name: str, data_dir) -> tfds.core.DatasetBuilder:
    """The read-only builder of a prepared dataset; raises DatasetNotBuiltError naming the fix."""
    data_dir = pathlib.Path(data_dir).expanduser()
    dataset_dir = data_dir / name
    versions = (
        sorted(p for p in dataset_dir.glob("*/*") if (p / "dataset_info.json").is_file())
        if dataset_dir.is_dir()
        else []
    )
    versions += (
        sorted(p for p in dataset_dir.glob("*") if (p / "dataset_info.json").is_file())
        if dataset_dir.is_dir()
        else []
    )
    if not versions:
        raise DatasetNotBuiltError(f"TFDS dataset {name!r} is not built in {data_dir}; {_build_hint(name)}")
    return tfds.builder_from_directory(str(max(versions, key=lambda p: p.name)))


def class_names(name: str, data_dir) -> list[str]:
    return list(load_builder(name, data_dir).info.features["objects"]["label"].names)


def decode_image(image_bytes: bytes) -> np.ndarray:
    """Encoded bytes -> (H, W, 3) uint8 RGB; ValueError (one line) if OpenCV cannot decode them."""
    try:
        image = cv2.imdecode(np.frombuffer(image_bytes, np.uint8), cv2.IMREAD_COLOR) if image_bytes else None
    except cv2.error as error:  # e.g. a header declaring more than OPENCV_IO_MAX_IMAGE_PIXELS pixels
        raise ValueError(f"cannot decode image bytes ({first_line(error)})") from None
    if image is None:
        raise ValueError("cannot decode image bytes")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def decode_record(record: dict, decode_pixels: bool = True) -> dict:
    """A record from the TFDS data source as the example dict of the module docstring."""
    objects = record["objects"]
    labels = np.asarray(objects["label"], np.int32).reshape(-1)
    num_polygons = np.asarray(objects["num_polygons"], np.int32).reshape(-1)
    sizes = np.asarray(record["polygon_sizes"], np.int32).reshape(-1)
    points = np.asarray(record["points"], np.float32).reshape(-1, 2)
    flat = np.split(points, np.cumsum(sizes)[:-1]) if len(sizes) else []
    starts = np.concatenate([[0], np.cumsum(num_polygons)])
    example = {
        "file_name": _text(record["file_name"]),
        "image_id": int(record["image_id"]),
        "height": int(record["height"]),
        "width": int(record["width"]),
        "patient_id": _text(record["patient_id"]),
        "frame_id": int(record["frame_id"]),
        "labels": labels,
        "boxes": np.asarray(objects["bbox"], np.float32).reshape(-1, 4),
        "is_crowd": np.asarray(objects["is_crowd"], np.bool_).reshape(-1),
        "polygons": [list(flat[starts[k] : starts[k + 1]]) for k in range(len(labels))],
    }
    if decode_pixels:
        example["image"] = decode_image(record["image"])
    return example


class SplitReader:
    """Indexable view of one split; see the module docstring for the example layout."""

    def __init__(self, name: str, data_dir, split: str):
        builder = load_builder(name, data_dir)
        if split not in builder.info.splits:
            raise KeyError(
                f"dataset {name!r} in {data_dir} has no split {split!r}; "
                f"it has {sorted(builder.info.splits)}"
            )
        self.name, self.split = name, split
        self.class_names = list(builder.info.features["objects"]["label"].names)
        self._source = builder.as_data_source(split=split)

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict:
        return decode_record(self._source[int(index)])

    def record(self, index: int) -> dict:
        """The undecoded record (image still encoded bytes)."""
        return self._source[int(index)]

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def open_split(name: str, data_dir, split: str) -> SplitReader:
    return SplitReader(name, data_dir, split)
