"""Where a run's metrics go: `WORKDIR/metrics.jsonl` and TensorBoard event files.

    writer = MetricWriter(workdir, resume_epoch=0)
    writer.write_epoch(record)                  # {"epoch", "step", "train/box", ..., "val/..."}
    writer.write_images(epoch, {"val/overlay_0": rgb_uint8, ...})
    writer.close()

metrics.jsonl holds one JSON record per epoch. The event files (tensorboardX, no TensorFlow) live
in `WORKDIR/tensorboard/`, one scalar per numeric record field with the field's name as its tag
(`train/loss`, `lr`, `images_per_s`, `val/mask_mAP50`, ...), the epoch as the step; view them with
`tensorboard --logdir runs/`. A resumed run drops the records after the epoch it resumes from
(from metrics.jsonl, and TensorBoard purges them from its view).
"""
import json
import math
import pathlib

import numpy as np
from tensorboardX import SummaryWriter

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class MetricWriter:
    """Writes epoch records to metrics.jsonl and TensorBoard; `enabled=False` writes nothing
    (every process but the first of a multi-host run)."""

    def __init__(self, workdir, resume_epoch: int = 0, enabled: bool = True):
        self.path = pathlib.Path(workdir).expanduser() / METRICS_FILE
        self.enabled = enabled
        self._summary = None
        if not enabled:
            return
        _keep_epochs(self.path, resume_epoch)
        self._summary = SummaryWriter(str(self.path.parent / TENSORBOARD_DIR),
                                      purge_step=resume_epoch + 1 if resume_epoch else None)

    def write_epoch(self, record: dict) -> None:
        """Appends `record` (with an "epoch") to metrics.jsonl and its numeric fields to TensorBoard."""
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        for tag, value in record.items():
            if tag not in ("epoch", "step") and isinstance(value, (int, float)) and math.isfinite(value):
                self._summary.add_scalar(tag, value, record["epoch"])
        self._summary.flush()

    def write_images(self, epoch: int, images: dict) -> None:
        """RGB uint8 (H, W, 3) images under their tags at step `epoch`."""
        if not self.enabled:
            return
        for tag, image in images.items():
            self._summary.add_image(tag, np.asarray(image), epoch, dataformats="HWC")
        self._summary.flush()

    def close(self) -> None:
        if self._summary is not None:
            self._summary.close()


def _keep_epochs(path: pathlib.Path, epochs: int) -> None:
    """Drops metrics.jsonl records after `epochs` (written after the checkpoint a run resumes from)."""
    if path.is_file():
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        path.write_text("".join(line + "\n" for line in lines if json.loads(line)["epoch"] <= epochs))
