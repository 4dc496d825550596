"""A small ONNX graph builder: named values, initializers and nodes, assembled into a ModelProto.

    g = Graph("lmsfa")
    y = g.op("Relu", g.op("Conv", x, g.constant(kernel), pads=[1, 1, 1, 1]))
    model = g.model(inputs=[...], outputs=[...], opset=OPSET)

Values are referred to by name (str). `op` returns the output's name (or a list of names when
`outputs` > 1); `constant` stores a numpy array as an initializer. ONNX's own layout rules apply:
the graph builders that use this (`onnx_network`, `onnx_postprocess`) work in NCHW.
"""
import itertools
from typing import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from lmsfa_jax.export.signature import OPSET


ELEMENT_TYPES = {"float32": onnx.TensorProto.FLOAT, "int32": onnx.TensorProto.INT32,
                 "int64": onnx.TensorProto.INT64, "bool": onnx.TensorProto.BOOL}


class Graph:
    """Accumulates the nodes and initializers of one ONNX graph (or a Loop body)."""

    def __init__(self, name: str):
        self.name = name
        self.nodes: list = []
        self.initializers: list = []
        self._ids = itertools.count()
        self._constants: dict = {}

    def fresh(self, hint: str) -> str:
        """A value name not used before in this graph."""
        return f"{self.name}/{hint}_{next(self._ids)}"

    def constant(self, value, dtype=np.float32, name: str | None = None) -> str:
        """An initializer holding `value` as `dtype`; equal small constants are stored once."""
        array = np.asarray(value, dtype)
        key = None
        if name is None and array.size <= 16:
            key = (array.dtype.str, array.shape, array.tobytes())
            if key in self._constants:
                return self._constants[key]
        name = name or self.fresh("const")
        self.initializers.append(numpy_helper.from_array(array, name))
        if key is not None:
            self._constants[key] = name
        return name

    def op(self, op_type: str, *inputs: str, outputs: int | Sequence[str] = 1, **attributes):
        """Appends one node; -> its output name, or a list of names when `outputs` is a count > 1.

        outputs: how many outputs, or their names (e.g. a graph output's)."""
        names = [self.fresh(op_type.lower()) for _ in range(outputs)] if isinstance(outputs, int) \
            else list(outputs)
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=names[0], **attributes))
        return names[0] if len(names) == 1 else names

    def graph(self, inputs: Sequence, outputs: Sequence) -> onnx.GraphProto:
        """The GraphProto with `inputs` / `outputs` given as ValueInfoProtos."""
        return helper.make_graph(self.nodes, self.name, list(inputs), list(outputs), self.initializers)

    def model(self, inputs: Sequence, outputs: Sequence, opset: int = OPSET,
              metadata: dict | None = None) -> onnx.ModelProto:
        """A ModelProto at `opset` with the IR version that opset needs; metadata -> metadata_props."""
        opset_ids = [helper.make_opsetid("", opset)]
        model = helper.make_model(self.graph(inputs, outputs), opset_imports=opset_ids,
                                  producer_name="lmsfa_jax")
        model.ir_version = helper.find_min_ir_version_for(opset_ids)
        if metadata:
            helper.set_model_props(model, metadata)
        return model


def tensor_info(name: str, dtype: str, shape: Sequence | None, doc: str = "") -> onnx.ValueInfoProto:
    """A graph input/output description; a str in `shape` is a named dynamic dimension, None an
    unknown shape; `doc` shows in viewers such as Netron."""
    return helper.make_tensor_value_info(name, ELEMENT_TYPES[dtype], None if shape is None else list(shape),
                                         doc_string=doc)
