"""EMA attention (`lmsfa_jax.nn.attention`) against a direct transcription of the reference's steps
(two full-size maps x1, x2, Flax's GroupNorm and convolution), values and gradients."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmsfa_jax.model import jit_inference
from lmsfa_jax.nn.attention import EMA


def reference_ema(variables, x, groups=8):
    """The golden README's EMA steps 1-8, on the (B·G, H, W, cg) images, autodiff'd by JAX."""
    p = variables["params"]
    b, h, w, c = x.shape
    cg = c // groups
    xg = x.reshape(b, h, w, groups, cg).transpose(0, 3, 1, 2, 4).reshape(b * groups, h, w, cg)
    pools = jnp.concatenate([jnp.mean(xg, axis=2), jnp.mean(xg, axis=1)], axis=1)        # (BG, H+W, cg)
    strip = pools @ p["conv1x1"]["kernel"][0, 0] + p["conv1x1"]["bias"]
    gated = xg * jax.nn.sigmoid(strip[:, :h, None]) * jax.nn.sigmoid(strip[:, None, h:])
    x1 = nn.GroupNorm(num_groups=cg, epsilon=1e-5, use_fast_variance=False).apply({"params": p["gn"]}, gated)
    x2 = jax.lax.conv_general_dilated(xg, p["conv3x3"]["kernel"], (1, 1), ((1, 1), (1, 1)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["conv3x3"]["bias"]
    s1 = jax.nn.softmax(jnp.mean(x1, axis=(1, 2)), axis=-1)[:, None, None]
    s2 = jax.nn.softmax(jnp.mean(x2, axis=(1, 2)), axis=-1)[:, None, None]
    weights = jnp.sum(s1 * x2 + s2 * x1, axis=-1, keepdims=True)
    out = xg * jax.nn.sigmoid(weights)
    return out.reshape(b, groups, h, w, cg).transpose(0, 2, 3, 1, 4).reshape(b, h, w, c)


def _random_variables(module, x, seed):
    variables = module.init(jax.random.PRNGKey(seed), x)
    leaves, tree = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    return jax.tree.unflatten(tree, [v + 0.5 * jax.random.normal(k, v.shape) for v, k in zip(leaves, keys)])


@functools.partial(jax.jit, static_argnums=0)
def _value_and_grads(fn, variables, x, cotangent):
    out, vjp = jax.vjp(fn, variables, x)
    return out, vjp(cotangent)


@pytest.mark.parametrize("shape", [(2, 12, 10, 16), (1, 1, 3, 64)])
def test_ema_equals_reference_values_and_gradients(shape):
    """cg = 2 takes the slice-by-slice channel sum when differentiated, cg = 8 the reduction; the
    output is also checked undifferentiated (a reduction over c at any cg). The 1-row image checks
    the window sums where one row is both the first and the last."""
    x = jax.random.normal(jax.random.PRNGKey(0), shape) * 2 + 0.3
    module = EMA()
    variables = _random_variables(module, x, 1)
    cotangent = jax.random.normal(jax.random.PRNGKey(3), shape)
    (ours, ours_grads), (theirs, theirs_grads) = (_value_and_grads(fn, variables, x, cotangent)
                                                  for fn in (module.apply, reference_ema))
    np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(jit_inference(module.apply)(variables, x), theirs, rtol=2e-5, atol=2e-5)
    for (path, got), (_, want) in zip(jax.tree_util.tree_leaves_with_path(ours_grads),
                                      jax.tree_util.tree_leaves_with_path(theirs_grads)):
        scale = float(jnp.max(jnp.abs(want))) or 1.0
        np.testing.assert_allclose(got / scale, want / scale, atol=3e-5, err_msg=jax.tree_util.keystr(path))


def test_ema_keeps_dtype_and_rejects_bad_widths():
    x = jnp.ones((1, 4, 4, 16), jnp.bfloat16)
    module = EMA()
    assert module.apply(module.init(jax.random.PRNGKey(0), x), x).dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="divisible by 8"):
        module.init(jax.random.PRNGKey(0), jnp.ones((1, 4, 4, 12)))
