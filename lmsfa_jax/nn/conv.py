"""Convolution units: Conv (conv + BN + SiLU), ConvGN (conv + GroupNorm + SiLU), depthwise conv.

All tensors are NHWC. Kernels are HWIO (Flax layout); PyTorch's OIHW is converted in
`lmsfa_jax.weights`. BatchNorm follows the reference model: eps 1e-3 and PyTorch momentum 0.03,
i.e. Flax `momentum=0.97`.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmsfa_jax.nn.conv_ops import conv_general_dilated
from lmsfa_jax.nn.norm import BatchNormAct, GroupNormSiLU
from lmsfa_jax.nn.xla_hints import materialised, sums_over_bhw

BN_EPS = 1e-3
BN_MOMENTUM = 0.97  # Flax convention: running = momentum * running + (1 - momentum) * batch.
GN_EPS = 1e-5
GN_GROUPS = 16

DEPTHWISE_IMPLS = ("auto", "lax", "shift")
# PyTorch's default conv init (kaiming_uniform, a=√5): U(±1/√fan_in).
TORCH_CONV_INIT = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def BatchNorm(train: bool, silu: bool = False, eps: float = BN_EPS, dtype: Any = None,
              name: str | None = None) -> BatchNormAct:
    """BatchNorm over the last axis with the reference's eps and momentum, then SiLU when `silu`."""
    return BatchNormAct(train, silu, eps, BN_MOMENTUM, dtype, name=name)


def resolve_depthwise_impl(impl: str) -> str:
    """'auto' -> 'shift' on CPU (XLA's grouped conv is slow there), 'lax' elsewhere."""
    if impl not in DEPTHWISE_IMPLS:
        raise ValueError(f"depthwise_impl must be one of {DEPTHWISE_IMPLS}, got {impl!r}")
    if impl == "auto":
        return "shift" if jax.default_backend() == "cpu" else "lax"
    return impl


def depthwise_conv2d(x: jax.Array, kernel: jax.Array, impl: str = "auto") -> jax.Array:
    """Stride-1 'same' depthwise convolution.

    x: (B, H, W, C); kernel: (k, k, 1, C) with k odd. impl 'lax' uses XLA's grouped convolution
    (`feature_group_count=C`); 'shift' sums k² shifted, channel-scaled copies of the padded input,
    which computes the same thing and is much faster on CPU.
    """
    k = kernel.shape[0]
    if resolve_depthwise_impl(impl) == "lax":
        return jax.lax.conv_general_dilated(
            x, kernel.astype(x.dtype), (1, 1), [(k // 2, k // 2)] * 2,
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[-1])
    if k == 1:
        return x * kernel[0, 0, 0].astype(x.dtype)
    return _depthwise_by_shifts(x, kernel)


def same_windows(t: jax.Array, k: int) -> list:
    """The k² windows of a stride-1 'same' k×k conv over axes 1, 2 of t (B, H, W, ...), tap-major:
    [tp[:, i:i+H, j:j+W] for i, j in 0..k-1], tp being t zero-padded by k // 2 on H and W."""
    h, w = t.shape[1:3]
    p = k // 2
    tp = jnp.pad(t, ((0, 0), (p, p), (p, p)) + ((0, 0),) * (t.ndim - 3))
    return [tp[:, i:i + h, j:j + w] for i in range(k) for j in range(k)]


def _shifted_sum(x, kernel):
    """Σ_{i,j} xp[:, i:i+H, j:j+W] · kernel[i, j, 0] (xp: x zero-padded by k // 2)."""
    taps = [window * tap for window, tap in
            zip(same_windows(x, kernel.shape[0]), kernel[:, :, 0].reshape(-1, x.shape[-1]).astype(x.dtype))]
    return sum(taps[1:], taps[0])


@jax.custom_vjp
def _depthwise_by_shifts(x, kernel):
    return _shifted_sum(x, kernel)


def _depthwise_by_shifts_fwd(x, kernel):
    return _shifted_sum(x, kernel), (x, kernel)


def _depthwise_by_shifts_bwd(residuals, dy):
    """dx: the same shifted sum of dy with the kernel flipped; dkernel[i, j] = Σ xp-tap(i, j) · dy, the
    nine sums in one pass (`sums_over_bhw`).
    dy is `materialised` first: XLA:CPU would otherwise fuse the whole chain that produces it into
    each of the k² taps, computing it k² times."""
    x, kernel = residuals
    dy = materialised(dy)
    dx = _shifted_sum(dy, kernel[::-1, ::-1])
    dkernel = jnp.stack(sums_over_bhw([window.astype(jnp.float32) * dy.astype(jnp.float32)
                                       for window in same_windows(x, kernel.shape[0])]))
    return dx, dkernel.reshape(kernel.shape).astype(kernel.dtype)


_depthwise_by_shifts.defvjp(_depthwise_by_shifts_fwd, _depthwise_by_shifts_bwd)


class DepthwiseConv(nn.Module):
    """Depthwise k×k conv, stride 1, 'same' padding. Params: kernel (k, k, 1, C)[, bias (C,)]."""
    kernel_size: int = 3
    use_bias: bool = False
    depthwise_impl: str = "auto"

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        kernel = self.param("kernel", TORCH_CONV_INIT,
                            (self.kernel_size, self.kernel_size, 1, c))
        y = depthwise_conv2d(x, kernel, self.depthwise_impl)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros_init(), (c,)).astype(y.dtype)
        return y


def conv2d(features: int, kernel_size: int, stride: int = 1, use_bias: bool = False,
           dtype: Any = None, name: str | None = None) -> nn.Conv:
    """A plain 2-D conv with PyTorch's 'autopad' (k // 2 on each side), run by `conv_ops`."""
    p = kernel_size // 2
    return nn.Conv(features, (kernel_size, kernel_size), strides=(stride, stride),
                   padding=((p, p), (p, p)), use_bias=use_bias, dtype=dtype,
                   kernel_init=TORCH_CONV_INIT, conv_general_dilated=conv_general_dilated, name=name)


class Conv(nn.Module):
    """Ultralytics Conv: conv (no bias) -> BatchNorm2d -> SiLU; `deploy`: conv with bias -> SiLU.

    (B, H, W, C1) -> (B, H/s, W/s, C2). Params: conv/kernel (k, k, C1, C2), bn/{scale, bias}.
    """
    features: int
    kernel_size: int = 1
    stride: int = 1
    act: bool = True
    deploy: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = conv2d(self.features, self.kernel_size, self.stride, use_bias=self.deploy,
                   dtype=self.dtype, name="conv")(x)
        if not self.deploy:
            return BatchNorm(train, silu=self.act, dtype=self.dtype, name="bn")(y)
        return nn.silu(y) if self.act else y


class ConvGN(nn.Module):
    """Conv (no bias) -> GroupNorm(16 groups, eps 1e-5) -> SiLU, used by the LMSH head.

    GroupNorm has no running statistics, so this unit trains the same at any batch size.
    """
    features: int
    kernel_size: int = 1
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        y = conv2d(self.features, self.kernel_size, dtype=self.dtype, name="conv")(x)
        return GroupNormSiLU(GN_GROUPS, GN_EPS, self.dtype, name="gn")(y)


__all__ = ["BatchNorm", "Conv", "ConvGN", "DepthwiseConv", "conv2d", "depthwise_conv2d",
           "resolve_depthwise_impl", "TORCH_CONV_INIT", "BN_EPS", "BN_MOMENTUM", "GN_EPS", "GN_GROUPS"]
