"""RepViT pieces: Conv2d_BN, RepVGGDW and the RepViT block with EMA attention (RVB-EMA).

NHWC throughout. Training form keeps every branch and BatchNorm; `deploy=True` expects the
single-path parameters produced by `lmsfa_jax.reparam`.
"""
from typing import Any

import flax.linen as nn

from lmsfa_jax.nn.attention import EMA
from lmsfa_jax.nn.conv import BatchNorm, DepthwiseConv, conv2d


class Conv2dBN(nn.Module):
    """1×1 conv (no bias) + BatchNorm2d, no activation. (B, H, W, C1) -> (B, H, W, C2).

    Params: c/kernel (1, 1, C1, C2), bn/{scale, bias}; deploy: c/{kernel, bias}.
    """
    features: int
    deploy: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = conv2d(self.features, 1, use_bias=self.deploy, dtype=self.dtype, name="c")(x)
        if not self.deploy:
            y = BatchNorm(train, dtype=self.dtype, name="bn")(y)
        return y


class RepVGGDW(nn.Module):
    """RepVGGDW(x) = BN_o(BN_a(DW3(x)) + DW1(x) + x), shape-preserving (B, H, W, C).

    Params: conv/c/kernel (3, 3, 1, C) and conv/bn (DW3 + BN_a), conv1/{kernel (1, 1, 1, C), bias},
    bn (BN_o). Deploy: one depthwise 3×3 conv with bias, `fused/{kernel, bias}`.
    """
    deploy: bool = False
    depthwise_impl: str = "auto"
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.deploy:
            return DepthwiseConv(3, use_bias=True, depthwise_impl=self.depthwise_impl,
                                 name="fused")(x)
        branch3 = _DepthwiseBN(self.depthwise_impl, self.dtype, name="conv")(x, train)
        branch1 = DepthwiseConv(1, use_bias=True, depthwise_impl=self.depthwise_impl,
                                name="conv1")(x)
        return BatchNorm(train, dtype=self.dtype, name="bn")(branch3 + branch1 + x)


class _DepthwiseBN(nn.Module):
    """Depthwise 3×3 conv (no bias) + BatchNorm: the reference's Conv2d_BN with groups=C."""
    depthwise_impl: str = "auto"
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = DepthwiseConv(3, depthwise_impl=self.depthwise_impl, name="c")(x)
        return BatchNorm(train, dtype=self.dtype, name="bn")(y)


class RepViTBlockEMA(nn.Module):
    """RVB-EMA block, C -> C: out = M(T(x)), T = EMA ∘ RepVGGDW, M(y) = y + P2(GELU(P1(y))).

    P1 is a 1×1 Conv2d_BN C -> 2C, P2 a 1×1 Conv2d_BN 2C -> C; GELU is the exact erf form.
    Torch names: token_mixer.0 (RepVGGDW), token_mixer.1 (EMA), channel_mixer.fn.{0,2}.
    """
    deploy: bool = False
    depthwise_impl: str = "auto"
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = x.shape[-1]
        y = RepVGGDW(self.deploy, self.depthwise_impl, self.dtype, name="token_mixer_0")(x, train)
        y = EMA(dtype=self.dtype, name="token_mixer_1")(y)
        mixer = _ChannelMixer(c, self.deploy, self.dtype, name="channel_mixer")
        return y + mixer(y, train)


class _ChannelMixer(nn.Module):
    """P2(GELU(P1(y))) with P1: C -> 2C and P2: 2C -> C (torch: channel_mixer.fn.{0,2})."""
    features: int
    deploy: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, y, train: bool = False):
        h = Conv2dBN(2 * self.features, self.deploy, self.dtype, name="fn_0")(y, train)
        h = nn.gelu(h, approximate=False)
        return Conv2dBN(self.features, self.deploy, self.dtype, name="fn_2")(h, train)
