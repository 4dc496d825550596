"""`lmsfa_jax.evaluation.postprocess` as ONNX nodes: the end-to-end graph's fixed-shape tail.

    outputs = postprocess(g, "decoded", "protos", num_classes=4, num_anchors=8400, proto_hw=(160, 160),
                          conf_threshold=0.25, iou_threshold=0.7, max_det=300)

Same steps and arithmetic as the JAX function with multi_label=False and no retina masks: each
anchor's best class; the top `max_candidates` by score; confidence filter; class-aware greedy NMS
solved as the fixed point of one parallel suppression step (an ONNX Loop); kept candidates first,
by descending score, cut or zero-padded to `max_det` rows; masks sigmoid(coefficients · protos) >
0.5 inside the box, at prototype resolution. Outputs (graph outputs, batch B):

  boxes (B, D, 4) float32 xyxy input pixels; scores (B, D) float32; classes (B, D) int32 (-1 when
  empty); masks (B, D, H/4, W/4) bool; count (B,) int32 valid rows. D = max_det.
"""
import numpy as np
from onnx import TensorProto

from lmsfa_jax.evaluation.postprocess import MAX_CANDIDATES, PROTO_STRIDE
from lmsfa_jax.export.onnx_graph import Graph, tensor_info
from lmsfa_jax.export.signature import END_TO_END_OUTPUTS

FLOAT, INT32, INT64 = TensorProto.FLOAT, TensorProto.INT32, TensorProto.INT64


def _i64(g: Graph, values) -> str:
    return g.constant(values, np.int64)


def _unsqueeze(g: Graph, x: str, *axes: int) -> str:
    return g.op("Unsqueeze", x, _i64(g, list(axes)))


def _slice(g: Graph, x: str, start: int, end: int, axis: int) -> str:
    return g.op("Slice", x, _i64(g, [start]), _i64(g, [end]), _i64(g, [axis]))


def _gather_rows(g: Graph, x: str, index: str) -> str:
    """x (B, N, F), index (B, K) int64 -> (B, K, F): per image, rows `index`."""
    return g.op("GatherND", x, _unsqueeze(g, index, 2), batch_dims=1)


def cxcywh_to_xyxy(g: Graph, boxes: str) -> str:
    centre, size = _slice(g, boxes, 0, 2, 2), _slice(g, boxes, 2, 4, 2)
    half = g.op("Div", size, g.constant(2.0))
    return g.op("Concat", g.op("Sub", centre, half), g.op("Add", centre, half), axis=2)


def box_iou(g: Graph, boxes: str) -> str:
    """(B, K, 4) xyxy -> (B, K, K) pairwise IoU, the arithmetic of `postprocess.box_iou`, per
    coordinate on (B, K, K) planes (much faster in ONNX Runtime than broadcasting (…, 2) pairs)."""
    x1, y1, x2, y2 = (_slice(g, boxes, i, i + 1, 2) for i in range(4))      # (B, K, 1) each
    as_row = lambda v: g.op("Transpose", v, perm=[0, 2, 1])                    # noqa: E731  (B, 1, K)
    zero = g.constant(0.0)

    def overlap(low, high):                                                   # (B, K, K) clipped extent
        return g.op("Max", g.op("Sub", g.op("Min", high, as_row(high)), g.op("Max", low, as_row(low))), zero)

    def area(low_x, low_y, high_x, high_y):
        return g.op("Mul", g.op("Max", g.op("Sub", high_x, low_x), zero), g.op("Max", g.op("Sub", high_y, low_y), zero))

    inter = g.op("Mul", overlap(x1, x2), overlap(y1, y2))
    areas = area(x1, y1, x2, y2)                                              # (B, K, 1)
    union = g.op("Sub", g.op("Add", areas, as_row(areas)), inter)
    return g.op("Div", inter, g.op("Max", union, g.constant(1e-9)))


def greedy_nms(g: Graph, boxes: str, classes: str, valid: str, iou_threshold: float, k: int) -> str:
    """Class-aware greedy NMS of score-sorted candidates -> keep (B, K) bool, the fixed point of
    keep_j = valid_j ∧ ¬∃ i < j: keep_i ∧ same class ∧ IoU_ij > threshold (`postprocess.greedy_nms`)."""
    order = _i64(g, np.arange(k))
    earlier = g.op("Less", _unsqueeze(g, order, 1), _unsqueeze(g, order, 0))
    same_class = g.op("Equal", _unsqueeze(g, classes, 2), _unsqueeze(g, classes, 1))
    overlaps = g.op("Greater", box_iou(g, boxes), g.constant(iou_threshold))
    suppresses = g.op("Cast", g.op("And", g.op("And", overlaps, same_class), earlier), to=FLOAT)  # (B, K, K)

    body = Graph("nms_step")
    kept_by = body.op("MatMul", _unsqueeze(body, body.op("Cast", "keep_in", to=FLOAT), 1),
                      suppresses)                                              # (B, 1, K) kept suppressors
    killed = body.op("Squeeze", body.op("Greater", kept_by, body.constant(0.0)), _i64(body, [1]))
    body.op("And", valid, body.op("Not", killed), outputs=["keep_out"])
    changes = body.op("ReduceSum", body.op("Cast", body.op("Xor", "keep_out", "keep_in"), to=FLOAT), keepdims=0)
    body.op("Greater", changes, body.constant(0.0), outputs=["changed"])
    step = body.graph(
        [tensor_info("iteration", "int64", []), tensor_info("cond_in", "bool", []),
         tensor_info("keep_in", "bool", ["batch", k])],
        [tensor_info("changed", "bool", []), tensor_info("keep_out", "bool", ["batch", k])])
    return g.op("Loop", _i64(g, k), g.constant(True, np.bool_), valid, body=step)


def postprocess(g: Graph, decoded: str, protos: str, *, num_classes: int, num_anchors: int,
                proto_hw: tuple[int, int], conf_threshold: float, iou_threshold: float, max_det: int,
                max_candidates: int = MAX_CANDIDATES) -> list[str]:
    """decoded (B, N, 4 + nc + nm), protos (B, h, w, nm) -> the names of the graph outputs it
    writes, `signature.END_TO_END_OUTPUTS` (boxes, scores, classes, masks, count)."""
    k, h, w = min(max_candidates, num_anchors), *proto_hw
    boxes = cxcywh_to_xyxy(g, _slice(g, decoded, 0, 4, 2))
    probs = _slice(g, decoded, 4, 4 + num_classes, 2)
    coefficients = _slice(g, decoded, 4 + num_classes, 2 ** 62, 2)
    best = g.op("ReduceMax", probs, _i64(g, [2]), keepdims=0)                 # (B, N)
    scores, anchor = g.op("TopK", best, _i64(g, [k]), axis=1, outputs=2)        # (B, K), descending
    labels = g.op("ArgMax", probs, axis=2, keepdims=0)
    classes = g.op("GatherElements", labels, anchor, axis=1)
    boxes, coefficients = _gather_rows(g, boxes, anchor), _gather_rows(g, coefficients, anchor)
    valid = g.op("Greater", scores, g.constant(conf_threshold))
    keep = greedy_nms(g, boxes, classes, valid, iou_threshold, k)

    # Kept rows first, each group by rank: the top of key = keep ? 2K - rank : K - rank.
    rank = g.constant(np.arange(k))
    key = g.op("Where", keep, g.op("Sub", g.constant(2.0 * k), rank), g.op("Sub", g.constant(float(k)), rank))
    order = g.op("TopK", key, _i64(g, [min(max_det, k)]), axis=1, outputs=2)[1]
    if k < max_det:
        order = g.op("Pad", order, _i64(g, [0, 0, 0, max_det - k]))            # pads with row 0
    count = g.op("Min", g.op("ReduceSum", g.op("Cast", keep, to=INT64), _i64(g, [1]), keepdims=0),
                 _i64(g, [max_det]))                                           # (B,) int64
    row_valid = g.op("Less", _i64(g, np.arange(max_det)), _unsqueeze(g, count, 1))  # (B, D)

    boxes = g.op("Where", _unsqueeze(g, row_valid, 2), _gather_rows(g, boxes, order), g.constant(0.0),
                 outputs=["boxes"])
    g.op("Where", row_valid, g.op("GatherElements", scores, order, axis=1), g.constant(0.0), outputs=["scores"])
    g.op("Cast", g.op("Where", row_valid, g.op("GatherElements", classes, order, axis=1), _i64(g, -1)),
         to=INT32, outputs=["classes"])
    g.op("Cast", count, to=INT32, outputs=["count"])
    _masks(g, _gather_rows(g, coefficients, order), protos, boxes, row_valid, max_det, h, w)
    return list(END_TO_END_OUTPUTS)


def _masks(g: Graph, coefficients: str, protos: str, boxes: str, row_valid: str, max_det: int,
           h: int, w: int) -> None:
    """Graph output "masks" (B, D, h, w) bool: coefficients · protos > 0 inside the box
    (`postprocess.assemble_masks`, box in proto cells: pixel / PROTO_STRIDE, cell centres +0.5)."""
    nm_first = g.op("Transpose", g.op("Reshape", protos, _i64(g, [0, h * w, -1])), perm=[0, 2, 1])
    logits = g.op("Reshape", g.op("MatMul", coefficients, nm_first), _i64(g, [0, max_det, h, w]))
    scaled = g.op("Mul", boxes, g.constant(1.0 / PROTO_STRIDE))                 # (B, D, 4)

    def inside(low: int, high: int, size: int) -> str:                          # (B, D, size)
        centres = g.constant(np.arange(size) + 0.5)
        return g.op("And", g.op("GreaterOrEqual", centres, _slice(g, scaled, low, low + 1, 2)),
                    g.op("Less", centres, _slice(g, scaled, high, high + 1, 2)))

    inside_box = g.op("And", _unsqueeze(g, inside(1, 3, h), 3), _unsqueeze(g, inside(0, 2, w), 2))  # (B, D, h, w)
    positive = g.op("Greater", logits, g.constant(0.0))
    valid = _unsqueeze(g, row_valid, 2, 3)
    g.op("And", g.op("And", positive, inside_box), valid, outputs=["masks"])
