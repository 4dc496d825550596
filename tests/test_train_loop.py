"""The training loop end to end at batch 1 on tiny synthetic data: finite training, GroupNorm head,
checkpoints, and kill-and-resume giving the same result as an uninterrupted run."""
import json

import jax
import numpy as np
import pytest
from flax import traverse_util

from lmsfa_jax.training import checkpoints
from lmsfa_jax.training import config as config_lib
from lmsfa_jax.training import loop

EPOCHS, STEPS_PER_EPOCH = 5, 4


def _config():
    config = config_lib.default_config()  # the reference SGD recipe with warm-up and accumulation
    config.batch_size, config.epochs = 1, EPOCHS
    config.synthetic.update(enabled=True, num_train=STEPS_PER_EPOCH, num_val=2, size=64)
    config.data.update(image_size=64, max_instances=8, mosaic=0.0, close_mosaic=0)
    config.eval.every_epochs = 0  # no validation: this test is about the training state
    config.checkpoint.every_epochs = 2  # saves after epochs 2, 4 and 5 (the last)
    return config


def _records(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _saved_state(workdir, step):
    return checkpoints.load_item(workdir / "checkpoints" / str(step) / "state")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    loop.train_and_evaluate(_config(), workdir)
    return workdir


def test_batch_one_training_is_finite_and_the_head_uses_groupnorm(uninterrupted):
    records = _records(uninterrupted)
    assert [r["step"] for r in records] == [STEPS_PER_EPOCH * (e + 1) for e in range(EPOCHS)]
    for r in records:
        assert all(np.isfinite(r[f"train/{k}"]) for k in ("box", "seg", "cls", "dfl", "loss")), r
    state = _saved_state(uninterrupted, EPOCHS * STEPS_PER_EPOCH)
    for name in ("params", "batch_stats", "ema_params", "ema_batch_stats"):
        assert all(np.isfinite(v).all() for v in traverse_util.flatten_dict(state[name]).values()), name
    head_params, head_stats = state["params"]["model_26"], state["batch_stats"]["model_26"]
    assert set(head_stats) == {"proto"}  # BatchNorm only in the prototype branch
    # GroupNorm in the shared and coefficient branches; its biases (bias lr 0.1 in the warm-up) train.
    gn_biases = [v for k, v in traverse_util.flatten_dict(head_params).items() if k[-2:] == ("gn", "bias")]
    assert len(gn_biases) == 11 and all(np.any(b != 0) for b in gn_biases)
    assert int(state["ema_updates"]) > 0 and int(state["last_update_step"]) >= 0
    assert (uninterrupted / "training_curves.png").stat().st_size > 0
    assert json.loads((uninterrupted / "config.json").read_text())["batch_size"] == 1


class Killed(Exception):
    pass


def test_killed_run_resumes_at_the_next_step_with_identical_results(uninterrupted, tmp_path, monkeypatch):
    save = checkpoints.Checkpointer.save

    def save_then_die(self, state, epoch, metrics=None):
        save(self, state, epoch, metrics)
        if epoch == 2:
            raise Killed

    monkeypatch.setattr(checkpoints.Checkpointer, "save", save_then_die)
    with pytest.raises(Killed):
        loop.train_and_evaluate(_config(), tmp_path)
    assert checkpoints.Checkpointer(tmp_path).latest_step() == 2 * STEPS_PER_EPOCH
    monkeypatch.setattr(checkpoints.Checkpointer, "save", save)

    loop.train_and_evaluate(_config(), tmp_path)
    resumed, reference = _records(tmp_path), _records(uninterrupted)
    assert [r["step"] for r in resumed] == [r["step"] for r in reference]
    for a, b in zip(resumed, reference):
        assert a["train/loss"] == b["train/loss"], (a, b)
    final = EPOCHS * STEPS_PER_EPOCH
    got, want = _saved_state(tmp_path, final), _saved_state(uninterrupted, final)
    leaves_got, leaves_want = jax.tree_util.tree_leaves_with_path(got), jax.tree_util.tree_leaves_with_path(want)
    assert [p for p, _ in leaves_got] == [p for p, _ in leaves_want]
    for (path, a), (_, b) in zip(leaves_got, leaves_want):  # params, EMA, optimiser, step counters
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
