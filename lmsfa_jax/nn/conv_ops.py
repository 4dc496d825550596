"""Convolution primitives shaped for speed, used by every dense conv of the model.

`conv_general_dilated` is a drop-in for `lax.conv_general_dilated` (pass it to `nn.Conv`):
- A 1×1 (or 1×1×1), stride-1, ungrouped, channels-last convolution is computed as a matrix product
  over the channel axis. XLA:CPU runs that product and both of its gradients several times faster
  than the same 1×1 convolution (whose weight gradient it treats as a convolution with a
  full-image window); on other backends XLA lowers 1×1 convolutions to the same product anyway.
- On CPU, a large 3×3, padding-1, ungrouped, channels-last convolution is `conv3x3`: XLA's
  convolution, with one of its gradients computed differently. At stride 1 the weight gradient is
  matrix products (`conv3x3_weight_grad`), 1.1-3.5× faster there than XLA:CPU's, which runs it as
  a convolution with a full-image window. At stride 2 the input gradient is a stride-1 2×2
  convolution of the output gradient (`stride2_input_grad`), up to 2.7× faster than XLA:CPU's
  input-dilated convolution.
Every other convolution goes to `lax.conv_general_dilated` unchanged.
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax

_BLOCK_BYTES = 2 ** 21   # operand rows per matrix product in `conv3x3_weight_grad`: about 2 MiB
_MIN_CHANNELS, _MIN_PIXELS = 64, 8 * 32 * 32   # where it is used (`_weight_grad_as_products`)
_MIN_STRIDE2_PIXELS = 8 * 64 * 64                # where `stride2_input_grad` is (`_stride2_input_grad_here`)


def _channels_last(dimension_numbers, ndim: int) -> bool:
    """True when the conv is (N, spatial..., C) x (spatial..., I, O) -> (N, spatial..., O)."""
    if dimension_numbers is None:
        return False
    dn = lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim, dimension_numbers)
    spatial = tuple(range(1, ndim - 1))
    return (dn.lhs_spec == (0, ndim - 1, *spatial) and dn.out_spec == dn.lhs_spec
            and dn.rhs_spec == (ndim - 1, ndim - 2, *range(ndim - 2)))


def _plain(lhs, dimension_numbers, lhs_dilation, rhs_dilation, feature_group_count, batch_group_count) -> bool:
    """A channels-last, ungrouped, undilated convolution: the kind this module computes its own way."""
    return (feature_group_count == 1 and batch_group_count == 1
            and all(d == 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
            and _channels_last(dimension_numbers, lhs.ndim))


def _is_pointwise(rhs, window_strides, padding) -> bool:
    ones = (1,) * (rhs.ndim - 2)
    return (tuple(rhs.shape[:-2]) == ones and tuple(window_strides) == ones
            and (padding in ("SAME", "VALID") or all(tuple(p) == (0, 0) for p in padding)))


def pointwise_conv(x: jax.Array, kernel: jax.Array, precision=None, preferred_element_type=None) -> jax.Array:
    """1×1 conv as a matmul: x (..., C_in) · kernel (1, ..., 1, C_in, C_out) -> (..., C_out).

    The matmul is on x flattened to 2-D, so that the weight gradient is a plain 2-D product
    contracting the rows of both operands; on 4-D operands XLA:CPU first transposes them.
    """
    c_in, c_out = kernel.shape[-2:]
    y = lax.dot_general(x.reshape(-1, c_in), kernel.reshape(c_in, c_out), (((1,), (0,)), ((), ())),
                        precision=precision, preferred_element_type=preferred_element_type)
    return y.reshape(*x.shape[:-1], c_out)


def _3x3_stride(rhs, window_strides, padding) -> int:
    """The stride s of a 2-D 3×3, padding-1 convolution with strides (s, s); else 0."""
    strides = tuple(window_strides)
    if (rhs.ndim == 4 and tuple(rhs.shape[:2]) == (3, 3) and len(set(strides)) == 1
            and not isinstance(padding, str) and all(tuple(p) == (1, 1) for p in padding)):
        return strides[0]
    return 0


def _weight_grad_as_products(lhs, rhs) -> bool:
    """Where `conv3x3_weight_grad` beats XLA:CPU's (measured with fwd+bwd at batch 8): 64 channels or
    more in and out over 8·32² pixels or more (0.3× at 160², 0.5× at 80², 0.9× at 32²). Smaller
    convs, such as EMA's 2-16-channel ones, are 1.2-2× faster left to XLA."""
    return (jax.default_backend() == "cpu" and min(rhs.shape[2:]) >= _MIN_CHANNELS
            and _pixels(lhs) >= _MIN_PIXELS)


def _stride2_input_grad_here(lhs) -> bool:
    """Where `stride2_input_grad` beats XLA:CPU's (fwd+bwd at batch 8): even sizes, 8·64² input pixels or
    more (0.37× for 16 -> 32 channels at 320², 0.48× for 32 -> 64 at 160², 0.5-1.0× at 80², 1.05-1.13×
    at 40², where XLA keeps it)."""
    return (jax.default_backend() == "cpu" and _pixels(lhs) >= _MIN_STRIDE2_PIXELS
            and lhs.shape[1] % 2 == 0 and lhs.shape[2] % 2 == 0)


def _pixels(lhs) -> int:
    """B·H·W of a (B, H, W, C) input; 0 when a size is symbolic (shape-polymorphic export), which
    keeps XLA's convolution (export has no backward pass)."""
    sizes = lhs.shape[:3]
    return sizes[0] * sizes[1] * sizes[2] if all(isinstance(d, int) for d in sizes) else 0


def stride2_input_grad(dy: jax.Array, kernel: jax.Array, x_shape) -> jax.Array:
    """The input gradient (B, 2H, 2W, C) of a padding-1, stride-2 3×3 conv with kernel (3, 3, C, O),
    given its output gradient dy (B, H, W, O).

    In space-to-depth form, padded-input pixel (2u+p, 2v+q) receives dy[u-a', v-b'] through tap
    (2a'+p, 2b'+q) for a', b' in {0, 1} (taps beyond 2 are zero): a stride-1 2×2 convolution of dy
    (padded by 1) to 4C channels (p, q, c), then depth-to-space and the padding cropped.
    """
    b, h, w, o = dy.shape
    c = kernel.shape[2]
    taps = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0))).reshape(2, 2, 2, 2, c, o)   # [a', p, b', q, c, o]
    kernel2 = taps[::-1, :, ::-1].transpose(0, 2, 5, 1, 3, 4).reshape(2, 2, o, 4 * c)
    z = lax.conv_general_dilated(jnp.pad(dy, ((0, 0), (1, 1), (1, 1), (0, 0))), kernel2, (1, 1), "VALID",
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))          # (B, H+1, W+1, 4C)
    z = z.reshape(b, h + 1, w + 1, 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h + 2, 2 * w + 2, c)
    return z[:, 1:x_shape[1] + 1, 1:x_shape[2] + 1]


def conv3x3_weight_grad(x: jax.Array, dy: jax.Array) -> jax.Array:
    """The kernel gradient (3, 3, C, O) of a 'same' 3×3 conv of x (B, H, W, C) with output
    gradient dy (B, H, W, O), in float32.

    dW[i, j] = Σ_{b,h,w} xp[b, h+i, w+j] ⊗ dy[b, h, w] (xp: x zero-padded by 1). The column shifts j
    go into x's channels, x3 (B, H+2, W, 3C), the row shifts i into dy's, d3[b, r] = dy[b, r-i]
    (B, H+2, W, 3O, zero outside), so that one product x3ᵀ·d3 (3C, 3O) holds all nine taps. It is
    summed over blocks of rows (a `lax.scan`), each block's operands about 2 MiB, built in cache.
    """
    b, h, w, c = x.shape
    o = dy.shape[-1]
    rows = max(1, min(h + 2, round(_BLOCK_BYTES / (b * w * 3 * c * x.dtype.itemsize))))
    blocks = -(-(h + 2) // rows)
    extra = blocks * rows - (h + 2)                                    # zero rows to fill the last block
    xp = jnp.pad(x, ((0, 0), (1, 1 + extra), (1, 1), (0, 0)))          # (B, blocks·rows, W+2, C)
    dyp = jnp.pad(dy, ((0, 0), (2, 2 + extra), (0, 0), (0, 0)))        # (B, blocks·rows + 2, W, O)

    def block_product(k):
        xs = lax.dynamic_slice_in_dim(xp, k * rows, rows, axis=1)
        ds = lax.dynamic_slice_in_dim(dyp, k * rows, rows + 2, axis=1)
        x3 = jnp.concatenate([xs[:, :, j:j + w] for j in range(3)], axis=-1).reshape(-1, 3 * c)
        d3 = jnp.concatenate([ds[:, 2 - i:2 - i + rows] for i in range(3)], axis=-1).reshape(-1, 3 * o)
        return lax.dot_general(x3, d3, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)

    if blocks == 1:
        total = block_product(0)
    else:
        total, _ = lax.scan(lambda acc, k: (acc + block_product(k), None),
                            jnp.zeros((3 * c, 3 * o), jnp.float32), jnp.arange(blocks))
    return total.reshape(3, c, 3, o).transpose(2, 0, 1, 3)            # [(j, c), (i, o)] -> (i, j, c, o)


def _conv3x3(x, kernel, stride, precision, preferred_element_type):
    return lax.conv_general_dilated(x, kernel, (stride, stride), ((1, 1), (1, 1)),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision,
                                    preferred_element_type=preferred_element_type)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv3x3(x: jax.Array, kernel: jax.Array, stride: int = 1, precision=None,
            preferred_element_type=None) -> jax.Array:
    """Padding-1 3×3 conv, x (B, H, W, C) · kernel (3, 3, C, O) -> (B, H/s, W/s, O) at stride s 1 or 2:
    XLA's convolution; gradients by XLA but for the weight gradient at stride 1
    (`conv3x3_weight_grad`) and the input gradient at stride 2 (`stride2_input_grad`, even H, W)."""
    return _conv3x3(x, kernel, stride, precision, preferred_element_type)


def _conv3x3_fwd(x, kernel, stride, precision, preferred_element_type):
    return _conv3x3(x, kernel, stride, precision, preferred_element_type), (x, kernel)


def _conv3x3_bwd(stride, precision, preferred_element_type, residuals, dy):
    x, kernel = residuals
    conv = lambda x, kernel: _conv3x3(x, kernel, stride, precision, preferred_element_type)  # noqa: E731
    if stride == 1:
        dx = jax.vjp(lambda x: conv(x, kernel), x)[1](dy)[0]
        dkernel = conv3x3_weight_grad(x, dy.astype(x.dtype))
    else:
        dx = stride2_input_grad(dy.astype(x.dtype), kernel.astype(x.dtype), x.shape)
        dkernel = jax.vjp(lambda kernel: conv(x, kernel), kernel)[1](dy)[0]
    return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
    """`lax.conv_general_dilated` with channels-last 1×1 convolutions done as matmuls and, on CPU,
    large padding-1 3×3 ones at stride 1 or 2 as `conv3x3`."""
    if _plain(lhs, dimension_numbers, lhs_dilation, rhs_dilation, feature_group_count, batch_group_count):
        if _is_pointwise(rhs, window_strides, padding):
            return pointwise_conv(lhs, rhs, precision, preferred_element_type)
        stride = _3x3_stride(rhs, window_strides, padding)
        if (stride == 1 and _weight_grad_as_products(lhs, rhs)) or (stride == 2 and _stride2_input_grad_here(lhs)):
            return conv3x3(lhs, rhs, stride, precision, preferred_element_type)
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        batch_group_count=batch_group_count, precision=precision,
        preferred_element_type=preferred_element_type)
