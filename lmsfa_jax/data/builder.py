"""TFDS builders for instance-segmentation folders (YOLO-seg or COCO), written without TensorFlow.

Records are array_record files read back with `tfds.data_source`. Features of one example:

  image          bytes    the original encoded file (JPEG/PNG/...), decode with OpenCV
  height, width  int32    size of the decoded image
  file_name      str      path relative to the source root
  image_id       int64    COCO image id, or the index in the sorted YOLO split
  patient_id     str      "" when unknown;  frame_id int32, -1 when unknown
  objects        Sequence of {label: ClassLabel, bbox: (4,) float32 xyxy original pixels,
                          is_crowd: bool, num_polygons: int32}
  polygon_sizes  (num_polygons_total,) int32  points per polygon, polygons in object order
  points         (num_points_total, 2) float32  all polygon vertices (x, y) in original pixels

Polygons are flattened because nested ragged sequences cannot be decoded without TensorFlow;
`reader.py` rebuilds the per-object lists. Each build stores the source's fingerprint and its build
report beside the data (`fingerprint.FILE_NAME`); `build.build_dataset` compares them before reusing it.
"""

import inspect
import logging
import pathlib

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from lmsfa_jax.data import archives
from lmsfa_jax.data import fingerprint
from lmsfa_jax.data import leaks
from lmsfa_jax.data import report as report_lib
from lmsfa_jax.data import source_example
from lmsfa_jax.data import sources
from lmsfa_jax.data import transforms

VERSION = tfds.core.Version("1.0.0")
RELEASE_NOTES = {"1.0.0": "Initial release."}


def features(class_names: list[str]) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Tensor(shape=(), dtype=np.object_),
            "height": tfds.features.Tensor(shape=(), dtype=np.int32),
            "width": tfds.features.Tensor(shape=(), dtype=np.int32),
            "file_name": tfds.features.Text(),
            "image_id": tfds.features.Tensor(shape=(), dtype=np.int64),
            "patient_id": tfds.features.Text(),
            "frame_id": tfds.features.Tensor(shape=(), dtype=np.int32),
            "objects": tfds.features.Sequence(
                {
                    "label": tfds.features.ClassLabel(names=class_names),
                    "bbox": tfds.features.Tensor(shape=(4,), dtype=np.float32),
                    "is_crowd": tfds.features.Tensor(shape=(), dtype=np.bool_),
                    "num_polygons": tfds.features.Tensor(shape=(), dtype=np.int32),
                }
            ),
            "polygon_sizes": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "points": tfds.features.Tensor(shape=(None, 2), dtype=np.float32),
        }
    )


def encode_example(example: source_example.SourceExample) -> dict:
    """A `SourceExample` as the feature dict above."""
    polygons = [p for obj in example.objects for p in obj.polygons]
    return {
        "image": example.image_bytes,
        "height": example.height,
        "width": example.width,
        "file_name": example.file_name,
        "image_id": example.image_id,
        "patient_id": example.patient_id,
        "frame_id": example.frame_id,
        "objects": {
            "label": np.array([o.label for o in example.objects], np.int64),
            "bbox": np.array(
                [transforms.polygons_box(o.polygons) for o in example.objects], np.float32
            ).reshape(-1, 4),
            "is_crowd": np.array([o.is_crowd for o in example.objects], np.bool_),
            "num_polygons": np.array([len(o.polygons) for o in example.objects], np.int32),
        },
        "polygon_sizes": np.array([len(p) for p in polygons], np.int32),
        "points": (np.concatenate(polygons) if polygons else np.zeros((0, 2))).astype(np.float32),
    }


def _normalised(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def label_map_for(source_names: list[str], class_names: list[str], where) -> dict[int, int]:
    """Source class id -> builder class id, matching names case/space/underscore-insensitively."""
    index = {_normalised(n): i for i, n in enumerate(class_names)}
    missing = [n for n in source_names if _normalised(n) not in index]
    if missing:
        raise report_lib.SourceError(
            f"{where}: class names {missing} are not among {class_names}; build it as a custom "
            "dataset instead: python -m lmsfa_jax.build_dataset --source ... --name ..."
        )
    return {i: index[_normalised(n)] for i, n in enumerate(source_names)}


class SegmentationBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Builds a YOLO-seg or COCO folder/archive into TFDS.

    Subclasses set `CLASS_NAMES`; the source is `source=` given to the constructor, or else the first
    folder or archive found in the download manager's `manual_dir`. Source class ids are mapped to
    `CLASS_NAMES` by name. After `download_and_prepare`, `build_report` lists what was skipped; it is
    stored with the source's fingerprint in the version folder.
    """

    VERSION = VERSION
    RELEASE_NOTES = RELEASE_NOTES
    CLASS_NAMES: list[str] = []
    DESCRIPTION = "Instance segmentation images with per-object polygons."

    def __init__(self, *, source=None, **kwargs):
        kwargs.setdefault("file_format", "array_record")
        self._source = source
        self.build_report = report_lib.BuildReport(class_names=list(self.CLASS_NAMES))
        super().__init__(**kwargs)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS 4.9.10's own version needs the undeclared `importlib_resources` backport for packaged
        # builders; outside zipapps it equals the file defining the class, which is what this returns.
        return epath.Path(inspect.getfile(cls))

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=features(self.CLASS_NAMES),
            supervised_keys=None,
        )

    def _locate_source(self, dl_manager) -> pathlib.Path:
        if self._source is not None:
            return pathlib.Path(self._source)
        manual_dir = pathlib.Path(dl_manager.manual_dir)
        found = sorted(p for p in manual_dir.iterdir() if archives.is_archive(p))
        folders = sorted(p for p in manual_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        if folders or not found:
            return manual_dir
        return found[0]

    def _download_and_prepare(self, dl_manager, download_config=None):
        self.build_report = report_lib.BuildReport(class_names=list(self.CLASS_NAMES))
        self._leaks = leaks.SplitLeakCheck()
        source = self._locate_source(dl_manager)
        logging.info("building %s from %s", self.name, source)
        stamp = fingerprint.compute(source, self.CLASS_NAMES, exclude=str(self.data_dir_root))
        with archives.opened(source) as root:  # an archive stays extracted until all splits are written
            self._root = root
            super()._download_and_prepare(dl_manager, download_config)
        # data_dir is the `incomplete.*` folder here: the fingerprint appears with the data, atomically.
        fingerprint.save(self.data_dir, stamp, self.build_report)
        logging.info("%s build summary:\n%s", self.name, self.build_report.summary())

    def _split_generators(self, dl_manager):
        del dl_manager  # the source was located in _download_and_prepare
        splits = sources.find_splits(self._root)
        if not splits:
            raise report_lib.SourceError(f"{self._root}: no train/val/test images found")
        if "test" not in splits:
            logging.warning("%s: the source has only the splits %s", self._root, splits)
        source_names = sources.read_class_names(self._root)
        label_map = label_map_for(source_names, self.CLASS_NAMES, self._root)
        return {split: self._generate_examples(split, len(source_names), label_map) for split in splits}

    def _generate_examples(self, split, num_source_classes, label_map):
        for ex in sources.iter_examples(self._root, split, num_source_classes, self.build_report, label_map):
            self.build_report.images[split] += 1
            self.build_report.objects[split] += len(ex.objects)
            self._leaks.add(split, ex.file_name, ex.image_bytes, self.build_report)
            yield f"{split}/{ex.file_name}", encode_example(ex)


def custom_builder_class(name: str, class_names: list[str]) -> type[SegmentationBuilder]:
    """A builder class for a user-named dataset with the given class names (not globally registered)."""
    if not name.isidentifier() or name != name.lower():
        raise report_lib.SourceError(
            f"dataset name {name!r} must be lower-case letters, digits and underscores"
        )
    return type(
        f"Custom_{name}",
        (SegmentationBuilder,),
        {
            "name": name,
            "CLASS_NAMES": list(class_names),
            "DESCRIPTION": f"Custom instance-segmentation dataset {name} ({', '.join(class_names)}).",
        },
        skip_registration=True,
    )
