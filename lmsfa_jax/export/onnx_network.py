"""The re-parameterised LMSF-A network as ONNX nodes, built by walking the layer table.

    decoded, protos = network(g, images, deploy_params, num_classes=4, scale="n", image_hw=(640, 640))

`images` names a (B, H, W, 3) float32 NHWC graph input, as the JAX model takes; the outputs are
the model's: decoded (B, N, 4 + nc + 32) and protos (B, H/4, W/4, 32), NHWC. Inside, the graph
runs in NCHW (ONNX's convolution layout). Each module of `lmsfa_jax.nn` in its deploy form has one
emitter below, reading the same parameter tree as `LMSFA(deploy=True)` (see
`lmsfa_jax.reparameterize`); kernels are converted from Flax HWIO to ONNX OIHW.
"""
from typing import Mapping, NamedTuple

import numpy as np

from lmsfa_jax.anchors import REG_MAX, STRIDES, make_anchors
from lmsfa_jax.export.onnx_graph import Graph
from lmsfa_jax.model import resolve_layers
from lmsfa_jax.nn.attention import EMA_GROUPS
from lmsfa_jax.nn.conv import GN_EPS, GN_GROUPS

LEAKY_SLOPE = 0.1   # SSFF's LeakyReLU


class Feature(NamedTuple):
    """A feature map in the graph: value name and (channels, height, width); batch is the graph's."""
    name: str
    c: int
    h: int
    w: int


def _array(x) -> np.ndarray:
    return np.asarray(x, np.float32)


def conv(g: Graph, x: Feature, params: Mapping, stride: int = 1, groups: int = 1,
         act: bool = True) -> Feature:
    """Conv with PyTorch autopad (k // 2) and optional bias, then SiLU if `act`.

    params: {kernel (k, k, C_in/groups, C_out) Flax HWIO[, bias (C_out,)]}."""
    kernel = _array(params["kernel"])
    k, c_out = kernel.shape[0], kernel.shape[-1]
    inputs = [x.name, g.constant(kernel.transpose(3, 2, 0, 1))]
    if "bias" in params:
        inputs.append(g.constant(params["bias"]))
    p = k // 2
    y = g.op("Conv", *inputs, kernel_shape=[k, k], strides=[stride, stride], pads=[p] * 4,
             group=groups)
    out = Feature(y, c_out, (x.h + 2 * p - k) // stride + 1, (x.w + 2 * p - k) // stride + 1)
    return silu(g, out) if act else out


def silu(g: Graph, x: Feature) -> Feature:
    return x._replace(name=g.op("Mul", x.name, g.op("Sigmoid", x.name)))


def gelu(g: Graph, x: Feature) -> Feature:
    """Exact (erf) GELU: x · ½(1 + erf(x/√2)); ONNX Runtime fuses this pattern."""
    erf = g.op("Erf", g.op("Div", x.name, g.constant(np.sqrt(2.0))))
    half = g.op("Mul", x.name, g.constant(0.5))
    return x._replace(name=g.op("Mul", half, g.op("Add", erf, g.constant(1.0))))


def channel_param(g: Graph, values) -> str:
    """A per-channel (C,) parameter as a (C, 1, 1) constant that broadcasts over NCHW."""
    return g.constant(_array(values).reshape(-1, 1, 1))


def group_norm(g: Graph, x: Feature, params: Mapping, groups: int, eps: float = GN_EPS) -> Feature:
    """GroupNorm over `groups` channel groups: InstanceNormalization of the (B, groups, ·) view,
    then the per-channel scale and bias. params: {scale, bias} (C,)."""
    grouped = g.op("Reshape", x.name, g.constant([-1, groups, x.c // groups * x.h * x.w], np.int64))
    ones, zeros = g.constant(np.ones(groups)), g.constant(np.zeros(groups))
    normed = g.op("InstanceNormalization", grouped, ones, zeros, epsilon=eps)
    y = g.op("Reshape", normed, g.constant([-1, x.c, x.h, x.w], np.int64))
    y = g.op("Add", g.op("Mul", y, channel_param(g, params["scale"])), channel_param(g, params["bias"]))
    return x._replace(name=y)


def conv_gn(g: Graph, x: Feature, params: Mapping) -> Feature:
    """`ConvGN`: conv (no bias) -> GroupNorm(16) -> SiLU. params: {conv: {kernel}, gn: {scale, bias}}."""
    return silu(g, group_norm(g, conv(g, x, params["conv"], act=False), params["gn"], GN_GROUPS))


def reduce(g: Graph, op: str, x: str, axes, keepdims: int = 1) -> str:
    return g.op(op, x, g.constant(axes, np.int64), keepdims=keepdims)


def ema(g: Graph, x: Feature, params: Mapping, groups: int = EMA_GROUPS) -> Feature:
    """`EMA` attention. In NCHW a group's channels are contiguous, so the (B·G, C/G, H, W) view is
    one Reshape. The shared 1×1 conv is pointwise, so it runs on the row and the column profiles
    separately (no concat and split); the two attention maps are a batched MatMul.
    params: conv1x1, conv3x3 {kernel, bias}, gn {scale, bias} (C/G,)."""
    cg, h, w = x.c // groups, x.h, x.w
    xg = Feature(g.op("Reshape", x.name, g.constant([-1, cg, h, w], np.int64)), cg, h, w)
    gate_h = conv(g, Feature(reduce(g, "ReduceMean", xg.name, [3]), cg, h, 1), params["conv1x1"], act=False)
    gate_w = conv(g, Feature(reduce(g, "ReduceMean", xg.name, [2]), cg, 1, w), params["conv1x1"], act=False)
    gated = g.op("Mul", g.op("Mul", xg.name, g.op("Sigmoid", gate_h.name)), g.op("Sigmoid", gate_w.name))
    x1 = g.op("InstanceNormalization", gated, g.constant(params["gn"]["scale"]),
              g.constant(params["gn"]["bias"]), epsilon=GN_EPS)
    x2 = conv(g, xg, params["conv3x3"], act=False).name
    # weights = Σ_c softmax(mean x1)_c · x2_c + Σ_c softmax(mean x2)_c · x1_c  -> (bG, 1, H·W)
    softmax_row = lambda v: g.op("Reshape", g.op("Softmax", g.op("GlobalAveragePool", v), axis=1),  # noqa: E731
                                 g.constant([-1, 1, cg], np.int64))
    flat = lambda v: g.op("Reshape", v, g.constant([-1, cg, h * w], np.int64))  # noqa: E731
    weights = g.op("Add", g.op("MatMul", softmax_row(x1), flat(x2)), g.op("MatMul", softmax_row(x2), flat(x1)))
    gate = g.op("Reshape", g.op("Sigmoid", weights), g.constant([-1, 1, h, w], np.int64))
    return x._replace(name=g.op("Reshape", g.op("Mul", xg.name, gate), g.constant([-1, x.c, h, w], np.int64)))


def repvit_block(g: Graph, x: Feature, params: Mapping) -> Feature:
    """`RepViTBlockEMA` (deploy): y = EMA(depthwise 3×3(x)); y + P2(GELU(P1(y)))."""
    y = conv(g, x, params["token_mixer_0"]["fused"], groups=x.c, act=False)
    y = ema(g, y, params["token_mixer_1"])
    mixer = params["channel_mixer"]
    h = gelu(g, conv(g, y, mixer["fn_0"]["c"], act=False))
    h = conv(g, h, mixer["fn_2"]["c"], act=False)
    return y._replace(name=g.op("Add", y.name, h.name))


def concat(g: Graph, xs) -> Feature:
    return xs[0]._replace(name=g.op("Concat", *(x.name for x in xs), axis=1), c=sum(x.c for x in xs))


def c2f_pro(g: Graph, x: Feature, params: Mapping, n: int) -> Feature:
    """`C2fPro`: cv1, split in halves, n RepViT-EMA blocks on the second half, concat, cv2."""
    y = conv(g, x, params["cv1"]["conv"])
    c = y.c // 2
    halves = g.op("Split", y.name, g.constant([c, c], np.int64), axis=1, outputs=2)
    ys = [y._replace(name=name, c=c) for name in halves]
    for j in range(n):
        ys.append(repvit_block(g, ys[-1], params[f"m_{j}"]))
    return conv(g, concat(g, ys), params["cv2"]["conv"])


def sppf(g: Graph, x: Feature, params: Mapping, k: int) -> Feature:
    """`SPPF`: cv1, three chained k×k stride-1 max-pools (padding never wins), concat, cv2."""
    pooled = [conv(g, x, params["cv1"]["conv"])]
    for _ in range(3):
        pooled.append(pooled[-1]._replace(name=g.op(
            "MaxPool", pooled[-1].name, kernel_shape=[k, k], strides=[1, 1], pads=[k // 2] * 4)))
    return conv(g, concat(g, pooled), params["cv2"]["conv"])


def _factor(large: int, small: int, what: str) -> int:
    if large % small:
        raise ValueError(f"{what}: {large} is not a multiple of {small}; image sizes must be "
                         "multiples of 32")
    return large // small


def downsample(g: Graph, x: Feature, h: int, w: int) -> Feature:
    """Adaptive max-pool + adaptive avg-pool to (h, w) when the size divides evenly (always, for
    image sizes that are multiples of 32)."""
    k = [_factor(x.h, h, "TFE pooling"), _factor(x.w, w, "TFE pooling")]
    pooled = g.op("Add", g.op("MaxPool", x.name, kernel_shape=k, strides=k),
                  g.op("AveragePool", x.name, kernel_shape=k, strides=k))
    return Feature(pooled, x.c, h, w)


def upsample_nearest(g: Graph, x: Feature, h: int, w: int) -> Feature:
    """PyTorch 'nearest' to (h, w) at an integer factor: source index floor(dst · in / out)."""
    scales = [1.0, 1.0, _factor(h, x.h, "nearest resize"), _factor(w, x.w, "nearest resize")]
    y = g.op("Resize", x.name, "", g.constant(scales), mode="nearest",
             coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    return Feature(y, x.c, h, w)


def tfe(g: Graph, xs) -> Feature:
    """`TFE` (Zoom_cat): concat[pool(large -> mid size), mid, nearest(small -> mid size)]."""
    large, mid, small = xs
    return concat(g, [downsample(g, large, mid.h, mid.w), mid, upsample_nearest(g, small, mid.h, mid.w)])


def ssff(g: Graph, xs, params: Mapping) -> Feature:
    """`SSFF` (deploy): 1×1 convs to a common width; the 1×1×1 Conv3d (BN folded) and LeakyReLU on
    each depth slice at its own resolution, nearest-resized to P3, then the max over depth."""
    p3, p4, p5 = xs
    if "conv0" in params:
        p3 = conv(g, p3, params["conv0"]["conv"])
    levels = [p3, conv(g, p4, params["conv1"]["conv"]), conv(g, p5, params["conv2"]["conv"])]
    kernel3d = params["conv3d"]["kernel"]
    pointwise = {"kernel": _array(kernel3d).reshape(1, *kernel3d.shape[-3:]), "bias": params["conv3d"]["bias"]}
    slices = []
    for level in levels:
        y = conv(g, level, pointwise, act=False)
        y = y._replace(name=g.op("LeakyRelu", y.name, alpha=LEAKY_SLOPE))
        slices.append(y if (y.h, y.w) == (p3.h, p3.w) else upsample_nearest(g, y, p3.h, p3.w))
    return slices[0]._replace(name=g.op("Max", *(y.name for y in slices)))


def conv_transpose_2x2(g: Graph, x: Feature, params: Mapping) -> Feature:
    """`ConvTranspose2x2`: kernel (2, 2, C, F) Flax -> ONNX (C, F, 2, 2), stride 2, with bias."""
    kernel = _array(params["kernel"])
    y = g.op("ConvTranspose", x.name, g.constant(kernel.transpose(2, 3, 0, 1)), g.constant(params["bias"]),
             kernel_shape=[2, 2], strides=[2, 2])
    return Feature(y, kernel.shape[-1], 2 * x.h, 2 * x.w)


def proto(g: Graph, x: Feature, params: Mapping) -> Feature:
    """`Proto`: Conv 3×3, ConvTranspose 2×2 s2, Conv 3×3, Conv 1×1 (deploy convs with bias)."""
    x = conv(g, x, params["cv1"]["conv"])
    x = conv_transpose_2x2(g, x, params["upsample"])
    x = conv(g, x, params["cv2"]["conv"])
    return conv(g, x, params["cv3"]["conv"])


def flatten(g: Graph, x: Feature) -> str:
    """(B, C, H, W) -> (B, C, H·W): anchors row-major, as the JAX model's (B, H·W, C)."""
    return g.op("Reshape", x.name, g.constant([0, x.c, x.h * x.w], np.int64))


def lmsh(g: Graph, xs, params: Mapping, num_classes: int) -> tuple[str, str]:
    """`LMSH` head with decoding -> (decoded (B, 4 + nc + nm, N), protos (B, nm, H/4, W/4))."""
    protos = proto(g, xs[0], params["proto"])
    coefficients, maps = [], []
    for i, x in enumerate(xs):
        c = conv_gn(g, conv_gn(g, x, params[f"cv4_{i}_0"]), params[f"cv4_{i}_1"])
        coefficients.append(flatten(g, conv(g, c, params[f"cv4_{i}_2"], act=False)))
        f = conv_gn(g, x, params[f"conv_{i}_0"])
        for j in range(2):
            f = conv_gn(g, f, params[f"share_conv_{j}"])
        box = conv(g, f, params["cv2"], act=False)
        box = box._replace(name=g.op("Mul", box.name, g.constant(params[f"scale_{i}"]["scale"])))
        maps.append(flatten(g, concat(g, [box, conv(g, f, params["cv3"], act=False)])))
    flat = g.op("Concat", *maps, axis=2)                                   # (B, 4·reg_max + nc, N)
    box_logits, class_logits = g.op("Split", flat, g.constant([4 * REG_MAX, num_classes], np.int64),
                                    axis=1, outputs=2)
    boxes = decode_boxes(g, box_logits, [(x.h, x.w) for x in xs])
    decoded = g.op("Concat", boxes, g.op("Sigmoid", class_logits), g.op("Concat", *coefficients, axis=2),
                   axis=1)
    return decoded, protos.name


def decode_boxes(g: Graph, box_logits: str, level_hw) -> str:
    """DFL: (B, 4·reg_max, N) bin logits -> (B, 4, N) boxes (cx, cy, w, h) in input pixels, the
    arithmetic of `anchors.dfl_expectation`, `dist2bbox` and `xyxy_to_cxcywh`."""
    bins = g.op("Softmax", g.op("Reshape", box_logits, g.constant([0, 4, REG_MAX, -1], np.int64)), axis=2)
    distances = reduce(g, "ReduceSum", g.op("Mul", bins, g.constant(np.arange(REG_MAX).reshape(-1, 1))),
                       [2], keepdims=0)                                      # (B, 4, N): l, t, r, b
    points, strides = (np.asarray(a).T for a in make_anchors(level_hw, STRIDES[:len(level_hw)]))
    points = g.constant(points)                                              # (2, N) x, y
    left_top, right_bottom = g.op("Split", distances, g.constant([2, 2], np.int64), axis=1, outputs=2)
    top_left, bottom_right = g.op("Sub", points, left_top), g.op("Add", points, right_bottom)
    centre = g.op("Div", g.op("Add", top_left, bottom_right), g.constant(2.0))
    size = g.op("Sub", bottom_right, top_left)
    return g.op("Mul", g.op("Concat", centre, size, axis=1), g.constant(strides))


def network(g: Graph, images: str, params: Mapping, *, num_classes: int, scale: str,
            image_hw: tuple[int, int]) -> tuple[str, str]:
    """The deploy network on NHWC `images` -> the names of its outputs, "decoded" (B, N, 4 + nc + nm)
    and "protos" (B, H/4, W/4, nm)."""
    x = Feature(g.op("Transpose", images, perm=[0, 3, 1, 2]), 3, *image_hw)
    outputs: list = []
    for i, layer in enumerate(resolve_layers(scale, num_classes)):
        p = params.get(f"model_{i}", {})  # parameter-free modules (TFE, Concat, Add) have none
        inputs = [outputs[s] if s >= 0 else x for s in layer.sources]
        if layer.module == "Conv":
            y = conv(g, inputs[0], p["conv"], stride=layer.kwargs["stride"])
        elif layer.module == "C2fPro":
            y = c2f_pro(g, inputs[0], p, layer.kwargs["n"])
        elif layer.module == "SPPF":
            y = sppf(g, inputs[0], p, layer.kwargs["k"])
        elif layer.module == "TFE":
            y = tfe(g, inputs)
        elif layer.module == "Concat":
            y = concat(g, inputs)
        elif layer.module == "Add":
            y = inputs[0]._replace(name=g.op("Sum", *(v.name for v in inputs)))
        elif layer.module == "SSFF":
            y = ssff(g, inputs, p)
        elif layer.module == "LMSH":
            decoded, protos = lmsh(g, inputs, p, num_classes)
            return (g.op("Transpose", decoded, perm=[0, 2, 1], outputs=["decoded"]),
                    g.op("Transpose", protos, perm=[0, 2, 3, 1], outputs=["protos"]))
        else:
            raise ValueError(f"layer {i}: no ONNX emitter for module {layer.module!r}")
        outputs.append(y)
    raise ValueError("the layer table has no LMSH head")
