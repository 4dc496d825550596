"""What an exported model takes and returns: the export settings, the input and output layouts,
and the JAX function with that signature (what StableHLO serializes and what ONNX must equal).

Input "images": (B, H, W, 3) float32 RGB in [0, 1], NHWC, letterboxed (see `metadata.LETTERBOX`).
Outputs of the model alone:
  "decoded" (B, N, 4 + nc + 32): box (cx, cy, w, h) in input pixels, nc class probabilities,
            32 mask coefficients; N = Σ (H/s)(W/s) over strides s = 8, 16, 32;
  "protos"  (B, H/4, W/4, 32) prototype masks.
Outputs with post-processing (`end_to_end`), D = max_det rows, valid rows first:
  "boxes" (B, D, 4) float32 xyxy input pixels; "scores" (B, D) float32; "classes" (B, D) int32
  (-1 in empty rows); "masks" (B, D, H/4, W/4) bool; "count" (B,) int32 valid rows.
"""
from typing import Callable, NamedTuple

import jax

from lmsfa_jax.anchors import STRIDES
from lmsfa_jax.evaluation import postprocess as pp
from lmsfa_jax.nn.head import NUM_MASKS

INPUT = "images"
END_TO_END_OUTPUTS = pp.Detections._fields      # boxes, scores, classes, masks, count
DYNAMIC_BATCH = "batch"                        # the batch dimension's name when it is dynamic
OPSET = 28          # ONNX: the highest ai.onnx opset of onnx 1.23, which ONNX Runtime 1.32's CPU provider runs
MIN_OPSET = 18      # every op the ONNX exporter emits has its current form since opset 18


class ExportSpec(NamedTuple):
    """num_classes, scale: the model's; image_hw (H, W) multiples of 32; batch: a fixed size or
    None (dynamic); postprocess: None, or `postprocess.postprocess` keyword arguments
    {conf_threshold, iou_threshold, max_det, max_candidates} for an end-to-end export."""
    num_classes: int
    scale: str
    image_hw: tuple[int, int]
    batch: int | None = 1
    postprocess: dict | None = None

    @property
    def end_to_end(self) -> bool:
        return self.postprocess is not None

    @property
    def num_anchors(self) -> int:
        h, w = self.image_hw
        return sum((h // s) * (w // s) for s in STRIDES)

    @property
    def proto_hw(self) -> tuple[int, int]:
        return self.image_hw[0] // pp.PROTO_STRIDE, self.image_hw[1] // pp.PROTO_STRIDE

    @property
    def batch_dim(self):
        return DYNAMIC_BATCH if self.batch is None else self.batch


def input_layout(spec: ExportSpec) -> dict:
    return {"name": INPUT, "shape": [spec.batch_dim, *spec.image_hw, 3], "dtype": "float32",
            "layout": "NHWC, RGB in [0, 1], letterboxed"}


def output_layout(spec: ExportSpec) -> list[dict]:
    """[{name, shape, dtype, description}] of the outputs, in order."""
    b, (h, w), d = spec.batch_dim, spec.proto_hw, (spec.postprocess or {}).get("max_det")
    nc = spec.num_classes
    if not spec.end_to_end:
        return [
            {"name": "decoded", "shape": [b, spec.num_anchors, 4 + nc + NUM_MASKS], "dtype": "float32",
             "description": f"per anchor: box (cx, cy, w, h) in input pixels, {nc} class probabilities, "
                            f"{NUM_MASKS} mask coefficients"},
            {"name": "protos", "shape": [b, h, w, NUM_MASKS], "dtype": "float32",
             "description": "prototype masks at 1/4 of the input resolution (NHWC)"}]
    return [
        {"name": "boxes", "shape": [b, d, 4], "dtype": "float32",
         "description": "xyxy in input pixels, valid rows first by descending score; zeros after"},
        {"name": "scores", "shape": [b, d], "dtype": "float32", "description": "confidence; 0 after count"},
        {"name": "classes", "shape": [b, d], "dtype": "int32", "description": "class index; -1 after count"},
        {"name": "masks", "shape": [b, d, h, w], "dtype": "bool",
         "description": "instance masks at 1/4 of the input resolution, cropped to the box"},
        {"name": "count", "shape": [b], "dtype": "int32", "description": "valid rows per image"}]


def jax_function(model, deploy_variables, spec: ExportSpec) -> Callable[[jax.Array], dict]:
    """images -> {output name: array}: the deploy model (`LMSFA(deploy=True)`), then
    `postprocess.postprocess` when spec.end_to_end."""
    def run(images):
        decoded, protos = model.apply(deploy_variables, images)
        if not spec.end_to_end:
            return {"decoded": decoded, "protos": protos}
        return pp.postprocess(decoded, protos, **spec.postprocess)._asdict()
    return run
