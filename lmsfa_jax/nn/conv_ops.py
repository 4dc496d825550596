"""Convolution primitives shaped for speed, used by every dense conv of the model.

`conv_general_dilated` is a drop-in for `lax.conv_general_dilated` (pass it to `nn.Conv`): a
1×1 (or 1×1×1), stride-1, ungrouped, channels-last convolution is computed as a matrix product
over the channel axis. XLA:CPU runs that product and both of its gradients several times faster
than the same 1×1 convolution (whose weight gradient it treats as a convolution with a full-image
window); on other backends XLA lowers 1×1 convolutions to the same product anyway. Every other
convolution goes to `lax.conv_general_dilated` unchanged.
"""
import jax
from jax import lax


def _channels_last(dimension_numbers, ndim: int) -> bool:
    """True when the conv is (N, spatial..., C) x (spatial..., I, O) -> (N, spatial..., O)."""
    if dimension_numbers is None:
        return False
    dn = lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim, dimension_numbers)
    spatial = tuple(range(1, ndim - 1))
    return (dn.lhs_spec == (0, ndim - 1, *spatial) and dn.out_spec == dn.lhs_spec
            and dn.rhs_spec == (ndim - 1, ndim - 2, *range(ndim - 2)))


def _is_pointwise(rhs, window_strides, padding, lhs_dilation, rhs_dilation, feature_group_count) -> bool:
    ones = (1,) * (rhs.ndim - 2)
    return (tuple(rhs.shape[:-2]) == ones and tuple(window_strides) == ones
            and (padding in ("SAME", "VALID") or all(tuple(p) == (0, 0) for p in padding))
            and tuple(lhs_dilation or ones) == ones and tuple(rhs_dilation or ones) == ones
            and feature_group_count == 1)


def pointwise_conv(x: jax.Array, kernel: jax.Array, precision=None, preferred_element_type=None) -> jax.Array:
    """1×1 conv as a matmul: x (..., C_in) · kernel (1, ..., 1, C_in, C_out) -> (..., C_out).

    The matmul is on x flattened to 2-D, so that the weight gradient is a plain 2-D product
    contracting the rows of both operands; on 4-D operands XLA:CPU first transposes them.
    """
    c_in, c_out = kernel.shape[-2:]
    y = lax.dot_general(x.reshape(-1, c_in), kernel.reshape(c_in, c_out), (((1,), (0,)), ((), ())),
                        precision=precision, preferred_element_type=preferred_element_type)
    return y.reshape(*x.shape[:-1], c_out)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
    """`lax.conv_general_dilated` with channels-last 1×1 convolutions done as matmuls."""
    if (batch_group_count == 1 and _channels_last(dimension_numbers, lhs.ndim)
            and _is_pointwise(rhs, window_strides, padding, lhs_dilation, rhs_dilation, feature_group_count)):
        return pointwise_conv(lhs, rhs, precision, preferred_element_type)
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        batch_group_count=batch_group_count, precision=precision,
        preferred_element_type=preferred_element_type)
