"""One image of a source with its objects, as the YOLO and COCO parsers yield it, and its image check."""

import dataclasses
import pathlib
from typing import NamedTuple

import cv2
import numpy as np

from lmsfa_jax.data import naming
from lmsfa_jax.data import report as report_lib


@dataclasses.dataclass
class SourceObject:
    label: int
    polygons: list  # of (P, 2) float32 arrays, (x, y) in original pixels, P >= 3
    is_crowd: bool = False


@dataclasses.dataclass
class SourceExample:
    file_name: str  # path relative to the dataset root
    image_id: int
    image_bytes: bytes  # the original encoded file
    height: int
    width: int
    objects: list  # of SourceObject
    patient_id: str = ""  # "" when the source does not say
    frame_id: int = -1  # -1 when the source does not say


class EncodedImage(NamedTuple):
    data: bytes  # the original encoded file
    height: int
    width: int


def read_image(path: pathlib.Path, root: pathlib.Path, report: report_lib.BuildReport) -> EncodedImage | None:
    """The image file `path` (under `root`) once OpenCV decodes it, or None after reporting why not.

    Images whose header declares more pixels than OpenCV's limit (OPENCV_IO_MAX_IMAGE_PIXELS, 2**30
    by default) are skipped as too large rather than decoded.
    """
    rel = path.relative_to(root)
    image_bytes = path.read_bytes()
    array = np.frombuffer(image_bytes, np.uint8)
    try:
        image = cv2.imdecode(array, cv2.IMREAD_COLOR) if array.size else None
    except cv2.error as error:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(error):
            report.add(
                report_lib.IMAGE_TOO_LARGE,
                rel,
                None,
                "its header declares more pixels than OpenCV decodes "
                "(raise the environment variable OPENCV_IO_MAX_IMAGE_PIXELS to allow it)",
            )
            return None
        image = None
    if image is None:
        report.add(report_lib.UNREADABLE_IMAGE, rel, None, "cannot be decoded as an image")
        return None
    return EncodedImage(image_bytes, image.shape[0], image.shape[1])


def make_example(path, root, image_id: int, image: EncodedImage, objects: list) -> SourceExample:
    """The `SourceExample` of image file `path` under `root`; patient/frame come from its name."""
    rel = path.relative_to(root)
    patient, frame = naming.patient_and_frame(rel)
    return SourceExample(str(rel), image_id, image.data, image.height, image.width, objects, patient, frame)
