"""init_from: weights whose name and shape match are loaded (our checkpoints or PyTorch state
dicts), everything else is reported as skipped."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lmsfa_jax import weights
from lmsfa_jax.model import LMSFA
from lmsfa_jax.training import checkpoints, loop
from lmsfa_jax.training.state import create_train_state


def _filled(num_classes, value):
    shapes = jax.eval_shape(lambda: LMSFA(num_classes=num_classes).init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
    return jax.tree.map(lambda s: np.full(s.shape, value, s.dtype), shapes)


def test_init_from_a_pytorch_state_dict_with_other_classes(tmp_path):
    path = tmp_path / "coco80.npz"
    np.savez(path, **weights.to_torch_state_dict(_filled(80, 1.0)))  # e.g. COCO-pretrained weights
    variables, report = loop.load_initial_weights(_filled(4, 0.0), path)
    flat = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(variables)}
    assert np.all(flat["['params']['model_0']['conv']['kernel']"] == 1.0)  # backbone loaded
    class_branch = [v for k, v in flat.items() if k.startswith("['params']['model_26']['cv3']")]
    assert class_branch and all(np.all(v == 0.0) for v in class_branch)  # 80-class head skipped
    assert "shape mismatch" in report and "model.26" in report


def test_init_from_our_checkpoint(tmp_path):
    source = {"params": {"conv": {"kernel": jnp.full((2, 2), 3.0)}, "old": {"w": jnp.ones(2)}},
              "batch_stats": {"bn": {"mean": jnp.ones(2)}}}
    ckpt = checkpoints.Checkpointer(tmp_path / "run")
    ckpt.save(create_train_state(source, optax.sgd(0.1)), epoch=1)
    ckpt.wait()
    ckpt.close()
    target = {"params": {"conv": {"kernel": jnp.zeros((2, 2))}, "new": {"w": jnp.zeros(3)}},
              "batch_stats": {"bn": {"mean": jnp.zeros(5)}}}
    variables, report = loop.load_initial_weights(target, tmp_path / "run")
    np.testing.assert_array_equal(variables["params"]["conv"]["kernel"], np.full((2, 2), 3.0))
    np.testing.assert_array_equal(variables["params"]["new"]["w"], np.zeros(3))
    np.testing.assert_array_equal(variables["batch_stats"]["bn"]["mean"], np.zeros(5))
    assert report.startswith("loaded 1 of 3 variables")
    assert "params/new/w: not in the checkpoint" in report
    assert "batch_stats/bn/mean: checkpoint (2,) vs model (5,)" in report
    assert "params/old/w: not in the model" in report
