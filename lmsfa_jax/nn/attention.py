"""EMA: efficient multi-scale attention (factor G = 8), NHWC, shape-preserving (B, H, W, C)."""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmsfa_jax.nn.conv import GN_EPS, conv2d

EMA_GROUPS = 8


class EMA(nn.Module):
    """Efficient multi-scale attention over C/8-channel groups, weights shared by the groups.

    1. Split channels into 8 groups of cg = C/8 (group g holds channels g·cg … (g+1)·cg − 1).
    2. Row/column profiles (means over W and H) -> shared 1×1 conv (with bias) -> gates a_h, a_w.
    3. x1 = GroupNorm(one channel per group)(xg · σ(a_h) · σ(a_w)); x2 = 3×3 conv (with bias)(xg).
    4. w = softmax_c(mean(x1))·x2 + softmax_c(mean(x2))·x1 (a (H, W) map); out = xg · σ(w).
    Params: conv1x1/{kernel (1, 1, cg, cg), bias}, conv3x3/{kernel (3, 3, cg, cg), bias},
    gn/{scale, bias} (cg,).
    """
    groups: int = EMA_GROUPS
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        if c % self.groups:
            raise ValueError(f"EMA needs channels divisible by {self.groups}, got {c}")
        cg = c // self.groups
        xg = x.reshape(b, h, w, self.groups, cg).transpose(0, 3, 1, 2, 4).reshape(-1, h, w, cg)
        pool_h = jnp.mean(xg, axis=2, keepdims=True)                    # (bG, H, 1, cg)
        pool_w = jnp.mean(xg, axis=1, keepdims=True).transpose(0, 2, 1, 3)  # (bG, W, 1, cg)
        strip = conv2d(cg, 1, use_bias=True, dtype=self.dtype, name="conv1x1")(
            jnp.concatenate([pool_h, pool_w], axis=1))
        gate_h, gate_w = strip[:, :h], strip[:, h:].transpose(0, 2, 1, 3)
        x1 = nn.GroupNorm(num_groups=cg, epsilon=GN_EPS, use_fast_variance=False,
                          dtype=self.dtype, name="gn")(
            xg * jax.nn.sigmoid(gate_h) * jax.nn.sigmoid(gate_w))
        x2 = conv2d(cg, 3, use_bias=True, dtype=self.dtype, name="conv3x3")(xg)
        s1 = jax.nn.softmax(jnp.mean(x1, axis=(1, 2)), axis=-1)          # (bG, cg)
        s2 = jax.nn.softmax(jnp.mean(x2, axis=(1, 2)), axis=-1)
        weights = jnp.einsum("nc,nhwc->nhw", s1, x2) + jnp.einsum("nc,nhwc->nhw", s2, x1)
        out = xg * jax.nn.sigmoid(weights)[..., None]
        return out.reshape(b, self.groups, h, w, cg).transpose(0, 2, 3, 1, 4).reshape(b, h, w, c)
