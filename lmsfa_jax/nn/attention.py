"""EMA: efficient multi-scale attention (factor G = 8), NHWC, shape-preserving (B, H, W, C).

The reference computes two full-size maps per group, x1 (a GroupNorm) and x2 (a 3×3 conv), and
from them a one-channel attention map. Only three things of them reach the output, and each has a
cheaper form (exact algebra, equal up to float rounding):
- softmax_c(mean_hw(x1)): x1 normalises each channel over (H, W), so its spatial mean is the
  GroupNorm's bias;
- softmax_c(mean_hw(x2)): the mean of a 3×3 conv is the kernel applied to the sums of x over
  each tap's window, which are the whole sum less one row and/or column (`_window_sums`);
- the map Σ_c s1·x2 + s2·x1: a 3×3 conv of x to one channel (kernel · s1) plus a per-channel
  weighted sum of the normalised, gated x.
So the attention runs as a few passes over the (B, H, W, 8, cg) view of x (no transposes), with a
hand-written backward pass (`_attend`) that keeps only x, the one-channel map and per-image
statistics. EMA's forward+backward at batch 8 on the 2-core CPU: 218 -> 94 ms at 160²×16 and
87 -> 40 ms at 80²×32 against the direct form (`tests/test_attention.py`'s reference), about the
same at 40² and 20².
"""
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmsfa_jax.nn.conv import GN_EPS, TORCH_CONV_INIT, conv2d, same_windows
from lmsfa_jax.nn.norm import scale_and_bias
from lmsfa_jax.nn.xla_hints import gradient_materialised, materialised, sum_hw, sums_over_bhw

EMA_GROUPS = 8


class EMA(nn.Module):
    """Efficient multi-scale attention over C/8-channel groups, weights shared by the groups.

    1. Split channels into 8 groups of cg = C/8 (group g holds channels g·cg … (g+1)·cg − 1).
    2. Row/column profiles (means over W and H) -> shared 1×1 conv (with bias) -> gates a_h, a_w.
    3. x1 = GroupNorm(one channel per group)(xg · σ(a_h) · σ(a_w)); x2 = 3×3 conv (with bias)(xg).
    4. w = softmax_c(mean(x1))·x2 + softmax_c(mean(x2))·x1 (a (H, W) map); out = xg · σ(w).
    Params: conv1x1/{kernel (1, 1, cg, cg), bias}, conv3x3/{kernel (3, 3, cg, cg), bias},
    gn/{scale, bias} (cg,). Computed as the module docstring says.
    """
    groups: int = EMA_GROUPS
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        if c % self.groups:
            raise ValueError(f"EMA needs channels divisible by {self.groups}, got {c}")
        cg = c // self.groups
        xg = gradient_materialised(x).reshape(b, h, w, self.groups, cg)
        row_sums = jnp.sum(xg, axis=2, dtype=jnp.float32)               # (B, H, G, cg)
        col_sums = jnp.sum(xg, axis=1, dtype=jnp.float32)               # (B, W, G, cg)
        strip = conv2d(cg, 1, use_bias=True, dtype=self.dtype, name="conv1x1")(
            jnp.concatenate([row_sums / w, col_sums / h], axis=1).astype(self.dtype or x.dtype))
        gate_h, gate_w = jax.nn.sigmoid(strip[:, :h]), jax.nn.sigmoid(strip[:, h:])
        kernel, conv_bias = SharedConv3x3Params(cg, name="conv3x3")(cg)
        gn_scale, gn_bias = SharedAffineParams(cg, name="gn")()
        kernel, conv_bias, gn_scale, gn_bias = (p.astype(jnp.float32) for p in (kernel, conv_bias, gn_scale, gn_bias))
        s1 = jax.nn.softmax(gn_bias)                                                     # (cg,)
        x2_mean = jnp.einsum("ijbgc,ijco->bgo", _window_sums(xg, row_sums, col_sums), kernel) / (h * w)
        s2 = jax.nn.softmax(x2_mean + conv_bias, axis=-1)                                # (B, G, cg)
        out = _attend(xg, gate_h.astype(jnp.float32), gate_w.astype(jnp.float32), kernel @ s1,
                      s2 * gn_scale, s2 @ gn_bias + conv_bias @ s1)
        return out.reshape(b, h, w, c).astype(self.dtype or x.dtype)


class SharedConv3x3Params(nn.Module):
    """The params of EMA's 3×3 conv (with bias) shared by the groups, named as nn.Conv's:
    kernel (3, 3, c_in, features), bias (features,)."""
    features: int

    @nn.compact
    def __call__(self, in_features: int):
        return (self.param("kernel", TORCH_CONV_INIT, (3, 3, in_features, self.features)),
                self.param("bias", nn.initializers.zeros_init(), (self.features,)))


class SharedAffineParams(nn.Module):
    """The affine params of EMA's GroupNorm, named as nn.GroupNorm's: scale (ones), bias (zeros) (c,)."""
    features: int

    @nn.compact
    def __call__(self):
        return scale_and_bias(self, self.features)


def _window_sums(x, row_sums, col_sums):
    """S[i, j] = Σ_{h,w} xp[h+i, w+j] (xp: x zero-padded by 1), the sum of x (B, H, W, G, c) seen by
    tap (i, j) of a 'same' 3×3 conv, -> (3, 3, B, G, c) in float32. Tap row 0 misses x's last row,
    row 2 its first (columns alike), so S = total − that row − that column + their corner pixel."""
    total = jnp.sum(row_sums, axis=1)
    zero = jnp.zeros_like(total)
    rows_left_out = (row_sums[:, -1], zero, row_sums[:, 0])
    cols_left_out = (col_sums[:, -1], zero, col_sums[:, 0])
    corner_index = (-1, None, 0)

    def corner(i, j):
        if corner_index[i] is None or corner_index[j] is None:
            return zero
        return x[:, corner_index[i], corner_index[j]].astype(jnp.float32)

    return jnp.stack([jnp.stack([total - rows_left_out[i] - cols_left_out[j] + corner(i, j) for j in range(3)])
                      for i in range(3)])


def _channel_sum(t: jax.Array) -> jax.Array:
    """Σ over the last axis, for the differentiated program (the train step, compiled with
    XLA:CPU's YNNPACK reductions): a short axis (≤ 4) is summed slice by slice, an element-wise
    pass; a reduction over a minor axis of 2 or 4 is 2-5x slower there (EMA's forward pass at batch
    8: 20 against 98 ms at 160²×16). Without YNNPACK (`_attend` undifferentiated) the reduction is
    the faster form (`_reduce_channels`)."""
    if t.shape[-1] > 4:
        return _reduce_channels(t)
    return functools.reduce(jnp.add, [t[..., i] for i in range(t.shape[-1])])


def _reduce_channels(t: jax.Array) -> jax.Array:
    """Σ over the last axis as one reduction: the faster form for an undifferentiated EMA (compiled
    for inference, without YNNPACK fusions): 1.3 against 3.4 ms at batch 1, 160²×16."""
    return jnp.sum(t, axis=-1)


def _gated(x, gate_h, gate_w):
    """z = x · gate_h · gate_w, float32 (B, H, W, G, c), the gates broadcast over W and over H."""
    return x.astype(jnp.float32) * gate_h[:, :, None] * gate_w[:, None]


def _normalised(z, mean, inv):
    """ẑ = (z − mean) · inv with per-image, per-channel mean and inv (B, G, c)."""
    return (z - mean[:, None, None]) * inv[:, None, None]


def _attention_map(x, zhat, kernel1, coef, offset, channel_sum):
    """m = conv3x3(x; kernel1 (3, 3, c) -> one channel) + Σ_c coef·ẑ + offset -> (B, H, W, G),
    the Σ over c by `channel_sum`."""
    weighted = coef[:, None, None] * zhat
    for tap, k in zip(same_windows(x, 3), kernel1.reshape(9, -1)):
        weighted = weighted + tap.astype(jnp.float32) * k
    return channel_sum(weighted) + offset[:, None, None]


@jax.custom_vjp
def _attend(x, gate_h, gate_w, kernel1, coef, offset):
    """EMA's output x · σ(m) (x's dtype) from x (B, H, W, G, c), gates (B, H, G, c) and (B, W, G, c),
    the one-channel conv kernel (3, 3, c), the weights coef (B, G, c) of the normalised gated x
    (softmax(mean x2) · GroupNorm scale) and the offset (B, G); m as `_attention_map`.
    Undifferentiated (inference, evaluation), it sums over c with `_reduce_channels`."""
    return _forward(x, gate_h, gate_w, kernel1, coef, offset, _reduce_channels)[0]


def _forward(x, gate_h, gate_w, kernel1, coef, offset, channel_sum):
    """-> (output, residuals of the backward pass)."""
    z = _gated(x, gate_h, gate_w)
    hw = x.shape[1] * x.shape[2]
    mean = sum_hw(z) / hw
    inv = jax.lax.rsqrt(sum_hw(jnp.square(z - mean[:, None, None])) / hw + GN_EPS)
    m = _attention_map(x, _normalised(z, mean, inv), kernel1, coef, offset, channel_sum)
    out = (x * jax.nn.sigmoid(m)[..., None]).astype(x.dtype)
    return out, (x, gate_h, gate_w, kernel1, coef, offset, mean, inv, m)


def _attend_fwd(x, gate_h, gate_w, kernel1, coef, offset):
    return _forward(x, gate_h, gate_w, kernel1, coef, offset, _channel_sum)


def _attend_bwd(residuals, d_out):
    """Gradients by hand: dm = Σ_c d_out·x · σ'(m) (materialised once); the GroupNorm backward from
    two (H, W) sums of dm; the one-channel conv's input gradient as nine shifted copies of dm and its
    kernel gradient as nine sums; the gates' from sums over W and over H."""
    x, gate_h, gate_w, kernel1, coef, offset, mean, inv, m = residuals
    # A barrier keeps XLA from merging (CSE) the windows of x here with the forward pass's: merged,
    # each was materialised (written and read back) instead of fused into its users.
    x = jax.lax.optimization_barrier(x)
    hw = x.shape[1] * x.shape[2]
    sig = jax.nn.sigmoid(m)
    x32 = x.astype(jnp.float32)
    d_out = d_out.astype(jnp.float32)
    dm = materialised(_channel_sum(d_out * x32) * sig * (1 - sig))                    # (B, H, W, G)
    zhat = _normalised(_gated(x, gate_h, gate_w), mean, inv)
    d_offset = sum_hw(dm)                                                              # (B, G)
    d_coef = sum_hw(dm[..., None] * zhat)                                              # (B, G, c)
    dzhat_mean, dzhat_zhat_mean = coef * d_offset[..., None] / hw, coef * d_coef / hw
    dz = inv[:, None, None] * (coef[:, None, None] * dm[..., None] - dzhat_mean[:, None, None]
                               - zhat * dzhat_zhat_mean[:, None, None])
    d_gate_h = jnp.sum(dz * x32 * gate_w[:, None], axis=2)
    d_gate_w = jnp.sum(dz * x32 * gate_h[:, :, None], axis=1)
    dx = d_out * sig[..., None] + dz * gate_h[:, :, None] * gate_w[:, None]
    for tap, k in zip(same_windows(dm[..., None], 3), kernel1[::-1, ::-1].reshape(9, -1)):
        dx = dx + tap * k
    # d_kernel1[i, j] = Σ xp[h+i, w+j]·dm[h, w] = Σ x·(window (2-i, 2-j) of dm): the shifts on the
    # one-channel dm, and each sum over (B, H, W) keeps the G·c channels (then summed over G); the
    # nine sums in one pass (`sums_over_bhw`).
    b, h, w, g, c = x.shape
    d_kernel1 = jnp.stack(sums_over_bhw([(x32 * window[..., None]).reshape(b, h, w, g * c)
                                         for window in same_windows(dm, 3)[::-1]])).reshape(3, 3, g, c).sum(axis=2)
    return (dx.astype(x.dtype), d_gate_h.astype(gate_h.dtype), d_gate_w.astype(gate_w.dtype),
            d_kernel1.astype(kernel1.dtype), d_coef.astype(coef.dtype), d_offset.astype(offset.dtype))


_attend.defvjp(_attend_fwd, _attend_bwd)
