"""The optimiser and EMA run only on update steps: same results as stepping every iteration and
keeping the update only when it is due, and grad_norm is the norm of the applied gradient."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lmsfa_jax.training import config as config_lib
from lmsfa_jax.training import optimizer
from lmsfa_jax.training.state import create_train_state, ema_decay
from lmsfa_jax.training.step import apply_gradients

STEPS = 20
EMA = {"decay": 0.9999, "tau": 3.0}  # a short tau so that the EMA visibly moves in a few steps


def _always_step(state, grads, batch_stats, hyper, *, tx, ema):
    """Reference: the optimiser and EMA computed every iteration, kept only when due."""
    select = lambda pred, new, old: jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)  # noqa: E731
    grad_sum = jax.tree.map(jnp.add, state.grad_accum, grads)
    update_now = state.step - state.last_update_step >= hyper["accumulate"]
    updates, new_opt_state = tx.update(grad_sum, optimizer.set_hyperparams(state.opt_state, hyper), state.params)
    params = select(update_now, optax.apply_updates(state.params, updates), state.params)
    ema_updates = state.ema_updates + update_now.astype(jnp.int32)
    d = jnp.where(update_now, ema_decay(ema_updates, ema["decay"], ema["tau"]), 1.0)
    mix = lambda e, m: (d * e + (1 - d) * m).astype(e.dtype)  # noqa: E731
    return state.replace(
        step=state.step + 1, params=params, batch_stats=batch_stats,
        opt_state=select(update_now, new_opt_state, state.opt_state),
        grad_accum=select(update_now, jax.tree.map(jnp.zeros_like, grad_sum), grad_sum),
        last_update_step=jnp.where(update_now, state.step, state.last_update_step),
        ema_params=jax.tree.map(mix, state.ema_params, params),
        ema_batch_stats=jax.tree.map(mix, state.ema_batch_stats, batch_stats),
        ema_updates=ema_updates), update_now, optax.tree.norm(grad_sum)


@pytest.mark.parametrize("name, batch_size, warmup_epochs", [("sgd", 16, 1.0), ("sgd", 32, 0.0), ("adamw", 8, 0.0)])
def test_update_only_when_due_matches_always_stepping(name, batch_size, warmup_epochs):
    config = config_lib.default_config()
    config.batch_size, config.epochs, config.optimizer.name = batch_size, 3, name
    config.optimizer.warmup_epochs, config.optimizer.warmup_min_steps = warmup_epochs, 0
    tx = optimizer.make_optimizer(config)
    schedule = optimizer.Schedule.from_config(config, steps_per_epoch=6)
    rng = np.random.default_rng(0)
    variables = {"params": {"conv": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32),
                                     "bias": jnp.zeros(4)},
                            "bn": {"scale": jnp.ones(4), "bias": jnp.zeros(4)}},
                 "batch_stats": {"bn": {"mean": jnp.zeros(4), "var": jnp.ones(4)}}}
    ours = jax.jit(functools.partial(apply_gradients, tx=tx, ema=EMA))
    reference = jax.jit(functools.partial(_always_step, tx=tx, ema=EMA))
    state = ref_state = create_train_state(variables, tx)
    updated_steps = []
    for step in range(STEPS):
        grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), variables["params"])
        stats = jax.tree.map(lambda s: s + step, variables["batch_stats"])
        hyper = schedule(step)
        expected_sum = optax.tree.norm(jax.tree.map(jnp.add, state.grad_accum, grads))
        state, updated, norm = ours(state, grads, stats, hyper, True)
        ref_state, ref_updated, ref_norm = reference(ref_state, grads, stats, hyper)
        assert bool(updated) == bool(ref_updated), step
        if updated:
            updated_steps.append(step)
            np.testing.assert_allclose(norm, expected_sum, rtol=1e-6)
        else:
            assert float(norm) == 0.0
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(ref_state)):
            # Float32 round-off only (the two programs fuse their arithmetic differently).
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * max(1.0, float(np.abs(b).max())),
                                       err_msg=f"step {step} {jax.tree_util.keystr(path)}")
    accumulate = optimizer.accumulate_steps(batch_size, 64)
    if warmup_epochs == 0:  # every accumulate-th iteration
        assert updated_steps == list(range(accumulate - 1, STEPS, accumulate))
    assert 1 < len(updated_steps) < STEPS
    assert int(state.ema_updates) == len(updated_steps) > 1
    assert not np.allclose(state.ema_params["conv"]["kernel"], variables["params"]["conv"]["kernel"])
