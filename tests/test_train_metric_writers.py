"""Metric writers: metrics.jsonl and TensorBoard event files, read back with TensorBoard's reader."""
import json

import numpy as np
from tensorboard.backend.event_processing import event_accumulator

from lmsfa_jax.training import metric_writers


def _record(epoch, validated):
    record = {"epoch": epoch, "step": 10 * epoch, "train/loss": 5.0 / epoch, "train/box": 1.0,
              "lr": 0.01, "images_per_s": 20.0 + epoch}
    if validated:
        record.update({"val/box_mAP50": 0.1 * epoch, "val/mask_mAP50-95": 0.05 * epoch})
    return record


def _read(workdir):
    accumulator = event_accumulator.EventAccumulator(
        str(workdir / metric_writers.TENSORBOARD_DIR), size_guidance={event_accumulator.IMAGES: 0})
    accumulator.Reload()
    return accumulator


def test_scalars_and_images_reach_tensorboard_and_jsonl(tmp_path):
    writer = metric_writers.MetricWriter(tmp_path)
    overlay = np.zeros((48, 64, 3), np.uint8)
    overlay[:, :32] = (255, 0, 0)
    for epoch in (1, 2, 3):
        writer.write_epoch(_record(epoch, validated=epoch != 2))
    writer.write_images(3, {"val/overlay_0": overlay})
    writer.close()

    events = _read(tmp_path)
    tags = events.Tags()
    assert {"train/loss", "train/box", "lr", "images_per_s", "val/box_mAP50", "val/mask_mAP50-95"} <= set(
        tags["scalars"])
    assert "epoch" not in tags["scalars"] and "step" not in tags["scalars"]
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3]
    np.testing.assert_allclose([e.value for e in loss], [5.0, 2.5, 5.0 / 3], rtol=1e-6)
    assert [e.step for e in events.Scalars("val/box_mAP50")] == [1, 3]
    image = events.Images("val/overlay_0")
    assert len(image) == 1 and (image[0].width, image[0].height, image[0].step) == (64, 48, 3)
    lines = [json.loads(line) for line in (tmp_path / metric_writers.METRICS_FILE).read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3] and lines[1] == _record(2, validated=False)


def test_a_resumed_run_drops_the_records_after_its_checkpoint(tmp_path):
    writer = metric_writers.MetricWriter(tmp_path)
    for epoch in (1, 2, 3):
        writer.write_epoch(_record(epoch, validated=False))
    writer.close()
    writer = metric_writers.MetricWriter(tmp_path, resume_epoch=2)  # epoch 3 is re-run
    writer.write_epoch({**_record(3, validated=False), "train/loss": 9.0})
    writer.close()
    lines = [json.loads(line) for line in (tmp_path / metric_writers.METRICS_FILE).read_text().splitlines()]
    assert [(r["epoch"], r["train/loss"]) for r in lines] == [(1, 5.0), (2, 2.5), (3, 9.0)]
    assert _read(tmp_path).Scalars("train/loss")[-1].value == 9.0


def test_a_disabled_writer_writes_nothing(tmp_path):
    writer = metric_writers.MetricWriter(tmp_path, enabled=False)
    writer.write_epoch(_record(1, validated=True))
    writer.write_images(1, {"val/overlay_0": np.zeros((8, 8, 3), np.uint8)})
    writer.close()
    assert list(tmp_path.iterdir()) == []
