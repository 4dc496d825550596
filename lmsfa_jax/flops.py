"""Convolution FLOP counting by intercepting the conv modules of a Flax model.

GFLOPs here = 2 × multiply-accumulates of every convolution (plain, grouped/depthwise, 3-D and
transposed); normalisation, activations, pooling and attention arithmetic are not counted.
A transposed conv costs input elements × out channels × k². Runs under `jax.eval_shape`: no
arithmetic is done.
"""
import collections
import math
from typing import Callable, Mapping

import flax.linen as nn
import jax

from lmsfa_jax.nn.attention import EMA
from lmsfa_jax.nn.conv import DepthwiseConv
from lmsfa_jax.nn.head import ConvTranspose2x2
from lmsfa_jax.nn.neck import PointwiseConv3d


def conv_macs(module: nn.Module, inputs: jax.Array, outputs: jax.Array) -> int:
    """Multiply-accumulates of one conv module call, from its input/output shapes."""
    if isinstance(module, nn.Conv):
        groups = module.feature_group_count
        taps = math.prod(module.kernel_size) * inputs.shape[-1] // groups
        return math.prod(outputs.shape) * taps
    if isinstance(module, DepthwiseConv):
        return math.prod(outputs.shape) * module.kernel_size ** 2
    if isinstance(module, ConvTranspose2x2):
        return math.prod(inputs.shape) * module.features * 4
    if isinstance(module, EMA):  # its 3×3 conv, cg -> cg in each group, counted as the reference runs it
        return math.prod(outputs.shape) * 9 * (inputs.shape[-1] // module.groups)
    if isinstance(module, PointwiseConv3d):  # inputs: its depth slices, the first at full resolution
        # counted as the reference's Conv3d runs, on the stack of upsampled slices
        return len(inputs) * math.prod(inputs[0].shape) * module.features
    raise TypeError(f"not a convolution module: {type(module).__name__}")


_CONV_TYPES = (nn.Conv, DepthwiseConv, ConvTranspose2x2, EMA, PointwiseConv3d)


def conv_flops_by_layer(apply_fn: Callable, *args, **kwargs) -> Mapping[str, int]:
    """Run `apply_fn(*args, **kwargs)` abstractly; return {top-level module name: conv FLOPs}."""
    counts = collections.Counter()

    def interceptor(next_fun, call_args, call_kwargs, context):
        out = next_fun(*call_args, **call_kwargs)
        if context.method_name == "__call__" and isinstance(context.module, _CONV_TYPES):
            path = context.module.path
            counts[path[0] if path else ""] += 2 * conv_macs(context.module, call_args[0], out)
        return out

    with nn.intercept_methods(interceptor):
        jax.eval_shape(lambda *a: apply_fn(*a, **kwargs), *args)
    return dict(counts)
