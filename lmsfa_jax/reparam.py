"""Re-parameterisation: training-form variables -> deploy variables, as pure functions.

    deploy_variables = reparameterize(variables)          # also under jax.jit
    LMSFA(num_classes=4, deploy=True).apply(deploy_variables, images)

Every foldable normalisation is folded: Conv+BN -> conv with bias; the RepViT Conv2d_BN -> 1×1
conv with bias; each RepVGGDW (BN-folded depthwise 3×3 + depthwise 1×1 with bias + identity, then
the outer BN) -> one depthwise 3×3 conv with bias; SSFF's Conv3d + BatchNorm3d -> Conv3d with
bias. GroupNorm cannot be folded and stays. Kernels are in Flax layout with output channels
last (HWIO, DHWIO, or (k, k, 1, C) for depthwise), so a BatchNorm scales the last axis.
"""
from typing import Mapping

import jax.numpy as jnp

from lmsfa_jax.nn.conv import BN_EPS
from lmsfa_jax.nn.neck import SSFF_BN_EPS


def bn_scale_shift(bn_params: Mapping, bn_stats: Mapping, eps: float):
    """Eval-mode BatchNorm as y = x·s + t. bn_params {scale, bias}, bn_stats {mean, var}: (C,)."""
    s = bn_params["scale"] / jnp.sqrt(bn_stats["var"] + eps)
    return s, bn_params["bias"] - bn_stats["mean"] * s


def fuse_conv_bn(kernel, bn_params: Mapping, bn_stats: Mapping, eps: float = BN_EPS, bias=None):
    """Fold an eval-mode BatchNorm into the conv before it.

    kernel: (..., C_out) with output channels last (HWIO, DHWIO or depthwise (k, k, 1, C));
    bias: (C_out,) or None. Returns (kernel', bias') with W' = W·s, b' = β + (b − mean)·s,
    s = γ/√(var + eps).
    """
    s, t = bn_scale_shift(bn_params, bn_stats, eps)
    b = jnp.zeros_like(s) if bias is None else bias
    return kernel * s, t + b * s


def pad_to_3x3(kernel_1x1):
    """(1, 1, I, O) -> (3, 3, I, O) with the 1×1 weights at the centre."""
    return jnp.pad(kernel_1x1, ((1, 1), (1, 1), (0, 0), (0, 0)))


def repvgg_dw_to_conv(params: Mapping, stats: Mapping, eps: float = BN_EPS):
    """Merge a RepVGGDW, BN_o(BN_a(DW3(x)) + DW1(x) + x), into one depthwise 3×3 conv with bias.

    params/stats: the block's subtrees — conv/{c/kernel (3, 3, 1, C), bn}, conv1/{kernel
    (1, 1, 1, C), bias}, bn. Returns (kernel (3, 3, 1, C), bias (C,)).
    """
    k3, b3 = fuse_conv_bn(params["conv"]["c"]["kernel"], params["conv"]["bn"], stats["conv"]["bn"], eps)
    k1, b1 = params["conv1"]["kernel"], params["conv1"]["bias"]
    identity = pad_to_3x3(jnp.ones_like(k1))
    kernel = k3 + pad_to_3x3(k1) + identity
    return fuse_conv_bn(kernel, params["bn"], stats["bn"], eps, bias=b3 + b1)


def _reparam_tree(params: Mapping, stats: Mapping) -> dict:
    """Recursively fold the module patterns of the training form (see module docstring)."""
    keys = set(params)
    if keys == {"conv", "conv1", "bn"} and "c" in params["conv"]:                    # RepVGGDW
        kernel, bias = repvgg_dw_to_conv(params, stats)
        return {"fused": {"kernel": kernel, "bias": bias}}
    out = {}
    for name, sub in params.items():
        if not isinstance(sub, Mapping):
            out[name] = sub
        elif name == "bn":
            continue                                  # folded into its sibling conv below
        elif "bn" in keys and set(sub) <= {"kernel", "bias"} and name in ("conv", "c", "conv3d"):
            eps = SSFF_BN_EPS if name == "conv3d" else BN_EPS   # Conv / Conv2d_BN / SSFF Conv3d
            kernel, bias = fuse_conv_bn(sub["kernel"], params["bn"], stats["bn"], eps, sub.get("bias"))
            out[name] = {"kernel": kernel, "bias": bias}
        else:
            out[name] = _reparam_tree(sub, stats.get(name, {}))
    return out


def reparameterize(variables: Mapping) -> dict:
    """Training-form {'params', 'batch_stats'} -> deploy {'params'} for `LMSFA(deploy=True)`.

    Pure (the input is not modified) and jit-able; the deploy model computes the same function
    as the training-form model in eval mode.
    """
    return {"params": _reparam_tree(variables["params"], variables.get("batch_stats", {}))}
