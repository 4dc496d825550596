"""LMSH head (the reference's Segment_LSCD): shared GroupNorm convs, per-level Scale, DFL,
mask-coefficient branches and the Proto module. NHWC."""
from typing import Any, Sequence

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmsfa_jax.anchors import REG_MAX, STRIDES, dfl_expectation, dist2bbox, make_anchors, xyxy_to_cxcywh
from lmsfa_jax.nn.conv import TORCH_CONV_INIT, Conv, ConvGN, conv2d
from lmsfa_jax.nn.conv_ops import conv_general_dilated, pointwise_conv

NUM_MASKS = 32
# PyTorch takes a transposed conv's fan-in from weight dim 1 (out channels × k²).
TORCH_TRANSPOSED_INIT = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform", in_axis=-1, out_axis=-2)


class Scale(nn.Module):
    """Multiplies by one learnable scalar (param `scale`, shape ())."""

    @nn.compact
    def __call__(self, x):
        return x * self.param("scale", nn.initializers.ones_init(), ()).astype(x.dtype)


class ConvTranspose2x2(nn.Module):
    """ConvTranspose2d(k=2, s=2, p=0) with bias: out[2i+a, 2j+b, o] = bias[o] + Σ_c x[i, j, c]·W[a, b, c, o].

    (B, H, W, C) -> (B, 2H, 2W, features). Params: kernel (2, 2, C, features), bias (features,).
    (PyTorch stores this kernel as (C, features, 2, 2).)
    """
    features: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        kernel = self.param("kernel", TORCH_TRANSPOSED_INIT, (2, 2, c, self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        dtype = self.dtype or x.dtype
        # Output row a of each 2×2 block is one 1×1 conv to (b, o) pairs; the two rows interleave
        # by stacking (a copy of whole rows, not a transpose).
        rows = [pointwise_conv(x.astype(dtype), kernel[a].transpose(1, 0, 2).reshape(1, 1, c, 2 * self.features)
                               .astype(dtype)) for a in range(2)]
        y = jnp.stack(rows, axis=2).reshape(b, 2 * h, 2 * w, self.features)
        return y + bias.astype(dtype)


class Proto(nn.Module):
    """YOLOv8 Proto: Conv 3×3 -> ConvTranspose 2×2 s2 -> Conv 3×3 -> Conv 1×1 to `num_masks`.

    (B, H, W, C) -> (B, 2H, 2W, num_masks). Torch names: cv1, upsample, cv2, cv3.
    """
    hidden: int = 256
    num_masks: int = NUM_MASKS
    deploy: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(deploy=self.deploy, dtype=self.dtype)
        x = Conv(self.hidden, 3, name="cv1", **kw)(x, train)
        x = ConvTranspose2x2(self.hidden, self.dtype, name="upsample")(x)
        x = Conv(self.hidden, 3, name="cv2", **kw)(x, train)
        return Conv(self.num_masks, 1, name="cv3", **kw)(x, train)


class LMSH(nn.Module):
    """Lightweight multi-scale segmentation head (Segment_LSCD), inputs [P3, P4, P5].

    Per level i: f = ConvGN_i(1×1 -> hidden); f = share_conv(f) (two ConvGN 3×3 shared by all
    levels); map_i = concat[Scale_i(cv2(f)), cv3(f)] with 4·reg_max box logits then nc class
    logits. Mask coefficients per level: ConvGN 1×1 -> ConvGN 3×3 -> 1×1 conv (own weights).
    Protos = Proto(P3).

    decode=False (the default when train=True) returns (maps, mask_coef, protos): maps a list of (B, H_i, W_i, 4·reg_max + nc),
    mask_coef (B, N, num_masks), protos (B, 2·H_3, 2·W_3, num_masks). decode=True returns
    (decoded (B, N, 4 + nc + num_masks), protos); decoded boxes are (cx, cy, w, h) in input
    pixels, then class probabilities, then mask coefficients.
    """
    num_classes: int
    hidden: int = 256
    proto_hidden: int = 256
    num_masks: int = NUM_MASKS
    reg_max: int = REG_MAX
    strides: Sequence[int] = STRIDES
    deploy: bool = False
    dtype: Any = None

    def setup(self):
        nc, nl = self.num_classes, len(self.strides)
        box_bias, cls_bias = 1.0, math.log(5 / nc / (640 / 16) ** 2)
        self.stems = [ConvGN(self.hidden, 1, self.dtype, name=f"conv_{i}_0") for i in range(nl)]
        self.share_conv = [ConvGN(self.hidden, 3, self.dtype, name=f"share_conv_{j}") for j in range(2)]
        self.cv2 = nn.Conv(4 * self.reg_max, (1, 1), dtype=self.dtype, name="cv2", kernel_init=TORCH_CONV_INIT,
                           bias_init=nn.initializers.constant(box_bias), conv_general_dilated=conv_general_dilated)
        self.cv3 = nn.Conv(nc, (1, 1), dtype=self.dtype, name="cv3", kernel_init=TORCH_CONV_INIT,
                           bias_init=nn.initializers.constant(cls_bias), conv_general_dilated=conv_general_dilated)
        self.scales = [Scale(name=f"scale_{i}") for i in range(nl)]
        self.proto = Proto(self.proto_hidden, self.num_masks, self.deploy, self.dtype, name="proto")
        c4 = max(self.hidden // 4, self.num_masks)
        self.cv4 = [(ConvGN(c4, 1, self.dtype, name=f"cv4_{i}_0"),
                     ConvGN(c4, 3, self.dtype, name=f"cv4_{i}_1"),
                     conv2d(self.num_masks, 1, use_bias=True, dtype=self.dtype, name=f"cv4_{i}_2"))
                    for i in range(nl)]

    def __call__(self, xs: Sequence, train: bool = False, decode: bool | None = None):
        b = xs[0].shape[0]
        protos = self.proto(xs[0], train)
        mask_coef = jnp.concatenate(
            [c(bb(a(x))).reshape(b, -1, self.num_masks) for (a, bb, c), x in zip(self.cv4, xs)], axis=1)
        maps = []
        for i, x in enumerate(xs):
            f = self.stems[i](x)
            for conv in self.share_conv:
                f = conv(f)
            maps.append(jnp.concatenate([self.scales[i](self.cv2(f)), self.cv3(f)], axis=-1))
        if not (not train if decode is None else decode):
            return maps, mask_coef, protos
        return self.decode(maps, mask_coef), protos

    def decode(self, maps, mask_coef):
        """Per-level maps + mask coefficients -> (B, N, 4 + nc + num_masks) inference tensor."""
        b = maps[0].shape[0]
        flat = jnp.concatenate([m.reshape(b, -1, m.shape[-1]) for m in maps], axis=1)
        box_logits, cls_logits = flat[..., :4 * self.reg_max], flat[..., 4 * self.reg_max:]
        anchors, strides = make_anchors([m.shape[1:3] for m in maps], self.strides)
        boxes = xyxy_to_cxcywh(dist2bbox(dfl_expectation(box_logits, self.reg_max), anchors)) * strides
        return jnp.concatenate(
            [boxes.astype(flat.dtype), jax.nn.sigmoid(cls_logits), mask_coef.astype(flat.dtype)], axis=-1)
