"""`lmsfa_jax.nn.xla_hints`: the same values and gradients as the plain computations."""
import jax
import jax.numpy as jnp
import numpy as np

from lmsfa_jax.nn.xla_hints import gradient_materialised, materialised, sum_hw, sums_over_bhw


def test_sum_hw_equals_sum_over_h_and_w_with_a_broadcast_gradient():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 7, 3, 4))
    np.testing.assert_allclose(jax.jit(sum_hw)(x), jnp.sum(x, axis=(1, 2)), rtol=1e-5, atol=1e-5)
    weights = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 4))
    grad = jax.grad(lambda x: jnp.sum(sum_hw(x) * weights))(x)
    np.testing.assert_array_equal(grad, jnp.broadcast_to(weights[:, None, None], x.shape))


def test_sums_over_bhw_equals_each_sum_over_b_h_and_w():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 7, 3, 4))
    windows = [x[:, i:i + 3, j:j + 4] for i in range(3) for j in range(4)]    # overlapping, as a conv's taps
    terms = [w * x[:, 1:4, 2:6] for w in windows]
    got = jax.jit(sums_over_bhw)(terms)
    assert len(got) == len(terms)
    for g, t in zip(got, terms):
        assert g.shape == (3, 4) and g.dtype == t.dtype
        np.testing.assert_allclose(g, jnp.sum(t, axis=(0, 1, 2)), rtol=1e-5, atol=1e-5)


def _three_consumers(x, hint):
    y = hint(x * 3 + x * x)
    return jnp.sum(y, axis=(0, 1, 2)), jnp.sum(y * x, axis=(0, 1, 2)), jnp.pad(y, ((0, 0), (1, 1), (1, 1), (0, 0)))


def test_materialised_is_the_identity_and_survives_optimisation():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 6, 4))
    got = jax.jit(lambda x: _three_consumers(x, materialised))(x)
    want = jax.jit(lambda x: _three_consumers(x, lambda y: y))(x)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)   # sums: the same up to summation order
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5)
    np.testing.assert_array_equal(got[2], want[2])
    hlo = jax.jit(lambda x: _three_consumers(x, materialised)).lower(x).compile().as_text()
    assert "conditional(" in hlo   # the boundary XLA fuses nothing across is still there
    nan_first = x.at[0, 0, 0, 0].set(jnp.nan)
    np.testing.assert_array_equal(jax.jit(materialised)(nan_first), nan_first)


def test_gradient_materialised_passes_the_gradient_unchanged():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 3))
    f = lambda x: jnp.sum(jnp.sin(x) * x)  # noqa: E731
    np.testing.assert_array_equal(jax.jit(gradient_materialised)(x), x)
    np.testing.assert_allclose(jax.grad(lambda x: f(gradient_materialised(x)))(x), jax.grad(f)(x), rtol=1e-6)
