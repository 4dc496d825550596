"""Neck fusion modules: TFE (Zoom_cat), SSFF (ScalSeq), Add and Concat. NHWC."""
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmsfa_jax.nn.conv import TORCH_CONV_INIT, Conv
from lmsfa_jax.nn.conv_ops import pointwise_conv

# ScalSeq's BatchNorm3d keeps PyTorch's defaults (the reference sets eps 1e-3 and momentum 0.03 on
# BatchNorm2d layers only): eps 1e-5 and momentum 0.1, i.e. Flax momentum 0.9.
SSFF_BN_EPS = 1e-5
SSFF_BN_MOMENTUM = 0.9


def _adaptive_bins(n_in: int, n_out: int):
    """PyTorch adaptive pooling bins: cell i covers [floor(i·n_in/n_out), ceil((i+1)·n_in/n_out))."""
    return [(i * n_in // n_out, -(-(i + 1) * n_in // n_out)) for i in range(n_out)]


def adaptive_max_plus_avg_pool(x, out_hw: tuple[int, int]):
    """adaptive_max_pool(x) + adaptive_avg_pool(x) to `out_hw`. (B, H, W, C) -> (B, h, w, C)."""
    h, w = x.shape[1:3]
    oh, ow = out_hw
    if h % oh == 0 and w % ow == 0:
        # Whole-factor bins: one strided view per position in the bin, combined element-wise (one
        # fused pass; XLA:CPU's reduction over the bin axes of a reshape was 2.5x slower forward
        # and 3.5x backward).
        fh, fw = h // oh, w // ow
        views = [x[:, i::fh, j::fw] for i in range(fh) for j in range(fw)]
        return functools.reduce(jnp.maximum, views) + functools.reduce(jnp.add, views) * (1 / len(views))
    rows = []
    for r0, r1 in _adaptive_bins(h, oh):
        cols = [x[:, r0:r1, c0:c1].max(axis=(1, 2)) + x[:, r0:r1, c0:c1].mean(axis=(1, 2))
                for c0, c1 in _adaptive_bins(w, ow)]
        rows.append(jnp.stack(cols, axis=1))
    return jnp.stack(rows, axis=1)


def nearest_resize(x, out_hw: tuple[int, int]):
    """PyTorch 'nearest' interpolation: source index = floor(dst · in/out). NHWC."""
    h, w = x.shape[1:3]
    oh, ow = out_hw
    if oh % h == 0 and ow % w == 0:
        return jnp.repeat(jnp.repeat(x, oh // h, axis=1), ow // w, axis=2)
    rows = np.floor(np.arange(oh) * (h / oh)).astype(np.int32)
    cols = np.floor(np.arange(ow) * (w / ow)).astype(np.int32)
    return x[:, rows][:, :, cols]


class TFE(nn.Module):
    """Zoom_cat (TFE), no parameters. Inputs [l, m, s] (high, target, low resolution):
    concat[maxpool+avgpool(l -> m's size), m, nearest(s -> m's size)] along channels."""

    @nn.compact
    def __call__(self, xs: Sequence, train: bool = False):
        large, mid, small = xs
        size = mid.shape[1:3]
        return jnp.concatenate(
            [adaptive_max_plus_avg_pool(large, size), mid, nearest_resize(small, size)], axis=-1)


class SSFF(nn.Module):
    """ScalSeq (SSFF). Inputs [p3, p4, p5] at strides 8/16/32 -> (B, H3, W3, features).

    p4, p5 go through 1×1 Convs to `features` channels (p3 too if its width differs; torch
    names conv0/conv1/conv2), are nearest-resized to p3's size and stacked on a depth axis
    (B, 3, H, W, C); then a 1×1×1 Conv3d with bias, BatchNorm3d (eps 1e-5), LeakyReLU(0.1) and
    a max over depth. Deploy: the Conv3d carries the folded BatchNorm3d.

    Computed without the stack: the Conv3d, BatchNorm3d and LeakyReLU act on each depth slice
    pixel by pixel, so they commute with a whole-factor nearest upsampling and run on p4 and p5 at
    their own resolution (2.1x fewer pixels), upsampled just before the element-wise max. The
    BatchNorm3d statistics over the stack are the mean of the three slices' (each slice has H3·W3
    pixels per image, an upsampled one the same mean and spread as its source).
    """
    features: int
    deploy: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, xs: Sequence, train: bool = False):
        p3, p4, p5 = xs
        if p3.shape[-1] != self.features:
            p3 = Conv(self.features, 1, deploy=self.deploy, dtype=self.dtype, name="conv0")(p3, train)
        size = p3.shape[1:3]
        levels = [p3] + [Conv(self.features, 1, deploy=self.deploy, dtype=self.dtype, name=name)(x, train)
                         for name, x in (("conv1", p4), ("conv2", p5))]
        if any(size[0] % x.shape[1] or size[1] % x.shape[2] for x in levels):
            levels = [nearest_resize(x, size) for x in levels]   # a fractional factor: resize first
        ys = PointwiseConv3d(self.features, self.dtype, name="conv3d")(levels)
        if not self.deploy:
            ys = _SliceBatchNorm(train, SSFF_BN_EPS, SSFF_BN_MOMENTUM, self.dtype, name="bn")(ys)
        return functools.reduce(jnp.maximum, [nearest_resize(nn.leaky_relu(y, 0.1), size) for y in ys])


class PointwiseConv3d(nn.Module):
    """A 1×1×1 Conv3d with bias applied to each of the depth slices `xs` [(B, H_i, W_i, C)].
    Params as Flax's nn.Conv of that kernel: kernel (1, 1, 1, C, features), bias (features,)."""
    features: int
    dtype: Any = None

    @nn.compact
    def __call__(self, xs: Sequence) -> list:
        c = xs[0].shape[-1]
        kernel = self.param("kernel", TORCH_CONV_INIT, (1, 1, 1, c, self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        outputs = []
        for x in xs:
            x, k, b = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
            outputs.append(pointwise_conv(x, k) + b)
        return outputs


class _SliceBatchNorm(nn.Module):
    """Flax's nn.BatchNorm (exact variance, Flax `momentum`) over the depth slices `ys`
    [(B, H_i, W_i, C)] of a BatchNorm3d input, some not yet upsampled: the statistics of the stack
    of upsampled slices are the means of the slices' own. Variables as nn.BatchNorm's: params
    scale/bias, batch_stats mean/var."""
    train: bool
    eps: float
    momentum: float
    dtype: Any = None

    @nn.compact
    def __call__(self, ys: Sequence) -> list:
        c = ys[0].shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        scale = self.param("scale", nn.initializers.ones_init(), (c,))
        bias = self.param("bias", nn.initializers.zeros_init(), (c,))
        if self.train:
            f32 = [y.astype(jnp.float32) for y in ys]
            mean = sum(y.mean(axis=(0, 1, 2)) for y in f32) / len(f32)
            var = sum(jnp.square(y - mean).mean(axis=(0, 1, 2)) for y in f32) / len(f32)
            if not self.is_initializing():
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        else:
            mean, var = ra_mean.value, ra_var.value
        mul = jax.lax.rsqrt(var + self.eps) * scale
        dtype = self.dtype or jnp.result_type(ys[0], scale)
        return [((y - mean) * mul + bias).astype(dtype) for y in ys]


class Add(nn.Module):
    """Element-wise sum of the inputs."""

    @nn.compact
    def __call__(self, xs: Sequence, train: bool = False):
        return sum(xs[1:], xs[0])


class Concat(nn.Module):
    """Channel concatenation in the listed order."""

    @nn.compact
    def __call__(self, xs: Sequence, train: bool = False):
        return jnp.concatenate(xs, axis=-1)
