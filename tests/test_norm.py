"""`nn/norm.py` against Flax: BatchNormAct and GroupNormSiLU give Flax's BatchNorm / GroupNorm (+ SiLU)
outputs, gradients (input, scale, bias) and running statistics, with the same variables."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmsfa_jax.nn.norm import BatchNormAct, GroupNormSiLU

SHAPE = (3, 6, 5, 32)


def _inputs():
    keys = jax.random.split(jax.random.key(0), 4)
    x = 1.5 * jax.random.normal(keys[0], SHAPE) + 0.3
    params = {"scale": jax.random.uniform(keys[1], SHAPE[-1:], minval=0.5, maxval=1.5),
              "bias": 0.1 * jax.random.normal(keys[2], SHAPE[-1:])}
    cotangent = jax.random.normal(keys[3], SHAPE)
    return x, params, cotangent


def _vjp(apply, x, params, cotangent):
    """-> (output, aux, d/dx, d/dparams) of sum(apply(...) · cotangent)."""
    def loss(x, params):
        out, aux = apply(x, params)
        return jnp.sum(out * cotangent), (out, aux)
    (_, (out, aux)), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(x, params)
    return out, aux, grads


def _close(a, b):
    for p, q in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(p), np.asarray(q), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("silu", [False, True])
def test_batch_norm_act_is_flax_batch_norm_in_training(silu):
    x, params, cotangent = _inputs()
    stats = {"mean": jnp.linspace(-0.2, 0.2, SHAPE[-1]), "var": jnp.linspace(0.5, 1.5, SHAPE[-1])}
    ours = BatchNormAct(train=True, silu=silu, epsilon=1e-3, momentum=0.97)
    flax_bn = nn.BatchNorm(use_running_average=False, momentum=0.97, epsilon=1e-3, use_fast_variance=False)

    def run(module, post):
        def apply(x, params):
            out, updated = module.apply({"params": params, "batch_stats": stats}, x, mutable=["batch_stats"])
            return post(out), updated["batch_stats"]
        return _vjp(apply, x, params, cotangent)

    expected = run(flax_bn, nn.silu if silu else (lambda y: y))
    got = run(ours, lambda y: y)
    _close(got, expected)
    assert not np.allclose(got[1]["mean"], stats["mean"])        # the running statistics moved
    assert jax.tree.structure(ours.init(jax.random.key(1), x)) == jax.tree.structure(flax_bn.init(jax.random.key(1), x))


def test_batch_norm_act_uses_the_running_statistics_outside_training():
    x, params, _ = _inputs()
    stats = {"mean": jnp.linspace(-0.2, 0.2, SHAPE[-1]), "var": jnp.linspace(0.5, 1.5, SHAPE[-1])}
    variables = {"params": params, "batch_stats": stats}
    got = BatchNormAct(train=False, silu=True, epsilon=1e-3).apply(variables, x)
    expected = nn.silu(nn.BatchNorm(use_running_average=True, epsilon=1e-3).apply(variables, x))
    _close(got, expected)


def test_group_norm_silu_is_flax_group_norm_then_silu():
    x, params, cotangent = _inputs()
    flax_gn = nn.GroupNorm(num_groups=16, epsilon=1e-5, use_fast_variance=False)

    def run(module, post):
        return _vjp(lambda x, params: (post(module.apply({"params": params}, x)), ()), x, params, cotangent)

    _close(run(GroupNormSiLU(16, 1e-5), lambda y: y), run(flax_gn, nn.silu))
    assert jax.tree.structure(GroupNormSiLU(16).init(jax.random.key(1), x)) == jax.tree.structure(
        flax_gn.init(jax.random.key(1), x))
