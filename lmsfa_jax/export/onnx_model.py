"""The ONNX file of a deploy model: the network graph, optionally the post-processing graph, the
declared inputs/outputs of `signature` and the metadata as metadata_props.

    model = build(deploy_variables, spec, metadata, opset=OPSET)   # onnx.ModelProto, checked
    onnx.save(model, "lmsfa_n_640x640.onnx")
"""
from typing import Mapping

import onnx

from lmsfa_jax.export import metadata as metadata_lib
from lmsfa_jax.export import onnx_network, onnx_postprocess
from lmsfa_jax.export.onnx_graph import Graph, tensor_info
from lmsfa_jax.export.signature import INPUT, MIN_OPSET, OPSET, ExportSpec, input_layout, output_layout


def build(deploy_variables: Mapping, spec: ExportSpec, metadata: dict | None = None,
          opset: int = OPSET) -> onnx.ModelProto:
    """The deploy model (`reparameterize`d variables) as a checked ONNX ModelProto at `opset`."""
    if not MIN_OPSET <= opset <= OPSET:
        raise ValueError(f"opset must be in [{MIN_OPSET}, {OPSET}], got {opset}")
    g = Graph("lmsfa")
    decoded, protos = onnx_network.network(g, INPUT, deploy_variables["params"], num_classes=spec.num_classes,
                                           scale=spec.scale, image_hw=spec.image_hw)
    if spec.end_to_end:
        onnx_postprocess.postprocess(g, decoded, protos, num_classes=spec.num_classes,
                                     num_anchors=spec.num_anchors, proto_hw=spec.proto_hw, **spec.postprocess)
    layout = input_layout(spec)
    model = g.model([tensor_info(INPUT, layout["dtype"], layout["shape"], layout["layout"])],
                    [tensor_info(o["name"], o["dtype"], o["shape"], o["description"]) for o in output_layout(spec)],
                    opset=opset, metadata=metadata_lib.to_props(metadata) if metadata else None)
    onnx.checker.check_model(model, full_check=True)
    return model
