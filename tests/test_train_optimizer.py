"""The optimiser recipe: parameter groups, weight decay, warm-up / LR schedule, SGD numerics."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from lmsfa_jax.model import LMSFA
from lmsfa_jax.training import config as config_lib
from lmsfa_jax.training import optimizer


def _config(batch_size=16, epochs=10, name="sgd"):
    config = config_lib.default_config()
    config.batch_size, config.epochs, config.optimizer.name = batch_size, epochs, name
    return config


@pytest.fixture(scope="module")
def params():
    shapes = jax.eval_shape(lambda: LMSFA(num_classes=4).init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
    return jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), shapes["params"])


def test_groups_decay_only_kernels_and_head_scales(params):
    groups = traverse_util.flatten_dict(optimizer.param_groups(params))
    for path, group in groups.items():
        if path[-1] == "kernel":
            assert group == "decay", path
        elif path[-1] == "bias":
            assert group == "bias", path
        elif path[-2] in ("bn", "gn"):
            assert group == "no_decay", path
        else:  # the head's per-level Scale scalars, decayed as in Ultralytics
            assert path[-2].startswith("scale_") and group == "decay", path
    counts = {g: sum(v == g for v in groups.values()) for g in optimizer.GROUPS}
    assert counts["no_decay"] == 96 and counts["bias"] > 100 and counts["decay"] > 100


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_zero_gradient_step_decays_only_the_decay_group(params, name):
    """With zero gradients the only change is weight decay, on kernels (and head scales) only."""
    config = _config(batch_size=16, name=name)
    tx = optimizer.make_optimizer(config)
    state = optimizer.set_hyperparams(tx.init(params), {"bias_lr": 0.1, "lr": 0.01, "momentum": 0.9})
    updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), state, params)
    wd = 5e-4 * 16 * 4 / 64
    assert float(state.hyperparams["weight_decay"]) == pytest.approx(wd)
    groups = traverse_util.flatten_dict(optimizer.param_groups(params))
    for path, update in traverse_util.flatten_dict(updates).items():
        # SGD: -lr (1 + momentum) wd p (Nesterov); AdamW: -lr wd p (decoupled)
        expected = -0.01 * wd * ((1 + 0.9) if name == "sgd" else 1.0) if groups[path] == "decay" else 0.0
        np.testing.assert_allclose(np.asarray(update), expected, rtol=1e-5, atol=1e-12, err_msg=str(path))


@pytest.mark.parametrize("batch_size, accumulate, weight_decay",
                         [(8, 8, 5e-4), (16, 4, 5e-4), (24, 3, 5e-4 * 72 / 64), (64, 1, 5e-4), (128, 1, 1e-3)])
def test_accumulation_and_weight_decay_scaling(batch_size, accumulate, weight_decay):
    config = _config(batch_size=batch_size)
    assert optimizer.accumulate_steps(batch_size, 64) == accumulate
    state = optimizer.make_optimizer(config).init({"w": jnp.ones(3)})
    assert float(state.hyperparams["weight_decay"]) == pytest.approx(weight_decay)


def test_warmup_and_linear_schedule_values():
    # 10 epochs of 50 steps, batch 16: warm-up max(3 * 50, 100) = 150 steps, accumulate 4.
    schedule = optimizer.Schedule.from_config(_config(batch_size=16, epochs=10), steps_per_epoch=50)
    assert schedule.warmup_steps == 150 and schedule.accumulate == 4
    lr_epoch = lambda e: 0.01 * ((1 - e / 10) * 0.99 + 0.01)  # noqa: E731
    expected = {  # step: (bias_lr, lr, momentum, accumulate)
        0: (0.1, 0.0, 0.8, 1),
        75: (0.1 + 0.5 * (lr_epoch(1) - 0.1), 0.5 * lr_epoch(1), 0.8 + 0.5 * 0.137, 2),  # round(2.5) = 2
        120: (0.1 + 0.8 * (lr_epoch(2) - 0.1), 0.8 * lr_epoch(2), 0.8 + 0.8 * 0.137, 3),
        150: (lr_epoch(3), lr_epoch(3), 0.937, 4),
        151: (lr_epoch(3), lr_epoch(3), 0.937, 4),
        400: (lr_epoch(8), lr_epoch(8), 0.937, 4),
        499: (lr_epoch(9), lr_epoch(9), 0.937, 4),
    }
    for step, (bias_lr, lr, momentum, accumulate) in expected.items():
        values = jax.jit(schedule)(step)
        assert float(values["bias_lr"]) == pytest.approx(bias_lr, rel=1e-5), step
        assert float(values["lr"]) == pytest.approx(lr, rel=1e-5, abs=1e-9), step
        assert float(values["momentum"]) == pytest.approx(momentum, rel=1e-6), step
        assert int(values["accumulate"]) == accumulate, step
    # A short run: the warm-up is at least warmup_min_steps iterations.
    assert optimizer.Schedule.from_config(_config(epochs=3), steps_per_epoch=5).warmup_steps == 100
    assert lr_epoch(9) == pytest.approx(0.01 * (0.1 * 0.99 + 0.01))


def test_sgd_matches_pytorch_nesterov_with_coupled_decay_and_clipping():
    """Two steps against the PyTorch SGD(nesterov) update written out by hand."""
    config = _config(batch_size=64)  # accumulate 1 -> weight decay 5e-4 exactly
    config.optimizer.clip_grad_norm = 1.0
    tx = optimizer.make_optimizer(config)
    params = {"conv": {"kernel": jnp.array([1.0, -2.0]), "bias": jnp.array([0.5])},
              "bn": {"scale": jnp.array([2.0])}}
    grads = [{"conv": {"kernel": jnp.array([3.0, 0.0]), "bias": jnp.array([4.0])}, "bn": {"scale": jnp.array([0.0])}},
             {"conv": {"kernel": jnp.array([0.1, 0.2]), "bias": jnp.array([0.1])}, "bn": {"scale": jnp.array([0.2])}}]
    hyper = [{"bias_lr": 0.1, "lr": 0.01, "momentum": 0.8}, {"bias_lr": 0.05, "lr": 0.02, "momentum": 0.9}]
    state = tx.init(params)
    flat_p = {k: np.asarray(v, np.float64) for k, v in traverse_util.flatten_dict(params).items()}
    buf = {k: np.zeros_like(v) for k, v in flat_p.items()}
    for g, h in zip(grads, hyper):
        state = optimizer.set_hyperparams(state, h)
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
        flat_g = {k: np.asarray(v, np.float64) for k, v in traverse_util.flatten_dict(g).items()}
        norm = np.sqrt(sum((v ** 2).sum() for v in flat_g.values()))
        for k in flat_p:
            d = flat_g[k] * min(1.0, 1.0 / norm)  # clip_grad_norm_ (max norm 1 here)
            if k[-1] == "kernel":
                d = d + 5e-4 * flat_p[k]
            buf[k] = h["momentum"] * buf[k] + d
            d = d + h["momentum"] * buf[k]
            flat_p[k] = flat_p[k] - (h["bias_lr"] if k[-1] == "bias" else h["lr"]) * d
    for k, v in traverse_util.flatten_dict(params).items():
        np.testing.assert_allclose(np.asarray(v), flat_p[k], rtol=1e-6, err_msg=str(k))
