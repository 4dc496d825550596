"""Neck fusion modules: TFE (Zoom_cat), SSFF (ScalSeq), Add and Concat. NHWC."""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from lmsfa_jax.nn.conv import TORCH_CONV_INIT, BatchNorm, Conv
from lmsfa_jax.nn.conv_ops import conv_general_dilated

SSFF_BN_EPS = 1e-5  # ScalSeq's BatchNorm3d keeps PyTorch's default eps.


def _adaptive_bins(n_in: int, n_out: int):
    """PyTorch adaptive pooling bins: cell i covers [floor(i·n_in/n_out), ceil((i+1)·n_in/n_out))."""
    return [(i * n_in // n_out, -(-(i + 1) * n_in // n_out)) for i in range(n_out)]


def adaptive_max_plus_avg_pool(x, out_hw: tuple[int, int]):
    """adaptive_max_pool(x) + adaptive_avg_pool(x) to `out_hw`. (B, H, W, C) -> (B, h, w, C)."""
    b, h, w, c = x.shape
    oh, ow = out_hw
    if h % oh == 0 and w % ow == 0:
        blocks = x.reshape(b, oh, h // oh, ow, w // ow, c)
        return blocks.max(axis=(2, 4)) + blocks.mean(axis=(2, 4))
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
        p4 = nearest_resize(
            Conv(self.features, 1, deploy=self.deploy, dtype=self.dtype, name="conv1")(p4, train), size)
        p5 = nearest_resize(
            Conv(self.features, 1, deploy=self.deploy, dtype=self.dtype, name="conv2")(p5, train), size)
        stack = jnp.stack([p3, p4, p5], axis=1)                       # (B, 3, H, W, C)
        y = nn.Conv(self.features, (1, 1, 1), use_bias=True, dtype=self.dtype, kernel_init=TORCH_CONV_INIT,
                    conv_general_dilated=conv_general_dilated, name="conv3d")(stack)
        if not self.deploy:
            y = BatchNorm(train, eps=SSFF_BN_EPS, dtype=self.dtype, name="bn")(y)
        return nn.leaky_relu(y, 0.1).max(axis=1)


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
