"""Checkpoint retention (latest 2 + best by mask mAP50-95), restore, and EMA loading."""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import traverse_util

from lmsfa_jax.training import checkpoints
from lmsfa_jax.training.state import create_train_state


def _state(step, value):
    variables = {"params": {"conv": {"kernel": jnp.full((2, 2), float(value))}},
                 "batch_stats": {"bn": {"mean": jnp.full((2,), -float(value))}}}
    state = create_train_state(variables, optax.sgd(0.1, momentum=0.9))
    return state.replace(step=jnp.asarray(step, jnp.int32), ema_params={"conv": {"kernel": jnp.full((2, 2), 10.0 * value)}})


def test_keeps_latest_two_and_best_and_restores(tmp_path):
    ckpt = checkpoints.Checkpointer(tmp_path, keep_latest=2, async_save=True)
    maps = {1: 0.1, 2: 0.5, 3: None, 4: 0.3, 5: 0.2, 6: None}  # step -> mask mAP50-95 (None: not validated)
    for step, value in maps.items():
        metrics = None if value is None else {checkpoints.BEST_METRIC: value, "val/box_mAP50": 0.0}
        ckpt.save(_state(step, step), epoch=step, record=metrics)
    ckpt.wait()
    assert ckpt.all_steps() == [2, 5, 6]
    assert ckpt.best_step() == 2

    restored, epoch = ckpt.restore_latest(_state(0, 0))
    assert epoch == 6 and int(restored.step) == 6
    np.testing.assert_array_equal(restored.params["conv"]["kernel"], np.full((2, 2), 6.0))
    assert isinstance(restored.opt_state, type(_state(0, 0).opt_state))
    ckpt.close()

    best = checkpoints.restore_variables(tmp_path, "best")
    np.testing.assert_array_equal(best["params"]["conv"]["kernel"], np.full((2, 2), 20.0))  # EMA of step 2
    np.testing.assert_array_equal(best["batch_stats"]["bn"]["mean"], np.full((2,), -2.0))
    latest = checkpoints.restore_variables(tmp_path / "checkpoints", "latest")
    np.testing.assert_array_equal(latest["params"]["conv"]["kernel"], np.full((2, 2), 60.0))
    by_dir = checkpoints.restore_variables(tmp_path / "checkpoints" / "5")
    np.testing.assert_array_equal(by_dir["params"]["conv"]["kernel"], np.full((2, 2), 50.0))
    by_path = checkpoints.restore_variables("ignored", str(tmp_path / "checkpoints" / "5"))
    np.testing.assert_array_equal(by_path["params"]["conv"]["kernel"], np.full((2, 2), 50.0))
    with pytest.raises(FileNotFoundError, match="step 3"):
        checkpoints.restore_variables(tmp_path, 3)


def test_missing_checkpoints_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        checkpoints.restore_variables(tmp_path / "nope")
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        checkpoints.restore_variables(tmp_path, "latest")
    assert checkpoints.Checkpointer(tmp_path / "fresh").restore_latest(_state(0, 0)) is None


def test_state_is_saved_flat_and_loads_back_whole(tmp_path):
    state = _state(7, 3)
    ckpt = checkpoints.Checkpointer(tmp_path, async_save=False)
    ckpt.save(state, epoch=7)
    ckpt.close()
    step_dir = tmp_path / "checkpoints" / "7"
    flat = ocp.StandardCheckpointer().restore((step_dir / "state").absolute())
    assert sorted(flat) == ["float32", "int32"] and all(v.ndim == 1 for v in flat.values())
    assert flat["float32"].size == sum(x.size for x in jax.tree.leaves(state) if x.dtype == jnp.float32)

    loaded = checkpoints.load_item(step_dir / "state")
    want = traverse_util.flatten_dict(flax.serialization.to_state_dict(state))
    got = traverse_util.flatten_dict(loaded)
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value, err_msg=str(key))


def test_a_checkpoint_of_another_state_names_the_first_differing_leaf(tmp_path):
    ckpt = checkpoints.Checkpointer(tmp_path)
    ckpt.save(_state(1, 1), epoch=1)
    ckpt.wait()
    other = create_train_state({"params": {"conv": {"kernel": jnp.zeros((3, 2))}}, "batch_stats": {}},
                               optax.sgd(0.1, momentum=0.9))
    with pytest.raises(checkpoints.DamagedCheckpointError, match=r"params/conv/kernel \(2, 2\), the run "
                       r"expects params/conv/kernel \(3, 2\)"):
        ckpt.restore_latest(other)
    ckpt.close()


def test_checkpoints_of_the_earlier_one_array_per_leaf_format_still_load(tmp_path):
    """Before the flat format, each leaf was its own array and there was no 'layout' item."""
    state = _state(4, 2)
    manager = ocp.CheckpointManager((tmp_path / "checkpoints").absolute(), item_names=("state", "ema", "meta"))
    manager.save(4, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), ema=ocp.args.StandardSave(state.ema_variables()),
        meta=ocp.args.JsonSave({"epoch": 4, "step": 4})))
    manager.wait_until_finished()
    manager.close()

    ckpt = checkpoints.Checkpointer(tmp_path)
    restored, epoch = ckpt.restore_latest(_state(0, 0))
    ckpt.close()
    assert epoch == 4 and int(restored.step) == 4
    np.testing.assert_array_equal(restored.params["conv"]["kernel"], np.full((2, 2), 2.0))
    ema = checkpoints.restore_variables(tmp_path, "latest")
    np.testing.assert_array_equal(ema["params"]["conv"]["kernel"], np.full((2, 2), 20.0))
