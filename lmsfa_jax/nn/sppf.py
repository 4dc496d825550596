"""SPPF: spatial pyramid pooling, fast (three chained 5×5 max-pools)."""
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from lmsfa_jax.nn.conv import Conv


def _window_max(x, k: int):
    """k×k max-pool, stride 1, padding k//2 where padded positions never win, as one reduce-window."""
    p = k // 2
    return nn.max_pool(x, (k, k), strides=(1, 1), padding=((p, p), (p, p)))


def _line_max(x, k: int, axis: int):
    """The max over a window of k along `axis` (stride 1, padded by k//2 with −inf): k shifted slices."""
    p, n = k // 2, x.shape[axis]
    padding = [(0, 0)] * x.ndim
    padding[axis] = (p, p)
    xp = jnp.pad(x, padding, constant_values=-jnp.inf)
    return functools.reduce(jnp.maximum, [lax.slice_in_dim(xp, i, i + n, axis=axis) for i in range(k)])


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_pool_same(x, k: int):
    """k×k max-pool, stride 1, padding k//2 where padded positions never win. NHWC (B, H, W, C).

    The forward pass is separable, k-wide maxima along W then H: the same values as one k×k
    reduce-window, which XLA:CPU runs 6-9x slower (SPPF's three pools at 20²×128: 0.5 against 3.2 ms
    at batch 1, 2.8 against 24.5 ms at batch 8). The gradient is the reduce-window's (each window's
    to its first maximum, as PyTorch's); the separable form's would split among ties, which chained
    pools make common."""
    return _line_max(_line_max(x, k, 2), k, 1)


def _max_pool_same_fwd(x, k):
    return max_pool_same(x, k), x


def _max_pool_same_bwd(k, x, dy):
    return jax.vjp(lambda x: _window_max(x, k), x)[1](dy)


max_pool_same.defvjp(_max_pool_same_fwd, _max_pool_same_bwd)


class SPPF(nn.Module):
    """(B, H, W, C1) -> (B, H, W, C2): a = cv1(x) (C1/2 ch); b, c, d = pool(a), pool(b), pool(c);
    cv2(concat[a, b, c, d]). Torch names: cv1, cv2."""
    features: int
    k: int = 5
    deploy: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        a = Conv(x.shape[-1] // 2, 1, deploy=self.deploy, dtype=self.dtype, name="cv1")(x, train)
        pooled = [a]
        for _ in range(3):
            pooled.append(max_pool_same(pooled[-1], self.k))
        return Conv(self.features, 1, deploy=self.deploy, dtype=self.dtype, name="cv2")(
            jnp.concatenate(pooled, axis=-1), train)
