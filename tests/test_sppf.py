"""SPPF's max-pool (`nn.sppf.max_pool_same`): the values of one k×k reduce-window and its gradient."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmsfa_jax.model import jit_inference
from lmsfa_jax.nn.sppf import max_pool_same


def reduce_window_pool(x, k):
    """The k×k max-pool as one reduce-window (Flax's), whose gradient is XLA's select-and-scatter."""
    return nn.max_pool(x, (k, k), strides=(1, 1), padding=((k // 2, k // 2), (k // 2, k // 2)))


# Small integers make ties common, as chained pools do (each pool's output has plateaus); with
# floats, several windows' gradients meet at one pixel in other places, which checks their order.
@pytest.mark.parametrize("integers", [True, False])
@pytest.mark.parametrize("shape,k", [((2, 9, 7, 3), 5), ((1, 4, 6, 2), 5), ((1, 1, 1, 1), 5), ((2, 5, 5, 4), 3)])
def test_max_pool_same_matches_the_reduce_window_with_its_gradient(shape, k, integers):
    x = jax.random.normal(jax.random.key(0), shape)
    if integers:
        x = jnp.round(4 * x) - 8                              # negative too: padding never wins
    dy = jax.random.normal(jax.random.key(1), shape)
    chained = lambda pool: lambda x: pool(pool(x, k), k)  # noqa: E731
    y, vjp = jax.vjp(chained(max_pool_same), x)
    y_ref, vjp_ref = jax.vjp(chained(reduce_window_pool), x)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(jit_inference(chained(max_pool_same))(x), y_ref)
    np.testing.assert_array_equal(vjp(dy)[0], vjp_ref(dy)[0])
    np.testing.assert_array_equal(jax.jit(jax.grad(lambda x: jnp.sum(chained(max_pool_same)(x) * dy)))(x),
                                  vjp_ref(dy)[0])
