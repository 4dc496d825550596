"""Flax Linen building blocks of LMSF-A (NHWC). One concept per module."""
from lmsfa_jax.nn.attention import EMA
from lmsfa_jax.nn.c2f import C2fPro
from lmsfa_jax.nn.conv import BatchNorm, Conv, ConvGN, DepthwiseConv
from lmsfa_jax.nn.head import LMSH, Proto, Scale
from lmsfa_jax.nn.neck import SSFF, TFE, Add, Concat
from lmsfa_jax.nn.repvit import Conv2dBN, RepVGGDW, RepViTBlockEMA
from lmsfa_jax.nn.sppf import SPPF

__all__ = [
    "EMA", "C2fPro", "BatchNorm", "Conv", "ConvGN", "DepthwiseConv", "LMSH", "Proto",
    "Scale", "SSFF", "TFE", "Add", "Concat", "Conv2dBN", "RepVGGDW", "RepViTBlockEMA", "SPPF",
]
