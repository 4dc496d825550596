"""Issue 10, category 11: a NaN/inf loss or gradient never reaches the parameters, the EMA or a
checkpoint; the step is skipped and counted, and `max_consecutive_nonfinite` skips in a row stop
the run naming the epoch and step, the last good checkpoint intact.

NaNs are injected deterministically as NaN images in chosen batches of the tiny synthetic run of
test_train_loop.py (same shapes and schedule, so the compiled step is shared through the cache).
"""
import json

import jax
import numpy as np
import pytest

from lmsfa_jax.data import pipeline as pipeline_lib
from lmsfa_jax.training import checkpoints
from lmsfa_jax.training import config as config_lib
from lmsfa_jax.training import loop

STEPS_PER_EPOCH = 4
POISONED = {(0, 1)} | {(1, b) for b in range(STEPS_PER_EPOCH)}   # (epoch, batch): one, then a whole epoch


def _config():
    config = config_lib.default_config()  # as test_train_loop.py: batch 1, 64 px, 5 epochs of 4 steps
    config.batch_size, config.epochs = 1, 5
    config.synthetic.update(enabled=True, num_train=STEPS_PER_EPOCH, num_val=2, size=64)
    config.data.update(image_size=64, max_instances=8, mosaic=0.0, close_mosaic=0)
    config.eval.every_epochs = 0
    config.checkpoint.every_epochs = 1
    config.max_consecutive_nonfinite = 3
    return config


def test_nonfinite_steps_are_skipped_counted_and_stop_the_run(tmp_path, monkeypatch):
    epoch_batches = pipeline_lib.InputPipeline.epoch

    def with_nan_images(self, epoch):
        for index, batch in enumerate(epoch_batches(self, epoch)):
            if (epoch, index) in POISONED:
                batch = {**batch, "images": np.full_like(batch["images"], np.nan)}
            yield batch

    monkeypatch.setattr(pipeline_lib.InputPipeline, "epoch", with_nan_images)
    with pytest.raises(loop.NonFiniteTrainingError) as error:
        loop.train_and_evaluate(_config(), tmp_path)
    message = str(error.value)
    # Epoch 2 is steps 5-8, all NaN: the third skip in a row is step 7.
    assert "training stopped in epoch 2 at step 7: the last 3 steps (from step 5)" in message
    assert f"the latest checkpoint (step 4 in {tmp_path / 'checkpoints'})" in message
    assert "config.max_consecutive_nonfinite=3" in message and "\n" not in message

    [record] = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert record["epoch"] == 1 and record["train/skipped_steps"] == 1  # step 2 skipped, training went on
    assert all(np.isfinite(record[f"train/{k}"]) for k in ("box", "seg", "cls", "dfl", "loss")), record

    assert checkpoints.Checkpointer(tmp_path).all_steps() == [STEPS_PER_EPOCH]  # nothing after the NaNs
    state = checkpoints.load_item(tmp_path / "checkpoints" / "4" / "state")
    for name in ("params", "batch_stats", "ema_params", "ema_batch_stats", "grad_accum", "opt_state"):
        leaves = jax.tree.leaves(state[name])
        assert leaves and all(np.isfinite(v).all() for v in leaves), name
    assert int(state["ema_updates"]) >= 1
