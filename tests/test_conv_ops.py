"""Convolutions shaped for speed (`nn.conv_ops`) compute XLA's convolutions and their gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from lmsfa_jax.nn import conv_ops


def xla_conv3x3(x, kernel, stride=1):
    return lax.conv_general_dilated(x, kernel, (stride, stride), ((1, 1), (1, 1)),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def relative_error(a, b) -> float:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return float(np.abs(a - b).max() / np.abs(b).max())


# (B, H, W, C, O, stride); (2, 50, 64, 64, 32, 1) is split into 3 row blocks of the weight-gradient
# products, the last block part padding.
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1, 1), (2, 9, 7, 5, 6, 1), (3, 4, 11, 16, 8, 1),
                                   (2, 50, 64, 64, 32, 1), (1, 2, 2, 1, 1, 2), (2, 10, 6, 5, 7, 2),
                                   (1, 16, 32, 16, 32, 2)])
def test_conv3x3_and_gradients_match_xla(shape):
    b, h, w, c, o, stride = shape
    kx, kk, kd = jax.random.split(jax.random.key(0), 3)
    x, kernel = jax.random.normal(kx, (b, h, w, c)), jax.random.normal(kk, (3, 3, c, o))
    dy = jax.random.normal(kd, (b, h // stride, w // stride, o))
    y_ref, vjp_ref = jax.vjp(lambda x, k: xla_conv3x3(x, k, stride), x, kernel)
    y, vjp = jax.jit(lambda x, k: jax.vjp(lambda x, k: conv_ops.conv3x3(x, k, stride), x, k))(x, kernel)
    np.testing.assert_array_equal(y, y_ref)
    for name, grad, grad_ref in zip(("input", "kernel"), vjp(dy), vjp_ref(dy)):
        assert grad.shape == grad_ref.shape and relative_error(grad, grad_ref) < 1e-5, name


def test_conv3x3_weight_gradient_in_bfloat16_keeps_dtype():
    x = jax.random.normal(jax.random.key(1), (2, 12, 10, 8)).astype(jnp.bfloat16)
    kernel = jax.random.normal(jax.random.key(2), (3, 3, 8, 4)).astype(jnp.bfloat16)
    dk = jax.grad(lambda k: jnp.sum(conv_ops.conv3x3(x, k).astype(jnp.float32) ** 2))(kernel)
    dk_ref = jax.grad(lambda k: jnp.sum(xla_conv3x3(x.astype(jnp.float32), k.astype(jnp.float32)) ** 2))(
        kernel.astype(jnp.float32))
    assert dk.dtype == jnp.bfloat16 and relative_error(dk, dk_ref) < 2e-2


def _calls_conv3x3(x_shape, kernel_shape, padding=((1, 1), (1, 1)), strides=(1, 1)) -> bool:
    jaxpr = jax.make_jaxpr(lambda x, k: conv_ops.conv_general_dilated(
        x, k, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")))(
        jnp.zeros(x_shape), jnp.zeros(kernel_shape))
    return "custom_vjp_call" in str(jaxpr)


def test_only_large_padding_1_3x3_convs_take_conv3x3_on_cpu():
    assert jax.default_backend() == "cpu"
    assert _calls_conv3x3((8, 32, 32, 64), (3, 3, 64, 64))
    assert not _calls_conv3x3((8, 16, 16, 64), (3, 3, 64, 64))       # too few pixels
    assert not _calls_conv3x3((64, 160, 160, 2), (3, 3, 2, 2))       # too few channels (EMA)
    assert not _calls_conv3x3((8, 32, 32, 64), (3, 3, 64, 64), padding=((0, 0), (0, 0)))
    assert not _calls_conv3x3((8, 32, 32, 64), (5, 5, 64, 64), padding=((2, 2), (2, 2)))
    assert _calls_conv3x3((8, 64, 64, 16), (3, 3, 16, 32), strides=(2, 2))
    assert not _calls_conv3x3((8, 40, 40, 128), (3, 3, 128, 256), strides=(2, 2))   # too few pixels
    assert not _calls_conv3x3((8, 65, 64, 16), (3, 3, 16, 32), strides=(2, 2))      # odd height
    assert not _calls_conv3x3((8, 64, 64, 16), (3, 3, 16, 32), strides=(3, 3))
