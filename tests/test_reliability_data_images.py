"""Issue 10.6: an image whose header exceeds OpenCV's pixel limit is skipped with its file named."""

import struct
import zlib

import cv2
import numpy as np

import source_files
from lmsfa_jax.data import build
from lmsfa_jax.data import reader
from lmsfa_jax.data import report as report_lib


def _png_claiming(width: int, height: int) -> bytes:
    """A small valid PNG whose IHDR chunk is rewritten to declare width x height (CRC fixed)."""
    png = bytearray(cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes())
    png[16:24] = struct.pack(">II", width, height)  # after the signature, chunk length and b"IHDR"
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    return bytes(png)


def test_image_over_the_decoder_pixel_limit_is_skipped_and_named(tmp_path):
    one = [f"0 {source_files.TRIANGLE}"]
    root = source_files.write_yolo(tmp_path / "src", {"train/ok": one, "train/huge": one})
    (root / "images" / "train" / "huge.png").write_bytes(_png_claiming(60000, 60000))

    _, report = build.build_dataset(root, "huge", tmp_path / "tfds")

    assert report.counts() == {report_lib.IMAGE_TOO_LARGE: 1}
    (issue,) = report.issues
    assert issue.path == "images/train/huge.png" and "OPENCV_IO_MAX_IMAGE_PIXELS" in issue.message
    assert [ex["file_name"] for ex in reader.open_split("huge", tmp_path / "tfds", "train")] == [
        "images/train/ok.png"
    ]
