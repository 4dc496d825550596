"""EMA: efficient multi-scale attention (factor G = 8), NHWC, shape-preserving (B, H, W, C)."""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmsfa_jax.nn.conv import GN_EPS, TORCH_CONV_INIT, conv2d

EMA_GROUPS = 8


def grouped_conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A 'same' 3×3 conv over axes 1, 2 of x (B, H, W, G, c), with one kernel (3, 3, c, c') shared
    by the G groups -> (B, H, W, G, c'), run as a plain conv over the B·G images of c channels."""
    b, h, w, g, c = x.shape
    images = x.transpose(0, 3, 1, 2, 4).reshape(b * g, h, w, c)
    y = jax.lax.conv_general_dilated(images, kernel, (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y.reshape(b, g, h, w, -1).transpose(0, 2, 3, 1, 4)


class EMA(nn.Module):
    """Efficient multi-scale attention over C/8-channel groups, weights shared by the groups.

    1. Split channels into 8 groups of cg = C/8 (group g holds channels g·cg … (g+1)·cg − 1).
    2. Row/column profiles (means over W and H) -> shared 1×1 conv (with bias) -> gates a_h, a_w.
    3. x1 = GroupNorm(one channel per group)(xg · σ(a_h) · σ(a_w)); x2 = 3×3 conv (with bias)(xg).
    4. w = softmax_c(mean(x1))·x2 + softmax_c(mean(x2))·x1 (a (H, W) map); out = xg · σ(w).
    Params: conv1x1/{kernel (1, 1, cg, cg), bias}, conv3x3/{kernel (3, 3, cg, cg), bias},
    gn/{scale, bias} (cg,). Computed on the (B, H, W, 8, cg) view of x: only the 3×3 conv moves
    the groups to the batch axis (XLA:CPU's transposes are slow, and fused into neighbouring
    ops they slow those down too).
    """
    groups: int = EMA_GROUPS
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        if c % self.groups:
            raise ValueError(f"EMA needs channels divisible by {self.groups}, got {c}")
        cg = c // self.groups
        xg = x.reshape(b, h, w, self.groups, cg)
        pool_h = jnp.mean(xg, axis=2)                                    # (B, H, G, cg)
        pool_w = jnp.mean(xg, axis=1)                                    # (B, W, G, cg)
        strip = conv2d(cg, 1, use_bias=True, dtype=self.dtype, name="conv1x1")(
            jnp.concatenate([pool_h, pool_w], axis=1))
        gate_h, gate_w = strip[:, :h, None], strip[:, None, h:]
        x1 = nn.GroupNorm(num_groups=cg, epsilon=GN_EPS, use_fast_variance=False, reduction_axes=(1, 2, 4),
                          dtype=self.dtype, name="gn")(xg * jax.nn.sigmoid(gate_h) * jax.nn.sigmoid(gate_w))
        x2 = GroupSharedConv3x3(cg, self.dtype, name="conv3x3")(xg)
        s1 = jax.nn.softmax(jnp.mean(x1, axis=(1, 2)), axis=-1)[:, None, None]   # (B, 1, 1, G, cg)
        s2 = jax.nn.softmax(jnp.mean(x2, axis=(1, 2)), axis=-1)[:, None, None]
        weights = jnp.sum(s1 * x2 + s2 * x1, axis=-1, keepdims=True)              # (B, H, W, G, 1)
        return (xg * jax.nn.sigmoid(weights)).reshape(b, h, w, c)


class GroupSharedConv3x3(nn.Module):
    """`grouped_conv3x3` with bias; params kernel (3, 3, c, features), bias (features,) as nn.Conv."""
    features: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", TORCH_CONV_INIT, (3, 3, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return grouped_conv3x3(x, kernel) + bias
