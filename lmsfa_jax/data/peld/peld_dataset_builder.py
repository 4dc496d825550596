"""PELD dataset: 610 spinal endoscopy images of 61 patients with instance polygons of 4 tissues.

Built without TensorFlow into array_record; read back with `tfds.data_source("peld", data_dir=...)`
or `lmsfa_jax.data.reader.open_split`. The features are those of `lmsfa_jax.data.builder.features`.
"""

import tensorflow_datasets as tfds

from lmsfa_jax.data import builder

CLASS_NAMES = ["adipose tissue", "bone", "ligamentum flavum", "nerve"]


class Builder(builder.SegmentationBuilder):
    """DatasetBuilder for PELD (manual download)."""

    name = "peld"
    CLASS_NAMES = CLASS_NAMES
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
  PELD cannot be downloaded automatically. Get the archive from the Google Drive link in the README
  of https://github.com/hhwmortal/PELD-Instance-segmentation (the authors' release for "A Lightweight
  Multi-Scale Attention Framework for Real-Time Spinal Endoscopic Instance Segmentation",
  arXiv 2512.21984). Put either the downloaded archive (.zip / .tar / .tar.gz) or its extracted
  folder into the manual directory — by default ~/tensorflow_datasets/downloads/manual/, or the one
  given with `tfds build ... --manual_dir DIR` / DownloadConfig(manual_dir=DIR). Accepted layouts:
  Ultralytics YOLO-seg (images/{train,val,test}, labels/{train,val,test}/*.txt, data YAML with
  `names`) or COCO instance JSON (polygons or RLE). Class names are matched to adipose tissue, bone,
  ligamentum flavum, nerve by name (case, spaces and underscores ignored).
  """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=builder.features(self.CLASS_NAMES),
            homepage="https://github.com/hhwmortal/PELD-Instance-segmentation",
            supervised_keys=None,
        )
