"""PELD builder test on dummy_data/ (plain pytest, TensorFlow absent)."""

import pathlib
import sys

import numpy as np
import tensorflow_datasets as tfds

from lmsfa_jax.data import peld

DUMMY_DIR = pathlib.Path(__file__).parent / "dummy_data"


def test_peld_builds_from_manual_dir_and_reads_back(tmp_path):
    builder = peld.Builder(data_dir=str(tmp_path))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(DUMMY_DIR)))
    sources = tfds.data_source("peld", data_dir=str(tmp_path))
    assert {split: len(sources[split]) for split in sources} == {"train": 3, "val": 2, "test": 1}
    assert builder.info.features["objects"]["label"].names == peld.peld_dataset_builder.CLASS_NAMES
    record = sources["train"][0]
    assert bytes(record["image"][:2]) == b"\xff\xd8"  # original JPEG bytes
    assert len(record["objects"]["label"]) == len(record["objects"]["num_polygons"]) > 0
    assert int(np.sum(record["polygon_sizes"])) == len(record["points"])
    assert not builder.build_report.issues
    assert "tensorflow" not in sys.modules
