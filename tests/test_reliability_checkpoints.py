"""Issue 10, category 10: a damaged checkpoint is named; resuming falls back to the newest intact one
(and says so), never silently to a fresh start; evaluate on a damaged checkpoint prints one line."""
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lmsfa_jax.data import synthetic
from lmsfa_jax.training import checkpoints
from lmsfa_jax.training import config as config_lib
from lmsfa_jax.training.state import create_train_state

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _state(step):
    variables = {"params": {"conv": {"kernel": jnp.full((2, 2), float(step))}},
                 "batch_stats": {"bn": {"mean": jnp.full((2,), -float(step))}}}
    state = create_train_state(variables, optax.sgd(0.1, momentum=0.9))
    return state.replace(step=jnp.asarray(step, jnp.int32))


def _run_with_checkpoints(workdir, steps=(1, 2)):
    ckpt = checkpoints.Checkpointer(workdir, keep_latest=3)
    for step in steps:
        ckpt.save(_state(step), epoch=step)
    ckpt.close()
    return workdir / "checkpoints"


def _truncate_arrays(item_dir: pathlib.Path):
    """Cuts every array data file of one checkpoint item to 10 bytes (as a full disk or a killed copy)."""
    for data in (item_dir / "d").iterdir():
        data.write_bytes(data.read_bytes()[:10])


@pytest.mark.parametrize("damage", ["truncated array file", "missing _METADATA"])
def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, capsys, damage):
    directory = _run_with_checkpoints(tmp_path)
    if damage == "truncated array file":
        _truncate_arrays(directory / "2" / "state")
    else:
        (directory / "2" / "state" / "_METADATA").unlink()

    ckpt = checkpoints.Checkpointer(tmp_path, keep_latest=3)
    restored, epoch = ckpt.restore_latest(_state(0))
    assert epoch == 1 and int(restored.step) == 1
    np.testing.assert_array_equal(restored.params["conv"]["kernel"], np.full((2, 2), 1.0))
    warnings = capsys.readouterr().err
    assert f"checkpoint {directory / '2'} is damaged" in warnings
    assert "_METADATA missing" in warnings if damage == "missing _METADATA" else "size 10" in warnings
    assert "resuming from step 1, the newest intact checkpoint" in warnings
    assert (tmp_path / "checkpoints_damaged" / "2" / "state").is_dir()  # kept for inspection, out of the way
    assert ckpt.all_steps() == [1]
    ckpt.save(_state(2), epoch=2)  # training on writes step 2 again
    ckpt.wait()
    assert ckpt.all_steps() == [1, 2]
    ckpt.close()


def test_no_restorable_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    directory = _run_with_checkpoints(tmp_path)
    _truncate_arrays(directory / "2" / "state")
    (directory / "1" / "state" / "_METADATA").unlink()
    ckpt = checkpoints.Checkpointer(tmp_path)
    with pytest.raises(checkpoints.DamagedCheckpointError) as error:
        ckpt.restore_latest(_state(0))
    message = str(error.value)
    for step in ("1", "2"):
        assert f"checkpoint {directory / step} is damaged" in message
    assert "\n" not in message
    ckpt.close()
    assert sorted(p.name for p in directory.iterdir()) == ["1", "2"]  # nothing moved or deleted


def test_evaluate_on_a_damaged_checkpoint_prints_one_line(tmp_path):
    directory = _run_with_checkpoints(tmp_path)
    _truncate_arrays(directory / "2" / "ema")
    config = config_lib.default_config()  # a run's config.json, on a tiny synthetic dataset
    config.synthetic.update(enabled=True, num_train=1, num_val=1, size=64)
    checkpoints.write_config(config, tmp_path)
    synthetic.prepare_data_config(config, tmp_path)  # built here, so that evaluate finds it
    result = subprocess.run([sys.executable, "-m", "lmsfa_jax.evaluate", "--workdir", str(tmp_path),
                             "--checkpoint", "latest", "--compilation_cache", ""],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if not line.startswith("WARNING:absl")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"error: checkpoint {directory / '2'} is damaged or unreadable: ")
    with pytest.raises(checkpoints.DamagedCheckpointError, match="checkpoints/2 is damaged"):
        checkpoints.restore_variables(tmp_path, "latest")
